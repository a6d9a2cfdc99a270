// pci/admin_driver.h: how a VMM sends group administration commands to an
// owner device (pci/virtio_admin.h), and a driver that does it through the
// owner's administration virtqueue.
//
// AdminCommandTransport is what the legacy shim (pci/legacy_shim.h) needs
// from an owner: execute one command, and write a notification address. An
// owner passed through from the host (a VFIO PF whose admin queue the host
// kernel drives) would implement it with the host's interface;
// AdminQueueDriver implements it as a virtio driver of an owner function
// the VMM holds itself, over a small memory the VMM owns (the owner's DMA
// view), which is why it is production code and its ring is
// //virtqueue:driver's DriverQueue.
//
//   auto vmm_mem = *GuestMemoryMmap::Create({{.guest_base = 0,
//                                             .size = 64 << 10}});
//   auto owner = *VirtioPciFunction::Create(*owner_dev, *vmm_mem,
//                                           {.admin_queues = 1});
//   VMMKIT_ASSIGN_OR_RETURN(std::unique_ptr<AdminQueueDriver> admin,
//                           AdminQueueDriver::Create(*owner, *vmm_mem, {}));
//   // admin->used_commands() now has the legacy commands; hand `*admin` to
//   // a LegacyShimFunction.
//
// What Create does, as Linux's virtio_pci_modern + virtio_pci_admin do: walk
// the capability list for the common and notify structures, reset, ACKNOWLEDGE
// | DRIVER, require VERSION_1 and VIRTIO_F_ADMIN_VQ, accept exactly those,
// FEATURES_OK (re-read), set up queue admin_queue_index (64-bit addresses as
// two 32-bit halves), DRIVER_OK, VF Enable (Options::enable_vfs), then
// LIST_QUERY and LIST_USE of the
// commands it knows (0..6) that the owner offers. Commands run one at a time:
// a chain {header + data readable, status + result writable}, a kick when the
// ring asks for one, then the used ring polled up to max_polls times (the
// owner in this process completes inside the kick).
//
// Everything the owner returns is checked: used ids and lengths, the status.
// A command that never completes makes the driver unusable (it cannot know
// whether the owner will still write the buffers): kDeadlineExceeded, then
// kFailedPrecondition for every later call.
//
// Thread-compatibility: one thread at a time (commands are serialized).
#ifndef VMMKIT_PCI_ADMIN_DRIVER_H_
#define VMMKIT_PCI_ADMIN_DRIVER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "pci/function.h"
#include "virtqueue/driver_queue.h"
#include "virtqueue/guest_memory.h"

namespace vmmkit::pci {

// The owner's answer to one command.
struct AdminCompletion {
  uint16_t status = 0;            // kAdminStatus*
  uint16_t status_qualifier = 0;  // kAdminQualifier*
  // Bytes of command_specific_result the owner wrote (used length - 8).
  uint32_t result_length = 0;
};

class AdminCommandTransport {
 public:
  virtual ~AdminCommandTransport() = default;
  // Sends {opcode, group_type, group_member_id, `data`} and waits for the
  // owner. `result` is the command_specific_result buffer (its size is what
  // the owner may write; bytes it did not write read zero). An error means
  // the command did not complete; the owner's own failures are statuses.
  virtual absl::StatusOr<AdminCompletion> Execute(
      uint16_t opcode, uint16_t group_type, uint64_t group_member_id,
      absl::Span<const uint8_t> data, absl::Span<uint8_t> result) = 0;
  // Writes a 16-bit `value`, little-endian, at `offset` in BAR `bar` of the
  // owner (a LEGACY_NOTIFY_INFO address with flags 1).
  virtual void WriteOwnerBar16(int bar, uint64_t offset, uint16_t value) = 0;
};

class AdminQueueDriver final : public AdminCommandTransport {
 public:
  struct Options {
    // The admin queue's size: at most this (and the owner's maximum).
    uint16_t queue_size = 8;
    // Used-ring polls before a command counts as lost.
    int max_polls = 1000;
    // Called between polls (an owner elsewhere completes asynchronously).
    std::function<void()> wait;
    // If the owner has an SR-IOV capability: set NumVFs = TotalVFs and VF
    // Enable | VF MSE before the first command, as Linux's sriov_configure
    // does when a PF's VFs are enabled (the SR-IOV group exists only then).
    bool enable_vfs = true;
  };
  // The memory the owner's DMA goes to: the driver uses its first 20 KiB
  // (ring, one command and one result buffer, 4 KiB each). `owner` and
  // `memory` must outlive the driver. kNotFound if the owner has no common or
  // notify capability, kFailedPrecondition if it does not offer VERSION_1
  // and VIRTIO_F_ADMIN_VQ, refuses FEATURES_OK, has no admin queue or
  // fails DRIVER_OK; kResourceExhausted if `memory` is too small.
  static absl::StatusOr<std::unique_ptr<AdminQueueDriver>> Create(
      PciFunction& owner, const virtqueue::GuestMemory& memory,
      const Options& options);

  // AdminCommandTransport. kInvalidArgument if `data` is above 4 KiB - 24 or
  // `result` above 4 KiB - 8.
  absl::StatusOr<AdminCompletion> Execute(uint16_t opcode, uint16_t group_type,
                                          uint64_t group_member_id,
                                          absl::Span<const uint8_t> data,
                                          absl::Span<uint8_t> result) override;
  void WriteOwnerBar16(int bar, uint64_t offset, uint16_t value) override;

  // LIST_QUERY's answer, and what LIST_USE set (for the SR-IOV group).
  uint64_t supported_commands() const { return supported_; }
  uint64_t used_commands() const { return used_; }
  uint16_t admin_queue_index() const { return queue_index_; }
  uint64_t commands_sent() const { return commands_; }

 private:
  struct Cap {
    int bar = -1;
    uint32_t offset = 0;
    uint32_t length = 0;
  };
  AdminQueueDriver(PciFunction& owner, const virtqueue::GuestMemory& memory,
                   const Options& options)
      : owner_(owner), memory_(memory), options_(options) {}
  absl::Status Probe();
  absl::Status FindCapabilities();
  void EnableVfs();
  uint64_t CommonRead(uint32_t offset, int width);
  void CommonWrite(uint32_t offset, uint64_t value, int width);

  PciFunction& owner_;
  const virtqueue::GuestMemory& memory_;
  Options options_;
  Cap common_, notify_;
  uint32_t notify_multiplier_ = 0;
  uint64_t base_ = 0;  // of the driver's part of `memory`
  std::optional<virtqueue::DriverQueue> queue_;
  uint16_t queue_index_ = 0;
  uint64_t notify_offset_ = 0;  // in notify_.bar
  uint64_t supported_ = 0;
  uint64_t used_ = 0;
  uint64_t commands_ = 0;
  bool broken_ = false;
};

}  // namespace vmmkit::pci

#endif  // VMMKIT_PCI_ADMIN_DRIVER_H_
