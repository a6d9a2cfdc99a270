#include "virtqueue/guest_memory.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "absl/strings/str_format.h"
#include "base/status.h"

namespace vmmkit::virtqueue {

absl::Status GuestMemory::AddRegion(const MemoryRegion& region) {
  if (region.size == 0 || region.host == nullptr) {
    return absl::InvalidArgumentError("empty guest memory region");
  }
  if (region.guest_base + region.size - 1 < region.guest_base) {
    return absl::InvalidArgumentError(
        absl::StrFormat("region [0x%x, +0x%x) wraps around the address space",
                        region.guest_base, region.size));
  }
  for (const MemoryRegion& r : regions_) {
    // Compare last bytes: a region may end at 2^64, where base + size is 0.
    if (region.guest_base <= r.guest_base + (r.size - 1) &&
        r.guest_base <= region.guest_base + (region.size - 1)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "region [0x%x, +0x%x) overlaps [0x%x, +0x%x)", region.guest_base,
          region.size, r.guest_base, r.size));
    }
  }
  regions_.push_back(region);
  std::sort(regions_.begin(), regions_.end(),
            [](const MemoryRegion& a, const MemoryRegion& b) {
              return a.guest_base < b.guest_base;
            });
  first_ = regions_.front();
  return absl::OkStatus();
}

uint64_t GuestMemory::total_size() const {
  uint64_t total = 0;
  for (const MemoryRegion& r : regions_) total += r.size;
  return total;
}

absl::Status GuestMemory::OutOfRange(uint64_t addr, uint64_t len) {
  return absl::OutOfRangeError(absl::StrFormat(
      "guest range [0x%x, +0x%x) is outside guest memory", addr, len));
}

const MemoryRegion* GuestMemory::FindRegion(uint64_t addr) const {
  // Regions are few (one or two in a VMM, a handful in vhost-user): a linear
  // scan beats a binary search here.
  for (const MemoryRegion& r : regions_) {
    if (addr - r.guest_base < r.size) return &r;
  }
  return nullptr;
}

uint8_t* GuestMemory::HostPointerSlow(uint64_t addr, uint64_t len) const {
  const MemoryRegion* r = FindRegion(addr);
  if (r == nullptr) return nullptr;
  const uint64_t offset = addr - r->guest_base;
  if (len > r->size - offset) return nullptr;
  return r->host + offset;
}

bool GuestMemory::ContainsSlow(uint64_t addr, uint64_t len) const {
  if (const MemoryRegion* r = FindRegion(addr);
      r != nullptr && len <= r->size - (addr - r->guest_base)) {
    return true;
  }
  if (len == 0) {
    for (const MemoryRegion& r : regions_) {
      if (addr - r.guest_base <= r.size) return true;
    }
    return false;
  }
  if (addr + (len - 1) < addr) return false;  // wraps around 2^64
  // Walk adjacent regions (sorted) until the range is covered.
  uint64_t cursor = addr;
  const uint64_t last = addr + (len - 1);
  while (true) {
    const MemoryRegion* r = FindRegion(cursor);
    if (r == nullptr) return false;
    const uint64_t region_last = r->guest_base + (r->size - 1);
    if (last <= region_last) return true;
    cursor = region_last + 1;
  }
}

absl::StatusOr<absl::Span<uint8_t>> GuestMemory::Translate(uint64_t addr,
                                                           uint64_t len) const {
  if (uint8_t* p = HostPointer(addr, len); p != nullptr) {
    return absl::MakeSpan(p, len);
  }
  if (len == 0) {
    // An empty range at the very end of a region is fine.
    for (const MemoryRegion& r : regions_) {
      if (addr - r.guest_base <= r.size) {
        return absl::MakeSpan(r.host + (addr - r.guest_base), 0);
      }
    }
  }
  if (Contains(addr, len)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "guest range [0x%x, +0x%x) crosses a memory region boundary", addr,
        len));
  }
  return OutOfRange(addr, len);
}

absl::Status GuestMemory::Read(uint64_t addr, absl::Span<uint8_t> out) const {
  uint8_t* dst = out.data();
  return ForEachSpan(addr, out.size(), [&](absl::Span<uint8_t> piece) {
    std::memcpy(dst, piece.data(), piece.size());
    dst += piece.size();
  });
}

absl::Status GuestMemory::Write(uint64_t addr,
                                absl::Span<const uint8_t> in) const {
  const uint8_t* src = in.data();
  return ForEachSpan(addr, in.size(), [&](absl::Span<uint8_t> piece) {
    std::memcpy(piece.data(), src, piece.size());
    src += piece.size();
  });
}

absl::Status GuestMemory::Fill(uint64_t addr, uint64_t len,
                               uint8_t value) const {
  return ForEachSpan(addr, len, [&](absl::Span<uint8_t> piece) {
    std::memset(piece.data(), value, piece.size());
  });
}

absl::StatusOr<uint16_t> GuestMemory::LoadAcquire16(uint64_t addr) const {
  if (addr % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("unaligned 16-bit index at 0x%x", addr));
  }
  uint8_t* p = HostPointer(addr, 2);
  if (p == nullptr) {
    return absl::OutOfRangeError(
        absl::StrFormat("16-bit index at 0x%x is outside guest memory", addr));
  }
  return __atomic_load_n(reinterpret_cast<uint16_t*>(p), __ATOMIC_ACQUIRE);
}

absl::Status GuestMemory::StoreRelease16(uint64_t addr, uint16_t value) const {
  if (addr % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("unaligned 16-bit index at 0x%x", addr));
  }
  uint8_t* p = HostPointer(addr, 2);
  if (p == nullptr) {
    return absl::OutOfRangeError(
        absl::StrFormat("16-bit index at 0x%x is outside guest memory", addr));
  }
  __atomic_store_n(reinterpret_cast<uint16_t*>(p), value, __ATOMIC_RELEASE);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<GuestMemoryMmap>> GuestMemoryMmap::Create(
    const std::vector<RegionSpec>& regions, Options options) {
  const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  if (regions.empty()) {
    return absl::InvalidArgumentError("guest memory needs at least one region");
  }
  uint64_t total = 0;
  for (const RegionSpec& spec : regions) {
    if (spec.size == 0 || spec.size % page != 0 ||
        spec.guest_base % page != 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("region [0x%x, +0x%x) is empty or not page aligned",
                          spec.guest_base, spec.size));
    }
    total += spec.size;
  }
  auto mem = std::unique_ptr<GuestMemoryMmap>(new GuestMemoryMmap());
  if (options.shared) {
    mem->fd_ = memfd_create("vmmkit-guest-memory", MFD_CLOEXEC);
    if (mem->fd_ < 0) return ErrnoToStatus(errno, "memfd_create");
    if (ftruncate(mem->fd_, static_cast<off_t>(total)) != 0) {
      return ErrnoToStatus(errno, "ftruncate guest memory");
    }
  }
  uint64_t file_offset = 0;
  for (const RegionSpec& spec : regions) {
    // Reserve guard + region + guard inaccessible, then open the middle.
    const size_t length = spec.size + 2 * page;
    void* base = mmap(nullptr, length, PROT_NONE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED) return ErrnoToStatus(errno, "mmap guest memory");
    mem->mappings_.push_back({base, length});
    uint8_t* host = static_cast<uint8_t*>(base) + page;
    void* p;
    if (options.shared) {
      p = mmap(host, spec.size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
               mem->fd_, static_cast<off_t>(file_offset));
    } else {
      p = mmap(host, spec.size, PROT_READ | PROT_WRITE,
               MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
    }
    if (p == MAP_FAILED) return ErrnoToStatus(errno, "mmap guest memory");
    file_offset += spec.size;
    absl::Status s = mem->AddRegion(
        {.guest_base = spec.guest_base, .size = spec.size, .host = host});
    if (!s.ok()) return s;
  }
  return mem;
}

GuestMemoryMmap::~GuestMemoryMmap() {
  for (const Mapping& m : mappings_) munmap(m.base, m.length);
  if (fd_ >= 0) close(fd_);
}

}  // namespace vmmkit::virtqueue
