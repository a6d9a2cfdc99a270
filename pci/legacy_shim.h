// pci/legacy_shim.h: the virtual transitional PCI function a VMM puts in
// front of a modern-only member device so that a legacy guest driver can
// drive it, its legacy I/O BAR carried out by the group owner through
// administration commands (virtio 1.3 §2.12.1.2; what Linux's
// drivers/vfio/pci/virtio does for a VF).
//
//   // `member`: a modern-only function (a VirtioPciFunction with
//   // admin_legacy, or later a VFIO VF); `admin`: an AdminCommandTransport to
//   // its owner (pci/admin_driver.h).
//   VMMKIT_ASSIGN_OR_RETURN(
//       std::unique_ptr<LegacyShimFunction> shim,
//       LegacyShimFunction::Create(*member, *admin,
//                                  {.member_id = 1,
//                                   .type = virtio::DeviceType::kNet,
//                                   .device_config_size = 12}));
//   VMMKIT_RETURN_IF_ERROR(bus.AddDevice(shim.get()).status());  // not member
//   member->set_msi_sink(&vmm_msi);  member->set_intx_sink(&pin);
//   // An ioeventfd at LegacyDoorbell(q) (BAR 0 + 16, datamatch q) ->
//   // shim->NotifyQueue(q); the modern doorbells are member->doorbells().
//
// What the guest sees: the member's configuration space with the identity
// of a transitional device (device id 0x1000 + the legacy id table,
// revision 0, subsystem vendor 0x1af4, subsystem id = the virtio type), an
// I/O BAR 0 of the legacy size (24 bytes plus the device config, rounded up
// to a power of two, as the native transitional function), and the member's
// other BARs, capabilities (its MSI-X and its modern virtio structures: the
// function stays usable by a modern driver) and MSI-X table, all passed
// through. BAR and command registers are the shim's (the VMM's address
// space), the command register is also written through to the member.
//
// BAR 0: accesses below the legacy common area's end (20, or 24 while the
// member's MSI-X is enabled, read from the member's MSI-X capability)
// become LEGACY_COMMON_CFG_{READ,WRITE}, the rest LEGACY_DEV_CFG_*, as seed
// 001 does, with the range split by intersection: a read is split per
// legacy register and device-config bytes (at most 8 per command, bytes past
// the device config read 0), so any width and alignment returns what the
// native transitional function returns; a write's device-config part is
// always written (in pieces of at most 8 bytes, nothing past the config),
// its register part is sent only if the write stays inside one register
// (the member's decoder then takes it if it is the whole register, as the
// native one does) and is dropped if it crosses registers or runs on into
// the device config, as natively. A 16-bit write of
// QUEUE_NOTIFY goes to the first valid address LEGACY_NOTIFY_INFO gave at
// Create (owner BAR through the transport, or the member's BAR), else it
// is a LEGACY_COMMON_CFG_WRITE. A command that fails reads all-ones and
// writes nothing (counted in stats()).
//
// Byte order: the admin commands carry data little-endian, so the shim is
// for little-endian guests (x86, little-endian Arm), as its Linux
// counterpart; a big-endian guest would need per-field swapping.
//
// Thread-compatibility: one thread at a time, together with the member and
// the owner (the VMM holds one lock over the group).
#ifndef VMMKIT_PCI_LEGACY_SHIM_H_
#define VMMKIT_PCI_LEGACY_SHIM_H_

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "pci/admin_driver.h"
#include "pci/config_space.h"
#include "pci/function.h"
#include "pci/virtio_pci.h"
#include "virtio-device/virtio_device.h"

namespace vmmkit::pci {

class LegacyShimFunction final : public PciFunction {
 public:
  struct Options {
    uint64_t member_id = 1;  // SR-IOV VF number in the owner's group
    virtio::DeviceType type = virtio::DeviceType::kNet;
    // Bytes of the member's device config (the legacy view's size).
    uint32_t device_config_size = 0;
  };
  struct Stats {
    uint64_t commands = 0;
    uint64_t failed_commands = 0;  // transport errors and non-OK statuses
    uint64_t notifications = 0;
  };

  // `member` and `owner` must outlive the shim. kInvalidArgument if the type
  // has no transitional id, the member has a BAR 0 or device_config_size is
  // above 232; kFailedPrecondition if the owner does not give this member's
  // legacy interface (a probe command fails).
  static absl::StatusOr<std::unique_ptr<LegacyShimFunction>> Create(
      PciFunction& member, AdminCommandTransport& owner,
      const Options& options);

  // PciFunction.
  ConfigSpace& config_space() override { return config_; }
  void ConfigRead(uint32_t offset, absl::Span<uint8_t> data) override;
  void ConfigWrite(uint32_t offset, absl::Span<const uint8_t> data) override;
  void BarRead(int bar, uint64_t offset, absl::Span<uint8_t> data) override;
  void BarWrite(int bar, uint64_t offset,
                absl::Span<const uint8_t> data) override;

  // A QUEUE_NOTIFY of `queue` (what an ioeventfd on BAR 0 + 16 stands for).
  void NotifyQueue(uint16_t queue);
  // Where a legacy driver kicks `queue`: BAR 0 + 16, 2 bytes, datamatch the
  // queue index (for an ioeventfd whose handler calls NotifyQueue).
  static Doorbell LegacyDoorbell(uint16_t queue) {
    return {.bar = kLegacyBar,
            .offset = kLegacyQueueNotify,
            .width = 2,
            .datamatch = queue,
            .queue = queue};
  }
  // Where notifications go: the NOTIFY_INFO entry in use (flags 0: none,
  // LEGACY_COMMON_CFG_WRITE is used).
  uint8_t notify_flags() const { return notify_flags_; }
  int notify_bar() const { return notify_bar_; }
  uint64_t notify_offset() const { return notify_offset_; }
  bool msix_enabled() const;
  const Stats& stats() const { return stats_; }

 private:
  LegacyShimFunction(PciFunction& member, AdminCommandTransport& owner,
                     const Options& options, const ConfigSpace::Options& ids);
  absl::Status Init();
  uint32_t common_size() const { return msix_enabled() ? 24 : 20; }
  // One command for [offset, offset + data.size()) of an area; false if it
  // failed.
  bool Read(uint16_t opcode, uint32_t offset, absl::Span<uint8_t> data);
  bool Write(uint16_t opcode, uint32_t offset, absl::Span<const uint8_t> data);
  void LegacyRead(uint64_t offset, absl::Span<uint8_t> data);
  void LegacyWrite(uint64_t offset, absl::Span<const uint8_t> data);

  PciFunction& member_;
  AdminCommandTransport& owner_;
  const Options options_;
  ConfigSpace config_;
  uint32_t msix_cap_ = 0;  // in the member's configuration space, or 0
  uint8_t notify_flags_ = 0;
  int notify_bar_ = -1;
  uint64_t notify_offset_ = 0;
  Stats stats_;
};

}  // namespace vmmkit::pci

#endif  // VMMKIT_PCI_LEGACY_SHIM_H_
