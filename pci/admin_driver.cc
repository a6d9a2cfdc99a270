#include "pci/admin_driver.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_format.h"
#include "base/status.h"
#include "pci/config_space.h"
#include "pci/virtio_admin.h"
#include "pci/virtio_pci.h"
#include "virtio-device/virtio_device.h"

namespace vmmkit::pci {

namespace {

// The driver's part of the owner's DMA memory.
constexpr uint64_t kDescOffset = 0x0000;
constexpr uint64_t kAvailOffset = 0x1000;
constexpr uint64_t kUsedOffset = 0x2000;
constexpr uint64_t kCommandOffset = 0x3000;
constexpr uint64_t kResultOffset = 0x4000;
constexpr uint64_t kBufferSize = 0x1000;
constexpr uint64_t kDriverBytes = 0x5000;
constexpr int kMaxResetPolls = 1000;
constexpr int kMaxCapabilities = 48;  // 192 bytes of list / 4-byte minimum

uint64_t Le(const uint8_t* b, int width) {
  uint64_t v = 0;
  for (int i = 0; i < width; ++i) v |= uint64_t{b[i]} << (8 * i);
  return v;
}

void ToLe(uint8_t* b, uint64_t v, int width) {
  for (int i = 0; i < width; ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
}

}  // namespace

absl::StatusOr<std::unique_ptr<AdminQueueDriver>> AdminQueueDriver::Create(
    PciFunction& owner, const virtqueue::GuestMemory& memory,
    const Options& options) {
  if (memory.regions().empty() ||
      !memory.Contains(memory.regions()[0].guest_base, kDriverBytes)) {
    return absl::ResourceExhaustedError(
        "the admin driver needs 20 KiB of memory from the first region's base");
  }
  if (options.queue_size == 0 || options.max_polls <= 0) {
    return absl::InvalidArgumentError("queue_size and max_polls must be > 0");
  }
  auto d = std::unique_ptr<AdminQueueDriver>(
      new AdminQueueDriver(owner, memory, options));
  d->base_ = memory.regions()[0].guest_base;
  VMMKIT_RETURN_IF_ERROR(d->Probe());
  return d;
}

absl::Status AdminQueueDriver::FindCapabilities() {
  auto cfg8 = [&](uint32_t off) {
    uint8_t b = 0;
    owner_.ConfigRead(off, absl::MakeSpan(&b, 1));
    return b;
  };
  auto cfg32 = [&](uint32_t off) {
    uint8_t b[4] = {};
    owner_.ConfigRead(off, absl::MakeSpan(b, 4));
    return static_cast<uint32_t>(Le(b, 4));
  };
  if (!(cfg8(kRegStatus) & 0x10)) {  // Status: Capabilities List
    return absl::NotFoundError("owner has no capability list");
  }
  uint8_t pos = cfg8(kRegCapabilitiesPointer) & 0xfc;
  // Bounded walk (a looping list ends after kMaxCapabilities entries).
  for (int i = 0; i < kMaxCapabilities && pos >= 0x40; ++i) {
    if (cfg8(pos) == kCapIdVendor) {
      const uint8_t type = cfg8(pos + 3);
      Cap cap{.bar = cfg8(pos + 4),
              .offset = cfg32(pos + 8),
              .length = cfg32(pos + 12)};
      // The first capability of each type whose BAR is one (§4.1.4.1).
      if (cap.bar <= 5) {
        if (type == kVirtioPciCapCommonCfg && common_.bar < 0) common_ = cap;
        if (type == kVirtioPciCapNotifyCfg && notify_.bar < 0) {
          notify_ = cap;
          notify_multiplier_ = cfg32(pos + 16);
        }
      }
    }
    pos = cfg8(pos + 1) & 0xfc;
  }
  if (common_.bar < 0 || notify_.bar < 0) {
    return absl::NotFoundError("owner has no common or notify capability");
  }
  if (common_.length < kCommonCfgSize) {
    return absl::FailedPreconditionError(
        "owner's common configuration has no admin queue fields");
  }
  return absl::OkStatus();
}

void AdminQueueDriver::EnableVfs() {
  auto cfg = [&](uint32_t off, int width) {
    uint8_t b[4] = {};
    owner_.ConfigRead(off, absl::MakeSpan(b, width));
    return static_cast<uint32_t>(Le(b, width));
  };
  auto set16 = [&](uint32_t off, uint16_t v) {
    uint8_t b[2];
    ToLe(b, v, 2);
    owner_.ConfigWrite(off, absl::MakeConstSpan(b, 2));
  };
  // The extended capability list from 0x100 (PCIe 4.0 §7.6.3): id in bits
  // 0..15, next in 20..31; bounded by the 4 KiB space.
  uint32_t pos = 0x100;
  for (int i = 0; i < 1024 && pos >= 0x100 && pos < 0x1000; ++i) {
    const uint32_t header = cfg(pos, 4);
    if (header == 0 || header == 0xffffffff) return;
    if ((header & 0xffff) == kExtCapIdSriov) {
      set16(pos + kSriovNumVfs,
            static_cast<uint16_t>(cfg(pos + kSriovTotalVfs, 2)));
      set16(pos + kSriovControl, kSriovVfEnable | kSriovVfMse);
      return;
    }
    pos = (header >> 20) & 0xffc;
  }
}

uint64_t AdminQueueDriver::CommonRead(uint32_t offset, int width) {
  uint8_t b[8] = {};
  owner_.BarRead(common_.bar, uint64_t{common_.offset} + offset,
                 absl::MakeSpan(b, width));
  return Le(b, width);
}

void AdminQueueDriver::CommonWrite(uint32_t offset, uint64_t value, int width) {
  uint8_t b[8];
  ToLe(b, value, width);
  owner_.BarWrite(common_.bar, uint64_t{common_.offset} + offset,
                  absl::MakeConstSpan(b, width));
}

absl::Status AdminQueueDriver::Probe() {
  VMMKIT_RETURN_IF_ERROR(FindCapabilities());
  // Reset, and wait until it reads 0 (§4.1.4.3.2).
  CommonWrite(kCommonStatus, 0, 1);
  int polls = 0;
  while (CommonRead(kCommonStatus, 1) != 0) {
    if (++polls == kMaxResetPolls) {
      return absl::DeadlineExceededError("owner reset never completed");
    }
  }
  CommonWrite(kCommonStatus, virtio::kStatusAcknowledge, 1);
  CommonWrite(kCommonStatus, virtio::kStatusAcknowledge | virtio::kStatusDriver,
              1);
  CommonWrite(kCommonDfSelect, 0, 4);
  uint64_t offered = CommonRead(kCommonDf, 4);
  CommonWrite(kCommonDfSelect, 1, 4);
  offered |= CommonRead(kCommonDf, 4) << 32;
  const uint64_t want =
      (uint64_t{1} << virtio::kFVersion1) | (uint64_t{1} << virtio::kFAdminVq);
  if ((offered & want) != want) {
    CommonWrite(kCommonStatus, virtio::kStatusFailed, 1);
    return absl::FailedPreconditionError(
        "owner does not offer VERSION_1 and VIRTIO_F_ADMIN_VQ");
  }
  CommonWrite(kCommonGfSelect, 0, 4);
  CommonWrite(kCommonGf, want & 0xffffffff, 4);
  CommonWrite(kCommonGfSelect, 1, 4);
  CommonWrite(kCommonGf, want >> 32, 4);
  const uint8_t s = virtio::kStatusAcknowledge | virtio::kStatusDriver |
                    virtio::kStatusFeaturesOk;
  CommonWrite(kCommonStatus, s, 1);
  if (!(CommonRead(kCommonStatus, 1) & virtio::kStatusFeaturesOk)) {
    CommonWrite(kCommonStatus, virtio::kStatusFailed, 1);
    return absl::FailedPreconditionError("owner refused FEATURES_OK");
  }
  const uint16_t num_queues =
      static_cast<uint16_t>(CommonRead(kCommonNumQueues, 2));
  const uint16_t index =
      static_cast<uint16_t>(CommonRead(kCommonAdminQueueIndex, 2));
  const uint16_t count =
      static_cast<uint16_t>(CommonRead(kCommonAdminQueueNum, 2));
  // §4.1.4.3.1: admin_queue_index >= num_queues.
  if (count == 0 || index < num_queues) {
    CommonWrite(kCommonStatus, virtio::kStatusFailed, 1);
    return absl::FailedPreconditionError("owner has no administration queue");
  }
  queue_index_ = index;
  CommonWrite(kCommonQueueSelect, index, 2);
  const uint16_t max = static_cast<uint16_t>(CommonRead(kCommonQueueSize, 2));
  uint16_t size = 1;
  while (size * 2u <= std::min(max, options_.queue_size) && size < 256) {
    size = static_cast<uint16_t>(size * 2);
  }
  if (max == 0 || (max & (max - 1)) != 0) {
    CommonWrite(kCommonStatus, virtio::kStatusFailed, 1);
    return absl::FailedPreconditionError("admin queue unavailable");
  }
  const virtqueue::DriverQueue::Layout layout = {.size = size,
                                                 .desc = base_ + kDescOffset,
                                                 .avail = base_ + kAvailOffset,
                                                 .used = base_ + kUsedOffset};
  queue_.emplace(memory_, layout);
  CommonWrite(kCommonQueueSize, size, 2);
  CommonWrite(kCommonQueueMsixVector, 0xffff, 2);  // NO_VECTOR: polled
  auto write64 = [&](uint32_t field, uint64_t v) {
    CommonWrite(field, v & 0xffffffff, 4);
    CommonWrite(field + 4, v >> 32, 4);
  };
  write64(kCommonQueueDesc, layout.desc);
  write64(kCommonQueueDriver, layout.avail);
  write64(kCommonQueueDevice, layout.used);
  const uint64_t notify_off = CommonRead(kCommonQueueNotifyOff, 2);
  notify_offset_ = uint64_t{notify_.offset} + notify_off * notify_multiplier_;
  if (notify_offset_ + 2 > uint64_t{notify_.offset} + notify_.length) {
    CommonWrite(kCommonStatus, virtio::kStatusFailed, 1);
    return absl::FailedPreconditionError(
        "admin queue's doorbell is outside the notify structure");
  }
  CommonWrite(kCommonQueueEnable, 1, 2);
  CommonWrite(kCommonStatus, s | virtio::kStatusDriverOk, 1);
  const uint8_t status = static_cast<uint8_t>(CommonRead(kCommonStatus, 1));
  if (!(status & virtio::kStatusDriverOk) ||
      (status & virtio::kStatusNeedsReset)) {
    return absl::FailedPreconditionError("owner failed DRIVER_OK");
  }

  if (options_.enable_vfs) EnableVfs();

  // §2.12.1: LIST_QUERY, then LIST_USE of what both sides know.
  uint8_t list[8] = {};
  VMMKIT_ASSIGN_OR_RETURN(AdminCompletion q,
                          Execute(kAdminCmdListQuery, kAdminGroupSriov, 0, {},
                                  absl::MakeSpan(list)));
  if (q.status != kAdminStatusOk) {
    return absl::FailedPreconditionError(
        absl::StrFormat("LIST_QUERY failed: status %d qualifier %d", q.status,
                        q.status_qualifier));
  }
  supported_ = Le(list, 8);
  const uint64_t known =
      AdminOpcodeBit(kAdminCmdListQuery) | AdminOpcodeBit(kAdminCmdListUse) |
      kAdminLegacyCfgCommands | AdminOpcodeBit(kAdminCmdLegacyNotifyInfo);
  uint64_t use = supported_ & known;
  if ((use & kAdminLegacyCfgCommands) != kAdminLegacyCfgCommands) {
    use &=
        ~(kAdminLegacyCfgCommands | AdminOpcodeBit(kAdminCmdLegacyNotifyInfo));
  }
  ToLe(list, use, 8);
  VMMKIT_ASSIGN_OR_RETURN(
      AdminCompletion u,
      Execute(kAdminCmdListUse, kAdminGroupSriov, 0, list, {}));
  if (u.status != kAdminStatusOk) {
    return absl::FailedPreconditionError(
        absl::StrFormat("LIST_USE failed: status %d qualifier %d", u.status,
                        u.status_qualifier));
  }
  used_ = use;
  return absl::OkStatus();
}

absl::StatusOr<AdminCompletion> AdminQueueDriver::Execute(
    uint16_t opcode, uint16_t group_type, uint64_t group_member_id,
    absl::Span<const uint8_t> data, absl::Span<uint8_t> result) {
  if (broken_) {
    return absl::FailedPreconditionError(
        "an earlier admin command never completed");
  }
  if (data.size() > kBufferSize - sizeof(VirtioAdminCmdHeader) ||
      result.size() > kBufferSize - sizeof(VirtioAdminCmdStatus)) {
    return absl::InvalidArgumentError("admin command or result too large");
  }
  uint8_t header[sizeof(VirtioAdminCmdHeader)] = {};
  ToLe(header + 0, opcode, 2);
  ToLe(header + 2, group_type, 2);
  ToLe(header + 16, group_member_id, 8);
  const uint64_t cmd = base_ + kCommandOffset;
  const uint64_t res = base_ + kResultOffset;
  const uint32_t cmd_len = static_cast<uint32_t>(sizeof(header) + data.size());
  const uint32_t res_len =
      static_cast<uint32_t>(sizeof(VirtioAdminCmdStatus) + result.size());
  VMMKIT_RETURN_IF_ERROR(memory_.Write(cmd, header));
  VMMKIT_RETURN_IF_ERROR(memory_.Write(cmd + sizeof(header), data));
  VMMKIT_RETURN_IF_ERROR(memory_.Fill(res, res_len, 0));
  VMMKIT_ASSIGN_OR_RETURN(
      uint16_t head,
      queue_->AddChain({{cmd, cmd_len, false}, {res, res_len, true}}));
  ++commands_;
  if (queue_->ShouldNotify()) {
    uint8_t b[2];
    ToLe(b, queue_index_, 2);
    owner_.BarWrite(notify_.bar, notify_offset_, absl::MakeConstSpan(b, 2));
  }
  for (int i = 0; i < options_.max_polls; ++i) {
    std::optional<virtqueue::VirtqUsedElem> used = queue_->PopUsed();
    if (!used.has_value()) {
      if (options_.wait) options_.wait();
      continue;
    }
    if (used->id != head) {
      // One command at a time: anything else is the owner's error.
      broken_ = true;
      return absl::DataLossError(absl::StrFormat(
          "owner completed descriptor %u, expected %u", used->id, head));
    }
    uint8_t st[sizeof(VirtioAdminCmdStatus)] = {};
    const uint32_t written = std::min(used->len, res_len);
    VMMKIT_RETURN_IF_ERROR(memory_.Read(res, absl::MakeSpan(st)));
    AdminCompletion c;
    // §2.13: fields outside the used length read as zero.
    if (written >= 2) c.status = static_cast<uint16_t>(Le(st, 2));
    if (written >= 4) c.status_qualifier = static_cast<uint16_t>(Le(st + 2, 2));
    c.result_length =
        written > sizeof(st) ? written - static_cast<uint32_t>(sizeof(st)) : 0;
    std::fill(result.begin(), result.end(), 0);
    VMMKIT_RETURN_IF_ERROR(
        memory_.Read(res + sizeof(st), result.subspan(0, c.result_length)));
    if (written < 2) {
      // Not even a status: the command's outcome is unknown.
      c.status = kAdminStatusEinval;
      c.status_qualifier = kAdminQualifierInvalidCommand;
    }
    return c;
  }
  broken_ = true;
  return absl::DeadlineExceededError("admin command did not complete");
}

void AdminQueueDriver::WriteOwnerBar16(int bar, uint64_t offset,
                                       uint16_t value) {
  uint8_t b[2];
  ToLe(b, value, 2);
  owner_.BarWrite(bar, offset, absl::MakeConstSpan(b, 2));
}

}  // namespace vmmkit::pci
