#include "virtqueue/driver_queue.h"

#include <atomic>
#include <cstdlib>

#include "absl/strings/str_format.h"

namespace vmmkit::virtqueue {

namespace {

// The simulator writes only where its layout says; a layout outside guest
// memory is a bug in the test, not something to report.
uint8_t* MustHost(const GuestMemory& memory, uint64_t addr, uint64_t len) {
  uint8_t* p = memory.HostPointer(addr, len);
  if (p == nullptr) {
    absl::FPrintF(stderr, "DriverQueue: [0x%x, +%u) is outside guest memory\n",
                  addr, len);
    std::abort();
  }
  return p;
}

template <typename T>
T Swap(T v, Endian e) {
  if (e == Endian::kLittle) return v;
  if constexpr (sizeof(T) == 2) return __builtin_bswap16(v);
  if constexpr (sizeof(T) == 4) return __builtin_bswap32(v);
  if constexpr (sizeof(T) == 8) return __builtin_bswap64(v);
}

}  // namespace

DriverQueue::Layout DriverQueue::LegacyLayout(uint16_t size, uint64_t base,
                                              uint32_t align) {
  const uint64_t avail = base + DescTableBytes(size);
  const uint64_t used =
      (avail + AvailRingBytes(size) + align - 1) & ~(uint64_t{align} - 1);
  return {.size = size, .desc = base, .avail = avail, .used = used};
}

DriverQueue::DriverQueue(const GuestMemory& memory, Layout layout,
                         Endian endian)
    : memory_(memory), layout_(layout), endian_(endian) {
  std::memset(MustHost(memory_, layout_.desc, DescTableBytes(layout_.size)), 0,
              DescTableBytes(layout_.size));
  std::memset(MustHost(memory_, layout_.avail, AvailRingBytes(layout_.size)), 0,
              AvailRingBytes(layout_.size));
  std::memset(MustHost(memory_, layout_.used, UsedRingBytes(layout_.size)), 0,
              UsedRingBytes(layout_.size));
  owned_.resize(layout_.size);
  for (int i = layout_.size - 1; i >= 0; --i) {
    free_.push_back(static_cast<uint16_t>(i));
  }
}

void DriverQueue::ConfigureDevice(SplitQueue& queue) const {
  queue.set_size(layout_.size);
  queue.set_desc_table(layout_.desc);
  queue.set_avail_ring(layout_.avail);
  queue.set_used_ring(layout_.used);
  queue.set_endian(endian_);
}

void DriverQueue::Store16(uint64_t addr, uint16_t v) const {
  __atomic_store_n(reinterpret_cast<uint16_t*>(MustHost(memory_, addr, 2)),
                   Swap(v, endian_), __ATOMIC_RELAXED);
}
uint16_t DriverQueue::Load16(uint64_t addr) const {
  return Swap(
      __atomic_load_n(reinterpret_cast<uint16_t*>(MustHost(memory_, addr, 2)),
                      __ATOMIC_RELAXED),
      endian_);
}
void DriverQueue::Store32(uint64_t addr, uint32_t v) const {
  v = Swap(v, endian_);
  std::memcpy(MustHost(memory_, addr, 4), &v, 4);
}
uint32_t DriverQueue::Load32(uint64_t addr) const {
  uint32_t v;
  std::memcpy(&v, MustHost(memory_, addr, 4), 4);
  return Swap(v, endian_);
}
void DriverQueue::Store64(uint64_t addr, uint64_t v) const {
  v = Swap(v, endian_);
  std::memcpy(MustHost(memory_, addr, 8), &v, 8);
}

void DriverQueue::WriteDescAt(uint64_t table_addr, uint32_t index,
                              uint64_t addr, uint32_t len, uint16_t flags,
                              uint16_t next) {
  const uint64_t d = table_addr + 16ull * index;
  Store64(d, addr);
  Store32(d + 8, len);
  Store16(d + 12, flags);
  Store16(d + 14, next);
}

void DriverQueue::WriteDesc(uint16_t index, uint64_t addr, uint32_t len,
                            uint16_t flags, uint16_t next) {
  WriteDescAt(layout_.desc, index, addr, len, flags, next);
}

void DriverQueue::SetAvailEntry(uint16_t pos, uint16_t head) {
  Store16(layout_.avail + kRingEntriesOffset + 2u * (pos % layout_.size), head);
}

void DriverQueue::SetAvailIdx(uint16_t idx) {
  avail_idx_ = idx;
  __atomic_store_n(reinterpret_cast<uint16_t*>(
                       MustHost(memory_, layout_.avail + kRingIdxOffset, 2)),
                   Swap(idx, endian_), __ATOMIC_RELEASE);
  // The driver's full barrier before it reads the device's suppression state.
  std::atomic_thread_fence(std::memory_order_seq_cst);
}

void DriverQueue::Publish(uint16_t head) {
  SetAvailEntry(avail_idx_, head);
  SetAvailIdx(static_cast<uint16_t>(avail_idx_ + 1));
}

absl::StatusOr<uint16_t> DriverQueue::AddChain(
    absl::Span<const Buffer> buffers) {
  if (buffers.empty() || buffers.size() > free_.size()) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "%u buffers, %u free descriptors", buffers.size(), free_.size()));
  }
  std::vector<uint16_t> indices;
  for (size_t i = 0; i < buffers.size(); ++i) {
    indices.push_back(free_.back());
    free_.pop_back();
  }
  for (size_t i = 0; i < buffers.size(); ++i) {
    const bool last = i + 1 == buffers.size();
    WriteDesc(indices[i], buffers[i].addr, buffers[i].len,
              static_cast<uint16_t>((buffers[i].writable ? kDescFWrite : 0) |
                                    (last ? 0 : kDescFNext)),
              last ? 0 : indices[i + 1]);
  }
  const uint16_t head = indices[0];
  owned_[head] = std::move(indices);
  Publish(head);
  return head;
}

absl::StatusOr<uint16_t> DriverQueue::AddIndirectChain(
    uint64_t table_addr, absl::Span<const Buffer> buffers) {
  if (free_.empty()) return absl::ResourceExhaustedError("no free descriptor");
  for (size_t i = 0; i < buffers.size(); ++i) {
    const bool last = i + 1 == buffers.size();
    WriteDescAt(table_addr, static_cast<uint32_t>(i), buffers[i].addr,
                buffers[i].len,
                static_cast<uint16_t>((buffers[i].writable ? kDescFWrite : 0) |
                                      (last ? 0 : kDescFNext)),
                last ? 0 : static_cast<uint16_t>(i + 1));
  }
  const uint16_t head = free_.back();
  free_.pop_back();
  WriteDesc(head, table_addr, static_cast<uint32_t>(16 * buffers.size()),
            kDescFIndirect, 0);
  owned_[head] = {head};
  Publish(head);
  return head;
}

uint16_t DriverQueue::used_idx() const {
  return Swap(__atomic_load_n(reinterpret_cast<uint16_t*>(MustHost(
                                  memory_, layout_.used + kRingIdxOffset, 2)),
                              __ATOMIC_ACQUIRE),
              endian_);
}

uint16_t DriverQueue::PendingUsed() const {
  return static_cast<uint16_t>(used_idx() - last_used_);
}

std::optional<VirtqUsedElem> DriverQueue::PopUsed() {
  if (used_idx() == last_used_) return std::nullopt;
  const uint64_t elem =
      layout_.used + kRingEntriesOffset + 8ull * (last_used_ % layout_.size);
  VirtqUsedElem e{Load32(elem), Load32(elem + 4)};
  ++last_used_;
  if (e.id < layout_.size) {
    for (uint16_t i : owned_[e.id]) free_.push_back(i);
    owned_[e.id].clear();
  }
  return e;
}

bool DriverQueue::ShouldNotify() {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  const uint16_t old_idx = last_notified_avail_;
  const uint16_t new_idx = avail_idx_;
  last_notified_avail_ = new_idx;
  if (event_idx_) {
    // vring_need_event(avail_event, new, old).
    return static_cast<uint16_t>(new_idx - avail_event() - 1) <
           static_cast<uint16_t>(new_idx - old_idx);
  }
  return (used_flags() & kUsedFNoNotify) == 0;
}

void DriverQueue::SetUsedEvent(uint16_t value) {
  Store16(layout_.avail + kRingEntriesOffset + 2u * layout_.size, value);
}

void DriverQueue::SetNoInterrupt(bool on) {
  Store16(layout_.avail + kRingFlagsOffset, on ? kAvailFNoInterrupt : 0);
}

uint16_t DriverQueue::used_flags() const {
  return Load16(layout_.used + kRingFlagsOffset);
}

uint16_t DriverQueue::avail_event() const {
  return Load16(layout_.used + kRingEntriesOffset + 8u * layout_.size);
}

}  // namespace vmmkit::virtqueue
