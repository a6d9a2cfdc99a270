#include "vhost-user/backend.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_format.h"
#include "base/status.h"

namespace vmmkit::vhost_user {

namespace {

constexpr uint64_t kProtocolFeaturesBit = uint64_t{1} << kFProtocolFeatures;
// Messages handled per OnConnectionReadable(), so that a chatty front-end
// cannot starve the rings (the socket stays readable; the poller comes back).
constexpr int kMessagesPerCall = 64;

absl::Status SetNonBlocking(int fd) {
  const int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
    return ErrnoToStatus(errno, "fcntl O_NONBLOCK");
  }
  return absl::OkStatus();
}

// Requests whose answer is a reply of their own (NEED_REPLY adds nothing).
bool HasExplicitReply(uint32_t request) {
  switch (static_cast<Request>(request)) {
    case Request::kGetFeatures:
    case Request::kGetProtocolFeatures:
    case Request::kGetVringBase:
    case Request::kGetQueueNum:
    case Request::kGetConfig:
    case Request::kGetMaxMemSlots:
    case Request::kGetInflightFd:
    case Request::kGetStatus:
      return true;
    default:
      return false;
  }
}

void SignalEventFd(int fd) {
  if (fd < 0) return;
  const uint64_t one = 1;
  // EAGAIN: the counter is saturated, so the peer is signalled already.
  while (write(fd, &one, sizeof(one)) < 0 && errno == EINTR) {
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> Backend::Create(VirtioDevice& device,
                                                         Options options) {
  const size_t n = device.queue_max_sizes().size();
  if (n == 0 || n > kVringIndexMask + 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "a vhost-user device has 1..256 queues, this one has %u", n));
  }
  return std::unique_ptr<Backend>(new Backend(device, std::move(options)));
}

Backend::Backend(VirtioDevice& device, Options options)
    : device_(device),
      options_(std::move(options)),
      offered_((device.offered_features().Low64() & ~kProtocolFeaturesBit) |
               kProtocolFeaturesBit) {
  for (uint16_t max : device_.queue_max_sizes()) rings_.emplace_back(max);
}

Backend::~Backend() {
  if (conn_.valid()) CloseConnection(absl::OkStatus());
  if (listen_fd_.valid() && !listen_path_.empty()) {
    unlink(listen_path_.c_str());
  }
}

// ---------------------------------------------------------------------------
// Sockets.

absl::Status Backend::Listen(const std::string& path) {
  if (path.empty()) return absl::InvalidArgumentError("empty socket path");
  struct stat st;
  if (lstat(path.c_str(), &st) == 0 && !S_ISSOCK(st.st_mode)) {
    return absl::AlreadyExistsError(
        absl::StrFormat("%s exists and is not a socket", path));
  }
  // Bind and listen under a temporary name, then rename: the socket file
  // appears (replacing a stale one atomically) only once connect() works,
  // so a front-end that waits for the file never sees ECONNREFUSED.
  const std::string tmp = absl::StrFormat("%s.%d.tmp", path, getpid());
  sockaddr_un tmp_addr{};
  tmp_addr.sun_family = AF_UNIX;
  if (tmp.size() >= sizeof(tmp_addr.sun_path)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "socket path must be at most %u bytes",
        sizeof(tmp_addr.sun_path) - 1 - (tmp.size() - path.size())));
  }
  std::memcpy(tmp_addr.sun_path, tmp.data(), tmp.size());
  unlink(tmp.c_str());
  ScopedFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return ErrnoToStatus(errno, "socket");
  if (bind(fd.get(), reinterpret_cast<const sockaddr*>(&tmp_addr),
           sizeof(tmp_addr)) != 0) {
    return ErrnoToStatus(errno, "bind " + tmp);
  }
  if (listen(fd.get(), 4) != 0 || rename(tmp.c_str(), path.c_str()) != 0) {
    const absl::Status s = ErrnoToStatus(errno, "listen on " + path);
    unlink(tmp.c_str());
    return s;
  }
  listen_fd_ = std::move(fd);
  listen_path_ = path;
  ++generation_;
  return absl::OkStatus();
}

absl::Status Backend::Attach(ScopedFd connection) {
  if (conn_.valid()) {
    return absl::FailedPreconditionError("a front-end is already connected");
  }
  if (!connection.valid()) {
    return absl::InvalidArgumentError("no connection socket");
  }
  VMMKIT_RETURN_IF_ERROR(SetNonBlocking(connection.get()));
  conn_ = std::move(connection);
  rx_.clear();
  rx_need_ = kHeaderSize;
  rx_have_header_ = false;
  rx_fds_.clear();
  last_error_ = absl::OkStatus();
  ++stats_.connections;
  ++generation_;
  return absl::OkStatus();
}

void Backend::OnListenReadable() {
  if (!listen_fd_.valid() || conn_.valid()) return;
  const int fd =
      accept4(listen_fd_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (fd < 0) {
    if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
      Log(std::string(ErrnoToStatus(errno, "accept").message()));
    }
    return;
  }
  if (absl::Status s = Attach(ScopedFd(fd)); !s.ok()) {
    Log(std::string(s.message()));
    return;
  }
  Log("front-end connected");
}

std::vector<Backend::Watch> Backend::watches() const {
  std::vector<Watch> w;
  if (conn_.valid()) {
    w.push_back({.fd = conn_.get(), .source = Source::kConnection});
    for (uint16_t i = 0; i < rings_.size(); ++i) {
      if (rings_[i].kick.valid()) {
        w.push_back(
            {.fd = rings_[i].kick.get(), .source = Source::kKick, .queue = i});
      }
    }
  } else if (listen_fd_.valid()) {
    w.push_back({.fd = listen_fd_.get(), .source = Source::kListen});
  }
  for (int fd : device_.backend_fds()) {
    w.push_back({.fd = fd, .source = Source::kDevice, .edge_triggered = true});
  }
  return w;
}

void Backend::OnReady(const Watch& watch) {
  switch (watch.source) {
    case Source::kListen:
      OnListenReadable();
      return;
    case Source::kConnection:
      OnConnectionReadable();
      return;
    case Source::kKick:
      OnKick(watch.queue);
      return;
    case Source::kDevice:
      OnDeviceReadable();
      return;
  }
}

void Backend::OnConnectionReadable() {
  for (int handled = 0; conn_.valid() && handled < kMessagesPerCall;) {
    rx_.resize(rx_need_);
    iovec iov{};
    iov.iov_base = rx_.data() + rx_received_;
    iov.iov_len = rx_need_ - rx_received_;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
    msghdr mh{};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = control;
    mh.msg_controllen = sizeof(control);
    const ssize_t n =
        recvmsg(conn_.get(), &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      CloseConnection(ErrnoToStatus(errno, "vhost-user socket"));
      return;
    }
    for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c != nullptr;
         c = CMSG_NXTHDR(&mh, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        rx_fds_.emplace_back(fd);
      }
    }
    if ((mh.msg_flags & MSG_CTRUNC) || rx_fds_.size() > kMaxFds) {
      CloseConnection(absl::InvalidArgumentError(absl::StrFormat(
          "vhost-user front-end sent more than %u fds with one message",
          kMaxFds)));
      return;
    }
    if (n == 0) {
      CloseConnection(rx_received_ == 0 && rx_fds_.empty()
                          ? absl::OkStatus()
                          : absl::DataLossError(
                                "vhost-user front-end closed the connection "
                                "in the middle of a message"));
      return;
    }
    rx_received_ += static_cast<size_t>(n);
    if (rx_received_ < rx_need_) continue;
    if (!rx_have_header_) {
      const WireHeader h = DecodeHeader(rx_);
      if (h.size > kMaxPayloadSize) {
        CloseConnection(absl::InvalidArgumentError(
            absl::StrFormat("vhost-user %s: payload of %u bytes exceeds %u",
                            RequestName(h.request), h.size, kMaxPayloadSize)));
        return;
      }
      rx_have_header_ = true;
      rx_need_ = kHeaderSize + h.size;
      if (rx_received_ < rx_need_) continue;
    }
    HandleMessage();
    ++handled;
  }
}

void Backend::HandleMessage() {
  std::vector<uint8_t> bytes = std::move(rx_);
  bytes.resize(rx_need_);
  std::vector<ScopedFd> fds = std::move(rx_fds_);
  rx_.clear();
  rx_fds_.clear();
  rx_need_ = kHeaderSize;
  rx_received_ = 0;
  rx_have_header_ = false;
  ++stats_.messages;

  const WireHeader h = DecodeHeader(bytes);
  absl::StatusOr<Message> msg = DecodeMessage(bytes, std::move(fds));
  Reply reply;
  absl::Status s = msg.ok() ? Handle(*msg, reply) : msg.status();
  if (!conn_.valid()) return;
  const bool ack = (protocol_features_ & (uint64_t{1} << kProtocolReplyAck)) &&
                   (h.flags & kFlagNeedReply) && !HasExplicitReply(h.request);
  if (s.ok()) {
    if (reply.send) {
      s = SendReply(reply.bytes);
    } else if (ack) {
      s = SendReply(EncodeReplyU64(h.request, 0));
    }
    if (!s.ok()) CloseConnection(s);
    return;
  }
  ++stats_.refused;
  Log(std::string(s.message()));
  last_error_ = s;
  absl::Status sent = absl::UnknownError("not answered");
  if (static_cast<Request>(h.request) == Request::kGetConfig) {
    // QEMU takes a reply of the wrong size as the failure it is.
    sent = SendReply(EncodeReply(h.request, {}));
  } else if (ack) {
    sent = SendReply(EncodeReplyU64(h.request, 1));
  }
  if (!sent.ok()) CloseConnection(s);
}

absl::Status Backend::SendReply(absl::Span<const uint8_t> bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = send(conn_.get(), bytes.data() + done,
                           bytes.size() - done, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      // EAGAIN: the front-end does not read its replies; give up on it.
      return ErrnoToStatus(errno, "vhost-user reply");
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

void Backend::Disconnect(const absl::Status& why) {
  if (conn_.valid()) CloseConnection(why);
}

void Backend::CloseConnection(const absl::Status& why) {
  ResetState();
  if (absl::Status s = device_.Flush(); !s.ok()) {
    Log(absl::StrFormat("flush on disconnect: %s", s.message()));
  }
  conn_.reset();
  rx_.clear();
  rx_fds_.clear();
  rx_need_ = kHeaderSize;
  rx_received_ = 0;
  rx_have_header_ = false;
  owner_ = false;
  protocol_features_ = 0;
  if (!why.ok()) last_error_ = why;
  ++stats_.disconnects;
  ++generation_;
  Log(why.ok() ? std::string("front-end disconnected")
               : absl::StrFormat("connection closed: %s", why.message()));
}

// ---------------------------------------------------------------------------
// Requests.

absl::StatusOr<Backend::Ring*> Backend::RingAt(uint32_t index) {
  if (index >= rings_.size()) {
    return absl::OutOfRangeError(absl::StrFormat(
        "vring index %u out of range (%u queues)", index, rings_.size()));
  }
  return &rings_[index];
}

absl::Status Backend::CheckRingStopped(uint32_t index) const {
  if (rings_[index].started) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "vring %u is running (stop it with GET_VRING_BASE)", index));
  }
  return absl::OkStatus();
}

absl::Status Backend::Handle(Message& msg, Reply& reply) {
  const uint32_t req = msg.request;
  auto answer = [&](std::vector<uint8_t> bytes) {
    reply.send = true;
    reply.bytes = std::move(bytes);
  };
  switch (msg.type()) {
    case Request::kGetFeatures:
      answer(EncodeReplyU64(req, offered_));
      return absl::OkStatus();
    case Request::kSetFeatures:
      return SetFeatures(msg.u64);
    case Request::kSetOwner:
      owner_ = true;
      return absl::OkStatus();
    case Request::kResetOwner:
    case Request::kResetDevice:
      ResetState();
      return absl::OkStatus();
    case Request::kGetProtocolFeatures:
      answer(EncodeReplyU64(req, kSupportedProtocolFeatures));
      return absl::OkStatus();
    case Request::kSetProtocolFeatures:
      if (msg.u64 & ~kSupportedProtocolFeatures) {
        return absl::InvalidArgumentError(
            absl::StrFormat("SET_PROTOCOL_FEATURES 0x%x: not offered: 0x%x",
                            msg.u64, msg.u64 & ~kSupportedProtocolFeatures));
      }
      protocol_features_ = msg.u64;
      return absl::OkStatus();
    case Request::kGetQueueNum:
      answer(EncodeReplyU64(req, rings_.size()));
      return absl::OkStatus();
    case Request::kSetMemTable:
      return SetMemTable(msg);

    case Request::kSetVringNum: {
      VMMKIT_ASSIGN_OR_RETURN(Ring * ring, RingAt(msg.state.index));
      VMMKIT_RETURN_IF_ERROR(CheckRingStopped(msg.state.index));
      const uint32_t num = msg.state.num;
      const uint32_t max = ring->queue.max_size();
      if (num == 0 || (num & (num - 1)) != 0 || num > max) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "SET_VRING_NUM %u for vring %u: not a power of two in 1..%u", num,
            msg.state.index, max));
      }
      ring->num = static_cast<uint16_t>(num);
      return MaybeStart(static_cast<uint16_t>(msg.state.index));
    }
    case Request::kSetVringBase: {
      VMMKIT_ASSIGN_OR_RETURN(Ring * ring, RingAt(msg.state.index));
      VMMKIT_RETURN_IF_ERROR(CheckRingStopped(msg.state.index));
      if (msg.state.num > 0xffff) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "SET_VRING_BASE 0x%x for vring %u: a split ring index is 16 bits",
            msg.state.num, msg.state.index));
      }
      ring->base = static_cast<uint16_t>(msg.state.num);
      return absl::OkStatus();
    }
    case Request::kSetVringAddr: {
      VMMKIT_ASSIGN_OR_RETURN(Ring * ring, RingAt(msg.addr.index));
      VMMKIT_RETURN_IF_ERROR(CheckRingStopped(msg.addr.index));
      if (memory_ == nullptr) {
        return absl::FailedPreconditionError(
            "SET_VRING_ADDR before SET_MEM_TABLE");
      }
      if (msg.addr.flags & ~kVringFLog) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "SET_VRING_ADDR: unknown flags 0x%x", msg.addr.flags));
      }
      if (msg.addr.flags & kVringFLog) {
        return absl::UnimplementedError(
            "SET_VRING_ADDR: dirty logging is not supported");
      }
      for (uint64_t a : {msg.addr.desc, msg.addr.avail, msg.addr.used}) {
        if (absl::Status s = memory_->UserToGuest(a).status(); !s.ok()) {
          return Annotate(
              s, absl::StrFormat("SET_VRING_ADDR vring %u", msg.addr.index));
        }
      }
      ring->addr = msg.addr;
      ring->addr_set = true;
      return MaybeStart(static_cast<uint16_t>(msg.addr.index));
    }
    case Request::kGetVringBase: {
      VMMKIT_ASSIGN_OR_RETURN(Ring * ring, RingAt(msg.state.index));
      const uint16_t index = static_cast<uint16_t>(msg.state.index);
      StopRing(index);
      answer(EncodeReplyVringState(req, {.index = index, .num = ring->base}));
      return absl::OkStatus();
    }
    case Request::kSetVringKick:
    case Request::kSetVringCall:
    case Request::kSetVringErr:
      return SetVringFd(msg);
    case Request::kSetVringEnable: {
      VMMKIT_ASSIGN_OR_RETURN(Ring * ring, RingAt(msg.state.index));
      if (msg.state.num > 1) {
        return absl::InvalidArgumentError(
            absl::StrFormat("SET_VRING_ENABLE %u for vring %u", msg.state.num,
                            msg.state.index));
      }
      const uint16_t index = static_cast<uint16_t>(msg.state.index);
      const bool was = ring->started && RingEnabled(*ring);
      ring->enable_flag = msg.state.num == 1;
      if (!ring->started) return MaybeStart(index);
      // A started ring enabled again picks up what it missed meanwhile.
      if (!was && RingEnabled(*ring)) Process(index);
      return absl::OkStatus();
    }
    case Request::kGetConfig:
      return GetConfig(msg, reply);
    case Request::kSetConfig:
      return SetConfig(msg);
    default:
      return absl::UnimplementedError(
          absl::StrFormat("vhost-user request %u (%s) is not supported", req,
                          RequestName(req)));
  }
}

absl::Status Backend::SetFeatures(uint64_t value) {
  const uint64_t device_bits = value & ~kProtocolFeaturesBit;
  if (device_bits & ~offered_) {
    return absl::InvalidArgumentError(
        absl::StrFormat("SET_FEATURES 0x%x: not offered: 0x%x", value,
                        device_bits & ~offered_));
  }
  Features f = Features::FromU64(device_bits);
  // A legacy driver sees only the low 32 feature bits.
  if (!f.Has(virtio::kFVersion1)) f = f & Features::FromU64(0xffffffffu);
  for (const Ring& r : rings_) {
    if (r.started) {
      if (value == acked_) return absl::OkStatus();
      return absl::FailedPreconditionError(
          "SET_FEATURES changes features while vrings are running");
    }
  }
  VMMKIT_RETURN_IF_ERROR(
      Annotate(device_.AcceptFeatures(f), "SET_FEATURES refused by device"));
  acked_ = value;
  features_ = f;
  for (uint16_t i = 0; i < rings_.size(); ++i) {
    VMMKIT_RETURN_IF_ERROR(MaybeStart(i));
  }
  return absl::OkStatus();
}

absl::Status Backend::SetMemTable(Message& msg) {
  for (const Ring& r : rings_) {
    if (!r.started) continue;
    // Devices hold chains (and their addresses) into the current mapping.
    if (memory_ != nullptr && memory_->table() == msg.regions) {
      return absl::OkStatus();  // the same table again: nothing changes
    }
    return absl::FailedPreconditionError(
        "SET_MEM_TABLE while vrings are running");
  }
  VMMKIT_ASSIGN_OR_RETURN(std::unique_ptr<VhostUserMemory> mem,
                          VhostUserMemory::Map(msg.regions, msg.fds));
  // Ring addresses set before are translated again when their rings start.
  memory_ = std::move(mem);
  return absl::OkStatus();
}

absl::Status Backend::SetVringFd(Message& msg) {
  const uint32_t index = msg.vring_index();
  VMMKIT_ASSIGN_OR_RETURN(Ring * ring, RingAt(index));
  ScopedFd fd;
  if (!msg.vring_no_fd()) {
    fd = std::move(msg.fds[0]);
    VMMKIT_RETURN_IF_ERROR(SetNonBlocking(fd.get()));
  }
  switch (msg.type()) {
    case Request::kSetVringKick:
      if (!fd.valid()) {
        return absl::UnimplementedError(absl::StrFormat(
            "SET_VRING_KICK vring %u without fd: polling rings are not "
            "supported",
            index));
      }
      ring->kick = std::move(fd);
      ++generation_;
      return MaybeStart(static_cast<uint16_t>(index));
    case Request::kSetVringCall:
      ring->call = std::move(fd);
      return absl::OkStatus();
    default:
      ring->err = std::move(fd);
      return absl::OkStatus();
  }
}

absl::Status Backend::GetConfig(const Message& msg, Reply& reply) {
  const ConfigAccess& c = msg.config;
  const uint64_t size = device_.config_size();
  if (uint64_t{c.offset} + c.size > size) {
    return absl::OutOfRangeError(absl::StrFormat(
        "GET_CONFIG [%u, +%u) beyond the %u-byte device configuration",
        c.offset, c.size, size));
  }
  ConfigAccess out{.offset = c.offset, .size = c.size, .flags = c.flags};
  out.data.assign(c.size, 0);
  if (c.size > 0) {
    device_.ReadConfig(c.offset, absl::MakeSpan(out.data), ring_endian());
  }
  reply.send = true;
  reply.bytes = EncodeReply(msg.request, EncodeConfig(out));
  return absl::OkStatus();
}

absl::Status Backend::SetConfig(const Message& msg) {
  const ConfigAccess& c = msg.config;
  const uint64_t size = device_.config_size();
  if (uint64_t{c.offset} + c.size > size) {
    return absl::OutOfRangeError(absl::StrFormat(
        "SET_CONFIG [%u, +%u) beyond the %u-byte device configuration",
        c.offset, c.size, size));
  }
  // flags: 0 written by the front-end's driver, 1 during migration.
  if (c.flags > 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("SET_CONFIG flags 0x%x", c.flags));
  }
  if (c.size > 0) {
    device_.WriteConfig(c.offset, absl::MakeConstSpan(c.data), ring_endian());
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// Rings.

bool Backend::RingEnabled(const Ring& ring) const {
  // Without VHOST_USER_F_PROTOCOL_FEATURES a ring is enabled from the
  // start; with it, by SET_VRING_ENABLE 1.
  return !(acked_ & kProtocolFeaturesBit) || ring.enable_flag;
}

absl::Status Backend::MaybeStart(uint16_t index) {
  Ring& ring = rings_[index];
  auto configured = [this](const Ring& r) {
    return memory_ != nullptr && r.num != 0 && r.addr_set && r.kick.valid();
  };
  if (!ring.started) {
    if (!configured(ring) || !RingEnabled(ring)) return absl::OkStatus();
    VMMKIT_RETURN_IF_ERROR(StartRing(index));
  }
  if (needs_reset_) return absl::OkStatus();
  if (device_active_) {
    Process(index);
    return absl::OkStatus();
  }
  // Activate once every ring the front-end configured has started, so that
  // the device sees all of them at once (virtio-net's pair, for example).
  for (const Ring& r : rings_) {
    if (configured(r) && !(r.started && RingEnabled(r))) {
      return absl::OkStatus();
    }
  }
  device_active_ = true;
  if (absl::Status s = device_.Activate(*this); !s.ok()) {
    device_active_ = false;
    device_.Reset();
    return Annotate(s, "device activation");
  }
  ++stats_.activations;
  for (uint16_t i = 0; i < rings_.size(); ++i) {
    if (rings_[i].started && RingEnabled(rings_[i])) Process(i);
  }
  return absl::OkStatus();
}

absl::Status Backend::StartRing(uint16_t index) {
  Ring& ring = rings_[index];
  const std::string what = absl::StrFormat("vring %u", index);
  VMMKIT_ASSIGN_OR_RETURN(uint64_t desc, memory_->UserToGuest(ring.addr.desc));
  VMMKIT_ASSIGN_OR_RETURN(uint64_t avail,
                          memory_->UserToGuest(ring.addr.avail));
  VMMKIT_ASSIGN_OR_RETURN(uint64_t used, memory_->UserToGuest(ring.addr.used));
  SplitQueue& q = ring.queue;
  q.Reset();
  q.set_size(ring.num);
  q.set_desc_table(desc);
  q.set_avail_ring(avail);
  q.set_used_ring(used);
  q.set_event_idx(features_.Has(virtio::kFEventIdx));
  q.set_indirect_allowed(features_.Has(virtio::kFIndirectDesc));
  q.set_endian(ring_endian());
  q.set_next_avail(ring.base);
  if (absl::Status s = q.Activate(*memory_); !s.ok()) {
    q.Reset();
    return Annotate(s, what);
  }
  // The used index continues from what the ring holds (a ring restarted
  // after GET_VRING_BASE, or taken over from another back end).
  absl::StatusOr<uint16_t> used_idx =
      memory_->LoadAcquire16(used + virtqueue::kRingIdxOffset);
  if (!used_idx.ok()) {
    q.Reset();
    return Annotate(used_idx.status(), what);
  }
  q.set_next_used(ring_endian() == Endian::kBig ? __builtin_bswap16(*used_idx)
                                                : *used_idx);
  ring.started = true;
  return absl::OkStatus();
}

void Backend::Process(uint16_t index) {
  Ring& ring = rings_[index];
  if (!device_active_ || needs_reset_ || !ring.started || !RingEnabled(ring)) {
    return;
  }
  device_.ProcessQueue(index);
  // A ring the driver broke cannot be served any more.
  if (ring.started && ring.queue.broken()) {
    MarkNeedsReset(
        Annotate(ring.queue.status(), absl::StrFormat("vring %u", index)));
  }
}

void Backend::StopRing(uint16_t index) {
  Ring& ring = rings_[index];
  if (!ring.started) return;
  ring.base = ring.queue.next_avail();
  ring.started = false;
  // A stopped ring starts again on a new SET_VRING_KICK only (vhost-user.rst,
  // "Ring states"): otherwise the SET_VRING_NUM or SET_FEATURES that begins
  // a restart would restart it on its old base and refuse the new one.
  ring.kick.reset();
  ++generation_;
  bool any = false;
  for (const Ring& r : rings_) any = any || r.started;
  if (!any && device_active_) {
    device_active_ = false;
    needs_reset_ = false;
    device_.Reset();
    if (absl::Status s = device_.Flush(); !s.ok()) {
      Log(absl::StrFormat("flush on stop: %s", s.message()));
    }
  }
  ring.queue.Reset();
}

void Backend::StopAll() {
  for (uint16_t i = 0; i < rings_.size(); ++i) StopRing(i);
}

void Backend::ResetState() {
  StopAll();
  if (device_active_) {
    device_active_ = false;
    device_.Reset();
  }
  // The device also forgets what AcceptFeatures() told it.
  device_.Reset();
  needs_reset_ = false;
  rings_.clear();
  for (uint16_t max : device_.queue_max_sizes()) rings_.emplace_back(max);
  memory_.reset();
  acked_ = 0;
  features_ = Features();
  ++generation_;
}

void Backend::OnKick(uint16_t index) {
  if (index >= rings_.size() || !rings_[index].kick.valid()) return;
  Ring& ring = rings_[index];
  // One read drains an eventfd (it returns and clears the whole counter);
  // reading again for EAGAIN would cost a syscall per kick. Whatever else a
  // front-end passed (a pipe holding more bytes) stays readable and comes
  // back next round: bounded work per call either way.
  uint64_t value;
  ssize_t n;
  do {
    n = read(ring.kick.get(), &value, sizeof(value));
  } while (n < 0 && errno == EINTR);
  if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
    // End of file or an error: this fd will never work as a kick.
    Log(absl::StrFormat("vring %u: kick fd unusable; dropped", index));
    ring.kick.reset();
    ++generation_;
  }
  if (device_active_ && !needs_reset_ && ring.started && RingEnabled(ring)) {
    ++stats_.kicks;
    Process(index);
  } else {
    ++stats_.ignored_kicks;
  }
}

void Backend::OnDeviceReadable() {
  if (device_active_ && !needs_reset_) device_.ProcessBackend();
}

// ---------------------------------------------------------------------------
// DeviceContext.

SplitQueue* Backend::queue(uint16_t index) {
  if (!device_active_ || index >= rings_.size()) return nullptr;
  Ring& ring = rings_[index];
  if (!ring.started || !RingEnabled(ring)) return nullptr;
  return &ring.queue;
}

void Backend::NotifyUsed(uint16_t index) {
  SplitQueue* q = queue(index);
  if (q == nullptr) return;
  if (!q->NeedsNotification()) {
    ++stats_.suppressed_calls;
    return;
  }
  ++stats_.calls;
  SignalEventFd(rings_[index].call.get());
}

void Backend::NotifyConfigChange() {
  // Needs the back-end request channel (BACKEND_REQ), which is not offered.
  ++stats_.config_changes;
}

void Backend::MarkNeedsReset(const absl::Status& why) {
  if (needs_reset_) return;
  needs_reset_ = true;
  last_error_ = why;
  Log(absl::StrFormat("device needs reset: %s", why.message()));
  for (const Ring& r : rings_) SignalEventFd(r.err.get());
}

}  // namespace vmmkit::vhost_user
