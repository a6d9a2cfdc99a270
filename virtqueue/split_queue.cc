#include "virtqueue/split_queue.h"

#include <atomic>

#include "absl/strings/str_format.h"

namespace vmmkit::virtqueue {

const char* QueueErrorName(QueueError error) {
  switch (error) {
    case QueueError::kNone:
      return "no error";
    case QueueError::kAvailIndexJump:
      return "available index moved by more than the queue size";
    case QueueError::kHeadOutOfRange:
      return "available ring entry out of range";
    case QueueError::kNextOutOfRange:
      return "descriptor next index out of range";
    case QueueError::kChainTooLong:
      return "descriptor chain longer than its table (loop)";
    case QueueError::kTotalLengthOverflow:
      return "descriptor chain lengths add up to 2^32 or more";
    case QueueError::kBufferOutOfMemory:
      return "descriptor buffer outside guest memory";
    case QueueError::kReadableAfterWritable:
      return "device-readable descriptor after a device-writable one";
    case QueueError::kIndirectNotNegotiated:
      return "indirect descriptor without VIRTIO_F_INDIRECT_DESC";
    case QueueError::kIndirectWithNext:
      return "indirect descriptor with NEXT set";
    case QueueError::kNestedIndirect:
      return "indirect descriptor inside an indirect table";
    case QueueError::kIndirectTableLength:
      return "indirect table length zero or not a multiple of 16";
    case QueueError::kIndirectTableTooLarge:
      return "indirect table larger than 65536 descriptors";
    case QueueError::kIndirectTableOutOfMemory:
      return "indirect table outside guest memory";
  }
  return "unknown queue error";
}

absl::Status QueueErrorToStatus(QueueError error) {
  switch (error) {
    case QueueError::kNone:
      return absl::OkStatus();
    case QueueError::kAvailIndexJump:
    case QueueError::kHeadOutOfRange:
    case QueueError::kNextOutOfRange:
    case QueueError::kTotalLengthOverflow:
    case QueueError::kBufferOutOfMemory:
    case QueueError::kIndirectTableTooLarge:
    case QueueError::kIndirectTableOutOfMemory:
      return absl::OutOfRangeError(QueueErrorName(error));
    default:
      return absl::InvalidArgumentError(QueueErrorName(error));
  }
}

const uint8_t* DescriptorChain::ResolveIndirect(
    const GuestMemory* memory, uint64_t addr, uint32_t len, uint16_t flags,
    bool indirect_allowed, bool in_indirect, QueueError* error) {
  // §2.7.5.3.1: "The driver MUST NOT set the VIRTQ_DESC_F_INDIRECT flag
  // within an indirect descriptor (ie. only one table per descriptor)" and
  // "MUST NOT set both VIRTQ_DESC_F_INDIRECT and VIRTQ_DESC_F_NEXT in flags".
  if (!indirect_allowed) {
    *error = QueueError::kIndirectNotNegotiated;
  } else if (in_indirect) {
    *error = QueueError::kNestedIndirect;
  } else if (flags & kDescFNext) {
    *error = QueueError::kIndirectWithNext;
  } else if (len == 0 || len % 16 != 0) {
    *error = QueueError::kIndirectTableLength;
  } else if (len / 16 > 65536) {
    *error = QueueError::kIndirectTableTooLarge;
  } else if (const uint8_t* table = memory->HostPointer(addr, len);
             table != nullptr) {
    return table;
  } else {
    *error = QueueError::kIndirectTableOutOfMemory;
  }
  return nullptr;
}

SplitQueue::SplitQueue(uint16_t max_size)
    : max_size_(max_size), size_(max_size) {}

uint64_t SplitQueue::LegacyRingBytes(uint32_t size, uint32_t align) {
  const uint64_t used_offset =
      (DescTableBytes(size) + AvailRingBytes(size) + align - 1) &
      ~(uint64_t{align} - 1);
  return used_offset + UsedRingBytes(size);
}

absl::Status SplitQueue::SetLegacyLayout(uint64_t base, uint32_t align) {
  if (align == 0 || (align & (align - 1)) != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "legacy ring alignment %u is not a power of two", align));
  }
  // virtio 1.2 §2.7.2 (legacy): the used ring starts at the first multiple of
  // the alignment after the descriptor table and the available ring. A base
  // so high that this wraps is caught by Validate()'s memory checks.
  const uint64_t avail = base + DescTableBytes(size_);
  const uint64_t used =
      (avail + AvailRingBytes(size_) + align - 1) & ~(uint64_t{align} - 1);
  desc_table_ = base;
  avail_ring_ = avail;
  used_ring_ = used;
  return absl::OkStatus();
}

absl::Status SplitQueue::Validate(const GuestMemory& memory) const {
  if (size_ == 0 || size_ > kMaxQueueSize || (size_ & (size_ - 1)) != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "queue size %u is not a power of two in 1..32768", size_));
  }
  if (size_ > max_size_) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "queue size %u exceeds the device maximum %u", size_, max_size_));
  }
  // §2.7: alignment 16 / 2 / 4 for the three parts.
  struct Area {
    const char* name;
    uint64_t addr;
    uint64_t bytes;
    uint64_t align;
  };
  const Area areas[] = {
      {"descriptor table", desc_table_, DescTableBytes(size_), 16},
      {"available ring", avail_ring_, AvailRingBytes(size_), 2},
      {"used ring", used_ring_, UsedRingBytes(size_), 4},
  };
  for (const Area& a : areas) {
    if (a.addr % a.align != 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s at 0x%x is not %u-byte aligned", a.name, a.addr, a.align));
    }
    if (memory.HostPointer(a.addr, a.bytes) == nullptr) {
      return absl::OutOfRangeError(absl::StrFormat(
          "%s [0x%x, +0x%x) is not inside one guest memory region", a.name,
          a.addr, a.bytes));
    }
  }
  return absl::OkStatus();
}

absl::Status SplitQueue::Activate(const GuestMemory& memory) {
  if (absl::Status s = Validate(memory); !s.ok()) return s;
  memory_ = &memory;
  desc_ = memory.HostPointer(desc_table_, DescTableBytes(size_));
  avail_ = memory.HostPointer(avail_ring_, AvailRingBytes(size_));
  used_ = memory.HostPointer(used_ring_, UsedRingBytes(size_));
  cached_avail_idx_ = next_avail_;
  signalled_valid_ = false;
  error_ = QueueError::kNone;
  ready_ = true;
  return absl::OkStatus();
}

void SplitQueue::Reset() {
  const uint16_t max_size = max_size_;
  *this = SplitQueue(max_size);
}

uint16_t SplitQueue::LoadAvailIdx() const {
  // Acquire: the ring entries and descriptors the driver wrote before it
  // published this index are read after it (§2.7.13.3 "memory barrier").
  const uint16_t raw = __atomic_load_n(
      reinterpret_cast<const uint16_t*>(avail_ + kRingIdxOffset),
      __ATOMIC_ACQUIRE);
  return endian_ == Endian::kLittle ? raw : __builtin_bswap16(raw);
}

bool SplitQueue::HasAvailable() {
  if (!ready_ || broken()) return false;
  if (next_avail_ != cached_avail_idx_) return true;
  const uint16_t idx = LoadAvailIdx();
  return idx != next_avail_;
}

namespace {

uint16_t LoadRing16(const uint8_t* p, Endian e) {
  const uint16_t raw =
      __atomic_load_n(reinterpret_cast<const uint16_t*>(p), __ATOMIC_RELAXED);
  return e == Endian::kLittle ? raw : __builtin_bswap16(raw);
}

void StoreRing16(uint8_t* p, uint16_t v, Endian e) {
  __atomic_store_n(reinterpret_cast<uint16_t*>(p),
                   e == Endian::kLittle ? v : __builtin_bswap16(v),
                   __ATOMIC_RELAXED);
}

}  // namespace

bool SplitQueue::Refill() {
  if (!ready_ || broken()) return false;
  for (int pass = 0;; ++pass) {
    const uint16_t idx = LoadAvailIdx();
    // §2.7.6: the driver never has more than size entries outstanding.
    if (static_cast<uint16_t>(idx - next_avail_) > size_) {
      error_ = QueueError::kAvailIndexJump;
      return false;
    }
    cached_avail_idx_ = idx;
    if (idx != next_avail_) return true;
    if (!event_idx_ || notifications_disabled_ || pass > 0) return false;
    uint8_t* avail_event = used_ + kRingEntriesOffset + 8u * size_;
    if (LoadRing16(avail_event, endian_) == next_avail_) return false;
    // §2.7.10: the driver notifies when avail.idx passes avail_event. Full
    // fence between that store and the second look at avail.idx (see
    // EnableNotification()).
    StoreRing16(avail_event, next_avail_, endian_);
    std::atomic_thread_fence(std::memory_order_seq_cst);
  }
}

void SplitQueue::DisableNotification() {
  if (!ready_) return;
  notifications_disabled_ = true;
  if (event_idx_) return;  // avail_event just stays put
  StoreRing16(used_ + kRingFlagsOffset,
              LoadRing16(used_ + kRingFlagsOffset, endian_) | kUsedFNoNotify,
              endian_);
}

bool SplitQueue::EnableNotification() {
  if (!ready_ || broken()) return false;
  notifications_disabled_ = false;
  if (event_idx_) {
    // §2.7.10: the driver notifies when avail.idx passes avail_event.
    StoreRing16(used_ + kRingEntriesOffset + 8u * size_, next_avail_, endian_);
  } else {
    StoreRing16(used_ + kRingFlagsOffset,
                LoadRing16(used_ + kRingFlagsOffset, endian_) &
                    static_cast<uint16_t>(~kUsedFNoNotify),
                endian_);
  }
  // Full fence: the store above must be visible to the driver before we read
  // avail.idx, or a chain published in between would get no notification
  // (the driver read the old flag) and no processing (we read the old index).
  std::atomic_thread_fence(std::memory_order_seq_cst);
  return HasAvailable();
}

bool SplitQueue::NeedsNotification() {
  if (!ready_) return false;
  // Full fence: used.idx must be visible before we read the driver's
  // suppression state, the mirror of EnableNotification()'s race.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (!event_idx_) {
    return (LoadRing16(avail_ + kRingFlagsOffset, endian_) &
            kAvailFNoInterrupt) == 0;
  }
  const uint16_t used_event =
      LoadRing16(avail_ + kRingEntriesOffset + 2u * size_, endian_);
  const uint16_t new_used = next_used_;
  const uint16_t old_used = signalled_used_;
  const bool valid = signalled_valid_;
  signalled_used_ = new_used;
  signalled_valid_ = true;
  if (!valid) return true;
  // vring_need_event(): notify if used_event lies in [old_used, new_used).
  return static_cast<uint16_t>(new_used - used_event - 1) <
         static_cast<uint16_t>(new_used - old_used);
}

}  // namespace vmmkit::virtqueue
