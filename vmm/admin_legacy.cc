// vmm/admin_legacy.cc: see admin_legacy.h.
#include "vmm/admin_legacy.h"

#include "base/status.h"

namespace vmmkit::vmm {

namespace {
// The owner's DMA view: AdminQueueDriver uses its first 20 KiB.
constexpr uint64_t kOwnerMemoryBytes = 64 << 10;
// The BAR of the owner's notify area (the members' legacy doorbells).
constexpr int kOwnerNotifyBar = 2;
}  // namespace

AdminLegacyGroup::~AdminLegacyGroup() = default;

absl::StatusOr<std::unique_ptr<AdminLegacyGroup>> AdminLegacyGroup::Create(
    pci::VirtioPciFunction& member, virtio::DeviceType type) {
  std::unique_ptr<AdminLegacyGroup> g(new AdminLegacyGroup());
  VMMKIT_ASSIGN_OR_RETURN(g->owner_memory_,
                          virtqueue::GuestMemoryMmap::Create(
                              {{.guest_base = 0, .size = kOwnerMemoryBytes}}));
  VMMKIT_ASSIGN_OR_RETURN(g->owner_,
                          pci::VirtioAdminOwner::Create(g->owner_inner_, {}));
  VMMKIT_RETURN_IF_ERROR(g->owner_->AddMember(&member));
  VMMKIT_ASSIGN_OR_RETURN(
      g->owner_fn_, pci::VirtioPciFunction::Create(
                        *g->owner_, *g->owner_memory_, {.admin_queues = 1}));
  VMMKIT_RETURN_IF_ERROR(g->owner_->InstallSriovCapability(
      *g->owner_fn_, member.config_space().Get16(pci::kRegDeviceId)));
  VMMKIT_RETURN_IF_ERROR(
      g->owner_->InstallNotifyArea(*g->owner_fn_, kOwnerNotifyBar));
  VMMKIT_ASSIGN_OR_RETURN(
      g->driver_,
      pci::AdminQueueDriver::Create(*g->owner_fn_, *g->owner_memory_, {}));
  VMMKIT_ASSIGN_OR_RETURN(
      g->shim_, pci::LegacyShimFunction::Create(
                    member, *g->driver_,
                    {.member_id = 1,
                     .type = type,
                     .device_config_size = member.state().config_size()}));
  return g;
}

}  // namespace vmmkit::vmm
