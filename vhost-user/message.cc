#include "vhost-user/message.h"

#include <cstring>

#include "absl/strings/str_format.h"

namespace vmmkit::vhost_user {

namespace {

// Little-endian loads and stores, independent of the host's order.
uint32_t Le32(const uint8_t* p) {
  return uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 |
         uint32_t{p[3]} << 24;
}
uint64_t Le64(const uint8_t* p) {
  return uint64_t{Le32(p)} | uint64_t{Le32(p + 4)} << 32;
}
void Put32(std::vector<uint8_t>& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
void Put64(std::vector<uint8_t>& out, uint64_t v) {
  Put32(out, static_cast<uint32_t>(v));
  Put32(out, static_cast<uint32_t>(v >> 32));
}

absl::Status Malformed(uint32_t request, absl::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrFormat("vhost-user %s: %s", RequestName(request), what));
}

absl::Status ExpectSize(uint32_t request, size_t size, size_t expected) {
  if (size == expected) return absl::OkStatus();
  return Malformed(request, absl::StrFormat("payload is %u bytes, expected %u",
                                            size, expected));
}

absl::Status ExpectFds(uint32_t request, size_t count, size_t expected) {
  if (count == expected) return absl::OkStatus();
  return Malformed(request, absl::StrFormat("%u file descriptors, expected %u",
                                            count, expected));
}

}  // namespace

const char* RequestName(uint32_t request) {
  switch (static_cast<Request>(request)) {
    case Request::kGetFeatures:
      return "GET_FEATURES";
    case Request::kSetFeatures:
      return "SET_FEATURES";
    case Request::kSetOwner:
      return "SET_OWNER";
    case Request::kResetOwner:
      return "RESET_OWNER";
    case Request::kSetMemTable:
      return "SET_MEM_TABLE";
    case Request::kSetLogBase:
      return "SET_LOG_BASE";
    case Request::kSetLogFd:
      return "SET_LOG_FD";
    case Request::kSetVringNum:
      return "SET_VRING_NUM";
    case Request::kSetVringAddr:
      return "SET_VRING_ADDR";
    case Request::kSetVringBase:
      return "SET_VRING_BASE";
    case Request::kGetVringBase:
      return "GET_VRING_BASE";
    case Request::kSetVringKick:
      return "SET_VRING_KICK";
    case Request::kSetVringCall:
      return "SET_VRING_CALL";
    case Request::kSetVringErr:
      return "SET_VRING_ERR";
    case Request::kGetProtocolFeatures:
      return "GET_PROTOCOL_FEATURES";
    case Request::kSetProtocolFeatures:
      return "SET_PROTOCOL_FEATURES";
    case Request::kGetQueueNum:
      return "GET_QUEUE_NUM";
    case Request::kSetVringEnable:
      return "SET_VRING_ENABLE";
    case Request::kSendRarp:
      return "SEND_RARP";
    case Request::kNetSetMtu:
      return "NET_SET_MTU";
    case Request::kSetBackendReqFd:
      return "SET_BACKEND_REQ_FD";
    case Request::kIotlbMsg:
      return "IOTLB_MSG";
    case Request::kSetVringEndian:
      return "SET_VRING_ENDIAN";
    case Request::kGetConfig:
      return "GET_CONFIG";
    case Request::kSetConfig:
      return "SET_CONFIG";
    case Request::kCreateCryptoSession:
      return "CREATE_CRYPTO_SESSION";
    case Request::kCloseCryptoSession:
      return "CLOSE_CRYPTO_SESSION";
    case Request::kPostcopyAdvise:
      return "POSTCOPY_ADVISE";
    case Request::kPostcopyListen:
      return "POSTCOPY_LISTEN";
    case Request::kPostcopyEnd:
      return "POSTCOPY_END";
    case Request::kGetInflightFd:
      return "GET_INFLIGHT_FD";
    case Request::kSetInflightFd:
      return "SET_INFLIGHT_FD";
    case Request::kGpuSetSocket:
      return "GPU_SET_SOCKET";
    case Request::kResetDevice:
      return "RESET_DEVICE";
    case Request::kVringKick:
      return "VRING_KICK";
    case Request::kGetMaxMemSlots:
      return "GET_MAX_MEM_SLOTS";
    case Request::kAddMemReg:
      return "ADD_MEM_REG";
    case Request::kRemMemReg:
      return "REM_MEM_REG";
    case Request::kSetStatus:
      return "SET_STATUS";
    case Request::kGetStatus:
      return "GET_STATUS";
  }
  return "unknown request";
}

WireHeader DecodeHeader(absl::Span<const uint8_t> bytes) {
  WireHeader h{};
  if (bytes.size() < kHeaderSize) return h;
  h.request = Le32(bytes.data());
  h.flags = Le32(bytes.data() + 4);
  h.size = Le32(bytes.data() + 8);
  return h;
}

absl::StatusOr<Message> DecodeMessage(absl::Span<const uint8_t> bytes,
                                      std::vector<ScopedFd> fds) {
  // `fds` is ours: whatever is not moved into the message is closed when it
  // goes out of scope, on every return path.
  if (bytes.size() < kHeaderSize) {
    return absl::InvalidArgumentError("vhost-user message shorter than header");
  }
  const WireHeader h = DecodeHeader(bytes);
  const uint32_t req = h.request;
  if ((h.flags & kVersionMask) != kVersion1) {
    return Malformed(
        req, absl::StrFormat("version %u, expected 1", h.flags & kVersionMask));
  }
  if (h.flags & kFlagReply) return Malformed(req, "REPLY flag on a request");
  if (h.flags & ~(kVersionMask | kFlagReply | kFlagNeedReply)) {
    return Malformed(req, absl::StrFormat("reserved flags 0x%x", h.flags));
  }
  if (h.size > kMaxPayloadSize) {
    return Malformed(req, absl::StrFormat("payload of %u bytes exceeds %u",
                                          h.size, kMaxPayloadSize));
  }
  if (bytes.size() != kHeaderSize + size_t{h.size}) {
    return Malformed(req, absl::StrFormat("%u bytes for a %u-byte payload",
                                          bytes.size() - kHeaderSize, h.size));
  }
  if (fds.size() > kMaxFds) {
    return Malformed(req, absl::StrFormat("%u file descriptors", fds.size()));
  }
  const uint8_t* p = bytes.data() + kHeaderSize;
  const size_t size = h.size;

  Message m;
  m.request = req;
  m.flags = h.flags;
  switch (static_cast<Request>(req)) {
    case Request::kGetFeatures:
    case Request::kSetOwner:
    case Request::kResetOwner:
    case Request::kGetProtocolFeatures:
    case Request::kGetQueueNum:
    case Request::kResetDevice:
      if (absl::Status s = ExpectSize(req, size, 0); !s.ok()) return s;
      if (absl::Status s = ExpectFds(req, fds.size(), 0); !s.ok()) return s;
      return m;

    case Request::kSetFeatures:
    case Request::kSetProtocolFeatures:
      if (absl::Status s = ExpectSize(req, size, 8); !s.ok()) return s;
      if (absl::Status s = ExpectFds(req, fds.size(), 0); !s.ok()) return s;
      m.u64 = Le64(p);
      return m;

    case Request::kSetVringNum:
    case Request::kSetVringBase:
    case Request::kGetVringBase:
    case Request::kSetVringEnable:
      if (absl::Status s = ExpectSize(req, size, sizeof(WireVringState));
          !s.ok()) {
        return s;
      }
      if (absl::Status s = ExpectFds(req, fds.size(), 0); !s.ok()) return s;
      m.state.index = Le32(p);
      m.state.num = Le32(p + 4);
      return m;

    case Request::kSetVringAddr:
      if (absl::Status s = ExpectSize(req, size, sizeof(WireVringAddr));
          !s.ok()) {
        return s;
      }
      if (absl::Status s = ExpectFds(req, fds.size(), 0); !s.ok()) return s;
      m.addr.index = Le32(p + offsetof(WireVringAddr, index));
      m.addr.flags = Le32(p + offsetof(WireVringAddr, flags));
      m.addr.desc = Le64(p + offsetof(WireVringAddr, desc_user_addr));
      m.addr.used = Le64(p + offsetof(WireVringAddr, used_user_addr));
      m.addr.avail = Le64(p + offsetof(WireVringAddr, avail_user_addr));
      m.addr.log = Le64(p + offsetof(WireVringAddr, log_guest_addr));
      return m;

    case Request::kSetVringKick:
    case Request::kSetVringCall:
    case Request::kSetVringErr: {
      if (absl::Status s = ExpectSize(req, size, 8); !s.ok()) return s;
      m.u64 = Le64(p);
      if (m.u64 & ~(kVringIndexMask | kVringNoFd)) {
        return Malformed(req, absl::StrFormat("reserved bits in 0x%x", m.u64));
      }
      if (absl::Status s = ExpectFds(req, fds.size(), m.vring_no_fd() ? 0 : 1);
          !s.ok()) {
        return s;
      }
      m.fds = std::move(fds);
      return m;
    }

    case Request::kSetMemTable: {
      if (size < kMemTableHeaderSize) {
        return Malformed(req, "payload shorter than the region count");
      }
      const uint32_t n = Le32(p);
      // The padding word is ignored, as every front-end leaves it undefined.
      if (n == 0 || n > kMaxMemRegions) {
        return Malformed(req, absl::StrFormat("%u regions (1..%u allowed)", n,
                                              kMaxMemRegions));
      }
      if (absl::Status s = ExpectSize(
              req, size, kMemTableHeaderSize + n * sizeof(WireMemRegion));
          !s.ok()) {
        return s;
      }
      if (absl::Status s = ExpectFds(req, fds.size(), n); !s.ok()) return s;
      for (uint32_t i = 0; i < n; ++i) {
        const uint8_t* r = p + kMemTableHeaderSize + i * sizeof(WireMemRegion);
        m.regions.push_back(MemRegion{
            .guest_addr = Le64(r + offsetof(WireMemRegion, guest_phys_addr)),
            .size = Le64(r + offsetof(WireMemRegion, memory_size)),
            .user_addr = Le64(r + offsetof(WireMemRegion, userspace_addr)),
            .mmap_offset = Le64(r + offsetof(WireMemRegion, mmap_offset))});
      }
      m.fds = std::move(fds);
      return m;
    }

    case Request::kGetConfig:
    case Request::kSetConfig: {
      if (size < kConfigHeaderSize) {
        return Malformed(req, "payload shorter than the config header");
      }
      m.config.offset = Le32(p);
      m.config.size = Le32(p + 4);
      m.config.flags = Le32(p + 8);
      if (m.config.size > kMaxConfigSize) {
        return Malformed(req, absl::StrFormat("config size %u exceeds %u",
                                              m.config.size, kMaxConfigSize));
      }
      if (absl::Status s =
              ExpectSize(req, size, kConfigHeaderSize + m.config.size);
          !s.ok()) {
        return s;
      }
      if (absl::Status s = ExpectFds(req, fds.size(), 0); !s.ok()) return s;
      m.config.data.assign(p + kConfigHeaderSize,
                           p + kConfigHeaderSize + m.config.size);
      return m;
    }

    default:
      return absl::UnimplementedError(
          absl::StrFormat("vhost-user request %u (%s) is not supported", req,
                          RequestName(req)));
  }
}

std::vector<uint8_t> EncodeRequest(uint32_t request, uint32_t flags,
                                   absl::Span<const uint8_t> payload) {
  std::vector<uint8_t> out;
  out.reserve(kHeaderSize + payload.size());
  Put32(out, request);
  Put32(out, flags | kVersion1);
  Put32(out, static_cast<uint32_t>(payload.size()));
  out.insert(out.end(), payload.begin(), payload.end());
  return out;
}

std::vector<uint8_t> EncodeReply(uint32_t request,
                                 absl::Span<const uint8_t> payload) {
  return EncodeRequest(request, kVersion1 | kFlagReply, payload);
}

std::vector<uint8_t> EncodeU64(uint64_t value) {
  std::vector<uint8_t> out;
  Put64(out, value);
  return out;
}

std::vector<uint8_t> EncodeReplyU64(uint32_t request, uint64_t value) {
  return EncodeReply(request, EncodeU64(value));
}

std::vector<uint8_t> EncodeVringState(const VringState& state) {
  std::vector<uint8_t> out;
  Put32(out, state.index);
  Put32(out, state.num);
  return out;
}

std::vector<uint8_t> EncodeReplyVringState(uint32_t request,
                                           const VringState& state) {
  return EncodeReply(request, EncodeVringState(state));
}

std::vector<uint8_t> EncodeVringAddr(const VringAddr& addr) {
  std::vector<uint8_t> out;
  Put32(out, addr.index);
  Put32(out, addr.flags);
  Put64(out, addr.desc);
  Put64(out, addr.used);
  Put64(out, addr.avail);
  Put64(out, addr.log);
  return out;
}

std::vector<uint8_t> EncodeMemTable(absl::Span<const MemRegion> regions) {
  std::vector<uint8_t> out;
  Put32(out, static_cast<uint32_t>(regions.size()));
  Put32(out, 0);
  for (const MemRegion& r : regions) {
    Put64(out, r.guest_addr);
    Put64(out, r.size);
    Put64(out, r.user_addr);
    Put64(out, r.mmap_offset);
  }
  return out;
}

std::vector<uint8_t> EncodeConfig(const ConfigAccess& config) {
  std::vector<uint8_t> out;
  Put32(out, config.offset);
  Put32(out, config.size);
  Put32(out, config.flags);
  out.insert(out.end(), config.data.begin(), config.data.end());
  return out;
}

}  // namespace vmmkit::vhost_user
