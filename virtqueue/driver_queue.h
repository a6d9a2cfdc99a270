// virtqueue/driver_queue.h: the driver's half of a split virtqueue.
//
// What a driver does to a ring: it lays out descriptor chains (direct and
// indirect), publishes them, reaps used entries, honours event idx, and can
// also write any malformed shape on purpose. Shared by the unit tests, the
// device tests, the fuzzers and the benchmarks, and used in production by a
// VMM that drives a device itself (pci/admin_driver.h drives an owner
// device's administration virtqueue over memory the VMM owns), which is why
// it is part of //virtqueue:driver and not of a testing package.
// virtqueue/testing/driver_queue.h keeps the old name.
//
//   DriverQueue drv(memory, {.size = 256, .desc = 0x10000, .avail = 0x11000,
//                            .used = 0x12000});
//   uint16_t head = *drv.AddChain({{0x100000, 16, false}, {0x101000, 512,
//   true}});
//   ... the device pops, processes and adds used ...
//   std::optional<VirtqUsedElem> used = drv.PopUsed();
//
// All ring values are written in the queue's byte order (little-endian unless
// constructed with Endian::kBig). Thread-compatible.
#ifndef VMMKIT_VIRTQUEUE_DRIVER_QUEUE_H_
#define VMMKIT_VIRTQUEUE_DRIVER_QUEUE_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "virtqueue/guest_memory.h"
#include "virtqueue/split_queue.h"

namespace vmmkit::virtqueue {

class DriverQueue {
 public:
  struct Layout {
    uint16_t size = 0;
    uint64_t desc = 0;
    uint64_t avail = 0;
    uint64_t used = 0;
  };
  // The legacy layout of `size` entries at `base` with `align`.
  static Layout LegacyLayout(uint16_t size, uint64_t base, uint32_t align);

  struct Buffer {
    uint64_t addr = 0;
    uint32_t len = 0;
    bool writable = false;
  };

  // `memory` must outlive the DriverQueue. Zeroes the three ring areas.
  DriverQueue(const GuestMemory& memory, Layout layout,
              Endian endian = Endian::kLittle);

  const Layout& layout() const { return layout_; }
  Endian endian() const { return endian_; }
  // Configures a device-side queue with this layout (size and addresses).
  void ConfigureDevice(SplitQueue& queue) const;

  // ---- Well-formed chains.
  // Takes free descriptors for `buffers` (in order; the device requires the
  // readable ones first, which this does not check), links them with NEXT and
  // publishes the head. kResourceExhausted if there are too few free.
  absl::StatusOr<uint16_t> AddChain(absl::Span<const Buffer> buffers);
  absl::StatusOr<uint16_t> AddChain(std::initializer_list<Buffer> buffers) {
    return AddChain(absl::MakeConstSpan(buffers.begin(), buffers.size()));
  }
  // Writes `buffers` as an indirect table at `table_addr` and publishes one
  // main descriptor pointing at it.
  absl::StatusOr<uint16_t> AddIndirectChain(uint64_t table_addr,
                                            absl::Span<const Buffer> buffers);
  // The next used element the device published, or nullopt; frees the
  // descriptors of its chain (for chains added with AddChain*).
  std::optional<VirtqUsedElem> PopUsed();
  // Used elements published but not yet reaped.
  uint16_t PendingUsed() const;

  // ---- Notification state.
  // VIRTIO_F_EVENT_IDX negotiated (ShouldNotify then reads avail_event).
  void set_event_idx(bool on) { event_idx_ = on; }
  // Whether the device wants a notification for the avail entries published
  // since the last call: VRING_USED_F_NO_NOTIFY, or avail_event with event idx.
  bool ShouldNotify();
  // Sets used_event (event idx) / VRING_AVAIL_F_NO_INTERRUPT.
  void SetUsedEvent(uint16_t value);
  void SetNoInterrupt(bool on);
  uint16_t used_flags() const;
  uint16_t avail_event() const;
  uint16_t used_idx() const;  // acquire

  // ---- Raw access, for malformed shapes and hand-made layouts.
  void WriteDesc(uint16_t index, uint64_t addr, uint32_t len, uint16_t flags,
                 uint16_t next);
  // A descriptor anywhere in guest memory (an indirect table entry).
  void WriteDescAt(uint64_t table_addr, uint32_t index, uint64_t addr,
                   uint32_t len, uint16_t flags, uint16_t next);
  // avail.ring[pos % size] = head, without publishing.
  void SetAvailEntry(uint16_t pos, uint16_t head);
  // avail.idx = idx (release store), and a full fence.
  void SetAvailIdx(uint16_t idx);
  uint16_t avail_idx() const { return avail_idx_; }
  // Publishes `head` at the next avail position.
  void Publish(uint16_t head);

 private:
  void Store16(uint64_t addr, uint16_t v) const;
  uint16_t Load16(uint64_t addr) const;
  void Store32(uint64_t addr, uint32_t v) const;
  uint32_t Load32(uint64_t addr) const;
  void Store64(uint64_t addr, uint64_t v) const;

  const GuestMemory& memory_;
  Layout layout_;
  Endian endian_;
  bool event_idx_ = false;
  uint16_t avail_idx_ = 0;
  uint16_t last_notified_avail_ = 0;
  uint16_t last_used_ = 0;
  std::vector<uint16_t> free_;                // free descriptor indices
  std::vector<std::vector<uint16_t>> owned_;  // per head: its descriptors
};

}  // namespace vmmkit::virtqueue

#endif  // VMMKIT_VIRTQUEUE_DRIVER_QUEUE_H_
