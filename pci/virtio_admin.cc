#include "pci/virtio_admin.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_format.h"
#include "base/status.h"
#include "virtio-device/chain_io.h"

namespace vmmkit::pci {

namespace {

constexpr uint64_t kListCommands =
    AdminOpcodeBit(kAdminCmdListQuery) | AdminOpcodeBit(kAdminCmdListUse);
constexpr size_t kHeaderSize = sizeof(VirtioAdminCmdHeader);
constexpr size_t kStatusSize = sizeof(VirtioAdminCmdStatus);
constexpr size_t kWrDataSize = sizeof(VirtioAdminLegacyWrData);
// The widest device config field of any legacy device (virtio-blk capacity).
constexpr uint32_t kMaxDevFieldWidth = 8;
// Device-readable bytes looked at: the header, the write header and more
// data than any valid command carries (the rest only counts as length).
constexpr size_t kMaxCommandBytes = kHeaderSize + kWrDataSize + 256;
constexpr size_t kMaxResultBytes =
    kStatusSize + kNotifyInfoEntries * sizeof(VirtioPciLegacyNotifyInfo) + 256;
constexpr uint32_t kNotifyStride = 4;
constexpr size_t kMaxReadable = 64 << 10;

uint64_t LoadLe(absl::Span<const uint8_t> bytes, size_t offset, size_t width) {
  uint64_t v = 0;
  for (size_t i = 0; i < width; ++i) {
    if (offset + i < bytes.size()) v |= uint64_t{bytes[offset + i]} << (8 * i);
  }
  return v;
}

void StoreLe(absl::Span<uint8_t> bytes, size_t offset, uint64_t v,
             size_t width) {
  for (size_t i = 0; i < width; ++i) {
    if (offset + i < bytes.size()) {
      bytes[offset + i] = static_cast<uint8_t>(v >> (8 * i));
    }
  }
}

uint64_t Pow2Ceil(uint64_t v) {
  uint64_t p = 1;
  while (p < v) p <<= 1;
  return p;
}

}  // namespace

// The members' legacy doorbells in a BAR of the owner.
class VirtioAdminOwner::NotifyArea final : public RegionHandler {
 public:
  explicit NotifyArea(VirtioAdminOwner& owner) : owner_(owner) {}
  void Read(uint64_t, absl::Span<uint8_t> data) override {
    std::fill(data.begin(), data.end(), 0);
  }
  void Write(uint64_t offset, absl::Span<const uint8_t> data) override {
    // §2.12.1.2: "writing a 16-bit virtqueue index ... in the little-endian
    // format, to the notification address".
    if (data.size() != 2 || offset % kNotifyStride != 0) return;
    // Member() answers for enabled VFs only.
    VirtioPciFunction* m = owner_.Member(offset / kNotifyStride + 1);
    if (m == nullptr) return;
    ++owner_.stats_.notifications;
    // The same as a LEGACY_COMMON_CFG_WRITE of Queue Notify.
    m->AdminLegacyCommonWrite(kLegacyQueueNotify, data);
  }

 private:
  VirtioAdminOwner& owner_;
};

absl::StatusOr<std::unique_ptr<VirtioAdminOwner>> VirtioAdminOwner::Create(
    virtio::VirtioDevice& inner, const Options& options) {
  const uint16_t s = options.admin_queue_size;
  if (s == 0 || (s & (s - 1)) != 0 || s > 32768) {
    return absl::InvalidArgumentError(
        "admin_queue_size must be a power of two up to 32768");
  }
  if (inner.queue_max_sizes().size() >= 0xffff) {
    return absl::InvalidArgumentError(
        "no queue index left for the admin queue");
  }
  return std::unique_ptr<VirtioAdminOwner>(
      new VirtioAdminOwner(inner, options));
}

VirtioAdminOwner::VirtioAdminOwner(virtio::VirtioDevice& inner,
                                   const Options& options)
    : inner_(inner),
      admin_index_(static_cast<uint16_t>(inner.queue_max_sizes().size())),
      sizes_(inner.queue_max_sizes().begin(), inner.queue_max_sizes().end()),
      used_(kListCommands) {
  sizes_.push_back(options.admin_queue_size);
}

VirtioAdminOwner::~VirtioAdminOwner() = default;

absl::Status VirtioAdminOwner::AddMember(VirtioPciFunction* member) {
  if (member == nullptr || !member->has_admin_legacy()) {
    return absl::InvalidArgumentError(
        "a member needs VirtioPciFunction::Options::admin_legacy");
  }
  if (notify_area_ != nullptr) {
    return absl::FailedPreconditionError(
        "members are added before the notify area is installed");
  }
  members_.push_back(member);
  return absl::OkStatus();
}

absl::Status VirtioAdminOwner::InstallNotifyArea(GenericPciFunction& owner,
                                                 int bar) {
  if (notify_area_ != nullptr) {
    return absl::AlreadyExistsError("the notify area is installed already");
  }
  // §2.12.1.2: "The bar values 0x1 to 0x5 specify BAR1 to BAR5".
  if (bar < 1 || bar > 5) {
    return absl::InvalidArgumentError("the notify area's BAR must be 1..5");
  }
  if (members_.empty()) {
    return absl::FailedPreconditionError("no members to notify");
  }
  const uint64_t size =
      Pow2Ceil(std::max<uint64_t>(kNotifyStride * members_.size(), 4096));
  VMMKIT_RETURN_IF_ERROR(
      owner.AddBar(bar, {.type = BarType::kMemory32, .size = size}));
  auto area = std::make_unique<NotifyArea>(*this);
  VMMKIT_RETURN_IF_ERROR(owner.AddRegion(bar, 0, size, area.get()));
  notify_area_ = std::move(area);
  notify_bar_ = bar;
  return absl::OkStatus();
}

absl::Status VirtioAdminOwner::InstallSriovCapability(GenericPciFunction& owner,
                                                      uint16_t vf_device_id) {
  if (sriov_config_ != nullptr) {
    return absl::AlreadyExistsError(
        "the SR-IOV capability is installed already");
  }
  if (members_.empty() || members_.size() > 0xffff) {
    return absl::FailedPreconditionError("the group needs 1..65535 members");
  }
  // The body after the 4-byte header (offsets below are the capability's).
  std::vector<uint8_t> body(kSriovCapSize - 4, 0);
  auto put16 = [&](uint32_t off, uint16_t v) {
    body[off - 4] = static_cast<uint8_t>(v);
    body[off - 4 + 1] = static_cast<uint8_t>(v >> 8);
  };
  const uint16_t n = static_cast<uint16_t>(members_.size());
  put16(kSriovInitialVfs, n);
  put16(kSriovTotalVfs, n);
  put16(kSriovFirstVfOffset, 1);
  put16(kSriovVfStride, 1);
  put16(kSriovVfDeviceId, vf_device_id);
  put16(kSriovSupportedPageSizes, 0x553);  // 4K, 8K, 64K, 256K, 1M, 4M
  put16(kSriovSystemPageSize, 0x1);        // 4K
  ConfigSpace::CapabilityOptions opts;
  opts.writable.assign(body.size(), 0);
  // VF Enable, VF MSE, ARI Capable Hierarchy (no VF migration: VF
  // Migration Capable is 0, so its enables stay 0).
  opts.writable[kSriovControl - 4] = 0x19;
  opts.writable[kSriovNumVfs - 4] = 0xff;
  opts.writable[kSriovNumVfs - 4 + 1] = 0xff;
  for (uint32_t i = 0; i < 4; ++i) {
    opts.writable[kSriovSystemPageSize - 4 + i] = 0xff;
  }
  // VF BAR0..5 and the rest: read-only zero ("the group owner device MUST
  // hardwire VF BAR0 to zero").
  VMMKIT_ASSIGN_OR_RETURN(sriov_cap_,
                          owner.config_space().AddExtendedCapability(
                              kExtCapIdSriov, 1, body, std::move(opts)));
  sriov_config_ = &owner.config_space();
  return absl::OkStatus();
}

uint64_t VirtioAdminOwner::enabled_members() const {
  if (sriov_config_ == nullptr) return 0;
  if (!(sriov_config_->Get16(sriov_cap_ + kSriovControl) & kSriovVfEnable)) {
    return 0;
  }
  return std::min<uint64_t>(sriov_config_->Get16(sriov_cap_ + kSriovNumVfs),
                            members_.size());
}

VirtioPciFunction* VirtioAdminOwner::Member(uint64_t id) const {
  if (id == 0 || id > enabled_members()) return nullptr;
  return members_[id - 1];
}

uint64_t VirtioAdminOwner::supported_commands() const {
  uint64_t s = kListCommands | kAdminLegacyCfgCommands;
  if (notify_area_ != nullptr) s |= AdminOpcodeBit(kAdminCmdLegacyNotifyInfo);
  return s;
}

size_t VirtioAdminOwner::Execute(absl::Span<const uint8_t> command,
                                 absl::Span<uint8_t> result) {
  ++stats_.commands;
  const uint16_t opcode = static_cast<uint16_t>(LoadLe(command, 0, 2));
  const uint16_t group_type = static_cast<uint16_t>(LoadLe(command, 2, 2));
  const uint64_t member_id = LoadLe(command, 16, 8);
  // The command-specific data as the driver gave it (possibly empty).
  const absl::Span<const uint8_t> data = command.size() > kHeaderSize
                                             ? command.subspan(kHeaderSize)
                                             : absl::Span<const uint8_t>();

  auto finish = [&](uint16_t status, uint16_t qualifier, size_t result_len) {
    // §2.13: "only writing the expected structure to the device-writeable
    // buffers ... reporting the actual length of data written".
    const size_t n = std::min(result.size(), kStatusSize + result_len);
    std::fill(result.begin(), result.begin() + std::min(n, kStatusSize), 0);
    StoreLe(result, 0, status, 2);
    StoreLe(result, 2, qualifier, 2);
    if (status != kAdminStatusOk) ++stats_.failed;
    return n;
  };
  auto fail = [&](uint16_t qualifier) {
    return finish(kAdminStatusEinval, qualifier, 0);
  };
  // Where a command-specific result goes.
  const absl::Span<uint8_t> out = result.size() > kStatusSize
                                      ? result.subspan(kStatusSize)
                                      : absl::Span<uint8_t>();

  // §2.12.1: "if group_type is invalid ... INVALID_GROUP; otherwise, if
  // opcode is invalid ... INVALID_OPCODE; otherwise, if group_member_id is
  // used by the specific command and is invalid ... INVALID_MEMBER".
  // "When processing a command with the SR-IOV group type, if the device
  // does not have an SR-IOV Extended Capability or if VF Enable is clear
  // then the device MUST fail all commands with ... INVALID_GROUP".
  if (group_type != kAdminGroupSriov || sriov_config_ == nullptr ||
      !(sriov_config_->Get16(sriov_cap_ + kSriovControl) & kSriovVfEnable)) {
    return fail(kAdminQualifierInvalidGroup);
  }
  if (opcode >= 64 || !(supported_commands() & AdminOpcodeBit(opcode)) ||
      !(used_ & AdminOpcodeBit(opcode))) {
    // "The device MUST validate commands against the list used by the
    // driver and MUST fail any commands not in the list with ... EINVAL and
    // ... INVALID_OPCODE."
    return fail(kAdminQualifierInvalidOpcode);
  }

  switch (opcode) {
    case kAdminCmdListQuery: {
      const uint64_t s = supported_commands();
      std::fill(out.begin(), out.begin() + std::min<size_t>(out.size(), 8), 0);
      StoreLe(out, 0, s, 8);
      return finish(kAdminStatusOk, kAdminQualifierOk, 8);
    }
    case kAdminCmdListUse: {
      // le64 bitmaps; missing bytes are zero, extra all-zero words allowed.
      const uint64_t want = LoadLe(data, 0, 8);
      for (size_t i = 8; i < data.size(); ++i) {
        if (data[i] != 0) return fail(kAdminQualifierInvalidField);
      }
      if (want & ~supported_commands()) {
        return fail(kAdminQualifierInvalidField);
      }
      // Dependencies (§2.12.1.2: the four legacy config commands go
      // together, and NOTIFY_INFO needs them).
      const uint64_t legacy = want & kAdminLegacyCfgCommands;
      if (legacy != 0 && legacy != kAdminLegacyCfgCommands) {
        return fail(kAdminQualifierInvalidField);
      }
      if ((want & AdminOpcodeBit(kAdminCmdLegacyNotifyInfo)) && legacy == 0) {
        return fail(kAdminQualifierInvalidField);
      }
      used_ = want;
      return finish(kAdminStatusOk, kAdminQualifierOk, 0);
    }
    default:
      break;
  }

  VirtioPciFunction* m = Member(member_id);
  if (m == nullptr) return fail(kAdminQualifierInvalidMember);
  const bool msix = m->legacy_common_size() == kLegacyConfigMsix;
  const uint8_t offset = data.empty() ? 0 : data[0];
  // Write data after {u8 offset; u8 reserved[7]}; read length: the result.
  const absl::Span<const uint8_t> wr = data.size() > kWrDataSize
                                           ? data.subspan(kWrDataSize)
                                           : absl::Span<const uint8_t>();
  const uint32_t wr_len =
      static_cast<uint32_t>(std::min<size_t>(wr.size(), 0xffffffffu));
  const uint32_t rd_len =
      static_cast<uint32_t>(std::min<size_t>(out.size(), 0xffffffffu));
  auto dev_ok = [&](uint32_t len) {
    const uint32_t size = m->state().config_size();
    return len != 0 && len <= kMaxDevFieldWidth && offset < size &&
           len <= size - offset;
  };

  switch (opcode) {
    case kAdminCmdLegacyCommonCfgWrite:
      if (!LegacyCommonFieldAccess(offset, wr_len, msix)) {
        return fail(kAdminQualifierInvalidField);
      }
      m->AdminLegacyCommonWrite(offset, wr);
      return finish(kAdminStatusOk, kAdminQualifierOk, 0);
    case kAdminCmdLegacyCommonCfgRead:
      if (!LegacyCommonFieldAccess(offset, rd_len, msix)) {
        return fail(kAdminQualifierInvalidField);
      }
      m->AdminLegacyCommonRead(offset, out);
      return finish(kAdminStatusOk, kAdminQualifierOk, rd_len);
    case kAdminCmdLegacyDevCfgWrite:
      if (!dev_ok(wr_len)) return fail(kAdminQualifierInvalidField);
      m->AdminLegacyDeviceWrite(offset, wr);
      return finish(kAdminStatusOk, kAdminQualifierOk, 0);
    case kAdminCmdLegacyDevCfgRead:
      if (!dev_ok(rd_len)) return fail(kAdminQualifierInvalidField);
      m->AdminLegacyDeviceRead(offset, out);
      return finish(kAdminStatusOk, kAdminQualifierOk, rd_len);
    case kAdminCmdLegacyNotifyInfo: {
      uint8_t entries[kNotifyInfoEntries * sizeof(VirtioPciLegacyNotifyInfo)] =
          {};
      entries[0] = kNotifyInfoOwner;
      entries[1] = static_cast<uint8_t>(notify_bar_);
      StoreLe(absl::MakeSpan(entries), 8, (member_id - 1) * kNotifyStride, 8);
      // entries[1] onwards: flags 0, the end of the list.
      const size_t n = std::min(out.size(), sizeof(entries));
      std::copy(entries, entries + n, out.begin());
      return finish(kAdminStatusOk, kAdminQualifierOk, sizeof(entries));
    }
    default:
      return fail(kAdminQualifierInvalidOpcode);
  }
}

virtio::Features VirtioAdminOwner::offered_features() const {
  return inner_.offered_features() |
         virtio::Features::Of({virtio::kFVersion1, virtio::kFAdminVq});
}

absl::Status VirtioAdminOwner::AcceptFeatures(
    const virtio::Features& features) {
  virtio::Features mine = features;
  mine.Set(virtio::kFAdminVq, false);
  if (!inner_.offered_features().Has(virtio::kFVersion1)) {
    mine.Set(virtio::kFVersion1, false);
  }
  return inner_.AcceptFeatures(mine);
}

absl::Status VirtioAdminOwner::Activate(virtio::DeviceContext& context) {
  context_ = &context;
  return inner_.Activate(context);
}

void VirtioAdminOwner::Reset() {
  context_ = nullptr;
  // §2.12.1: "After reset ... the list of legal commands used by the driver
  // consists of the two commands VIRTIO_ADMIN_CMD_LIST_QUERY and
  // VIRTIO_ADMIN_CMD_LIST_USE."
  used_ = kListCommands;
  inner_.Reset();
}

void VirtioAdminOwner::ProcessQueue(uint16_t index) {
  if (index < admin_index_) {
    inner_.ProcessQueue(index);
    return;
  }
  if (index == admin_index_) ProcessAdminQueue();
}

void VirtioAdminOwner::ProcessAdminQueue() {
  if (context_ == nullptr || !context_->features().Has(virtio::kFAdminVq)) {
    return;
  }
  virtio::SplitQueue* q = context_->queue(admin_index_);
  if (q == nullptr) return;
  bool added = false;
  // Bounded: Pop stops when the ring is empty, and each chain is consumed.
  while (std::optional<virtqueue::DescriptorChain> chain = q->Pop()) {
    absl::StatusOr<virtio::Request> req =
        virtio::Request::Collect(*chain, context_->memory());
    if (!req.ok()) {
      context_->MarkNeedsReset(req.status());
      return;
    }
    // The readable part: on the stack when it is as short as valid
    // commands are, else copied (up to kMaxReadable; bytes beyond are
    // outside any command's expected length and ignored, §2.13).
    uint8_t cmd[kMaxCommandBytes];
    std::vector<uint8_t> long_cmd;
    const size_t cmd_len = static_cast<size_t>(
        std::min<uint64_t>(req->readable_bytes(), kMaxReadable));
    absl::Span<uint8_t> command(cmd, cmd_len);
    if (cmd_len > sizeof(cmd)) {
      long_cmd.resize(cmd_len);
      command = absl::MakeSpan(long_cmd);
    }
    if (!req->reader().Read(command).ok()) {
      context_->MarkNeedsReset(absl::DataLossError("admin command unreadable"));
      return;
    }
    uint8_t res[kMaxResultBytes] = {};
    // The read length is the writable part's; clip what we produce.
    const size_t res_len = static_cast<size_t>(
        std::min<uint64_t>(req->writable_bytes(), sizeof(res)));
    std::vector<uint8_t> long_res;
    absl::Span<uint8_t> result(res, res_len);
    if (req->writable_bytes() > sizeof(res)) {
      long_res.assign(kMaxResultBytes + 1, 0);
      result = absl::MakeSpan(long_res);
    }
    const size_t n = Execute(absl::MakeConstSpan(command), result);
    const size_t to_write =
        static_cast<size_t>(std::min<uint64_t>(n, req->writable_bytes()));
    if (!req->writer().Write(result.subspan(0, to_write)).ok()) {
      context_->MarkNeedsReset(absl::DataLossError("admin result unwritable"));
      return;
    }
    q->AddUsed(req->head(), req->writer().written());
    added = true;
  }
  if (added) context_->NotifyUsed(admin_index_);
}

}  // namespace vmmkit::pci
