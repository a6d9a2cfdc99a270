#include "pci/virtio_pci.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_format.h"
#include "base/status.h"

namespace vmmkit::pci {

using virtio::DeviceState;
using virtio::DeviceType;
using virtio::Endian;
using virtio::Features;

namespace {

constexpr uint16_t kVirtioVendor = 0x1af4;
constexpr uint16_t kNoVector = DeviceState::kNoVector;

uint64_t Pow2Ceil(uint64_t v) {
  uint64_t p = 1;
  while (p < v) p <<= 1;
  return p;
}

uint32_t ClassCode(DeviceType type) {
  switch (type) {
    case DeviceType::kNet:
      return 0x020000;  // network, ethernet
    case DeviceType::kBlock:
      return 0x010000;  // mass storage, SCSI (as QEMU)
    case DeviceType::kConsole:
      return 0x078000;  // simple communication, other
    case DeviceType::kInput:
      return 0x090000;
    case DeviceType::kGpu:
      return 0x038000;
    default:
      return 0x00ff00;  // unclassified
  }
}

// Little-endian value of `width` bytes from `data`.
uint64_t LoadLe(absl::Span<const uint8_t> data) {
  uint64_t v = 0;
  for (size_t i = 0; i < data.size() && i < 8; ++i) {
    v |= uint64_t{data[i]} << (8 * i);
  }
  return v;
}

void StoreLe(uint8_t* p, uint64_t v, size_t width) {
  for (size_t i = 0; i < width; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

// Copies the bytes of `image` covered by [offset, offset + out.size()); the
// rest reads as zero.
void CopyOut(absl::Span<const uint8_t> image, uint64_t offset,
             absl::Span<uint8_t> out) {
  for (size_t i = 0; i < out.size(); ++i) {
    out[i] = offset + i < image.size() ? image[offset + i] : 0;
  }
}

}  // namespace

const char* VirtioPciModeName(VirtioPciMode mode) {
  switch (mode) {
    case VirtioPciMode::kModern:
      return "pci-modern";
    case VirtioPciMode::kTransitional:
      return "pci-transitional";
    case VirtioPciMode::kLegacy:
      return "pci-legacy";
  }
  return "unknown";
}

std::optional<uint16_t> TransitionalDeviceId(DeviceType type) {
  // §4.1.2.1 "Legacy Interfaces": the transitional PCI device ids.
  switch (type) {
    case DeviceType::kNet:
      return 0x1000;
    case DeviceType::kBlock:
      return 0x1001;
    case DeviceType::kBalloon:
      return 0x1002;
    case DeviceType::kConsole:
      return 0x1003;
    case DeviceType::kScsi:
      return 0x1004;
    case DeviceType::kRng:
      return 0x1005;
    case DeviceType::k9p:
      return 0x1009;
    default:
      return std::nullopt;
  }
}

bool LegacyCommonFieldAccess(uint32_t offset, uint32_t length,
                             bool msix_enabled) {
  struct Field {
    uint32_t offset, width;
  };
  static constexpr Field kFields[] = {
      {kLegacyHostFeatures, 4}, {kLegacyGuestFeatures, 4},
      {kLegacyQueuePfn, 4},     {kLegacyQueueNum, 2},
      {kLegacyQueueSelect, 2},  {kLegacyQueueNotify, 2},
      {kLegacyStatus, 1},       {kLegacyIsr, 1},
      {kLegacyConfigVector, 2}, {kLegacyQueueVector, 2},
  };
  if (length == 0) return false;
  const uint32_t end = msix_enabled ? kLegacyConfigMsix : kLegacyConfigNoMsix;
  if (offset >= end || length > end - offset) return false;
  for (const Field& f : kFields) {
    if (offset >= f.offset && offset - f.offset < f.width) {
      return length <= f.width - (offset - f.offset);
    }
  }
  return false;
}

// ---------------------------------------------------------------------------
// The legacy I/O BAR.

// Administration queues (an owner's) do not exist for a legacy driver: the
// legacy view shows visible_queues() only.
class VirtioPciFunction::LegacyRegs final : public RegionHandler {
 public:
  explicit LegacyRegs(VirtioPciFunction& fn) : fn_(fn) {}

  // Where the device config starts: 24 with MSI-X enabled, else 20.
  uint32_t config_base() const {
    return fn_.msix_enabled() ? kLegacyConfigMsix : kLegacyConfigNoMsix;
  }

  void Read(uint64_t offset, absl::Span<uint8_t> data) override {
    fn_.used_legacy_ = true;
    DeviceState& st = fn_.state_;
    const uint32_t base = config_base();
    // The register file as the driver sees it (little-endian registers).
    uint8_t regs[kLegacyConfigMsix] = {};
    const uint16_t sel = fn_.queue_select_;
    const bool sel_ok = sel < fn_.visible_queues();
    StoreLe(regs + kLegacyHostFeatures,
            st.DeviceFeatures(0) | (1u << virtio::kFBadFeature), 4);
    StoreLe(regs + kLegacyGuestFeatures, st.DriverFeatures(0), 4);
    uint32_t pfn = 0;
    if (sel_ok && st.queue_enabled(sel)) {
      pfn = static_cast<uint32_t>(st.queue_config(sel).desc_table() >>
                                  kLegacyPfnShift);
    }
    StoreLe(regs + kLegacyQueuePfn, pfn, 4);
    StoreLe(regs + kLegacyQueueNum,
            sel_ok ? st.queue_config(sel).max_size() : 0, 2);
    StoreLe(regs + kLegacyQueueSelect, sel, 2);
    regs[kLegacyStatus] = st.status();
    regs[kLegacyIsr] = fn_.isr_;
    if (base == kLegacyConfigMsix) {
      StoreLe(regs + kLegacyConfigVector, st.config_vector(), 2);
      StoreLe(regs + kLegacyQueueVector,
              sel_ok ? st.queue_vector(sel) : kNoVector, 2);
    }
    const uint64_t end = offset + data.size();
    // Register part (range intersection, as seed 001 does for partial
    // accesses), then the device-config part in guest-native order.
    for (size_t i = 0; i < data.size(); ++i) {
      const uint64_t o = offset + i;
      data[i] = o < base ? regs[o] : 0;
    }
    if (end > base) {
      const uint64_t start = std::max<uint64_t>(offset, base);
      st.ReadConfig(static_cast<uint32_t>(start - base),
                    data.subspan(start - offset), st.legacy_endian());
    }
    // §4.1.4.5: reading the ISR clears it (and de-asserts INTx).
    if (offset <= kLegacyIsr && end > kLegacyIsr) fn_.ClearIsr();
  }

  void Write(uint64_t offset, absl::Span<const uint8_t> data) override {
    fn_.used_legacy_ = true;
    DeviceState& st = fn_.state_;
    const uint32_t base = config_base();
    const uint64_t end = offset + data.size();
    if (end > base) {
      const uint64_t start = std::max<uint64_t>(offset, base);
      st.WriteConfig(static_cast<uint32_t>(start - base),
                     data.subspan(start - offset), st.legacy_endian());
    }
    if (offset >= base) return;
    // Registers take writes of their own offset and width only.
    const uint64_t v = LoadLe(data);
    const uint16_t sel = fn_.queue_select_;
    switch (offset) {
      case kLegacyGuestFeatures:
        if (data.size() != 4) return;
        fn_.WriteLegacyFeatures(static_cast<uint32_t>(v));
        return;
      case kLegacyQueuePfn:
        if (data.size() != 4) return;
        fn_.WriteLegacyPfn(static_cast<uint32_t>(v));
        return;
      case kLegacyQueueSelect:
        if (data.size() == 2) fn_.queue_select_ = static_cast<uint16_t>(v);
        return;
      case kLegacyQueueNotify:
        if (data.size() == 2) st.Notify(static_cast<uint16_t>(v));
        return;
      case kLegacyStatus:
        if (data.size() != 1) return;
        fn_.WriteStatus(static_cast<uint8_t>(v));
        // QEMU's quirk: Linux before 2.6.34 drove the device without
        // enabling bus mastering; enable it when the driver says DRIVER.
        if (v == (virtio::kStatusAcknowledge | virtio::kStatusDriver)) {
          ConfigSpace& cfg = fn_.config_space();
          cfg.Set16(kRegCommand, cfg.command() | kCommandBusMaster);
        }
        return;
      case kLegacyConfigVector:
        if (data.size() == 2 && base == kLegacyConfigMsix) {
          st.set_config_vector(fn_.CheckedVector(static_cast<uint16_t>(v)));
        }
        return;
      case kLegacyQueueVector:
        if (data.size() == 2 && base == kLegacyConfigMsix &&
            sel < fn_.visible_queues()) {
          st.set_queue_vector(sel, fn_.CheckedVector(static_cast<uint16_t>(v)));
        }
        return;
      default:
        return;  // read-only registers, partial writes
    }
  }

 private:
  VirtioPciFunction& fn_;
};

// ---------------------------------------------------------------------------
// Modern: common configuration.

class VirtioPciFunction::CommonCfg final : public RegionHandler {
 public:
  explicit CommonCfg(VirtioPciFunction& fn) : fn_(fn) {}

  void Read(uint64_t offset, absl::Span<uint8_t> data) override {
    fn_.used_modern_ = true;
    DeviceState& st = fn_.state_;
    uint8_t img[kCommonCfgSize] = {};
    const uint16_t sel = fn_.queue_select_;
    const bool sel_ok = sel < st.num_queues();
    StoreLe(img + kCommonDfSelect, fn_.device_feature_select_, 4);
    StoreLe(img + kCommonDf, st.DeviceFeatures(fn_.device_feature_select_), 4);
    StoreLe(img + kCommonGfSelect, fn_.driver_feature_select_, 4);
    StoreLe(img + kCommonGf, st.DriverFeatures(fn_.driver_feature_select_), 4);
    StoreLe(img + kCommonMsixConfig, st.config_vector(), 2);
    StoreLe(img + kCommonNumQueues, fn_.visible_queues(), 2);
    if (fn_.options_.admin_queues != 0) {
      StoreLe(img + kCommonAdminQueueIndex, fn_.visible_queues(), 2);
      StoreLe(img + kCommonAdminQueueNum, fn_.options_.admin_queues, 2);
    }
    img[kCommonStatus] = st.status();
    img[kCommonCfgGeneration] = static_cast<uint8_t>(st.config_generation());
    StoreLe(img + kCommonQueueSelect, sel, 2);
    if (sel_ok) {
      const virtio::SplitQueue& q = st.queue_config(sel);
      StoreLe(img + kCommonQueueSize, q.size(), 2);
      StoreLe(img + kCommonQueueMsixVector, st.queue_vector(sel), 2);
      StoreLe(img + kCommonQueueEnable, st.queue_enabled(sel) ? 1 : 0, 2);
      StoreLe(img + kCommonQueueNotifyOff,
              fn_.notify_multiplier() != 0 ? sel : 0, 2);
      StoreLe(img + kCommonQueueDesc, q.desc_table(), 8);
      StoreLe(img + kCommonQueueDriver, q.avail_ring(), 8);
      StoreLe(img + kCommonQueueDevice, q.used_ring(), 8);
      StoreLe(img + kCommonQueueNotifyData, sel, 2);
    } else {
      // §4.1.4.3.1: "queue_size ... 0 if the queue is unavailable".
      StoreLe(img + kCommonQueueMsixVector, kNoVector, 2);
    }
    CopyOut(img, offset, data);
  }

  void Write(uint64_t offset, absl::Span<const uint8_t> data) override {
    fn_.used_modern_ = true;
    DeviceState& st = fn_.state_;
    const uint64_t v = LoadLe(data);
    const size_t w = data.size();
    const uint16_t sel = fn_.queue_select_;
    const bool sel_ok = sel < st.num_queues();
    // A queue's configuration is frozen once it is enabled (§4.1.4.3.2: "The
    // driver MUST configure the other virtqueue fields before enabling").
    const bool queue_writable = sel_ok && !st.queue_enabled(sel);
    auto addr64 = [&](uint32_t field, uint64_t current, auto set) {
      if (!queue_writable) return;
      if (offset == field && w == 8) set(v);
      if (offset == field && w == 4) set((current & ~0xffffffffull) | v);
      if (offset == field + 4 && w == 4) {
        set((current & 0xffffffffull) | (v << 32));
      }
    };
    switch (offset) {
      case kCommonDfSelect:
        if (w == 4) fn_.device_feature_select_ = static_cast<uint32_t>(v);
        return;
      case kCommonGfSelect:
        if (w == 4) fn_.driver_feature_select_ = static_cast<uint32_t>(v);
        return;
      case kCommonGf:
        if (w == 4) {
          st.SetDriverFeatures(fn_.driver_feature_select_,
                               static_cast<uint32_t>(v));
        }
        return;
      case kCommonMsixConfig:
        if (w == 2)
          st.set_config_vector(fn_.CheckedVector(static_cast<uint16_t>(v)));
        return;
      case kCommonStatus:
        if (w == 1) fn_.WriteModernStatus(static_cast<uint8_t>(v));
        return;
      case kCommonQueueSelect:
        if (w == 2) fn_.queue_select_ = static_cast<uint16_t>(v);
        return;
      case kCommonQueueSize:
        if (w == 2 && queue_writable) {
          st.queue_config(sel).set_size(static_cast<uint16_t>(v));
        }
        return;
      case kCommonQueueMsixVector:
        if (w == 2 && sel_ok) {
          st.set_queue_vector(sel, fn_.CheckedVector(static_cast<uint16_t>(v)));
        }
        return;
      case kCommonQueueEnable:
        // §4.1.4.3.2: "The driver MUST NOT write a 0 to queue_enable."
        if (w == 2 && v == 1 && sel_ok) st.EnableQueue(sel);
        return;
      default:
        break;
    }
    if (!sel_ok) return;
    virtio::SplitQueue& q = st.queue_config(sel);
    if (offset == kCommonQueueDesc || offset == kCommonQueueDesc + 4) {
      addr64(kCommonQueueDesc, q.desc_table(),
             [&](uint64_t a) { q.set_desc_table(a); });
    } else if (offset == kCommonQueueDriver ||
               offset == kCommonQueueDriver + 4) {
      addr64(kCommonQueueDriver, q.avail_ring(),
             [&](uint64_t a) { q.set_avail_ring(a); });
    } else if (offset == kCommonQueueDevice ||
               offset == kCommonQueueDevice + 4) {
      addr64(kCommonQueueDevice, q.used_ring(),
             [&](uint64_t a) { q.set_used_ring(a); });
    }
    // Everything else (read-only fields, queue_reset without
    // VIRTIO_F_RING_RESET, partial writes) is dropped.
  }

 private:
  VirtioPciFunction& fn_;
};

// ---------------------------------------------------------------------------
// Modern: notify, ISR, device config.

class VirtioPciFunction::NotifyRegion final : public RegionHandler {
 public:
  explicit NotifyRegion(VirtioPciFunction& fn) : fn_(fn) {}
  void Read(uint64_t, absl::Span<uint8_t> data) override {
    std::fill(data.begin(), data.end(), 0);
  }
  void Write(uint64_t offset, absl::Span<const uint8_t> data) override {
    fn_.used_modern_ = true;
    const uint64_t v = LoadLe(data);
    const uint32_t mult = fn_.notify_multiplier();
    uint16_t queue;
    if (fn_.state_.driver_features().Has(virtio::kFNotificationData)) {
      // §4.1.5.2: {le16 vqn; le16 next_off...}: the value names the queue.
      queue = static_cast<uint16_t>(v);
    } else if (mult == 0) {
      queue = static_cast<uint16_t>(v);
    } else {
      if (offset % mult != 0) return;
      queue = static_cast<uint16_t>(offset / mult);
    }
    fn_.state_.Notify(queue);
  }

 private:
  VirtioPciFunction& fn_;
};

class VirtioPciFunction::IsrRegion final : public RegionHandler {
 public:
  explicit IsrRegion(VirtioPciFunction& fn) : fn_(fn) {}
  void Read(uint64_t offset, absl::Span<uint8_t> data) override {
    std::fill(data.begin(), data.end(), 0);
    if (offset == 0 && !data.empty()) {
      data[0] = fn_.isr_;
      fn_.ClearIsr();
    }
  }
  void Write(uint64_t, absl::Span<const uint8_t>) override {}

 private:
  VirtioPciFunction& fn_;
};

class VirtioPciFunction::DeviceCfg final : public RegionHandler {
 public:
  explicit DeviceCfg(VirtioPciFunction& fn) : fn_(fn) {}
  void Read(uint64_t offset, absl::Span<uint8_t> data) override {
    fn_.used_modern_ = true;
    fn_.state_.ReadConfig(static_cast<uint32_t>(offset), data, Endian::kLittle);
  }
  void Write(uint64_t offset, absl::Span<const uint8_t> data) override {
    fn_.used_modern_ = true;
    fn_.state_.WriteConfig(static_cast<uint32_t>(offset), data,
                           Endian::kLittle);
  }

 private:
  VirtioPciFunction& fn_;
};

// ---------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<VirtioPciFunction>> VirtioPciFunction::Create(
    virtio::VirtioDevice& device, const virtio::GuestMemory& memory,
    const Options& options) {
  const DeviceType type = device.type();
  const uint16_t type_id = static_cast<uint16_t>(type);
  ConfigSpace::Options ids;
  ids.vendor_id = kVirtioVendor;
  ids.subsystem_vendor_id = kVirtioVendor;
  ids.class_code = ClassCode(type);
  ids.interrupt_pin = 1;
  if (options.mode == VirtioPciMode::kModern) {
    ids.device_id = static_cast<uint16_t>(0x1040 + type_id);
    ids.revision_id = 1;
    ids.subsystem_id = static_cast<uint16_t>(0x40 + type_id);
  } else {
    std::optional<uint16_t> id = TransitionalDeviceId(type);
    if (!id.has_value()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "virtio-%s has no legacy PCI device id, so it cannot be %s",
          virtio::DeviceTypeName(type), VirtioPciModeName(options.mode)));
    }
    ids.device_id = *id;
    ids.revision_id = 0;
    ids.subsystem_id = type_id;
  }
  if (options.msix_vectors > 2048) {
    return absl::InvalidArgumentError("at most 2048 MSI-X vectors");
  }
  if (options.admin_queues != 0 &&
      (options.admin_queues > device.queue_max_sizes().size() ||
       !device.offered_features().Has(virtio::kFAdminVq))) {
    return absl::InvalidArgumentError(
        "admin_queues needs a device that offers VIRTIO_F_ADMIN_VQ and has "
        "that many queues");
  }
  if (options.admin_legacy && (options.mode != VirtioPciMode::kModern ||
                               options.guest_endian != Endian::kLittle)) {
    return absl::InvalidArgumentError(
        "admin_legacy is for a modern-only member of a little-endian guest");
  }
  // An owner is a PCI Express function with room for an SR-IOV capability.
  ids.extended = options.admin_queues != 0;
  auto fn = std::unique_ptr<VirtioPciFunction>(
      new VirtioPciFunction(device, memory, options, ids));
  VMMKIT_RETURN_IF_ERROR(fn->Init());
  return fn;
}

namespace {

DeviceState::Options StateOptions(const VirtioPciFunction::Options& o) {
  DeviceState::Options s;
  s.guest_endian = o.guest_endian;
  // A member whose legacy interface the owner provides takes legacy drivers
  // (through AdminLegacy*); its modern interface refuses them itself
  // (WriteModernStatus).
  s.allow_legacy = o.mode != VirtioPciMode::kModern || o.admin_legacy;
  if (o.notification_data && o.mode != VirtioPciMode::kLegacy) {
    s.transport_features.Set(virtio::kFNotificationData);
  }
  return s;
}

}  // namespace

VirtioPciFunction::VirtioPciFunction(virtio::VirtioDevice& device,
                                     const virtio::GuestMemory& memory,
                                     const Options& options,
                                     const ConfigSpace::Options& ids)
    : GenericPciFunction(ids),
      options_(options),
      state_(device, memory, StateOptions(options)) {}

VirtioPciFunction::~VirtioPciFunction() = default;

uint32_t VirtioPciFunction::notify_multiplier() const {
  switch (options_.notify_layout) {
    case NotifyLayout::kMultiplier4:
      return 4;
    case NotifyLayout::kShared:
      return 0;
    case NotifyLayout::kPagePerQueue:
      return 4096;
  }
  return 4;
}

uint64_t VirtioPciFunction::notify_size() const {
  const uint32_t mult = notify_multiplier();
  const uint64_t n = std::max<uint16_t>(state_.num_queues(), 1);
  // The last doorbell needs 4 bytes (notification data writes 32 bits).
  return mult == 0 ? 4 : (n - 1) * mult + 4;
}

absl::Status VirtioPciFunction::Init() {
  state_.set_interrupt_sink(this);
  const uint16_t nq = state_.num_queues();
  const uint16_t vectors = options_.msix_vectors != 0
                               ? options_.msix_vectors
                               : static_cast<uint16_t>(std::min(nq + 1, 2048));

  // BAR 1: MSI-X table and PBA.
  const uint64_t pba_offset =
      Pow2Ceil(std::max<uint64_t>(16ull * vectors, 0x800));
  VMMKIT_RETURN_IF_ERROR(
      AddBar(kMsixBar, {.type = BarType::kMemory32, .size = 2 * pba_offset}));
  VMMKIT_RETURN_IF_ERROR(
      AddMsix({.num_vectors = vectors,
               .table_bar = kMsixBar,
               .table_offset = 0,
               .pba_bar = kMsixBar,
               .pba_offset = static_cast<uint32_t>(pba_offset)},
              &msi_forward_)
          .status());

  const uint32_t config_size = state_.config_size();
  if (options_.mode != VirtioPciMode::kModern) {
    const uint64_t size =
        Pow2Ceil(std::max<uint64_t>(kLegacyConfigMsix + config_size, 32));
    VMMKIT_RETURN_IF_ERROR(
        AddBar(kLegacyBar, {.type = BarType::kIo, .size = size}));
    legacy_ = std::make_unique<LegacyRegs>(*this);
    VMMKIT_RETURN_IF_ERROR(AddRegion(kLegacyBar, 0, size, legacy_.get()));
  }
  if (options_.admin_legacy) {
    // The legacy register file without a BAR: only the owner reaches it.
    legacy_ = std::make_unique<LegacyRegs>(*this);
  }
  if (options_.mode == VirtioPciMode::kLegacy) return absl::OkStatus();

  // BAR 4: the modern structures.
  const uint64_t bar_size =
      Pow2Ceil(std::max<uint64_t>(kModernNotifyOffset + notify_size(), 0x4000));
  VMMKIT_RETURN_IF_ERROR(AddBar(
      kModernBar,
      {.type = BarType::kMemory64, .size = bar_size, .prefetchable = false}));
  common_ = std::make_unique<CommonCfg>(*this);
  isr_region_ = std::make_unique<IsrRegion>(*this);
  notify_ = std::make_unique<NotifyRegion>(*this);
  VMMKIT_RETURN_IF_ERROR(AddRegion(kModernBar, kModernCommonOffset,
                                   kCommonCfgSize, common_.get()));
  VMMKIT_RETURN_IF_ERROR(
      AddRegion(kModernBar, kModernIsrOffset, 4, isr_region_.get()));
  VMMKIT_RETURN_IF_ERROR(
      AddRegion(kModernBar, kModernNotifyOffset, notify_size(), notify_.get()));
  if (config_size > 0) {
    device_cfg_ = std::make_unique<DeviceCfg>(*this);
    VMMKIT_RETURN_IF_ERROR(AddRegion(kModernBar, kModernDeviceOffset,
                                     config_size, device_cfg_.get()));
  }

  // Vendor capabilities. The body starts at cap_len (after vndr and next).
  auto cap_body = [](uint8_t len, uint8_t type, uint64_t offset,
                     uint64_t length) {
    std::vector<uint8_t> b(len - 2, 0);
    b[0] = len;
    b[1] = type;
    b[2] = kModernBar;
    StoreLe(&b[6], offset, 4);
    StoreLe(&b[10], length, 4);
    return b;
  };
  VMMKIT_RETURN_IF_ERROR(
      config_space()
          .AddCapability(kCapIdVendor,
                         cap_body(16, kVirtioPciCapCommonCfg,
                                  kModernCommonOffset, kCommonCfgSize))
          .status());
  std::vector<uint8_t> notify =
      cap_body(20, kVirtioPciCapNotifyCfg, kModernNotifyOffset, notify_size());
  StoreLe(&notify[14], notify_multiplier(), 4);
  VMMKIT_RETURN_IF_ERROR(
      config_space().AddCapability(kCapIdVendor, notify).status());
  VMMKIT_RETURN_IF_ERROR(
      config_space()
          .AddCapability(kCapIdVendor,
                         cap_body(16, kVirtioPciCapIsrCfg, kModernIsrOffset, 1))
          .status());
  if (config_size > 0) {
    VMMKIT_RETURN_IF_ERROR(
        config_space()
            .AddCapability(kCapIdVendor,
                           cap_body(16, kVirtioPciCapDeviceCfg,
                                    kModernDeviceOffset, config_size))
            .status());
  }
  // The PCI configuration access window: bar, offset, length and data are
  // writable by the driver.
  std::vector<uint8_t> pci_cfg = cap_body(20, kVirtioPciCapPciCfg, 0, 0);
  pci_cfg[2] = 0;
  ConfigSpace::CapabilityOptions opts;
  opts.writable.assign(pci_cfg.size(), 0);
  opts.writable[2] = 0xff;                               // bar
  for (int i = 6; i < 18; ++i) opts.writable[i] = 0xff;  // offset..data
  opts.on_read = [this](uint32_t offset, uint32_t length) {
    if (offset < 20 && offset + length > 16) PciCfgRead(offset, length);
  };
  opts.on_write = [this](uint32_t offset, absl::Span<const uint8_t> data) {
    if (offset < 20 && offset + data.size() > 16) PciCfgWrite(offset, data);
  };
  VMMKIT_ASSIGN_OR_RETURN(
      pci_cfg_cap_, config_space().AddCapability(kCapIdVendor, pci_cfg, opts));
  return absl::OkStatus();
}

uint16_t VirtioPciFunction::CheckedVector(uint16_t vector) const {
  // §4.1.5.1.2: a vector the device cannot use reads back as NO_VECTOR.
  if (msix() == nullptr || vector >= msix()->num_vectors()) return kNoVector;
  return vector;
}

void VirtioPciFunction::WriteStatus(uint8_t status) {
  if (status == 0) {
    ResetTransport();
    return;
  }
  state_.SetStatus(status);
}

void VirtioPciFunction::WriteModernStatus(uint8_t status) {
  if (options_.admin_legacy && state_.legacy() &&
      (status & (virtio::kStatusFeaturesOk | virtio::kStatusDriverOk))) {
    // The modern interface of a modern-only device: a driver without
    // VERSION_1 gets what DeviceState gives it on such a device (FEATURES_OK
    // refused; DRIVER_OK without it fails the device), though the state
    // takes legacy drivers from the owner's admin commands.
    const bool driver_ok = status & virtio::kStatusDriverOk;
    WriteStatus(static_cast<uint8_t>(
        status & ~(virtio::kStatusFeaturesOk | virtio::kStatusDriverOk)));
    if (driver_ok) {
      state_.MarkNeedsReset(absl::FailedPreconditionError(
          "legacy driver on the modern interface of a modern-only device"));
    }
    return;
  }
  WriteStatus(status);
}

void VirtioPciFunction::AdminLegacyCommonRead(uint32_t offset,
                                              absl::Span<uint8_t> data) {
  if (legacy_ == nullptr) {
    std::fill(data.begin(), data.end(), 0);
    return;
  }
  legacy_->Read(offset, data);
}

void VirtioPciFunction::AdminLegacyCommonWrite(uint32_t offset,
                                               absl::Span<const uint8_t> data) {
  if (legacy_ != nullptr) legacy_->Write(offset, data);
}

void VirtioPciFunction::AdminLegacyDeviceRead(uint32_t offset,
                                              absl::Span<uint8_t> data) {
  if (legacy_ == nullptr) {
    std::fill(data.begin(), data.end(), 0);
    return;
  }
  legacy_->Read(uint64_t{legacy_common_size()} + offset, data);
}

void VirtioPciFunction::AdminLegacyDeviceWrite(uint32_t offset,
                                               absl::Span<const uint8_t> data) {
  if (legacy_ != nullptr) {
    legacy_->Write(uint64_t{legacy_common_size()} + offset, data);
  }
}

void VirtioPciFunction::ResetTransport() {
  state_.SetStatus(0);
  queue_select_ = 0;
  device_feature_select_ = 0;
  driver_feature_select_ = 0;
  ClearIsr();
}

void VirtioPciFunction::WriteLegacyFeatures(uint32_t value) {
  // A driver that takes VIRTIO_F_BAD_FEATURE gets the device's fallback
  // features (QEMU's legacy rule); vmmkit devices define none.
  if (value & (1u << virtio::kFBadFeature)) value = 0;
  state_.SetDriverFeatures(0, value);
  for (uint32_t w = 1; w < Features::kWords; ++w)
    state_.SetDriverFeatures(w, 0);
}

void VirtioPciFunction::WriteLegacyPfn(uint32_t pfn) {
  // QEMU: "if (pa == 0) virtio_pci_reset(...)": writing 0 resets the device.
  if (pfn == 0) {
    ResetTransport();
    return;
  }
  const uint16_t sel = queue_select_;
  if (sel >= visible_queues() || state_.active()) return;
  virtio::SplitQueue& q = state_.queue_config(sel);
  q.set_size(q.max_size());  // legacy drivers cannot choose the size
  if (!q.SetLegacyLayout(uint64_t{pfn} << kLegacyPfnShift, kLegacyVringAlign)
           .ok()) {
    return;
  }
  state_.EnableQueue(sel);
}

void VirtioPciFunction::ClearIsr() {
  isr_ = 0;
  SetIntxLevel(false);
}

void VirtioPciFunction::RaiseIsr(uint8_t bit) {
  isr_ |= bit;
  SetIntxLevel(true);
}

void VirtioPciFunction::QueueInterrupt(uint16_t index) {
  if (msix_enabled()) {
    // §4.1.5.1.2: with MSI-X, a queue whose vector is NO_VECTOR gets no
    // interrupt at all.
    const uint16_t v = state_.queue_vector(index);
    if (v != kNoVector) (void)msix()->Raise(v);
    return;
  }
  RaiseIsr(1);
}

void VirtioPciFunction::ConfigInterrupt() {
  if (msix_enabled()) {
    // §4.1.4.5.1: "The device MUST set the Device Configuration Interrupt bit
    // in ISR status before sending a device configuration change
    // notification to the driver" (with or without MSI-X; only the queue
    // bit is tied to MSI-X being disabled). No INTx while MSI-X is on.
    isr_ |= 2;
    const uint16_t v = state_.config_vector();
    if (v != kNoVector) (void)msix()->Raise(v);
    return;
  }
  RaiseIsr(2);
}

void VirtioPciFunction::PciCfgRead(uint32_t, uint32_t) {
  ConfigSpace& cfg = config_space();
  const uint32_t cap = pci_cfg_cap_;
  uint8_t out[4] = {0xff, 0xff, 0xff, 0xff};
  const int bar = cfg.Get8(cap + 4);
  const uint32_t offset = cfg.Get32(cap + 8);
  const uint32_t length = cfg.Get32(cap + 12);
  if (PciCfgAccessOk(bar, offset, length)) {
    BarRead(bar, offset, absl::MakeSpan(out, length));
  }
  cfg.Set32(cap + 16, static_cast<uint32_t>(LoadLe(out)));
}

void VirtioPciFunction::PciCfgWrite(uint32_t, absl::Span<const uint8_t>) {
  ConfigSpace& cfg = config_space();
  const uint32_t cap = pci_cfg_cap_;
  const int bar = cfg.Get8(cap + 4);
  const uint32_t offset = cfg.Get32(cap + 8);
  const uint32_t length = cfg.Get32(cap + 12);
  if (!PciCfgAccessOk(bar, offset, length)) return;
  uint8_t in[4];
  StoreLe(in, cfg.Get32(cap + 16), 4);
  BarWrite(bar, offset, absl::MakeConstSpan(in, length));
}

bool VirtioPciFunction::PciCfgAccessOk(int bar, uint32_t offset,
                                       uint32_t length) const {
  // §4.1.4.9: "the driver MUST ... cap.length ... 1, 2 or 4 ... cap.offset
  // ... a multiple of cap.length"; and the BAR must be one of ours.
  if (length != 1 && length != 2 && length != 4) return false;
  if (offset % length != 0) return false;
  if (bar < 0 || bar >= 6) return false;
  const BarSpec& spec = config_space().bar(bar);
  if (spec.type == BarType::kNone) return false;
  return uint64_t{offset} + length <= spec.size;
}

std::vector<Doorbell> VirtioPciFunction::doorbells() const {
  std::vector<Doorbell> out;
  const uint16_t nq = state_.num_queues();
  for (uint16_t q = 0; q < nq; ++q) {
    if (options_.mode != VirtioPciMode::kModern) {
      out.push_back({.bar = kLegacyBar,
                     .offset = kLegacyQueueNotify,
                     .width = 2,
                     .datamatch = q,
                     .queue = q});
    }
    if (options_.mode != VirtioPciMode::kLegacy) {
      const uint32_t mult = notify_multiplier();
      if (options_.notification_data) {
        // The value carries next_off too: no datamatch, no per-queue
        // address the VMM could key on when the multiplier is 0. The
        // register decode handles these.
        if (mult == 0) continue;
        out.push_back({.bar = kModernBar,
                       .offset = kModernNotifyOffset + uint64_t{q} * mult,
                       .width = 4,
                       .datamatch = std::nullopt,
                       .queue = q});
      } else if (mult == 0) {
        out.push_back({.bar = kModernBar,
                       .offset = kModernNotifyOffset,
                       .width = 2,
                       .datamatch = q,
                       .queue = q});
      } else {
        out.push_back({.bar = kModernBar,
                       .offset = kModernNotifyOffset + uint64_t{q} * mult,
                       .width = 2,
                       .datamatch = std::nullopt,
                       .queue = q});
      }
    }
  }
  return out;
}

}  // namespace vmmkit::pci
