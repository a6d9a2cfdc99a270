#include "virtio-device/tap.h"

#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/status.h"

namespace vmmkit::virtio {

namespace {

constexpr char kTunPath[] = "/dev/net/tun";

absl::Status TunError(int error, absl::string_view what) {
  if (error == EPERM || error == EACCES) {
    return absl::PermissionDeniedError(
        absl::StrCat(what, ": ", std::strerror(error),
                     " (needs CAP_NET_ADMIN or access to ", kTunPath, ")"));
  }
  return vmmkit::ErrnoToStatus(error, what);
}

}  // namespace

absl::StatusOr<std::unique_ptr<TapBackend>> TapBackend::Create(
    absl::string_view name) {
  if (name.size() >= IFNAMSIZ) {
    return absl::InvalidArgumentError(
        absl::StrCat("TAP name \"", name, "\" longer than ", IFNAMSIZ - 1));
  }
  const int fd = open(kTunPath, O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    const int error = errno;
    if (error == ENOENT || error == ENODEV || error == ENXIO) {
      return absl::NotFoundError(absl::StrCat(kTunPath, ": ",
                                              std::strerror(error),
                                              " (is the tun module loaded?)"));
    }
    return TunError(error, absl::StrCat("open ", kTunPath));
  }
  // From here on the unique_ptr closes fd on every error path.
  std::unique_ptr<TapBackend> tap(new TapBackend(fd, std::string(name)));

  unsigned features = 0;
  if (ioctl(fd, TUNGETFEATURES, &features) < 0) {
    return TunError(errno, "TUNGETFEATURES");
  }
  if (!(features & IFF_VNET_HDR)) {
    return absl::FailedPreconditionError(
        "the kernel's TUN driver lacks IFF_VNET_HDR");
  }
  struct ifreq ifr;
  std::memset(&ifr, 0, sizeof(ifr));
  std::memcpy(ifr.ifr_name, name.data(), name.size());
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    return TunError(errno, absl::StrCat("TUNSETIFF \"", name, "\""));
  }
  tap->name_.assign(ifr.ifr_name, strnlen(ifr.ifr_name, IFNAMSIZ));
  // Little-endian headers whatever the host (on x86 they already are; the
  // ioctl exists since Linux 4.1, so a failure matters only on big-endian).
  int le = 1;
  if (ioctl(fd, TUNSETVNETLE, &le) < 0 &&
      __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__) {
    return TunError(errno, "TUNSETVNETLE");
  }
  // Nothing offloaded toward the driver until one negotiates it.
  if (ioctl(fd, TUNSETOFFLOAD, 0u) < 0) {
    return TunError(errno, "TUNSETOFFLOAD");
  }
  return tap;
}

TapBackend::~TapBackend() {
  if (fd_ >= 0) close(fd_);
}

Features TapBackend::offload_features() const {
  // UFO is left out: Linux no longer segments UFO (TUN_F_UFO is refused by
  // recent kernels), and a driver has no way to learn that.
  return Features::Of({kNetFCsum, kNetFGuestCsum, kNetFGuestTso4,
                       kNetFGuestTso6, kNetFGuestEcn, kNetFHostTso4,
                       kNetFHostTso6, kNetFHostEcn});
}

absl::Status TapBackend::Configure(const Features& features, size_t hdr_size) {
  int size = static_cast<int>(hdr_size);
  if (ioctl(fd_, TUNSETVNETHDRSZ, &size) < 0) {
    return TunError(errno, "TUNSETVNETHDRSZ");
  }
  hdr_size_ = hdr_size;
  // TUNSETOFFLOAD names what the reader of the TAP (the driver, through us)
  // can take: the GUEST_* features.
  unsigned offloads = 0;
  if (features.Has(kNetFGuestCsum)) {
    offloads |= TUN_F_CSUM;
    if (features.Has(kNetFGuestTso4)) offloads |= TUN_F_TSO4;
    if (features.Has(kNetFGuestTso6)) offloads |= TUN_F_TSO6;
    if (features.Has(kNetFGuestEcn) && (offloads & (TUN_F_TSO4 | TUN_F_TSO6)))
      offloads |= TUN_F_TSO_ECN;
  }
  if (ioctl(fd_, TUNSETOFFLOAD, offloads) < 0) {
    return TunError(errno, "TUNSETOFFLOAD");
  }
  tun_offloads_ = offloads;
  return absl::OkStatus();
}

absl::Status TapBackend::Send(absl::Span<const iovec> iov) {
  for (;;) {
    const ssize_t n = writev(fd_, iov.data(), static_cast<int>(iov.size()));
    if (n >= 0) return absl::OkStatus();  // a TAP takes a frame whole or not
    if (errno != EINTR) return vmmkit::ErrnoToStatus(errno, "write to TAP");
  }
}

absl::StatusOr<size_t> TapBackend::Receive(absl::Span<uint8_t> buffer) {
  for (;;) {
    const ssize_t n = read(fd_, buffer.data(), buffer.size());
    if (n >= 0) return static_cast<size_t>(n);
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    if (errno != EINTR) return vmmkit::ErrnoToStatus(errno, "read from TAP");
  }
}

}  // namespace vmmkit::virtio
