// virtio-device/tap.h: a NetBackend over a Linux TAP interface
// (/dev/net/tun with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR).
//
//   VMMKIT_ASSIGN_OR_RETURN(std::unique_ptr<TapBackend> tap,
//                           TapBackend::Create("vmtap0"));
//   VMMKIT_ASSIGN_OR_RETURN(std::unique_ptr<NetDevice> net,
//                           NetDevice::Create(std::move(tap), {}));
//
// The TAP carries a virtio-net header in front of every frame. Configure()
// (called when a driver starts the device) sets its size with
// TUNSETVNETHDRSZ (10 or 12, what the driver uses) and the offloads the
// driver can receive with TUNSETOFFLOAD (GUEST_CSUM -> TUN_F_CSUM,
// GUEST_TSO4/6 -> TUN_F_TSO4/6, GUEST_ECN -> TUN_F_TSO_ECN), so the kernel
// segments and checksums whatever the driver cannot take. The header's fields
// are little-endian: TUNSETVNETLE is set where the kernel supports it (on a
// little-endian host the default is little-endian anyway), and NetDevice
// converts a big-endian legacy driver's headers.
//
// The file descriptor is non-blocking: Receive() returns 0 when nothing waits;
// a Send() the kernel refuses (EAGAIN, the interface down) drops that frame.
// The interface exists while the TapBackend lives (it is not persistent).
// Thread-compatible.
#ifndef VMMKIT_VIRTIO_DEVICE_TAP_H_
#define VMMKIT_VIRTIO_DEVICE_TAP_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "virtio-device/net.h"

namespace vmmkit::virtio {

class TapBackend final : public NetBackend {
 public:
  // Opens /dev/net/tun and attaches to (or creates) interface `name` (empty:
  // the kernel picks "tapN"). kNotFound if /dev/net/tun is missing,
  // kPermissionDenied without the right to open it or to create the
  // interface (CAP_NET_ADMIN), kFailedPrecondition if the kernel lacks
  // IFF_VNET_HDR, kInvalidArgument for a name longer than 15 bytes.
  static absl::StatusOr<std::unique_ptr<TapBackend>> Create(
      absl::string_view name);
  ~TapBackend() override;

  TapBackend(const TapBackend&) = delete;
  TapBackend& operator=(const TapBackend&) = delete;

  // The interface name the kernel gave.
  const std::string& name() const { return name_; }
  int fd() const { return fd_; }
  // TUN_F_* flags last given to TUNSETOFFLOAD, and the header size last set.
  unsigned tun_offloads() const { return tun_offloads_; }
  size_t hdr_size() const { return hdr_size_; }

  Features offload_features() const override;
  absl::Status Configure(const Features& features, size_t hdr_size) override;
  absl::Status Send(absl::Span<const iovec> iov) override;
  int rx_fd() const override { return fd_; }
  absl::StatusOr<size_t> Receive(absl::Span<uint8_t> buffer) override;

 private:
  TapBackend(int fd, std::string name) : fd_(fd), name_(std::move(name)) {}

  int fd_;
  std::string name_;
  unsigned tun_offloads_ = 0;
  size_t hdr_size_ = kLegacyNetHdrSize;  // the kernel's default
};

}  // namespace vmmkit::virtio

#endif  // VMMKIT_VIRTIO_DEVICE_TAP_H_
