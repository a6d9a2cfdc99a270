#include "pci/legacy_shim.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_format.h"
#include "base/status.h"
#include "pci/virtio_admin.h"
#include "pci/virtio_pci.h"

namespace vmmkit::pci {

namespace {

constexpr uint16_t kVirtioVendor = 0x1af4;
constexpr uint32_t kMaxDeviceConfig = 232;  // offsets are one byte
constexpr uint32_t kMaxDevChunk = 8;        // the owner's widest field

uint64_t Pow2Ceil(uint64_t v) {
  uint64_t p = 1;
  while (p < v) p <<= 1;
  return p;
}

// The end of the legacy register containing `offset` (< the common size).
uint32_t LegacyFieldEnd(uint32_t offset) {
  static constexpr uint32_t kEnds[] = {4, 8, 12, 14, 16, 18, 19, 20, 22, 24};
  for (uint32_t e : kEnds) {
    if (offset < e) return e;
  }
  return offset + 1;
}

// The part of [a, a + n) inside [lo, hi), as [start, end) (empty: start >=
// end). Seed 001's range intersection.
struct Range {
  uint64_t start, end;
  bool empty() const { return start >= end; }
};
Range Intersect(uint64_t a, uint64_t n, uint64_t lo, uint64_t hi) {
  return {std::max(a, lo), std::min(a + n, hi)};
}

// Header registers whose value is the shim's own (identity, command, header
// type, BARs); everything else is the member's.
constexpr Range kOwnRanges[] = {
    {kRegVendorId, kRegCommand},  // vendor and device id
    {kRegCommand, kRegStatus},    // command (also written through)
    {kRegRevisionId, kRegRevisionId + 1},
    {kRegHeaderType, kRegHeaderType + 1},
    {kRegBar0, kRegCardbusCis},
    {kRegSubsystemVendorId, kRegExpansionRom},
};

}  // namespace

absl::StatusOr<std::unique_ptr<LegacyShimFunction>> LegacyShimFunction::Create(
    PciFunction& member, AdminCommandTransport& owner, const Options& options) {
  std::optional<uint16_t> id = TransitionalDeviceId(options.type);
  if (!id.has_value()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("virtio-%s has no transitional PCI device id",
                        virtio::DeviceTypeName(options.type)));
  }
  if (options.device_config_size > kMaxDeviceConfig) {
    return absl::InvalidArgumentError("device config above 232 bytes");
  }
  ConfigSpace& m = member.config_space();
  if (m.bar(0).type != BarType::kNone) {
    return absl::InvalidArgumentError(
        "the member has a BAR 0; the legacy I/O BAR 0 needs it free");
  }
  ConfigSpace::Options ids;
  ids.vendor_id = kVirtioVendor;
  ids.device_id = *id;
  ids.revision_id = 0;  // transitional
  ids.class_code = m.Get32(kRegRevisionId) >> 8;
  ids.subsystem_vendor_id = kVirtioVendor;
  ids.subsystem_id = static_cast<uint16_t>(options.type);
  ids.interrupt_pin = m.Get8(kRegInterruptPin);
  ids.extended = m.size() > 256;
  auto shim = std::unique_ptr<LegacyShimFunction>(
      new LegacyShimFunction(member, owner, options, ids));
  VMMKIT_RETURN_IF_ERROR(shim->Init());
  return shim;
}

LegacyShimFunction::LegacyShimFunction(PciFunction& member,
                                       AdminCommandTransport& owner,
                                       const Options& options,
                                       const ConfigSpace::Options& ids)
    : member_(member), owner_(owner), options_(options), config_(ids) {}

absl::Status LegacyShimFunction::Init() {
  ConfigSpace& m = member_.config_space();
  const uint64_t size = Pow2Ceil(
      std::max<uint64_t>(kLegacyConfigMsix + options_.device_config_size, 32));
  VMMKIT_RETURN_IF_ERROR(
      config_.AddBar(kLegacyBar, {.type = BarType::kIo, .size = size}));
  for (int b = 1; b < 6; ++b) {
    if (m.bar(b).type != BarType::kNone) {
      VMMKIT_RETURN_IF_ERROR(config_.AddBar(b, m.bar(b)));
    }
  }
  msix_cap_ = m.FindCapability(kCapIdMsix).value_or(0);

  // Where QUEUE_NOTIFY goes (§2.12.1.2: the driver "MUST validate that the
  // flags is either 0x1 or 0x2 ... the bar corresponds to a valid BAR ...
  // the offset is 2-byte aligned and ... within the BAR").
  uint8_t info[kNotifyInfoEntries * sizeof(VirtioPciLegacyNotifyInfo)] = {};
  absl::StatusOr<AdminCompletion> c =
      owner_.Execute(kAdminCmdLegacyNotifyInfo, kAdminGroupSriov,
                     options_.member_id, {}, absl::MakeSpan(info));
  if (!c.ok()) return c.status();
  if (c->status == kAdminStatusOk) {
    for (size_t i = 0; i < kNotifyInfoEntries; ++i) {
      const uint8_t* e = info + i * sizeof(VirtioPciLegacyNotifyInfo);
      const uint8_t flags = e[0];
      if (flags == kNotifyInfoEnd) break;
      const int bar = e[1];
      uint64_t offset = 0;
      for (int k = 0; k < 8; ++k) offset |= uint64_t{e[8 + k]} << (8 * k);
      if (bar < 1 || bar > 5 || offset % 2 != 0) continue;
      if (flags == kNotifyInfoMember) {
        const BarSpec& spec = m.bar(bar);
        if (spec.type == BarType::kNone || spec.size < 2 ||
            offset > spec.size - 2) {
          continue;
        }
      } else if (flags != kNotifyInfoOwner) {
        continue;  // reserved
      }
      notify_flags_ = flags;
      notify_bar_ = bar;
      notify_offset_ = offset;
      break;
    }
  } else if (c->status_qualifier == kAdminQualifierInvalidMember) {
    return absl::FailedPreconditionError(
        absl::StrFormat("owner has no member %d", options_.member_id));
  }
  if (c->status != kAdminStatusOk) {
    // No NOTIFY_INFO (which implies the legacy config commands, §2.12.1.2):
    // probe the legacy interface itself with a read of the status register.
    uint8_t status = 0;
    if (!Read(kAdminCmdLegacyCommonCfgRead, kLegacyStatus,
              absl::MakeSpan(&status, 1))) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "owner does not provide the legacy interface of member %d",
          options_.member_id));
    }
    stats_ = Stats();
  }
  return absl::OkStatus();
}

bool LegacyShimFunction::msix_enabled() const {
  if (msix_cap_ == 0) return false;
  return member_.config_space().Get16(msix_cap_ + 2) & kMsixEnable;
}

void LegacyShimFunction::ConfigRead(uint32_t offset, absl::Span<uint8_t> data) {
  member_.ConfigRead(offset, data);
  for (const Range& r : kOwnRanges) {
    const Range x = Intersect(offset, data.size(), r.start, r.end);
    if (x.empty()) continue;
    config_.Read(static_cast<uint32_t>(x.start),
                 data.subspan(x.start - offset, x.end - x.start));
  }
}

void LegacyShimFunction::ConfigWrite(uint32_t offset,
                                     absl::Span<const uint8_t> data) {
  // BARs are the shim's alone; the command register both's; the rest
  // (capabilities: MSI-X, the virtio structures) the member's.
  const Range bars = Intersect(offset, data.size(), kRegBar0, kRegCardbusCis);
  const Range cmd = Intersect(offset, data.size(), kRegCommand, kRegStatus);
  if (!cmd.empty()) {
    config_.Write(static_cast<uint32_t>(cmd.start),
                  data.subspan(cmd.start - offset, cmd.end - cmd.start));
  }
  if (bars.empty()) {
    member_.ConfigWrite(offset, data);
    return;
  }
  config_.Write(static_cast<uint32_t>(bars.start),
                data.subspan(bars.start - offset, bars.end - bars.start));
  if (bars.start > offset) {
    member_.ConfigWrite(offset, data.subspan(0, bars.start - offset));
  }
  if (bars.end < offset + data.size()) {
    member_.ConfigWrite(static_cast<uint32_t>(bars.end),
                        data.subspan(bars.end - offset));
  }
}

void LegacyShimFunction::BarRead(int bar, uint64_t offset,
                                 absl::Span<uint8_t> data) {
  if (bar == kLegacyBar) {
    LegacyRead(offset, data);
    return;
  }
  member_.BarRead(bar, offset, data);
}

void LegacyShimFunction::BarWrite(int bar, uint64_t offset,
                                  absl::Span<const uint8_t> data) {
  if (bar == kLegacyBar) {
    LegacyWrite(offset, data);
    return;
  }
  member_.BarWrite(bar, offset, data);
}

bool LegacyShimFunction::Read(uint16_t opcode, uint32_t offset,
                              absl::Span<uint8_t> data) {
  ++stats_.commands;
  const uint8_t off = static_cast<uint8_t>(offset);
  absl::StatusOr<AdminCompletion> c =
      owner_.Execute(opcode, kAdminGroupSriov, options_.member_id,
                     absl::MakeConstSpan(&off, 1), data);
  if (!c.ok() || c->status != kAdminStatusOk ||
      c->result_length != data.size()) {
    ++stats_.failed_commands;
    std::fill(data.begin(), data.end(), 0xff);
    return false;
  }
  return true;
}

bool LegacyShimFunction::Write(uint16_t opcode, uint32_t offset,
                               absl::Span<const uint8_t> data) {
  ++stats_.commands;
  // {u8 offset; u8 reserved[7]; u8 data[]}; data is at most 8 bytes here.
  uint8_t buf[sizeof(VirtioAdminLegacyWrData) + 8] = {};
  const size_t n = std::min<size_t>(data.size(), 8);
  buf[0] = static_cast<uint8_t>(offset);
  std::copy(data.begin(), data.begin() + n,
            buf + sizeof(VirtioAdminLegacyWrData));
  absl::StatusOr<AdminCompletion> c = owner_.Execute(
      opcode, kAdminGroupSriov, options_.member_id,
      absl::MakeConstSpan(buf, sizeof(VirtioAdminLegacyWrData) + n), {});
  if (!c.ok() || c->status != kAdminStatusOk) {
    ++stats_.failed_commands;
    return false;
  }
  return true;
}

void LegacyShimFunction::LegacyRead(uint64_t offset, absl::Span<uint8_t> data) {
  const uint32_t base = common_size();
  // The common registers, one command per register touched.
  const Range common = Intersect(offset, data.size(), 0, base);
  for (uint64_t pos = common.start; pos < common.end;) {
    const uint64_t end = std::min<uint64_t>(
        common.end, LegacyFieldEnd(static_cast<uint32_t>(pos)));
    Read(kAdminCmdLegacyCommonCfgRead, static_cast<uint32_t>(pos),
         data.subspan(pos - offset, end - pos));
    pos = end;
  }
  // The device config: bytes past its end read 0, as the native decoder.
  const Range dev = Intersect(offset, data.size(), base, UINT64_MAX);
  if (dev.empty()) return;
  const uint64_t cfg_end = uint64_t{base} + options_.device_config_size;
  for (uint64_t pos = dev.start; pos < dev.end;) {
    if (pos >= cfg_end) {
      std::fill(data.begin() + (pos - offset), data.end(), 0);
      break;
    }
    const uint64_t end = std::min({dev.end, cfg_end, pos + kMaxDevChunk});
    Read(kAdminCmdLegacyDevCfgRead, static_cast<uint32_t>(pos - base),
         data.subspan(pos - offset, end - pos));
    pos = end;
  }
}

void LegacyShimFunction::LegacyWrite(uint64_t offset,
                                     absl::Span<const uint8_t> data) {
  const uint32_t base = common_size();
  const uint64_t end = offset + data.size();
  // The device-config part (past its end: dropped).
  const Range dev = Intersect(offset, data.size(), base,
                              uint64_t{base} + options_.device_config_size);
  for (uint64_t pos = dev.start; pos < dev.end;) {
    const uint64_t e = std::min(dev.end, pos + kMaxDevChunk);
    Write(kAdminCmdLegacyDevCfgWrite, static_cast<uint32_t>(pos - base),
          data.subspan(pos - offset, e - pos));
    pos = e;
  }
  // Registers take writes of exactly themselves (an access that goes on into
  // the device config never is one).
  if (offset >= base || end > base) return;
  if (offset == kLegacyQueueNotify && data.size() == 2) {
    NotifyQueue(static_cast<uint16_t>(data[0] | data[1] << 8));
    return;
  }
  // One that is not even inside one register is dropped here, as the
  // owner would refuse it (and the native decoder drops it).
  if (!LegacyCommonFieldAccess(static_cast<uint32_t>(offset),
                               static_cast<uint32_t>(data.size()),
                               base == 24)) {
    return;
  }
  Write(kAdminCmdLegacyCommonCfgWrite, static_cast<uint32_t>(offset), data);
}

void LegacyShimFunction::NotifyQueue(uint16_t queue) {
  ++stats_.notifications;
  const uint8_t le[2] = {static_cast<uint8_t>(queue),
                         static_cast<uint8_t>(queue >> 8)};
  switch (notify_flags_) {
    case kNotifyInfoOwner:
      owner_.WriteOwnerBar16(notify_bar_, notify_offset_, queue);
      return;
    case kNotifyInfoMember:
      member_.BarWrite(notify_bar_, notify_offset_, absl::MakeConstSpan(le, 2));
      return;
    default:
      // §2.12.1.2: a LEGACY_COMMON_CFG_WRITE at Queue Notify does the same.
      Write(kAdminCmdLegacyCommonCfgWrite, kLegacyQueueNotify,
            absl::MakeConstSpan(le, 2));
      return;
  }
}

}  // namespace vmmkit::pci
