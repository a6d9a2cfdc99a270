// pci/virtio_pci.h: the virtio-pci transport, in its three modes, over one
// virtio::DeviceState.
//
//   VMMKIT_ASSIGN_OR_RETURN(
//       std::unique_ptr<VirtioPciFunction> fn,
//       VirtioPciFunction::Create(device, memory,
//                                 {.mode = VirtioPciMode::kTransitional}));
//   VMMKIT_RETURN_IF_ERROR(bus.AddDevice(fn.get()).status());
//   fn->set_msi_sink(&vmm_msi);  fn->set_intx_sink(&ioapic_pin);
//   for (const Doorbell& d : fn->doorbells()) { /* ioeventfd at BAR + offset */
//   }
//   ... on an ioeventfd: fn->NotifyQueue(d.queue);
//
// Modes (virtio 1.2 §4.1.2):
// - kModern: device id 0x1040 + type, revision 1, the virtio structures in
//   vendor capabilities (common, notify, ISR, device config, PCI config
//   access window) pointing into BAR 4.
// - kTransitional: device id from the 0x1000 range, revision 0, subsystem id
//   = device type; the legacy I/O BAR 0 *and* the modern capabilities. Only
//   types with a legacy id can be transitional (kInvalidArgument otherwise).
// - kLegacy: the transitional ids and the legacy I/O BAR 0 only (virtio 0.9.5).
// MSI-X (BAR 1: table at 0, PBA at 0x800) is offered in every mode.
//
// Identity policy (the peers disagree on modern subsystem ids):
//
//   | mode         | device id      | rev | subsys vendor | subsys id   |
//   |--------------|----------------|-----|---------------|-------------|
//   | modern       | 0x1040 + type  |  1  | 0x1af4        | 0x40 + type |
//   | transitional | 0x1000 range   |  0  | 0x1af4        | type        |
//   | legacy       | 0x1000 range   |  0  | 0x1af4        | type        |
//
// QEMU gives modern devices subsystem id 0x1100 (its own), kvmtool the device
// type, Cloud Hypervisor 0x40 + type. §4.1.2.1 says transitional devices MUST
// use the type and non-transitional ones SHOULD use 0x40 or more; vmmkit uses
// 0x40 + type so that the id is both in the recommended range and says what
// the device is.
//
// The legacy I/O BAR (§4.1.4.10 "Legacy Interfaces"), guest-native byte order
// for the device config, little-endian registers (x86/ARM legacy):
//   0 host features (bits 0..31, plus VIRTIO_F_BAD_FEATURE)  4 guest features
//   8 queue PFN (address >> 12, alignment 4096; writing 0 resets the device)
//   12 queue size (read-only)  14 queue select  16 queue notify  18 status
//   19 ISR (read clears it and lowers INTx)
//   20 config vector, 22 queue vector: only while MSI-X is enabled, so the
//   device config starts at 20, or at 24 with MSI-X, and moves when the
//   driver toggles MSI-X.
// Quirks kept from QEMU, which real legacy drivers depend on: a driver that
// takes VIRTIO_F_BAD_FEATURE is given the device's fallback features (none:
// vmmkit devices need no legacy fallbacks, so it gets 0); writing exactly
// ACKNOWLEDGE|DRIVER to the legacy status register turns on bus mastering
// (Linux before 2.6.34 forgot to).
//
// Transitional devices: both views act on the one DeviceState; a write to the
// legacy guest-features register sets feature word 0 and clears the others
// (as QEMU does), so a driver that uses the legacy view is a legacy driver
// (VERSION_1 not accepted). Whether the driver accepted VERSION_1, through
// either view, decides the mode: ring layout and byte order at DRIVER_OK, and
// the byte order of the device config seen through the legacy view.
//
// Modern common configuration: fields accessed at their own width (64-bit
// fields also as two 32-bit halves); other writes are dropped and reads see
// the bytes of the fields they cover. queue_enable accepts only 1;
// queue_size may be lowered (DRIVER_OK checks it is a power of two);
// registers of a queue_select beyond num_queues read 0 and ignore writes;
// an MSI-X vector the device cannot use reads back 0xffff (NO_VECTOR).
// With Options::admin_queues (an owner device, pci/virtio_admin.h) the last
// queues are administration virtqueues: num_queues leaves them out and
// admin_queue_index / admin_queue_num (0x3c / 0x3e, virtio 1.3) say where
// they are; other functions read 0 there.
// Options::admin_legacy makes a modern-only member whose legacy register
// file is reached only through AdminLegacy*() (its owner's
// LEGACY_*_CFG_* commands): the same LegacyRegs decoder as the I/O BAR.
// Notify: a configurable layout (notify_off_multiplier 4 by default, 0 for one
// doorbell that carries the queue index, or one page per queue); with
// VIRTIO_F_NOTIFICATION_DATA the written value's low 16 bits name the queue.
// The PCI configuration access window (VIRTIO_PCI_CAP_PCI_CFG) is strict:
// it honours cap.bar, accepts lengths 1, 2 and 4 at naturally aligned
// offsets inside the BAR, and reaches every region; anything else reads
// all-ones / writes nothing.
//
// Thread-compatibility: one thread at a time (the VMM holds the device's
// lock around register accesses, notifications and queue work).
#ifndef VMMKIT_PCI_VIRTIO_PCI_H_
#define VMMKIT_PCI_VIRTIO_PCI_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "pci/function.h"
#include "virtio-device/device_state.h"
#include "virtio-device/virtio_device.h"

namespace vmmkit::pci {

enum class VirtioPciMode : uint8_t { kModern, kTransitional, kLegacy };
const char* VirtioPciModeName(VirtioPciMode mode);

// The device id of the 0x1000 range for a device type, if it has one.
std::optional<uint16_t> TransitionalDeviceId(virtio::DeviceType type);

// virtio_pci_cap (§4.1.4), the body after cap_vndr and cap_next.
inline constexpr uint8_t kVirtioPciCapCommonCfg = 1;
inline constexpr uint8_t kVirtioPciCapNotifyCfg = 2;
inline constexpr uint8_t kVirtioPciCapIsrCfg = 3;
inline constexpr uint8_t kVirtioPciCapDeviceCfg = 4;
inline constexpr uint8_t kVirtioPciCapPciCfg = 5;

struct VirtioPciCap {
  uint8_t cap_vndr;  // 0x09
  uint8_t cap_next;
  uint8_t cap_len;
  uint8_t cfg_type;
  uint8_t bar;
  uint8_t id;
  uint8_t padding[2];
  uint32_t offset;  // little-endian
  uint32_t length;  // little-endian
};
static_assert(sizeof(VirtioPciCap) == 16);
static_assert(offsetof(VirtioPciCap, bar) == 4);
static_assert(offsetof(VirtioPciCap, offset) == 8);
static_assert(offsetof(VirtioPciCap, length) == 12);

// Common configuration offsets (§4.1.4.3).
inline constexpr uint32_t kCommonDfSelect = 0x00;
inline constexpr uint32_t kCommonDf = 0x04;
inline constexpr uint32_t kCommonGfSelect = 0x08;
inline constexpr uint32_t kCommonGf = 0x0c;
inline constexpr uint32_t kCommonMsixConfig = 0x10;
inline constexpr uint32_t kCommonNumQueues = 0x12;
inline constexpr uint32_t kCommonStatus = 0x14;
inline constexpr uint32_t kCommonCfgGeneration = 0x15;
inline constexpr uint32_t kCommonQueueSelect = 0x16;
inline constexpr uint32_t kCommonQueueSize = 0x18;
inline constexpr uint32_t kCommonQueueMsixVector = 0x1a;
inline constexpr uint32_t kCommonQueueEnable = 0x1c;
inline constexpr uint32_t kCommonQueueNotifyOff = 0x1e;
inline constexpr uint32_t kCommonQueueDesc = 0x20;
inline constexpr uint32_t kCommonQueueDriver = 0x28;
inline constexpr uint32_t kCommonQueueDevice = 0x30;
inline constexpr uint32_t kCommonQueueNotifyData = 0x38;
inline constexpr uint32_t kCommonQueueReset = 0x3a;
// virtio 1.3 §4.1.4.3: "About the administration virtqueue" (valid when
// VIRTIO_F_ADMIN_VQ is negotiated; read-only for the driver).
inline constexpr uint32_t kCommonAdminQueueIndex = 0x3c;
inline constexpr uint32_t kCommonAdminQueueNum = 0x3e;
inline constexpr uint32_t kCommonCfgSize = 0x40;

// Legacy register offsets (§4.1.4.10).
inline constexpr uint32_t kLegacyHostFeatures = 0;
inline constexpr uint32_t kLegacyGuestFeatures = 4;
inline constexpr uint32_t kLegacyQueuePfn = 8;
inline constexpr uint32_t kLegacyQueueNum = 12;
inline constexpr uint32_t kLegacyQueueSelect = 14;
inline constexpr uint32_t kLegacyQueueNotify = 16;
inline constexpr uint32_t kLegacyStatus = 18;
inline constexpr uint32_t kLegacyIsr = 19;
inline constexpr uint32_t kLegacyConfigVector = 20;
inline constexpr uint32_t kLegacyQueueVector = 22;
inline constexpr uint32_t kLegacyConfigNoMsix = 20;
inline constexpr uint32_t kLegacyConfigMsix = 24;
inline constexpr uint32_t kLegacyPfnShift = 12;
// True if [offset, offset + length) is not empty, lies inside one legacy
// register (the table above; 20 and 22 only while MSI-X is enabled) and so
// inside the legacy common area, which ends at 20, or 24 with MSI-X. What
// virtio 1.3's LEGACY_COMMON_CFG_{READ,WRITE} call "a single field ...
// completely within the virtio common configuration".
bool LegacyCommonFieldAccess(uint32_t offset, uint32_t length,
                             bool msix_enabled);
inline constexpr uint32_t kLegacyVringAlign = 4096;

// BARs and the modern BAR's layout.
inline constexpr int kLegacyBar = 0;
inline constexpr int kMsixBar = 1;
inline constexpr int kModernBar = 4;
inline constexpr uint64_t kModernCommonOffset = 0x0000;
inline constexpr uint64_t kModernIsrOffset = 0x1000;
inline constexpr uint64_t kModernDeviceOffset = 0x2000;
inline constexpr uint64_t kModernNotifyOffset = 0x3000;

// Where a queue's notifications land, for a VMM that puts an ioeventfd there.
struct Doorbell {
  int bar;
  uint64_t offset;  // within the BAR
  uint32_t width;   // bytes the driver writes
  // Only writes of this value (the queue index) are this queue's; nullopt:
  // any value at this address is.
  std::optional<uint64_t> datamatch;
  uint16_t queue;
};

class VirtioPciFunction final : public GenericPciFunction,
                                private virtio::InterruptSink {
 public:
  enum class NotifyLayout : uint8_t {
    kMultiplier4,  // queue q at notify base + 4 * q
    kShared,       // one doorbell (multiplier 0), the value names the queue
    kPagePerQueue  // queue q at notify base + 4096 * q
  };
  struct Options {
    VirtioPciMode mode = VirtioPciMode::kModern;
    NotifyLayout notify_layout = NotifyLayout::kMultiplier4;
    // MSI-X vectors: one per queue plus one for config when 0.
    uint16_t msix_vectors = 0;
    virtio::Endian guest_endian = virtio::Endian::kLittle;
    // Offer VIRTIO_F_NOTIFICATION_DATA (modern view): the driver then writes
    // {le16 queue, le16 next_off} to the doorbell, 4 bytes wide.
    bool notification_data = false;
    // An owner device (virtio 1.3 §2.12): the last `admin_queues` of the
    // device's queues are administration virtqueues. The common config
    // reports num_queues without them, admin_queue_index = the first and
    // admin_queue_num = admin_queues. The device must offer
    // VIRTIO_F_ADMIN_VQ (kInvalidArgument otherwise). The function gets a
    // 4 KiB (PCI Express) configuration space for an SR-IOV capability.
    uint16_t admin_queues = 0;
    // A member device whose legacy interface its group owner provides
    // (virtio 1.3 §2.12.1.2 "Legacy Interfaces"): kModern mode only (no
    // legacy BAR; a driver on its own modern interface that does not accept
    // VERSION_1 is refused as by a modern-only device), little-endian guest
    // only (the admin commands carry data little-endian unconditionally).
    // The owner executes the legacy register file on this function through
    // AdminLegacy*(): the same decoder as the legacy I/O BAR.
    bool admin_legacy = false;
  };

  // `device` and `memory` must outlive the function. kInvalidArgument for a
  // transitional or legacy device whose type has no legacy id.
  static absl::StatusOr<std::unique_ptr<VirtioPciFunction>> Create(
      virtio::VirtioDevice& device, const virtio::GuestMemory& memory,
      const Options& options);
  ~VirtioPciFunction() override;

  VirtioPciMode mode() const { return options_.mode; }
  virtio::DeviceState& state() { return state_; }
  const virtio::DeviceState& state() const { return state_; }
  // Where MSI-X messages go (the VMM); must be set before the guest runs.
  void set_msi_sink(MsiSink* sink) { msi_forward_.target = sink; }

  // Every queue's doorbell(s): the legacy QUEUE_NOTIFY register and/or the
  // modern notify address.
  std::vector<Doorbell> doorbells() const;
  // A notification that arrived outside the register decode (ioeventfd).
  void NotifyQueue(uint16_t queue) { state_.Notify(queue); }

  // ---- The legacy interface of a member (Options::admin_legacy), for its
  // group owner's LEGACY_{COMMON,DEV}_CFG_{READ,WRITE} commands: exactly what
  // the legacy I/O BAR does, common registers at `offset`, device config at
  // legacy_common_size() + `offset`. The owner checks offsets and lengths
  // (LegacyCommonFieldAccess, state().config_size()). Without admin_legacy,
  // reads are zero and writes are dropped.
  bool has_admin_legacy() const { return options_.admin_legacy; }
  // Where the legacy device config starts: 24 while MSI-X is enabled, else 20.
  uint32_t legacy_common_size() const {
    return msix_enabled() ? kLegacyConfigMsix : kLegacyConfigNoMsix;
  }
  void AdminLegacyCommonRead(uint32_t offset, absl::Span<uint8_t> data);
  void AdminLegacyCommonWrite(uint32_t offset, absl::Span<const uint8_t> data);
  void AdminLegacyDeviceRead(uint32_t offset, absl::Span<uint8_t> data);
  void AdminLegacyDeviceWrite(uint32_t offset, absl::Span<const uint8_t> data);

  // Which interface the driver used last: for GetVm's report.
  bool used_legacy_interface() const { return used_legacy_; }
  bool used_modern_interface() const { return used_modern_; }
  uint8_t isr() const { return isr_; }

 private:
  class LegacyRegs;
  class CommonCfg;
  class NotifyRegion;
  class IsrRegion;
  class DeviceCfg;
  struct MsiForward : MsiSink {
    void SendMsi(uint64_t address, uint32_t data) override {
      if (target != nullptr) target->SendMsi(address, data);
    }
    MsiSink* target = nullptr;
  };

  VirtioPciFunction(virtio::VirtioDevice& device,
                    const virtio::GuestMemory& memory, const Options& options,
                    const ConfigSpace::Options& ids);
  absl::Status Init();
  uint32_t notify_multiplier() const;
  uint64_t notify_size() const;

  // virtio::InterruptSink.
  void QueueInterrupt(uint16_t index) override;
  void ConfigInterrupt() override;
  void RaiseIsr(uint8_t bit);
  void ClearIsr();
  void WriteLegacyFeatures(uint32_t value);
  void WriteLegacyPfn(uint32_t pfn);
  uint16_t CheckedVector(uint16_t vector) const;
  bool PciCfgAccessOk(int bar, uint32_t offset, uint32_t length) const;
  bool msix_enabled() const { return msix() != nullptr && msix()->enabled(); }
  // Resets the transport's own state with the device (status 0, PFN 0).
  void ResetTransport();
  void WriteStatus(uint8_t status);
  // A status write through the modern common config.
  void WriteModernStatus(uint8_t status);
  uint16_t visible_queues() const {
    return static_cast<uint16_t>(state_.num_queues() - options_.admin_queues);
  }

  // The PCI configuration access window.
  void PciCfgRead(uint32_t offset, uint32_t length);
  void PciCfgWrite(uint32_t offset, absl::Span<const uint8_t> data);

  Options options_;
  virtio::DeviceState state_;
  MsiForward msi_forward_;
  uint16_t queue_select_ = 0;
  uint32_t device_feature_select_ = 0;
  uint32_t driver_feature_select_ = 0;
  uint8_t isr_ = 0;
  bool used_legacy_ = false;
  bool used_modern_ = false;
  uint32_t pci_cfg_cap_ = 0;  // offset of the PCI_CFG capability, or 0
  std::unique_ptr<RegionHandler> legacy_;
  std::unique_ptr<RegionHandler> common_;
  std::unique_ptr<RegionHandler> notify_;
  std::unique_ptr<RegionHandler> isr_region_;
  std::unique_ptr<RegionHandler> device_cfg_;
};

}  // namespace vmmkit::pci

#endif  // VMMKIT_PCI_VIRTIO_PCI_H_
