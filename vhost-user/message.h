// vhost-user/message.h: the vhost-user wire format (QEMU
// docs/interop/vhost-user.rst) and a pure decoder for it.
//
// A message is a 12-byte header {u32 request, u32 flags, u32 size} followed by
// `size` payload bytes, all little-endian, with file descriptors passed
// alongside as SCM_RIGHTS ancillary data. DecodeMessage() turns (bytes, fds)
// into a typed Message, checking everything a hostile front-end can get
// wrong: the version, the payload size each request needs, how many file
// descriptors it carries, reserved bits. It does no I/O, so it is unit tested
// and fuzzed as it is (//vhost-user:message_fuzzer).
//
//   std::vector<ScopedFd> fds = ...;            // from recvmsg
//   absl::StatusOr<Message> msg = DecodeMessage(bytes, std::move(fds));
//   if (!msg.ok()) { /* kInvalidArgument: malformed; kUnimplemented:
//                       unknown request code */ }
//   if (msg->request == Request::kSetVringNum) Use(msg->state);
//
// File descriptors: DecodeMessage() takes ownership of all of them, keeps in
// Message::fds exactly those the request carries, and closes the others
// (also on error), so that a front-end cannot make the back-end leak fds.
//
// Replies are built with EncodeReply(): the same request code, flags =
// version 1 | REPLY.
//
// Thread-safety: plain values and free functions; thread-compatible.
#ifndef VMMKIT_VHOST_USER_MESSAGE_H_
#define VMMKIT_VHOST_USER_MESSAGE_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "base/scoped_fd.h"

namespace vmmkit::vhost_user {

// Front-end requests (vhost-user.rst, "Front-end message types").
enum class Request : uint32_t {
  kGetFeatures = 1,
  kSetFeatures = 2,
  kSetOwner = 3,
  kResetOwner = 4,
  kSetMemTable = 5,
  kSetLogBase = 6,
  kSetLogFd = 7,
  kSetVringNum = 8,
  kSetVringAddr = 9,
  kSetVringBase = 10,
  kGetVringBase = 11,
  kSetVringKick = 12,
  kSetVringCall = 13,
  kSetVringErr = 14,
  kGetProtocolFeatures = 15,
  kSetProtocolFeatures = 16,
  kGetQueueNum = 17,
  kSetVringEnable = 18,
  kSendRarp = 19,
  kNetSetMtu = 20,
  kSetBackendReqFd = 21,
  kIotlbMsg = 22,
  kSetVringEndian = 23,
  kGetConfig = 24,
  kSetConfig = 25,
  kCreateCryptoSession = 26,
  kCloseCryptoSession = 27,
  kPostcopyAdvise = 28,
  kPostcopyListen = 29,
  kPostcopyEnd = 30,
  kGetInflightFd = 31,
  kSetInflightFd = 32,
  kGpuSetSocket = 33,
  kResetDevice = 34,
  kVringKick = 35,
  kGetMaxMemSlots = 36,
  kAddMemReg = 37,
  kRemMemReg = 38,
  kSetStatus = 39,
  kGetStatus = 40,
};
// "SET_VRING_NUM", or "request 99" for an unknown code.
const char* RequestName(uint32_t request);

// Header flags.
inline constexpr uint32_t kVersionMask = 0x3;
inline constexpr uint32_t kVersion1 = 0x1;
inline constexpr uint32_t kFlagReply = 0x4;
inline constexpr uint32_t kFlagNeedReply = 0x8;

// The virtio feature bit that says the front-end speaks protocol features
// (GET_FEATURES / SET_FEATURES).
inline constexpr unsigned kFProtocolFeatures = 30;

// Protocol feature bits (GET_PROTOCOL_FEATURES / SET_PROTOCOL_FEATURES).
inline constexpr unsigned kProtocolMq = 0;
inline constexpr unsigned kProtocolLogShmfd = 1;
inline constexpr unsigned kProtocolRarp = 2;
inline constexpr unsigned kProtocolReplyAck = 3;
inline constexpr unsigned kProtocolNetMtu = 4;
inline constexpr unsigned kProtocolBackendReq = 5;
inline constexpr unsigned kProtocolCrossEndian = 6;
inline constexpr unsigned kProtocolConfig = 9;
inline constexpr unsigned kProtocolInflightShmfd = 12;
inline constexpr unsigned kProtocolResetDevice = 13;
inline constexpr unsigned kProtocolConfigureMemSlots = 15;
inline constexpr unsigned kProtocolStatus = 16;

// Limits.
inline constexpr uint32_t kHeaderSize = 12;
// The largest payload the back-end accepts; anything bigger closes the
// connection (the largest real one, SET_MEM_TABLE with 8 regions, is 264).
inline constexpr uint32_t kMaxPayloadSize = 4096;
// VHOST_MEMORY_BASELINE_NREGIONS: regions in one SET_MEM_TABLE (the back-end
// does not offer CONFIGURE_MEM_SLOTS), and the most fds any message carries.
inline constexpr uint32_t kMaxMemRegions = 8;
inline constexpr uint32_t kMaxFds = kMaxMemRegions;
// Device configuration bytes one GET_CONFIG / SET_CONFIG moves
// (VHOST_USER_MAX_CONFIG_SIZE).
inline constexpr uint32_t kMaxConfigSize = 256;
// SET_VRING_KICK / CALL / ERR payload: ring index in bits 0..7, and the
// "no file descriptor" flag.
inline constexpr uint64_t kVringIndexMask = 0xff;
inline constexpr uint64_t kVringNoFd = 0x100;
// vhost_vring_addr.flags: dirty logging of the used ring.
inline constexpr uint32_t kVringFLog = 0x1;

// ---- Wire structures: little-endian, packed as on the wire.
struct WireHeader {
  uint32_t request;
  uint32_t flags;
  uint32_t size;
};
static_assert(sizeof(WireHeader) == kHeaderSize);
static_assert(offsetof(WireHeader, flags) == 4);
static_assert(offsetof(WireHeader, size) == 8);

// struct vhost_vring_state.
struct WireVringState {
  uint32_t index;
  uint32_t num;
};
static_assert(sizeof(WireVringState) == 8);

// struct vhost_vring_addr. Note the order: descriptors, used, available.
struct WireVringAddr {
  uint32_t index;
  uint32_t flags;
  uint64_t desc_user_addr;
  uint64_t used_user_addr;
  uint64_t avail_user_addr;
  uint64_t log_guest_addr;
};
static_assert(sizeof(WireVringAddr) == 40);
static_assert(offsetof(WireVringAddr, desc_user_addr) == 8);
static_assert(offsetof(WireVringAddr, used_user_addr) == 16);
static_assert(offsetof(WireVringAddr, avail_user_addr) == 24);
static_assert(offsetof(WireVringAddr, log_guest_addr) == 32);

// One region of SET_MEM_TABLE (VhostUserMemoryRegion).
struct WireMemRegion {
  uint64_t guest_phys_addr;
  uint64_t memory_size;
  uint64_t userspace_addr;
  uint64_t mmap_offset;
};
static_assert(sizeof(WireMemRegion) == 32);
static_assert(offsetof(WireMemRegion, memory_size) == 8);
static_assert(offsetof(WireMemRegion, userspace_addr) == 16);
static_assert(offsetof(WireMemRegion, mmap_offset) == 24);

// SET_MEM_TABLE: {u32 nregions, u32 padding, regions[nregions]}.
inline constexpr uint32_t kMemTableHeaderSize = 8;
// GET_CONFIG / SET_CONFIG: {u32 offset, u32 size, u32 flags, u8 data[size]}.
inline constexpr uint32_t kConfigHeaderSize = 12;

// ---- Decoded messages, in host byte order.
struct VringState {
  uint32_t index = 0;
  uint32_t num = 0;
};
struct VringAddr {
  uint32_t index = 0;
  uint32_t flags = 0;
  uint64_t desc = 0;  // front-end user addresses
  uint64_t used = 0;
  uint64_t avail = 0;
  uint64_t log = 0;
};
struct MemRegion {
  uint64_t guest_addr = 0;
  uint64_t size = 0;
  uint64_t user_addr = 0;
  uint64_t mmap_offset = 0;
  bool operator==(const MemRegion&) const = default;
};
struct ConfigAccess {
  uint32_t offset = 0;
  uint32_t size = 0;
  uint32_t flags = 0;
  std::vector<uint8_t> data;  // `size` bytes (GET_CONFIG: what was sent)
};

struct Message {
  uint32_t request = 0;  // a Request value
  uint32_t flags = 0;
  bool need_reply() const { return (flags & kFlagNeedReply) != 0; }
  Request type() const { return static_cast<Request>(request); }

  // The payload, in the field the request uses:
  uint64_t u64 = 0;  // features, protocol features, status, vring fd word
  VringState state;  // SET_VRING_NUM/BASE/ENABLE, GET_VRING_BASE
  VringAddr addr;    // SET_VRING_ADDR
  std::vector<MemRegion> regions;  // SET_MEM_TABLE
  ConfigAccess config;             // GET_CONFIG / SET_CONFIG
  // The fds the request carries: one per region for SET_MEM_TABLE, zero or
  // one (see vring_no_fd()) for SET_VRING_KICK/CALL/ERR, none otherwise.
  std::vector<ScopedFd> fds;

  // For SET_VRING_KICK/CALL/ERR.
  uint32_t vring_index() const {
    return static_cast<uint32_t>(u64 & kVringIndexMask);
  }
  bool vring_no_fd() const { return (u64 & kVringNoFd) != 0; }
};

// Decodes one complete message: `bytes` is the header and all of its payload
// (bytes.size() == 12 + header.size). Takes ownership of `fds`.
// kInvalidArgument for a malformed message (wrong version, REPLY set on a
// request, a payload size or fd count the request does not have, reserved
// bits set, more regions than kMaxMemRegions, a config access larger than
// kMaxConfigSize); kUnimplemented for a request code the back-end does not
// serve (unknown, or one that needs a protocol feature it never offers). In
// both cases the caller still has the header (DecodeHeader) to decide how to
// answer.
absl::StatusOr<Message> DecodeMessage(absl::Span<const uint8_t> bytes,
                                      std::vector<ScopedFd> fds);

// Reads the header at the front of `bytes` (at least kHeaderSize of them).
WireHeader DecodeHeader(absl::Span<const uint8_t> bytes);

// A reply to `request`: header (version 1 | REPLY) and `payload`.
std::vector<uint8_t> EncodeReply(uint32_t request,
                                 absl::Span<const uint8_t> payload);
std::vector<uint8_t> EncodeReplyU64(uint32_t request, uint64_t value);
std::vector<uint8_t> EncodeReplyVringState(uint32_t request,
                                           const VringState& state);

// Encoders for the front-end side (tests, the fuzzer's seeds). `flags` gets
// version 1 added.
std::vector<uint8_t> EncodeRequest(uint32_t request, uint32_t flags,
                                   absl::Span<const uint8_t> payload);
std::vector<uint8_t> EncodeU64(uint64_t value);
std::vector<uint8_t> EncodeVringState(const VringState& state);
std::vector<uint8_t> EncodeVringAddr(const VringAddr& addr);
std::vector<uint8_t> EncodeMemTable(absl::Span<const MemRegion> regions);
std::vector<uint8_t> EncodeConfig(const ConfigAccess& config);

}  // namespace vmmkit::vhost_user

#endif  // VMMKIT_VHOST_USER_MESSAGE_H_
