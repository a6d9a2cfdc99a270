// virtqueue/guest_memory.h: guest physical memory as the device side sees it.
//
// GuestMemory is a read-only table of regions (guest base, size, host pointer)
// and every access a device makes to guest memory goes through it. An access is
// always an address *and* a length, the end is overflow-checked, and host
// pointers leave only as bounds-checked spans.
//
//   absl::StatusOr<std::unique_ptr<GuestMemoryMmap>> mem =
//       GuestMemoryMmap::Create({{.guest_base = 0, .size = 64 << 20}});
//   VMMKIT_ASSIGN_OR_RETURN(absl::Span<uint8_t> buf, (*mem)->Translate(gpa,
//   512)); VMMKIT_ASSIGN_OR_RETURN(auto hdr,
//   (*mem)->ReadObj<BlkReqHeader>(gpa));
//   VMMKIT_RETURN_IF_ERROR((*mem)->Write(gpa, bytes));
//
// Who owns the mappings is up to the subclass: GuestMemoryMmap owns anonymous
// (or memfd) mappings, the VMM registers the same mappings with KVM, and the
// vhost-user back end maps the front end's file descriptors. The consumer side
// (queues, devices) sees only GuestMemory and does not care.
//
// Thread-safety: the region table is immutable after construction, so all const
// methods may be called from any thread. The guest may change the *contents* of
// guest memory at any time: callers copy what they validate before using it.
#ifndef VMMKIT_VIRTQUEUE_GUEST_MEMORY_H_
#define VMMKIT_VIRTQUEUE_GUEST_MEMORY_H_

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <type_traits>
#include <vector>

#include "absl/base/optimization.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace vmmkit::virtqueue {

// One contiguous range of guest physical memory backed by contiguous host
// memory.
struct MemoryRegion {
  uint64_t guest_base = 0;
  uint64_t size = 0;
  uint8_t* host = nullptr;
};

class GuestMemory {
 public:
  GuestMemory(const GuestMemory&) = delete;
  GuestMemory& operator=(const GuestMemory&) = delete;
  virtual ~GuestMemory() = default;

  // The regions, sorted by guest address, never overlapping.
  absl::Span<const MemoryRegion> regions() const { return regions_; }

  // True if every byte of [addr, addr + len) is guest memory. The range may
  // cross from one region into an adjacent one. A zero-length range is
  // contained if `addr` is in guest memory or is the end of a region.
  bool Contains(uint64_t addr, uint64_t len) const {
    // Fast path: all of the range in the first region (all of memory in most
    // VMs); anything else takes the out-of-line walk over the regions.
    const uint64_t offset = addr - first_.guest_base;
    if (ABSL_PREDICT_TRUE(offset < first_.size &&
                          len <= first_.size - offset)) {
      return true;
    }
    return ContainsSlow(addr, len);
  }

  // The host bytes of [addr, addr + len), which must lie within one region.
  // kOutOfRange if any byte is outside guest memory (or the end overflows),
  // kInvalidArgument if the range crosses a region boundary.
  absl::StatusOr<absl::Span<uint8_t>> Translate(uint64_t addr,
                                                uint64_t len) const;

  // Copies guest memory out of / into the guest, across adjacent regions.
  // kOutOfRange if any byte is outside guest memory; nothing is copied then.
  absl::Status Read(uint64_t addr, absl::Span<uint8_t> out) const;
  absl::Status Write(uint64_t addr, absl::Span<const uint8_t> in) const;
  // Sets every byte of [addr, addr + len) to `value`.
  absl::Status Fill(uint64_t addr, uint64_t len, uint8_t value) const;

  // Calls fn(absl::Span<uint8_t>) for each host-contiguous piece of
  // [addr, addr + len) in order (one piece unless the range crosses into an
  // adjacent region), after checking that all of it is guest memory:
  // kOutOfRange and no call at all otherwise. For zero-copy I/O (preadv into
  // guest buffers).
  template <typename Fn>
  absl::Status ForEachSpan(uint64_t addr, uint64_t len, Fn fn) const {
    if (!Contains(addr, len)) return OutOfRange(addr, len);
    while (len > 0) {
      const MemoryRegion* r = FindRegion(addr);
      const uint64_t offset = addr - r->guest_base;
      const uint64_t piece = len < r->size - offset ? len : r->size - offset;
      fn(absl::Span<uint8_t>(r->host + offset, piece));
      addr += piece;
      len -= piece;
    }
    return absl::OkStatus();
  }

  // Typed copies of trivially copyable objects (wire structs). Byte order is
  // the struct's business: wire structs carry explicit-endian accessors.
  template <typename T>
  absl::StatusOr<T> ReadObj(uint64_t addr) const {
    static_assert(std::is_trivially_copyable_v<T>);
    T value;
    absl::Status s = Read(
        addr, absl::MakeSpan(reinterpret_cast<uint8_t*>(&value), sizeof(T)));
    if (!s.ok()) return s;
    return value;
  }
  template <typename T>
  absl::Status WriteObj(uint64_t addr, const T& value) const {
    static_assert(std::is_trivially_copyable_v<T>);
    return Write(addr,
                 absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(&value),
                                     sizeof(T)));
  }

  // 16-bit index accesses with the ordering the virtio rings need: a load with
  // acquire semantics (nothing after it is read before it) and a store with
  // release semantics (nothing before it is written after it). `addr` must be
  // 2-byte aligned (kInvalidArgument) and inside memory (kOutOfRange). The
  // value is in host order; the caller converts byte order.
  absl::StatusOr<uint16_t> LoadAcquire16(uint64_t addr) const;
  absl::Status StoreRelease16(uint64_t addr, uint16_t value) const;

  // The host address of [addr, addr + len) if it lies within one region, else
  // nullptr. For hot paths that check the result on the spot (the split
  // queue's descriptor walk); everything else uses Translate().
  [[nodiscard]] uint8_t* HostPointer(uint64_t addr, uint64_t len) const {
    const uint64_t offset = addr - first_.guest_base;
    if (ABSL_PREDICT_TRUE(offset < first_.size &&
                          len <= first_.size - offset)) {
      return first_.host + offset;
    }
    return HostPointerSlow(addr, len);
  }

  // Total bytes of guest memory.
  uint64_t total_size() const;

 protected:
  GuestMemory() = default;

  // Adds a region; kInvalidArgument if it is empty, has no host memory, wraps
  // around 2^64 or overlaps a region already added.
  absl::Status AddRegion(const MemoryRegion& region);

 private:
  // The region containing `addr`, or nullptr. Regions are few (one or two in a
  // VMM, a handful in vhost-user): a linear scan beats a binary search here.
  const MemoryRegion* FindRegion(uint64_t addr) const;
  bool ContainsSlow(uint64_t addr, uint64_t len) const;
  uint8_t* HostPointerSlow(uint64_t addr, uint64_t len) const;
  static absl::Status OutOfRange(uint64_t addr, uint64_t len);

  std::vector<MemoryRegion> regions_;
  MemoryRegion first_;  // a copy of regions_[0], or empty
};

// Guest memory in anonymous private mappings (or shared memfd mappings for a
// VMM whose memory must be shareable), each region surrounded by inaccessible
// guard pages so that a stray access past a region faults instead of reading
// the host's neighbouring memory. Used by tests, benchmarks and the VMM.
class GuestMemoryMmap : public GuestMemory {
 public:
  struct RegionSpec {
    uint64_t guest_base = 0;
    uint64_t size = 0;  // a multiple of the host page size
  };
  struct Options {
    // Back the regions with one memfd (MAP_SHARED) instead of private
    // anonymous memory; `fd()` then returns it (offset = sum of the sizes of
    // the regions before).
    bool shared = false;
  };

  static absl::StatusOr<std::unique_ptr<GuestMemoryMmap>> Create(
      const std::vector<RegionSpec>& regions, Options options);
  static absl::StatusOr<std::unique_ptr<GuestMemoryMmap>> Create(
      const std::vector<RegionSpec>& regions) {
    return Create(regions, Options());
  }
  ~GuestMemoryMmap() override;

  // The memfd behind shared memory, or -1.
  int fd() const { return fd_; }

 private:
  GuestMemoryMmap() = default;

  struct Mapping {
    void* base;
    size_t length;
  };
  std::vector<Mapping> mappings_;
  int fd_ = -1;
};

}  // namespace vmmkit::virtqueue

#endif  // VMMKIT_VIRTQUEUE_GUEST_MEMORY_H_
