// vmm/admin_legacy.h: what Transport::kPciLegacyViaAdmin puts in front of a
// device: the group owner with its administration queue, the VMM's driver of
// that queue and the legacy shim the guest sees (virtio 1.3 §2.12.1.2, the
// recipe of pci/legacy_shim.h). Wiring only: the logic is pci/'s.
//
//   // `member`: the device's VirtioPciFunction, created with admin_legacy.
//   VMMKIT_ASSIGN_OR_RETURN(std::unique_ptr<AdminLegacyGroup> group,
//                           AdminLegacyGroup::Create(*member, config));
//   bus.AddDevice(&group->shim());  // the shim, not the member
//   // Ioeventfds: LegacyShimFunction::LegacyDoorbell(q) ->
//   shim.NotifyQueue(q);
//   // the member's modern doorbells (member->doorbells()) as for a native
//   // function, at the shim's BAR addresses (the shim passes BARs 1..5 on).
//
// One owner per device: the owner is a VMM-internal function (an RNG device
// with one admin queue, never on the guest bus) over its own 64 KiB DMA
// memory, with the member as its only SR-IOV member (VF 1). One owner per
// device keeps the group under the device's one lock (DeviceSlot's mutex).
//
// Thread-compatibility: one thread at a time, together with the member (the
// caller holds one lock over the member and the group).
#ifndef VMMKIT_VMM_ADMIN_LEGACY_H_
#define VMMKIT_VMM_ADMIN_LEGACY_H_

#include <memory>

#include "absl/status/statusor.h"
#include "pci/admin_driver.h"
#include "pci/legacy_shim.h"
#include "pci/virtio_admin.h"
#include "pci/virtio_pci.h"
#include "virtio-device/rng.h"
#include "virtqueue/guest_memory.h"

namespace vmmkit::vmm {

class AdminLegacyGroup {
 public:
  // `member` (created with VirtioPciFunction::Options::admin_legacy) must
  // outlive the group. Errors from the owner, its driver or the shim (e.g.
  // kInvalidArgument for a type without a transitional id).
  static absl::StatusOr<std::unique_ptr<AdminLegacyGroup>> Create(
      pci::VirtioPciFunction& member, virtio::DeviceType type);
  ~AdminLegacyGroup();
  AdminLegacyGroup(const AdminLegacyGroup&) = delete;
  AdminLegacyGroup& operator=(const AdminLegacyGroup&) = delete;

  // What goes on the guest's bus.
  pci::LegacyShimFunction& shim() { return *shim_; }
  const pci::LegacyShimFunction& shim() const { return *shim_; }
  // Admin commands the VMM sent to the owner so far.
  uint64_t commands_sent() const { return driver_->commands_sent(); }

 private:
  AdminLegacyGroup() = default;

  // Declaration order = construction order; destroyed in reverse (the shim
  // first, the memory last).
  std::unique_ptr<virtqueue::GuestMemoryMmap> owner_memory_;
  virtio::RngDevice owner_inner_;
  std::unique_ptr<pci::VirtioAdminOwner> owner_;
  std::unique_ptr<pci::VirtioPciFunction> owner_fn_;
  std::unique_ptr<pci::AdminQueueDriver> driver_;
  std::unique_ptr<pci::LegacyShimFunction> shim_;
};

}  // namespace vmmkit::vmm

#endif  // VMMKIT_VMM_ADMIN_LEGACY_H_
