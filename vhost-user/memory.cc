#include "vhost-user/memory.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/str_format.h"
#include "base/status.h"

namespace vmmkit::vhost_user {

namespace {

// True if [base, base + size) wraps around 2^64 (size > 0).
bool Wraps(uint64_t base, uint64_t size) { return base + (size - 1) < base; }

constexpr uint64_t kAlignment = 16;

bool Overlap(uint64_t a, uint64_t a_size, uint64_t b, uint64_t b_size) {
  return a <= b + (b_size - 1) && b <= a + (a_size - 1);
}

}  // namespace

absl::StatusOr<std::unique_ptr<VhostUserMemory>> VhostUserMemory::Map(
    absl::Span<const MemRegion> regions, absl::Span<const ScopedFd> fds) {
  if (regions.empty() || regions.size() > kMaxMemRegions) {
    return absl::InvalidArgumentError(
        absl::StrFormat("memory table with %u regions (1..%u allowed)",
                        regions.size(), kMaxMemRegions));
  }
  if (fds.size() != regions.size()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "memory table with %u regions and %u fds", regions.size(), fds.size()));
  }
  const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  for (size_t i = 0; i < regions.size(); ++i) {
    const MemRegion& r = regions[i];
    if (r.size == 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("memory region %u is empty", i));
    }
    if (Wraps(r.guest_addr, r.size) || Wraps(r.user_addr, r.size) ||
        Wraps(r.mmap_offset, r.size) ||
        r.mmap_offset % page + r.size < r.size ||
        r.mmap_offset + r.size > static_cast<uint64_t>(INT64_MAX)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "memory region %u [guest 0x%x, user 0x%x, offset 0x%x, +0x%x) wraps "
          "around the address space",
          i, r.guest_addr, r.user_addr, r.mmap_offset, r.size));
    }
    // The rings' indices are accessed atomically at the alignment the
    // guest gave them: the mapping must keep it (16, the descriptor table's,
    // covers every ring field).
    if ((r.mmap_offset - r.guest_addr) % kAlignment != 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "memory region %u: mmap offset 0x%x and guest address 0x%x differ "
          "modulo %u, so guest-aligned accesses would be misaligned",
          i, r.mmap_offset, r.guest_addr, kAlignment));
    }
    for (size_t j = 0; j < i; ++j) {
      const MemRegion& o = regions[j];
      if (Overlap(r.guest_addr, r.size, o.guest_addr, o.size)) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "memory regions %u and %u overlap in guest memory", j, i));
      }
      if (Overlap(r.user_addr, r.size, o.user_addr, o.size)) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "memory regions %u and %u overlap in front-end address space", j,
            i));
      }
    }
    if (!fds[i].valid()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("memory region %u has no file descriptor", i));
    }
  }

  std::unique_ptr<VhostUserMemory> mem(new VhostUserMemory());
  for (size_t i = 0; i < regions.size(); ++i) {
    const MemRegion& r = regions[i];
    const int fd = fds[i].get();
    struct stat st;
    if (fstat(fd, &st) != 0) {
      return ErrnoToStatus(errno, absl::StrFormat("fstat memory region %u", i));
    }
    if (S_ISREG(st.st_mode) &&
        r.mmap_offset + r.size > static_cast<uint64_t>(st.st_size)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "memory region %u [offset 0x%x, +0x%x) extends beyond the end of "
          "its file (0x%x bytes)",
          i, r.mmap_offset, r.size, st.st_size));
    }
    const int seals = fcntl(fd, F_GET_SEALS);
    if (seals >= 0 && (seals & F_SEAL_SHRINK)) ++mem->sealed_regions_;
    // mmap wants a page-aligned offset: map from the page holding the
    // region's first byte.
    const uint64_t slack = r.mmap_offset % page;
    const uint64_t length = r.size + slack;
    if (length > SIZE_MAX) {
      return absl::InvalidArgumentError(
          absl::StrFormat("memory region %u is too large to map", i));
    }
    void* base = mmap(nullptr, static_cast<size_t>(length),
                      PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd,
                      static_cast<off_t>(r.mmap_offset - slack));
    if (base == MAP_FAILED) {
      return ErrnoToStatus(
          errno,
          absl::StrFormat("mmap memory region %u (0x%x bytes)", i, r.size));
    }
    mem->mappings_.push_back({base, static_cast<size_t>(length)});
    VMMKIT_RETURN_IF_ERROR(
        mem->AddRegion({.guest_base = r.guest_addr,
                        .size = r.size,
                        .host = static_cast<uint8_t*>(base) + slack}));
    mem->table_.push_back(r);
  }
  return mem;
}

VhostUserMemory::~VhostUserMemory() {
  for (const Mapping& m : mappings_) munmap(m.base, m.length);
}

absl::StatusOr<uint64_t> VhostUserMemory::UserToGuest(
    uint64_t user_addr) const {
  for (const MemRegion& r : table_) {
    if (user_addr - r.user_addr < r.size) {
      return r.guest_addr + (user_addr - r.user_addr);
    }
  }
  return absl::OutOfRangeError(absl::StrFormat(
      "front-end address 0x%x is outside the memory table", user_addr));
}

}  // namespace vmmkit::vhost_user
