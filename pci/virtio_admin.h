// pci/virtio_admin.h: group administration commands (virtio 1.3 §2.12) and
// an owner device that executes them for its SR-IOV group, on an
// administration virtqueue (§2.13, VIRTIO_F_ADMIN_VQ).
//
// The owner provides the legacy interface of modern-only members
// (§2.12.1.2 "Legacy Interfaces"): a VMM presents a virtual transitional
// function to a legacy guest driver (pci/legacy_shim.h) and turns its I/O BAR
// accesses into LEGACY_{COMMON,DEV}_CFG_{READ,WRITE} commands, which the owner
// executes on the member's VirtioPciFunction with the same legacy register
// decoder the legacy I/O BAR uses (VirtioPciFunction::AdminLegacy*).
//
//   // Members: modern-only functions whose legacy interface the owner gives.
//   auto vf1 = *VirtioPciFunction::Create(net1, guest_ram,
//                                         {.admin_legacy = true});
//   // The owner: its own device plus one administration queue.
//   auto owner_dev = *VirtioAdminOwner::Create(pf_net, {});
//   VMMKIT_RETURN_IF_ERROR(owner_dev->AddMember(vf1.get()));
//   auto owner = *VirtioPciFunction::Create(*owner_dev, vmm_memory,
//                                           {.admin_queues = 1});
//   VMMKIT_RETURN_IF_ERROR(owner_dev->InstallSriovCapability(*owner));
//   VMMKIT_RETURN_IF_ERROR(owner_dev->InstallNotifyArea(*owner, 2));
//   // Then a driver of the owner (pci/admin_driver.h) sets VF Enable and
//   // sends the commands.
//
// The commands (opcode, what the owner does; all for group_type 1 = SR-IOV,
// members 1..N in the order AddMember was called, as VF numbers are):
//   0 LIST_QUERY   result: le64 bitmap of the supported opcodes (0..6; 6
//                  only once a notify area is installed)
//   1 LIST_USE     data: le64 bitmaps; must be a subset of LIST_QUERY's, with
//                  the four legacy config commands all or none, and
//                  NOTIFY_INFO only with them; else EINVAL/INVALID_FIELD.
//                  After a reset only LIST_QUERY and LIST_USE are in use.
//   2/3 LEGACY_COMMON_CFG_WRITE/READ  {u8 offset; u8 reserved[7]; u8 data[]}
//                  / {u8 offset}: one legacy register (or part of one) below
//                  20, or 24 while the member's MSI-X is enabled; the length
//                  is that of the data (write) or of the result (read).
//   4/5 LEGACY_DEV_CFG_WRITE/READ  the same in the member's device config,
//                  little-endian, [offset, offset + length) inside
//                  config_size and at most 8 bytes (vmmkit devices do not
//                  declare their fields to the transport, so "a single field"
//                  is checked as "no wider than the widest field").
//   6 LEGACY_NOTIFY_INFO  result: 4 virtio_pci_legacy_notify_info entries;
//                  the first {flags 1 (owner), bar, offset of the member's
//                  2-byte doorbell}, then an end-of-list entry (flags 0).
// Errors (§2.12.1 device requirements), checked in this order and with no
// side effect: group_type other than 1, no SR-IOV capability, VF Enable
// clear: EINVAL(22)/INVALID_GROUP(4); an opcode not supported or not in the
// list in use: EINVAL/INVALID_OPCODE(2); a member id outside 1..N for a command
// that uses it: EINVAL/INVALID_MEMBER(5); bad offset or length: EINVAL/
// INVALID_FIELD(3).
// Buffers (§2.13): device-readable bytes missing from a short chain read as
// zero and extra ones are ignored; the result is written up to the
// writable part's length (the used length says how much); a chain the split
// ring rejects (virtqueue::QueueError) sets DEVICE_NEEDS_RESET on the owner.
//
// SR-IOV (§2.12 "SR-IOV group type", PCIe 4.0 §9.3.3): the owner carries an
// SR-IOV extended capability (InstallSriovCapability): TotalVFs = InitialVFs
// = the members, NumVFs and VF Enable written by the owner's driver, VF BAR0
// (and every VF BAR) hardwired to zero as §2.12.1.2 requires with
// NOTIFY_INFO — vmmkit's members are functions of their own with their own
// BARs; the capability states the group, it does not create the VFs. "If the
// device does not have an SR-IOV Extended Capability or if VF Enable is
// clear then the device MUST fail all commands with ... INVALID_GROUP;
// otherwise, if group_member_id is not between 1 and NumVFs ...
// INVALID_MEMBER".
//
// Thread-compatibility: one thread at a time, together with the owner's
// function and every member's (the VMM holds one lock over the group).
#ifndef VMMKIT_PCI_VIRTIO_ADMIN_H_
#define VMMKIT_PCI_VIRTIO_ADMIN_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "pci/function.h"
#include "pci/virtio_pci.h"
#include "virtio-device/virtio_device.h"

namespace vmmkit::pci {

// Opcodes (§2.12.1).
inline constexpr uint16_t kAdminCmdListQuery = 0x0;
inline constexpr uint16_t kAdminCmdListUse = 0x1;
inline constexpr uint16_t kAdminCmdLegacyCommonCfgWrite = 0x2;
inline constexpr uint16_t kAdminCmdLegacyCommonCfgRead = 0x3;
inline constexpr uint16_t kAdminCmdLegacyDevCfgWrite = 0x4;
inline constexpr uint16_t kAdminCmdLegacyDevCfgRead = 0x5;
inline constexpr uint16_t kAdminCmdLegacyNotifyInfo = 0x6;

// Group types.
inline constexpr uint16_t kAdminGroupSelf = 0x0;
inline constexpr uint16_t kAdminGroupSriov = 0x1;

// status (Linux errno values) and status_qualifier.
inline constexpr uint16_t kAdminStatusOk = 0;
inline constexpr uint16_t kAdminStatusEnxio = 6;
inline constexpr uint16_t kAdminStatusEagain = 11;
inline constexpr uint16_t kAdminStatusEnomem = 12;
inline constexpr uint16_t kAdminStatusEbusy = 16;
inline constexpr uint16_t kAdminStatusEinval = 22;
inline constexpr uint16_t kAdminStatusEnospc = 28;
inline constexpr uint16_t kAdminQualifierOk = 0x0;
inline constexpr uint16_t kAdminQualifierInvalidCommand = 0x1;
inline constexpr uint16_t kAdminQualifierInvalidOpcode = 0x2;
inline constexpr uint16_t kAdminQualifierInvalidField = 0x3;
inline constexpr uint16_t kAdminQualifierInvalidGroup = 0x4;
inline constexpr uint16_t kAdminQualifierInvalidMember = 0x5;

// struct virtio_admin_cmd, device-readable part up to
// command_specific_data. All fields little-endian.
struct VirtioAdminCmdHeader {
  uint16_t opcode;
  uint16_t group_type;
  uint8_t reserved1[12];
  uint64_t group_member_id;
};
static_assert(sizeof(VirtioAdminCmdHeader) == 24);
static_assert(offsetof(VirtioAdminCmdHeader, group_type) == 2);
static_assert(offsetof(VirtioAdminCmdHeader, group_member_id) == 16);

// The device-writable part up to command_specific_result.
struct VirtioAdminCmdStatus {
  uint16_t status;
  uint16_t status_qualifier;
  uint8_t reserved2[4];
};
static_assert(sizeof(VirtioAdminCmdStatus) == 8);
static_assert(offsetof(VirtioAdminCmdStatus, status_qualifier) == 2);

// virtio_admin_cmd_legacy_{common_cfg,dev_reg}_wr_data before data[]; the
// read commands' data is the offset byte alone.
struct VirtioAdminLegacyWrData {
  uint8_t offset;
  uint8_t reserved[7];
};
static_assert(sizeof(VirtioAdminLegacyWrData) == 8);

// struct virtio_pci_legacy_notify_info (offset little-endian).
inline constexpr uint8_t kNotifyInfoEnd = 0;
inline constexpr uint8_t kNotifyInfoOwner = 1;
inline constexpr uint8_t kNotifyInfoMember = 2;
struct VirtioPciLegacyNotifyInfo {
  uint8_t flags;
  uint8_t bar;
  uint8_t padding[6];
  uint64_t offset;
};
static_assert(sizeof(VirtioPciLegacyNotifyInfo) == 16);
static_assert(offsetof(VirtioPciLegacyNotifyInfo, offset) == 8);
inline constexpr size_t kNotifyInfoEntries = 4;  // in the result

// The SR-IOV extended capability (PCIe 4.0 §9.3.3), offsets from its header.
inline constexpr uint16_t kExtCapIdSriov = 0x0010;
inline constexpr uint32_t kSriovCapabilities = 0x04;
inline constexpr uint32_t kSriovControl = 0x08;
inline constexpr uint32_t kSriovStatus = 0x0a;
inline constexpr uint32_t kSriovInitialVfs = 0x0c;
inline constexpr uint32_t kSriovTotalVfs = 0x0e;
inline constexpr uint32_t kSriovNumVfs = 0x10;
inline constexpr uint32_t kSriovFirstVfOffset = 0x14;
inline constexpr uint32_t kSriovVfStride = 0x16;
inline constexpr uint32_t kSriovVfDeviceId = 0x1a;
inline constexpr uint32_t kSriovSupportedPageSizes = 0x1c;
inline constexpr uint32_t kSriovSystemPageSize = 0x20;
inline constexpr uint32_t kSriovVfBar0 = 0x24;
inline constexpr uint32_t kSriovCapSize = 0x40;
inline constexpr uint16_t kSriovVfEnable = 1 << 0;
inline constexpr uint16_t kSriovVfMse = 1 << 3;

// A bit per opcode, as in struct virtio_admin_cmd_list's first le64.
constexpr uint64_t AdminOpcodeBit(uint16_t opcode) {
  return opcode < 64 ? uint64_t{1} << opcode : 0;
}
inline constexpr uint64_t kAdminLegacyCfgCommands =
    AdminOpcodeBit(kAdminCmdLegacyCommonCfgWrite) |
    AdminOpcodeBit(kAdminCmdLegacyCommonCfgRead) |
    AdminOpcodeBit(kAdminCmdLegacyDevCfgWrite) |
    AdminOpcodeBit(kAdminCmdLegacyDevCfgRead);

struct AdminStats {
  uint64_t commands = 0;
  uint64_t failed = 0;         // status other than OK
  uint64_t notifications = 0;  // through the notify area
};

// An owner device: `inner` (a virtio device of its own; it must outlive
// the owner) with one administration virtqueue after its queues, executing
// the commands above for its members. Offers what `inner` offers plus
// VERSION_1 and VIRTIO_F_ADMIN_VQ; the admin queue works only when the
// driver accepted VIRTIO_F_ADMIN_VQ. Put it behind a VirtioPciFunction with
// Options::admin_queues = 1.
class VirtioAdminOwner final : public virtio::VirtioDevice {
 public:
  struct Options {
    uint16_t admin_queue_size = 64;  // a power of two
  };
  static absl::StatusOr<std::unique_ptr<VirtioAdminOwner>> Create(
      virtio::VirtioDevice& inner, const Options& options);
  ~VirtioAdminOwner() override;

  // Adds member N + 1 (its SR-IOV VF number). `member` must outlive the
  // owner and have Options::admin_legacy (kInvalidArgument otherwise).
  absl::Status AddMember(VirtioPciFunction* member);
  uint64_t num_members() const { return members_.size(); }
  // Serves the members' legacy doorbells from [0, 4 * N) of BAR `bar` (1..5,
  // added here as a 32-bit memory BAR of at least 4 KiB) of the owner's
  // function, and offers LEGACY_NOTIFY_INFO: a 16-bit write of a queue
  // index at 4 * (id - 1) notifies that queue of member `id`, as a legacy
  // QUEUE_NOTIFY write would. Call once, after the members were added and
  // before the function goes on a bus.
  absl::Status InstallNotifyArea(GenericPciFunction& owner, int bar);
  // Adds the SR-IOV extended capability to the owner's function (which must
  // have a 4 KiB configuration space: VirtioPciFunction gives an owner one)
  // for the members added so far, VF device id `vf_device_id`. Call once,
  // after the members were added and before the function goes on a bus.
  absl::Status InstallSriovCapability(GenericPciFunction& owner,
                                      uint16_t vf_device_id);
  // The group's size as the SR-IOV capability says now: NumVFs (at most the
  // members) while VF Enable is set, else 0.
  uint64_t enabled_members() const;
  // The administration queue's index (after the inner device's queues).
  uint16_t admin_queue_index() const { return admin_index_; }

  // Executes one command. `command` is the device-readable part of the
  // chain (opcode .. command_specific_data, missing bytes read as zero),
  // `result` its device-writable part; returns the number of bytes written
  // into `result` (the used length). Exposed for tests and fuzzers; the
  // admin queue calls it for every chain.
  size_t Execute(absl::Span<const uint8_t> command, absl::Span<uint8_t> result);
  uint64_t supported_commands() const;
  uint64_t used_commands() const { return used_; }
  const AdminStats& stats() const { return stats_; }

  // virtio::VirtioDevice.
  virtio::DeviceType type() const override { return inner_.type(); }
  absl::Span<const uint16_t> queue_max_sizes() const override { return sizes_; }
  virtio::Features offered_features() const override;
  absl::Status AcceptFeatures(const virtio::Features& features) override;
  uint32_t config_size() const override { return inner_.config_size(); }
  void ReadConfig(uint32_t offset, absl::Span<uint8_t> data,
                  virtio::Endian endian) override {
    inner_.ReadConfig(offset, data, endian);
  }
  void WriteConfig(uint32_t offset, absl::Span<const uint8_t> data,
                   virtio::Endian endian) override {
    inner_.WriteConfig(offset, data, endian);
  }
  uint32_t config_generation() const override {
    return inner_.config_generation();
  }
  absl::Status Activate(virtio::DeviceContext& context) override;
  void Reset() override;
  void ProcessQueue(uint16_t index) override;
  std::vector<int> backend_fds() const override { return inner_.backend_fds(); }
  void ProcessBackend() override { inner_.ProcessBackend(); }
  absl::Status Flush() override { return inner_.Flush(); }

 private:
  class NotifyArea;
  VirtioAdminOwner(virtio::VirtioDevice& inner, const Options& options);
  void ProcessAdminQueue();
  // The member for `id`, or null.
  VirtioPciFunction* Member(uint64_t id) const;

  virtio::VirtioDevice& inner_;
  const uint16_t admin_index_;
  std::vector<uint16_t> sizes_;
  std::vector<VirtioPciFunction*> members_;
  std::unique_ptr<NotifyArea> notify_area_;
  ConfigSpace* sriov_config_ = nullptr;  // the owner's, with the capability
  uint32_t sriov_cap_ = 0;
  int notify_bar_ = -1;
  uint64_t used_;
  virtio::DeviceContext* context_ = nullptr;
  AdminStats stats_;
};

}  // namespace vmmkit::pci

#endif  // VMMKIT_PCI_VIRTIO_ADMIN_H_
