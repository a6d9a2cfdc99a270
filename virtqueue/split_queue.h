// virtqueue/split_queue.h: the device side of a virtio split virtqueue.
//
// A SplitQueue is configured by a transport (size, the three ring addresses or
// a legacy base + alignment, event idx, byte order), validated and bound to
// guest memory by Activate(), and then served by a device:
//
//   SplitQueue q(/*max_size=*/256);
//   q.set_size(256);
//   q.set_desc_table(0x10000); q.set_avail_ring(0x11000);
//   q.set_used_ring(0x12000); VMMKIT_RETURN_IF_ERROR(q.Activate(memory));
//   ...
//   while (std::optional<DescriptorChain> chain = q.Pop()) {
//     uint32_t written = 0;
//     for (const Descriptor& d : *chain) { ... if (d.writable()) written +=
//     ...; } if (!chain->ok()) { /* malformed: chain->error() says why */ }
//     q.AddUsed(chain->head(), written);
//   }
//   if (q.broken()) { /* the driver broke the ring: q.error() */ }
//   if (q.NeedsNotification()) interrupt.Raise();
//
// What is checked, and where (virtio 1.2 §2.7):
// - Activate(): size a power of two in 1..32768 and at most the device maximum;
//   descriptor table 16-aligned, available ring 2-aligned, used ring 4-aligned;
//   each area inside one guest memory region (so that the rings are read
//   through cached host pointers with no per-access lookup).
// - Pop(): the available index may move by at most the queue size; each head
//   must be below the queue size. Either error breaks the queue: it serves
//   nothing more until Reset() (the device should set DEVICE_NEEDS_RESET).
// - DescriptorChain: everything else (see QueueError), reported per chain.
//
// Byte order: little-endian for VERSION_1 drivers; for a legacy driver it is
// the guest's native order, big-endian on s390x and ppc64 (set_endian()). One
// hot path serves both: each ring field goes through a data-dependent select
// between the value and its byte swap (a test and a conditional move), which
// measured no slower than two template instantiations and keeps the code
// single (see benches/ring_bench for the figures).
//
// Thread-compatibility: a SplitQueue and its chains are used by one thread at a
// time (the device's I/O thread); the driver runs concurrently on the other
// side of guest memory, which the ordering rules below account for.
#ifndef VMMKIT_VIRTQUEUE_SPLIT_QUEUE_H_
#define VMMKIT_VIRTQUEUE_SPLIT_QUEUE_H_

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <optional>

#include "absl/base/attributes.h"
#include "absl/base/optimization.h"
#include "absl/status/status.h"
#include "absl/types/span.h"
#include "virtqueue/guest_memory.h"

namespace vmmkit::virtqueue {

// Descriptor flags (virtio 1.2 §2.7.5).
inline constexpr uint16_t kDescFNext = 1;
inline constexpr uint16_t kDescFWrite = 2;
inline constexpr uint16_t kDescFIndirect = 4;
// Ring flags (§2.7.6, §2.7.8).
inline constexpr uint16_t kAvailFNoInterrupt = 1;
inline constexpr uint16_t kUsedFNoNotify = 1;

// The wire layout of the rings. Fields are in the queue's byte order (see
// Endian); SplitQueue reads them through that, never directly.
struct VirtqDesc {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;
  uint16_t next;
};
static_assert(sizeof(VirtqDesc) == 16);
static_assert(offsetof(VirtqDesc, len) == 8);
static_assert(offsetof(VirtqDesc, flags) == 12);
static_assert(offsetof(VirtqDesc, next) == 14);

struct VirtqUsedElem {
  uint32_t id;
  uint32_t len;
};
static_assert(sizeof(VirtqUsedElem) == 8);

// Offsets within the available ring {flags, idx, ring[size], used_event} and
// the used ring {flags, idx, ring[size] of VirtqUsedElem, avail_event}.
inline constexpr uint64_t kRingFlagsOffset = 0;
inline constexpr uint64_t kRingIdxOffset = 2;
inline constexpr uint64_t kRingEntriesOffset = 4;
constexpr uint64_t DescTableBytes(uint32_t size) { return 16ull * size; }
constexpr uint64_t AvailRingBytes(uint32_t size) { return 6 + 2ull * size; }
constexpr uint64_t UsedRingBytes(uint32_t size) { return 6 + 8ull * size; }

enum class Endian : uint8_t { kLittle, kBig };

// Why a queue or a chain was refused. Each is a driver error: the spec gives
// the device no way to answer it other than DEVICE_NEEDS_RESET (or, for a
// malformed chain, completing it with nothing written).
enum class QueueError : uint8_t {
  kNone = 0,
  // Ring errors (Pop), which break the queue:
  kAvailIndexJump,  // avail.idx moved by more than the queue size
  kHeadOutOfRange,  // an available ring entry >= queue size
  // Chain errors (DescriptorChain):
  kNextOutOfRange,           // next >= queue size (or indirect table size)
  kChainTooLong,             // more descriptors than the table has: a loop
  kTotalLengthOverflow,      // the lengths add up to 2^32 or more
  kBufferOutOfMemory,        // [addr, addr + len) not inside guest memory
  kReadableAfterWritable,    // device-readable after device-writable
  kIndirectNotNegotiated,    // INDIRECT without VIRTIO_F_INDIRECT_DESC
  kIndirectWithNext,         // INDIRECT together with NEXT
  kNestedIndirect,           // INDIRECT inside an indirect table
  kIndirectTableLength,      // table length 0 or not a multiple of 16
  kIndirectTableTooLarge,    // more than 65536 entries
  kIndirectTableOutOfMemory  // table not inside one guest memory region
};

// A short description of `error` ("descriptor next index out of range").
const char* QueueErrorName(QueueError error);
// `error` as a Status: kOk for kNone, else kOutOfRange for addresses, indices
// and lengths beyond their limits and kInvalidArgument for malformed shapes.
absl::Status QueueErrorToStatus(QueueError error);

// One buffer of a chain, in host byte order.
struct Descriptor {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;  // kDescFWrite is the only one a device needs

  bool writable() const { return (flags & kDescFWrite) != 0; }
};

class SplitQueue;

// The descriptors of one available chain, direct and indirect alike, visited
// in order without allocating: device-readable buffers first, then
// device-writable ones. Iteration stops at the end of the chain or at the
// first malformed descriptor; ok() and error() tell which. Every descriptor
// handed out has already been checked: its buffer lies inside guest memory,
// and it keeps the readable-then-writable order.
//
// A chain reads the queue's descriptor table through host pointers; it must
// not outlive the queue's activation (Reset() or a new Activate()).
class DescriptorChain {
 public:
  // The head index, to hand back to SplitQueue::AddUsed().
  uint16_t head() const { return head_; }

  // Stores the next descriptor in `out` and returns true, or returns false at
  // the end of the chain or on an error.
  ABSL_ATTRIBUTE_ALWAYS_INLINE bool Next(Descriptor& out);

  bool ok() const { return error_ == QueueError::kNone; }
  QueueError error() const { return error_; }
  absl::Status status() const { return QueueErrorToStatus(error_); }

  // Descriptors handed out so far.
  uint32_t count() const { return count_; }

  // Range-for over the remaining descriptors: `for (const Descriptor& d : c)`.
  class Iterator {
   public:
    using iterator_category = std::input_iterator_tag;
    using value_type = Descriptor;
    using difference_type = std::ptrdiff_t;
    using pointer = const Descriptor*;
    using reference = const Descriptor&;

    Iterator() = default;
    explicit Iterator(DescriptorChain* chain) : chain_(chain) { ++*this; }
    const Descriptor& operator*() const { return current_; }
    const Descriptor* operator->() const { return &current_; }
    Iterator& operator++() {
      if (!chain_->Next(current_)) chain_ = nullptr;
      return *this;
    }
    bool operator==(const Iterator& other) const {
      return chain_ == other.chain_;
    }

   private:
    DescriptorChain* chain_ = nullptr;
    Descriptor current_{};
  };
  Iterator begin() { return Iterator(this); }
  Iterator end() { return Iterator(); }

 private:
  friend class SplitQueue;
  DescriptorChain(const GuestMemory* memory, const uint8_t* table,
                  uint16_t queue_size, uint16_t head, bool big_endian,
                  bool indirect_allowed)
      : memory_(memory),
        table_(table),
        table_size_(queue_size),
        budget_(queue_size),
        head_(head),
        next_(head),
        big_endian_(big_endian),
        indirect_allowed_(indirect_allowed) {}

  bool Fail(QueueError error) {
    error_ = error;
    done_ = true;
    return false;
  }
  // The indirect table an INDIRECT descriptor points at, or nullptr with
  // `*error` set. Out of line and free of `this`, so that the chain's state
  // can live in registers on the hot path.
  ABSL_ATTRIBUTE_NOINLINE static const uint8_t* ResolveIndirect(
      const GuestMemory* memory, uint64_t addr, uint32_t len, uint16_t flags,
      bool indirect_allowed, bool in_indirect, QueueError* error);

  const GuestMemory* memory_;
  const uint8_t* table_;  // main descriptor table, then the indirect one
  uint32_t table_size_;   // entries in table_
  uint32_t budget_;       // descriptors still allowed from table_
  uint64_t total_len_ = 0;
  uint32_t count_ = 0;
  uint16_t head_;
  uint16_t next_;  // index into table_ of the next descriptor
  bool done_ = false;
  bool in_indirect_ = false;
  bool seen_writable_ = false;
  bool big_endian_;
  bool indirect_allowed_;
  QueueError error_ = QueueError::kNone;
};

// An entry for the used ring.
struct UsedElement {
  uint16_t head;
  uint32_t len;
};

class SplitQueue {
 public:
  static constexpr uint32_t kMaxQueueSize = 32768;

  // `max_size` is the device's maximum (at most 32768): the size a driver
  // reads before it chooses its own, and the largest it may choose.
  explicit SplitQueue(uint16_t max_size);

  SplitQueue(const SplitQueue&) = delete;
  SplitQueue& operator=(const SplitQueue&) = delete;
  SplitQueue(SplitQueue&&) = default;
  SplitQueue& operator=(SplitQueue&&) = default;

  // ---- Configuration, written by the transport while the queue is not ready.
  uint16_t max_size() const { return max_size_; }
  uint16_t size() const { return size_; }
  void set_size(uint16_t size) { size_ = size; }
  uint64_t desc_table() const { return desc_table_; }
  void set_desc_table(uint64_t addr) { desc_table_ = addr; }
  uint64_t avail_ring() const { return avail_ring_; }
  void set_avail_ring(uint64_t addr) { avail_ring_ = addr; }
  uint64_t used_ring() const { return used_ring_; }
  void set_used_ring(uint64_t addr) { used_ring_ = addr; }
  // The legacy layout (virtio 1.2 §2.7.2 "Legacy Interfaces"): one area at
  // `base` holding the descriptor table, the available ring right after it,
  // and the used ring at the next multiple of `align` (4096 for legacy PCI;
  // legacy CCW passes its own). Sets the three addresses from the current
  // size, so call it after set_size(). kInvalidArgument unless `align` is a
  // power of two; the addresses are checked by Activate().
  absl::Status SetLegacyLayout(uint64_t base, uint32_t align);
  // Bytes of guest memory the legacy layout of `size` entries occupies.
  static uint64_t LegacyRingBytes(uint32_t size, uint32_t align);

  // VIRTIO_F_EVENT_IDX negotiated: used_event / avail_event instead of flags.
  bool event_idx() const { return event_idx_; }
  void set_event_idx(bool on) { event_idx_ = on; }
  // VIRTIO_F_INDIRECT_DESC negotiated (default true).
  bool indirect_allowed() const { return indirect_allowed_; }
  void set_indirect_allowed(bool on) { indirect_allowed_ = on; }
  Endian endian() const { return endian_; }
  void set_endian(Endian endian) { endian_ = endian; }

  // Checks the configuration against `memory` without changing anything:
  // kInvalidArgument for a bad size or alignment, kOutOfRange for an area
  // outside guest memory (or crossing a region boundary).
  absl::Status Validate(const GuestMemory& memory) const;
  // Validates, binds the rings to `memory` (which must outlive the queue's
  // activation) and makes the queue ready. Ring indices are kept: a fresh
  // queue starts at 0, a vhost-user front end sets them with set_next_avail().
  absl::Status Activate(const GuestMemory& memory);
  bool ready() const { return ready_; }
  // Back to the state after construction: not ready, size = max, addresses 0,
  // indices 0, no error, little-endian, no event idx, indirect allowed.
  void Reset();

  // ---- Ring state.
  // The next available-ring position the device will read.
  uint16_t next_avail() const { return next_avail_; }
  void set_next_avail(uint16_t idx) {
    next_avail_ = idx;
    cached_avail_idx_ = idx;
  }
  // The used index the device has written (published or not).
  uint16_t next_used() const { return next_used_; }
  void set_next_used(uint16_t idx) {
    next_used_ = idx;
    signalled_valid_ = false;
  }

  // ---- Serving the driver.
  // The next available chain, or nullopt when there is none (or the queue is
  // not ready, or broken). Reads avail.idx with acquire semantics only when the
  // chains seen before are used up.
  ABSL_ATTRIBUTE_ALWAYS_INLINE std::optional<DescriptorChain> Pop();
  // Gives a chain back so that the next Pop() returns it again. Does nothing
  // on a queue that is not ready or is broken, which serves nothing.
  void Undo() {
    if (ready_ && !broken()) --next_avail_;
  }
  // True if Pop() would return a chain.
  bool HasAvailable();

  // Writes a used element and publishes used.idx (release store), so the
  // driver may see it at once. `head` must come from Pop().
  void AddUsed(uint16_t head, uint32_t len) {
    PushUsed(head, len);
    PublishUsed();
  }
  // Writes used elements, publishing used.idx once at the end.
  void AddUsed(absl::Span<const UsedElement> elements) {
    for (const UsedElement& e : elements) PushUsed(e.head, e.len);
    PublishUsed();
  }
  // The two halves of AddUsed: write an element without publishing it, and
  // publish every element written so far.
  ABSL_ATTRIBUTE_ALWAYS_INLINE void PushUsed(uint16_t head, uint32_t len);
  void PublishUsed() {
    if (!ready_) return;
    // Release: the used elements are visible before the index that covers
    // them (§2.7.8.2: the device updates idx after the ring entries).
    const uint16_t raw =
        endian_ == Endian::kLittle ? next_used_ : __builtin_bswap16(next_used_);
    __atomic_store_n(reinterpret_cast<uint16_t*>(used_ + kRingIdxOffset), raw,
                     __ATOMIC_RELEASE);
  }

  // ---- Notification suppression (§2.7.7, §2.7.10).
  // Asks the driver not to notify: sets VRING_USED_F_NO_NOTIFY, or with event
  // idx leaves avail_event behind so that the driver sees no reason to (and
  // Pop() stops moving it) until EnableNotification().
  void DisableNotification();
  // Asks the driver to notify about new chains again, then re-reads avail.idx:
  // returns true if chains arrived while notifications were off, which the
  // device must process now since no notification will come for them.
  bool EnableNotification();
  // After publishing used entries: must the driver be interrupted? Honours
  // VRING_AVAIL_F_NO_INTERRUPT, or with event idx the used_event rule
  // (vring_need_event). With event idx it also records the used index as
  // signalled, so call it once per interrupt decision.
  bool NeedsNotification();

  // ---- Errors.
  bool broken() const { return error_ != QueueError::kNone; }
  QueueError error() const { return error_; }
  absl::Status status() const { return QueueErrorToStatus(error_); }

 private:
  uint16_t LoadAvailIdx() const;
  // Re-reads avail.idx when the chains seen so far are used up; true if there
  // are more. With event idx (and notifications not disabled) an empty ring
  // also moves avail_event up to the device's position, so that the driver
  // notifies for its next chain, and looks once more (QEMU's virtqueue_pop
  // does the same; without it a driver stops kicking).
  bool Refill();

  // Configuration.
  uint16_t max_size_;
  uint16_t size_;
  uint64_t desc_table_ = 0;
  uint64_t avail_ring_ = 0;
  uint64_t used_ring_ = 0;
  bool event_idx_ = false;
  bool indirect_allowed_ = true;
  Endian endian_ = Endian::kLittle;

  // Bound state (valid while ready_).
  bool ready_ = false;
  const GuestMemory* memory_ = nullptr;
  uint8_t* desc_ = nullptr;
  uint8_t* avail_ = nullptr;
  uint8_t* used_ = nullptr;

  // Ring state.
  uint16_t next_avail_ = 0;
  uint16_t cached_avail_idx_ = 0;  // last avail.idx read
  uint16_t next_used_ = 0;
  uint16_t signalled_used_ = 0;  // used index at the last NeedsNotification
  bool signalled_valid_ = false;
  bool notifications_disabled_ = false;
  QueueError error_ = QueueError::kNone;
};

// ---------------------------------------------------------------------------
// Implementation details below: the hot path, inline.

namespace internal {

// Byte order of ring fields. A legacy driver on a big-endian guest is rare and
// the flag is per queue, so the swap is a data-dependent select rather than a
// second copy of the hot path: on the little-endian path it costs a test and
// a conditional move, and the compiler has no reason to duplicate the loop.
#if defined(__clang__)
#define VMMKIT_UNPREDICTABLE(x) __builtin_unpredictable(x)
#else
#define VMMKIT_UNPREDICTABLE(x) (x)
#endif
inline uint16_t FromQueue(uint16_t v, bool big) {
  return VMMKIT_UNPREDICTABLE(big) ? __builtin_bswap16(v) : v;
}
inline uint32_t FromQueue(uint32_t v, bool big) {
  return VMMKIT_UNPREDICTABLE(big) ? __builtin_bswap32(v) : v;
}
inline uint64_t FromQueue(uint64_t v, bool big) {
  return VMMKIT_UNPREDICTABLE(big) ? __builtin_bswap64(v) : v;
}
template <typename T>
inline T LoadRaw(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}
template <typename T>
inline void StoreRaw(uint8_t* p, T v) {
  std::memcpy(p, &v, sizeof(T));
}

}  // namespace internal

inline bool DescriptorChain::Next(Descriptor& out) {
  using internal::FromQueue;
  using internal::LoadRaw;
  if (done_) return false;
  for (;;) {
    // Each table allows as many descriptors as it has entries: more means a
    // loop (§2.7.5.3.1: "A driver MUST NOT create a descriptor chain longer
    // than the Queue Size of the device").
    if (ABSL_PREDICT_FALSE(budget_ == 0))
      return Fail(QueueError::kChainTooLong);
    --budget_;
    const uint8_t* d = table_ + 16u * next_;
    const uint64_t addr = FromQueue(LoadRaw<uint64_t>(d), big_endian_);
    const uint32_t len = FromQueue(LoadRaw<uint32_t>(d + 8), big_endian_);
    const uint16_t flags = FromQueue(LoadRaw<uint16_t>(d + 12), big_endian_);
    const uint16_t next = FromQueue(LoadRaw<uint16_t>(d + 14), big_endian_);

    if (ABSL_PREDICT_FALSE(flags & kDescFIndirect)) {
      QueueError error = QueueError::kNone;
      const uint8_t* table = ResolveIndirect(
          memory_, addr, len, flags, indirect_allowed_, in_indirect_, &error);
      if (table == nullptr) return Fail(error);
      table_ = table;
      table_size_ = len / 16;
      budget_ = table_size_;
      next_ = 0;
      in_indirect_ = true;
      continue;
    }
    if (flags & kDescFWrite) {
      seen_writable_ = true;
    } else if (ABSL_PREDICT_FALSE(seen_writable_)) {
      // §2.7.4.2: "The driver MUST place any device-writable descriptor
      // elements after any device-readable descriptor elements."
      return Fail(QueueError::kReadableAfterWritable);
    }
    total_len_ += len;
    if (ABSL_PREDICT_FALSE(total_len_ > UINT32_MAX)) {
      return Fail(QueueError::kTotalLengthOverflow);
    }
    if (ABSL_PREDICT_FALSE(!memory_->Contains(addr, len))) {
      return Fail(QueueError::kBufferOutOfMemory);
    }
    if (flags & kDescFNext) {
      if (ABSL_PREDICT_FALSE(next >= table_size_)) {
        return Fail(QueueError::kNextOutOfRange);
      }
      next_ = next;
    } else {
      done_ = true;
    }
    out.addr = addr;
    out.len = len;
    out.flags = flags;
    ++count_;
    return true;
  }
}

inline std::optional<DescriptorChain> SplitQueue::Pop() {
  using internal::FromQueue;
  using internal::LoadRaw;
  const bool big = endian_ == Endian::kBig;
  if (next_avail_ == cached_avail_idx_ && !Refill()) return std::nullopt;
  const uint16_t head =
      FromQueue(LoadRaw<uint16_t>(avail_ + kRingEntriesOffset +
                                  2u * (next_avail_ & (size_ - 1))),
                big);
  if (ABSL_PREDICT_FALSE(head >= size_)) {
    error_ = QueueError::kHeadOutOfRange;
    cached_avail_idx_ = next_avail_;  // serve nothing more
    return std::nullopt;
  }
  ++next_avail_;
  return DescriptorChain(memory_, desc_, size_, head, big, indirect_allowed_);
}

inline void SplitQueue::PushUsed(uint16_t head, uint32_t len) {
  using internal::FromQueue;
  using internal::StoreRaw;
  if (ABSL_PREDICT_FALSE(!ready_)) return;  // reset under the device's feet
  const bool big = endian_ == Endian::kBig;
  uint8_t* elem = used_ + kRingEntriesOffset + 8u * (next_used_ & (size_ - 1));
  StoreRaw<uint32_t>(elem, FromQueue(static_cast<uint32_t>(head), big));
  StoreRaw<uint32_t>(elem + 4, FromQueue(len, big));
  ++next_used_;
}

}  // namespace vmmkit::virtqueue

#endif  // VMMKIT_VIRTQUEUE_SPLIT_QUEUE_H_
