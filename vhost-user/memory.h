// vhost-user/memory.h: guest memory as a vhost-user front-end shares it, the
// regions of SET_MEM_TABLE mapped from the front-end's file descriptors.
//
//   absl::StatusOr<std::unique_ptr<VhostUserMemory>> mem =
//       VhostUserMemory::Map(msg.regions, absl::MakeSpan(msg.fds));
//   VMMKIT_ASSIGN_OR_RETURN(uint64_t gpa, (*mem)->UserToGuest(desc_uaddr));
//   queue.set_desc_table(gpa); queue.Activate(**mem);
//
// Each region {guest address, size, front-end user address, mmap offset} is
// mapped MAP_SHARED from its fd at its offset and added as a GuestMemory
// region, so that queues and devices see ordinary guest physical memory. The
// front-end's user addresses (what SET_VRING_ADDR carries) translate through
// the same table.
//
// What Map() refuses (kInvalidArgument): no regions or more than
// kMaxMemRegions, a zero size, a range that wraps around 2^64 in guest, user
// or file-offset space, an mmap offset and guest address that differ modulo
// 16 (a guest-aligned ring index would be misaligned in the mapping),
// regions overlapping in guest or in user space, an
// fd count different from the region count, and a region that extends
// beyond the end of its file (a regular file or memfd, checked with fstat:
// touching such a mapping would raise SIGBUS). mmap(2) failures keep their
// errno's code. Residual risk, documented: a front-end that shrinks its file
// *after* SET_MEM_TABLE can still make an access fault; QEMU's
// memory-backend-memfd seals its memfds against shrinking (seal=on, the
// default), and sealed_regions() counts the regions so protected.
//
// Thread-safety: immutable after Map(); const methods from any thread.
#ifndef VMMKIT_VHOST_USER_MEMORY_H_
#define VMMKIT_VHOST_USER_MEMORY_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "base/scoped_fd.h"
#include "vhost-user/message.h"
#include "virtqueue/guest_memory.h"

namespace vmmkit::vhost_user {

class VhostUserMemory final : public virtqueue::GuestMemory {
 public:
  // `fds[i]` backs `regions[i]`; the fds are only borrowed (a mapping keeps
  // its file alive on its own).
  static absl::StatusOr<std::unique_ptr<VhostUserMemory>> Map(
      absl::Span<const MemRegion> regions, absl::Span<const ScopedFd> fds);
  ~VhostUserMemory() override;

  // The guest physical address of front-end user address `user_addr`;
  // kOutOfRange if no region holds it.
  absl::StatusOr<uint64_t> UserToGuest(uint64_t user_addr) const;

  // The table as the front-end sent it.
  const std::vector<MemRegion>& table() const { return table_; }
  // Regions whose file is sealed against shrinking (F_SEAL_SHRINK).
  uint32_t sealed_regions() const { return sealed_regions_; }

 private:
  VhostUserMemory() = default;

  struct Mapping {
    void* base = nullptr;
    size_t length = 0;
  };
  std::vector<Mapping> mappings_;
  std::vector<MemRegion> table_;
  uint32_t sealed_regions_ = 0;
};

}  // namespace vmmkit::vhost_user

#endif  // VMMKIT_VHOST_USER_MEMORY_H_
