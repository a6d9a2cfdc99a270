#include "vhost-user/testing/front_end.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_format.h"
#include "base/status.h"

namespace vmmkit::vhost_user::testing {

namespace {

uint64_t Le64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = v << 8 | p[i];
  return v;
}

}  // namespace

absl::Status FakeFrontEnd::MakeMemory() {
  std::vector<virtqueue::GuestMemoryMmap::RegionSpec> specs;
  for (const Region& r : options_.regions) {
    specs.push_back({.guest_base = r.guest_base, .size = r.size});
  }
  VMMKIT_ASSIGN_OR_RETURN(
      memory_, virtqueue::GuestMemoryMmap::Create(specs, {.shared = true}));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<FakeFrontEnd>> FakeFrontEnd::Create(
    Options options) {
  std::unique_ptr<FakeFrontEnd> fe(new FakeFrontEnd(std::move(options)));
  VMMKIT_RETURN_IF_ERROR(fe->MakeMemory());
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    return ErrnoToStatus(errno, "socketpair");
  }
  fe->socket_.reset(sv[0]);
  fe->backend_end_.reset(sv[1]);
  return fe;
}

absl::StatusOr<std::unique_ptr<FakeFrontEnd>> FakeFrontEnd::Connect(
    const std::string& path, Options options) {
  std::unique_ptr<FakeFrontEnd> fe(new FakeFrontEnd(std::move(options)));
  VMMKIT_RETURN_IF_ERROR(fe->MakeMemory());
  ScopedFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return ErrnoToStatus(errno, "socket");
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError("socket path too long");
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  if (connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr),
              sizeof(addr)) != 0) {
    return ErrnoToStatus(errno, "connect " + path);
  }
  fe->socket_ = std::move(fd);
  return fe;
}

std::vector<MemRegion> FakeFrontEnd::MemTable() const {
  std::vector<MemRegion> table;
  uint64_t offset = 0;
  for (const Region& r : options_.regions) {
    table.push_back({.guest_addr = r.guest_base,
                     .size = r.size,
                     .user_addr = UserAddr(r.guest_base),
                     .mmap_offset = offset});
    offset += r.size;
  }
  return table;
}

// ---------------------------------------------------------------------------
// Raw messages.

absl::Status FakeFrontEnd::SendRaw(absl::Span<const uint8_t> bytes,
                                   absl::Span<const int> fds) {
  if (!socket_.valid()) return absl::UnavailableError("not connected");
  iovec iov{const_cast<uint8_t*>(bytes.data()), bytes.size()};
  msghdr mh{};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  std::vector<char> control;
  if (!fds.empty()) {
    control.resize(CMSG_SPACE(sizeof(int) * fds.size()));
    mh.msg_control = control.data();
    mh.msg_controllen = control.size();
    cmsghdr* c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  const ssize_t n = sendmsg(socket_.get(), &mh, MSG_NOSIGNAL);
  if (n < 0) return ErrnoToStatus(errno, "sendmsg");
  if (static_cast<size_t>(n) != bytes.size()) {
    return absl::InternalError("short sendmsg");
  }
  Pump();
  return absl::OkStatus();
}

absl::Status FakeFrontEnd::Send(Request request, uint32_t flags,
                                absl::Span<const uint8_t> payload,
                                absl::Span<const int> fds) {
  return SendRaw(EncodeRequest(static_cast<uint32_t>(request), flags, payload),
                 fds);
}

absl::StatusOr<std::vector<uint8_t>> FakeFrontEnd::ReceiveReply(
    Request request) {
  if (!socket_.valid()) return absl::UnavailableError("not connected");
  auto read_exactly = [&](uint8_t* out, size_t len) -> absl::Status {
    size_t done = 0;
    while (done < len) {
      pollfd p{socket_.get(), POLLIN, 0};
      const int r = poll(&p, 1, options_.timeout_ms);
      if (r == 0) {
        return absl::DeadlineExceededError("no reply from the back end");
      }
      if (r < 0) {
        if (errno == EINTR) continue;
        return ErrnoToStatus(errno, "poll");
      }
      const ssize_t n = recv(socket_.get(), out + done, len - done, 0);
      if (n == 0) {
        return absl::UnavailableError("the back end closed the connection");
      }
      if (n < 0) {
        if (errno == EINTR) continue;
        return ErrnoToStatus(errno, "recv");
      }
      done += static_cast<size_t>(n);
    }
    return absl::OkStatus();
  };
  uint8_t header[kHeaderSize];
  VMMKIT_RETURN_IF_ERROR(read_exactly(header, kHeaderSize));
  const WireHeader h = DecodeHeader(absl::MakeConstSpan(header, kHeaderSize));
  if (h.request != static_cast<uint32_t>(request)) {
    return absl::InternalError(
        absl::StrFormat("reply to %s, expected %s", RequestName(h.request),
                        RequestName(static_cast<uint32_t>(request))));
  }
  if (h.flags != (kVersion1 | kFlagReply)) {
    return absl::InternalError(
        absl::StrFormat("reply flags 0x%x, expected 0x5", h.flags));
  }
  if (h.size > kMaxPayloadSize) {
    return absl::InternalError(absl::StrFormat("reply of %u bytes", h.size));
  }
  std::vector<uint8_t> payload(h.size);
  VMMKIT_RETURN_IF_ERROR(read_exactly(payload.data(), payload.size()));
  return payload;
}

bool FakeFrontEnd::BackEndClosed() {
  Pump();
  if (!socket_.valid()) return true;
  pollfd p{socket_.get(), POLLIN, 0};
  if (poll(&p, 1, 0) <= 0) return false;
  uint8_t byte;
  // 0: an orderly close; ECONNRESET: closed with our bytes still unread.
  const ssize_t n = recv(socket_.get(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  return n == 0 || (n < 0 && errno == ECONNRESET);
}

// ---------------------------------------------------------------------------
// Requests.

absl::Status FakeFrontEnd::Request0(Request request,
                                    absl::Span<const uint8_t> payload,
                                    absl::Span<const int> fds) {
  VMMKIT_RETURN_IF_ERROR(
      Send(request, acks() ? kFlagNeedReply : 0, payload, fds));
  if (!acks()) {
    // Without acks a refused request closes the connection.
    if (BackEndClosed()) {
      return absl::UnavailableError("the back end closed the connection");
    }
    return absl::OkStatus();
  }
  VMMKIT_ASSIGN_OR_RETURN(std::vector<uint8_t> reply, ReceiveReply(request));
  if (reply.size() != 8) {
    return absl::InternalError(
        absl::StrFormat("ack of %u bytes", reply.size()));
  }
  if (const uint64_t v = Le64(reply.data()); v != 0) {
    return absl::AbortedError(absl::StrFormat(
        "%s refused (ack %u)", RequestName(static_cast<uint32_t>(request)), v));
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> FakeFrontEnd::GetU64(Request request) {
  VMMKIT_RETURN_IF_ERROR(Send(request, 0, {}));
  VMMKIT_ASSIGN_OR_RETURN(std::vector<uint8_t> reply, ReceiveReply(request));
  if (reply.size() != 8) {
    return absl::InternalError(absl::StrFormat(
        "%s reply of %u bytes", RequestName(static_cast<uint32_t>(request)),
        reply.size()));
  }
  return Le64(reply.data());
}

absl::StatusOr<uint64_t> FakeFrontEnd::GetFeatures() {
  return GetU64(Request::kGetFeatures);
}
absl::Status FakeFrontEnd::SetFeatures(uint64_t features) {
  return Request0(Request::kSetFeatures, EncodeU64(features));
}
absl::StatusOr<uint64_t> FakeFrontEnd::GetProtocolFeatures() {
  return GetU64(Request::kGetProtocolFeatures);
}
absl::Status FakeFrontEnd::SetProtocolFeatures(uint64_t features) {
  // The ack rule applies from the next request on.
  VMMKIT_RETURN_IF_ERROR(
      Request0(Request::kSetProtocolFeatures, EncodeU64(features)));
  protocol_ = features;
  return absl::OkStatus();
}
absl::StatusOr<uint64_t> FakeFrontEnd::GetQueueNum() {
  return GetU64(Request::kGetQueueNum);
}
absl::Status FakeFrontEnd::SetOwner() {
  return Request0(Request::kSetOwner, {});
}
absl::Status FakeFrontEnd::ResetDevice() {
  return Request0(Request::kResetDevice, {});
}

absl::Status FakeFrontEnd::SetMemTable() {
  const std::vector<MemRegion> table = MemTable();
  std::vector<int> fds(table.size(), memory_->fd());
  return SetMemTable(table, fds);
}
absl::Status FakeFrontEnd::SetMemTable(absl::Span<const MemRegion> regions,
                                       absl::Span<const int> fds) {
  return Request0(Request::kSetMemTable, EncodeMemTable(regions), fds);
}

absl::Status FakeFrontEnd::SetVringNum(uint32_t index, uint32_t num) {
  return Request0(Request::kSetVringNum, EncodeVringState({index, num}));
}
absl::Status FakeFrontEnd::SetVringBase(uint32_t index, uint32_t base) {
  return Request0(Request::kSetVringBase, EncodeVringState({index, base}));
}
absl::Status FakeFrontEnd::SetVringAddr(uint32_t index,
                                        const DriverQueue::Layout& layout) {
  return SetVringAddr({.index = index,
                       .desc = UserAddr(layout.desc),
                       .used = UserAddr(layout.used),
                       .avail = UserAddr(layout.avail)});
}
absl::Status FakeFrontEnd::SetVringAddr(const VringAddr& addr) {
  return Request0(Request::kSetVringAddr, EncodeVringAddr(addr));
}

absl::StatusOr<uint32_t> FakeFrontEnd::GetVringBase(uint32_t index) {
  VMMKIT_RETURN_IF_ERROR(
      Send(Request::kGetVringBase, 0, EncodeVringState({index, 0})));
  VMMKIT_ASSIGN_OR_RETURN(std::vector<uint8_t> reply,
                          ReceiveReply(Request::kGetVringBase));
  if (reply.size() != 8) {
    return absl::InternalError(
        absl::StrFormat("GET_VRING_BASE reply of %u bytes", reply.size()));
  }
  const uint64_t v = Le64(reply.data());
  if (static_cast<uint32_t>(v) != index) {
    return absl::InternalError("GET_VRING_BASE reply for another ring");
  }
  return static_cast<uint32_t>(v >> 32);
}

absl::Status FakeFrontEnd::SetVringFd(Request request, uint32_t index,
                                      std::vector<ScopedFd>& fds) {
  if (fds.size() <= index) fds.resize(index + 1);
  ScopedFd fd(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!fd.valid()) return ErrnoToStatus(errno, "eventfd");
  const int raw = fd.get();
  fds[index] = std::move(fd);
  return Request0(request, EncodeU64(index), absl::MakeConstSpan(&raw, 1));
}
absl::Status FakeFrontEnd::SetVringKick(uint32_t index) {
  return SetVringFd(Request::kSetVringKick, index, kick_);
}
absl::Status FakeFrontEnd::SetVringCall(uint32_t index) {
  return SetVringFd(Request::kSetVringCall, index, call_);
}
absl::Status FakeFrontEnd::SetVringErr(uint32_t index) {
  return SetVringFd(Request::kSetVringErr, index, err_);
}
absl::Status FakeFrontEnd::SetVringEnable(uint32_t index, uint32_t enable) {
  return Request0(Request::kSetVringEnable, EncodeVringState({index, enable}));
}

absl::StatusOr<std::vector<uint8_t>> FakeFrontEnd::GetConfig(uint32_t offset,
                                                             uint32_t size) {
  ConfigAccess c{.offset = offset, .size = size};
  c.data.assign(size, 0);
  VMMKIT_RETURN_IF_ERROR(Send(Request::kGetConfig, 0, EncodeConfig(c)));
  VMMKIT_ASSIGN_OR_RETURN(std::vector<uint8_t> reply,
                          ReceiveReply(Request::kGetConfig));
  if (reply.empty()) {
    return absl::AbortedError("GET_CONFIG refused (empty reply)");
  }
  if (reply.size() != kConfigHeaderSize + size) {
    return absl::InternalError(
        absl::StrFormat("GET_CONFIG reply of %u bytes", reply.size()));
  }
  return std::vector<uint8_t>(reply.begin() + kConfigHeaderSize, reply.end());
}

absl::Status FakeFrontEnd::SetConfig(uint32_t offset,
                                     absl::Span<const uint8_t> data) {
  ConfigAccess c{.offset = offset, .size = static_cast<uint32_t>(data.size())};
  c.data.assign(data.begin(), data.end());
  return Request0(Request::kSetConfig, EncodeConfig(c));
}

// ---------------------------------------------------------------------------
// Sequences.

absl::Status FakeFrontEnd::Init(uint64_t protocol) {
  VMMKIT_ASSIGN_OR_RETURN(uint64_t features, GetFeatures());
  if (!((features >> kFProtocolFeatures) & 1)) {
    return absl::FailedPreconditionError("no VHOST_USER_F_PROTOCOL_FEATURES");
  }
  VMMKIT_ASSIGN_OR_RETURN(uint64_t offered, GetProtocolFeatures());
  VMMKIT_RETURN_IF_ERROR(SetProtocolFeatures(offered & protocol));
  if ((protocol_ >> kProtocolMq) & 1) {
    VMMKIT_RETURN_IF_ERROR(GetQueueNum().status());
  }
  return SetOwner();
}

absl::Status FakeFrontEnd::Start(
    uint64_t features, const std::vector<DriverQueue::Layout>& layouts,
    bool protocol_features_bit) {
  if (protocol_features_bit) features |= uint64_t{1} << kFProtocolFeatures;
  VMMKIT_RETURN_IF_ERROR(SetFeatures(features));
  VMMKIT_RETURN_IF_ERROR(SetMemTable());
  // Legacy rings (no VERSION_1) are in the guest's order: little-endian on
  // the x86 guests these tests model, so DriverQueue's default fits both.
  rings_.clear();
  for (uint32_t i = 0; i < layouts.size(); ++i) {
    rings_.push_back(std::make_unique<DriverQueue>(*memory_, layouts[i]));
    rings_.back()->set_event_idx((features >> 29) & 1);
    VMMKIT_RETURN_IF_ERROR(SetVringNum(i, layouts[i].size));
    VMMKIT_RETURN_IF_ERROR(SetVringBase(i, 0));
    VMMKIT_RETURN_IF_ERROR(SetVringAddr(i, layouts[i]));
    VMMKIT_RETURN_IF_ERROR(SetVringKick(i));
    VMMKIT_RETURN_IF_ERROR(SetVringCall(i));
  }
  if (protocol_features_bit) {
    for (uint32_t i = 0; i < layouts.size(); ++i) {
      VMMKIT_RETURN_IF_ERROR(SetVringEnable(i, 1));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<uint32_t>> FakeFrontEnd::Stop() {
  std::vector<uint32_t> bases;
  for (uint32_t i = 0; i < rings_.size(); ++i) {
    VMMKIT_RETURN_IF_ERROR(SetVringEnable(i, 0));
  }
  for (uint32_t i = 0; i < rings_.size(); ++i) {
    VMMKIT_ASSIGN_OR_RETURN(uint32_t base, GetVringBase(i));
    bases.push_back(base);
  }
  return bases;
}

void FakeFrontEnd::Kick(uint32_t index) {
  const uint64_t one = 1;
  if (index < kick_.size() && kick_[index].valid()) {
    (void)!write(kick_[index].get(), &one, sizeof(one));
  }
}

namespace {
bool ReadEventFd(const std::vector<ScopedFd>& fds, uint32_t index) {
  if (index >= fds.size() || !fds[index].valid()) return false;
  uint64_t v = 0;
  return read(fds[index].get(), &v, sizeof(v)) == sizeof(v) && v > 0;
}
}  // namespace

bool FakeFrontEnd::CallSignalled(uint32_t index) {
  return ReadEventFd(call_, index);
}
bool FakeFrontEnd::WaitCall(uint32_t index) {
  if (index >= call_.size() || !call_[index].valid()) return false;
  pollfd p{call_[index].get(), POLLIN, 0};
  if (poll(&p, 1, options_.timeout_ms) != 1) return false;
  return CallSignalled(index);
}
bool FakeFrontEnd::ErrSignalled(uint32_t index) {
  return ReadEventFd(err_, index);
}

}  // namespace vmmkit::vhost_user::testing
