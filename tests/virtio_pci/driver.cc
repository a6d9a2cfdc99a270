#include "tests/virtio_pci/driver.h"

namespace vmmkit::tests::virtio_pci {

namespace {

// PCI configuration registers and bits.
constexpr uint8_t kRegVendor = 0x00;
constexpr uint8_t kRegDevice = 0x02;
constexpr uint8_t kRegCommand = 0x04;
constexpr uint8_t kRegStatus = 0x06;
constexpr uint8_t kRegRevision = 0x08;
constexpr uint8_t kRegHeaderType = 0x0e;
constexpr uint8_t kRegBar0 = 0x10;
constexpr uint8_t kRegSubsysVendor = 0x2c;
constexpr uint8_t kRegSubsysId = 0x2e;
constexpr uint8_t kRegCapPtr = 0x34;
constexpr uint16_t kCmdIo = 1 << 0;
constexpr uint16_t kCmdMemory = 1 << 1;
constexpr uint16_t kCmdBusMaster = 1 << 2;
constexpr uint16_t kCmdIntxDisable = 1 << 10;
constexpr uint16_t kStatusCapList = 1 << 4;
constexpr uint8_t kCapVendor = 0x09;
constexpr uint8_t kCapMsix = 0x11;
constexpr uint16_t kMsixEnable = 1 << 15;
constexpr uint16_t kMsixMaskAll = 1 << 14;
// Linux: PCI_FIND_CAP_TTL.
constexpr int kCapTtl = 48;

constexpr uint16_t kVirtioVendor = 0x1af4;

// virtio status bits.
constexpr uint8_t kAck = 1, kDriver = 2, kDriverOk = 4, kFeaturesOk = 8,
                  kNeedsReset = 64;
constexpr unsigned kFEventIdx = 29;
constexpr unsigned kFVersion1 = 32;
constexpr unsigned kFNotificationData = 38;

// Modern common configuration.
constexpr uint32_t kDfSelect = 0x00, kDf = 0x04, kGfSelect = 0x08, kGf = 0x0c,
                   kMsixConfig = 0x10, kNumQueues = 0x12, kStatus = 0x14,
                   kGeneration = 0x15, kQSelect = 0x16, kQSize = 0x18,
                   kQVector = 0x1a, kQEnable = 0x1c, kQNotifyOff = 0x1e,
                   kQDesc = 0x20, kQDriver = 0x28, kQDevice = 0x30;
// sizeof(struct virtio_pci_common_cfg): what Linux maps at least.
constexpr uint32_t kCommonMinLen = 0x38;

// Legacy registers.
constexpr uint32_t kLHostFeatures = 0, kLGuestFeatures = 4, kLPfn = 8,
                   kLNum = 12, kLSelect = 14, kLNotify = 16, kLStatus = 18,
                   kLIsr = 19, kLConfigVector = 20, kLQueueVector = 22;
constexpr uint32_t kLegacyAlign = 4096;
// Linux: SMP_CACHE_BYTES on x86, the modern vring alignment.
constexpr uint32_t kModernAlign = 64;

constexpr uint16_t kDescNext = 1, kDescWrite = 2;

uint64_t AlignUp(uint64_t v, uint64_t a) { return (v + a - 1) & ~(a - 1); }

uint64_t WidthMask(int width) {
  return width >= 8 ? ~uint64_t{0} : (uint64_t{1} << (8 * width)) - 1;
}

}  // namespace

const char* DriverErrorName(DriverError e) {
  switch (e) {
    case DriverError::kOk:
      return "ok";
    case DriverError::kNoDevice:
      return "no device";
    case DriverError::kUnsupported:
      return "unsupported device";
    case DriverError::kNoCapability:
      return "missing capability";
    case DriverError::kBadCapability:
      return "bad capability";
    case DriverError::kNoVersion1:
      return "no VERSION_1";
    case DriverError::kFeaturesRefused:
      return "features refused";
    case DriverError::kQueueUnavailable:
      return "queue unavailable";
    case DriverError::kQueueTooLarge:
      return "queue too large";
    case DriverError::kVectorRefused:
      return "vector refused";
    case DriverError::kNoMemory:
      return "no memory";
    case DriverError::kResetTimeout:
      return "reset timeout";
    case DriverError::kNeedsReset:
      return "device needs reset";
    case DriverError::kNoSpace:
      return "no free descriptors";
    case DriverError::kTimeout:
      return "timeout";
    case DriverError::kBadState:
      return "bad state";
  }
  return "?";
}

// ---------------------------------------------------------------------------
// PCI.

uint32_t VirtioPciDriver::ConfigRead(uint8_t device, uint8_t function,
                                     uint8_t reg, int width) {
  const uint32_t address = 0x80000000u | uint32_t{device} << 11 |
                           uint32_t{function} << 8 | (reg & 0xfcu);
  p_.OutPort(0xcf8, address, 4);
  return p_.InPort(static_cast<uint16_t>(0xcfc + (reg & 3)), width);
}

void VirtioPciDriver::ConfigWrite(uint8_t device, uint8_t function, uint8_t reg,
                                  uint32_t value, int width) {
  const uint32_t address = 0x80000000u | uint32_t{device} << 11 |
                           uint32_t{function} << 8 | (reg & 0xfcu);
  p_.OutPort(0xcf8, address, 4);
  p_.OutPort(static_cast<uint16_t>(0xcfc + (reg & 3)), value, width);
}

DriverError VirtioPciDriver::FindDevice(uint16_t virtio_type, int instance) {
  found_ = false;
  int seen = 0;
  for (uint8_t d = 0; d < 32; ++d) {
    const int functions =
        (ConfigRead(d, 0, kRegHeaderType, 1) & 0x80) != 0 ? 8 : 1;
    for (uint8_t f = 0; f < functions; ++f) {
      const uint16_t vendor =
          static_cast<uint16_t>(ConfigRead(d, f, kRegVendor, 2));
      if (vendor != kVirtioVendor) continue;
      const uint16_t id =
          static_cast<uint16_t>(ConfigRead(d, f, kRegDevice, 2));
      // virtio_pci_modern_dev.c: "We only own devices >= 0x1000 and <=
      // 0x107f"; transitional ids name the type in the subsystem id.
      if (id < 0x1000 || id > 0x107f) continue;
      const uint16_t subsys =
          static_cast<uint16_t>(ConfigRead(d, f, kRegSubsysId, 2));
      const uint16_t type =
          id < 0x1040 ? subsys : static_cast<uint16_t>(id - 0x1040);
      if (virtio_type != 0 && type != virtio_type) continue;
      if (seen++ != instance) continue;
      dev_ = d;
      fn_ = f;
      vendor_ = vendor;
      device_id_ = id;
      revision_ = static_cast<uint8_t>(Cfg(kRegRevision, 1));
      subsys_vendor_ = static_cast<uint16_t>(Cfg(kRegSubsysVendor, 2));
      subsys_id_ = subsys;
      virtio_type_ = type;
      found_ = true;
      return DriverError::kOk;
    }
  }
  return DriverError::kNoDevice;
}

DriverError VirtioPciDriver::SetupBars(const DriverOptions& o) {
  // PCI core (pci_read_bases): decoding off while sizing.
  const uint16_t cmd = static_cast<uint16_t>(Cfg(kRegCommand, 2));
  SetCfg(kRegCommand, cmd & ~(kCmdIo | kCmdMemory), 2);
  uint64_t io_next = o.io_base;
  uint64_t mem_next = o.mmio_base;
  for (int i = 0; i < 6; ++i) bars_[i] = Bar();
  for (int i = 0; i < 6; ++i) {
    const uint8_t reg = static_cast<uint8_t>(kRegBar0 + 4 * i);
    const uint32_t orig = Cfg(reg, 4);
    SetCfg(reg, 0xffffffffu, 4);
    const uint32_t mask = Cfg(reg, 4);
    SetCfg(reg, orig, 4);
    if (mask == 0) continue;
    Bar& b = bars_[i];
    if (orig & 1) {
      b.io = true;
      uint32_t m = mask & ~3u;
      if ((m >> 16) == 0) m |= 0xffff0000u;  // 16-bit I/O decoder
      b.size = uint64_t{~m} + 1;
      b.address = orig & ~3u;
    } else {
      b.is64 = ((orig >> 1) & 3) == 2;
      uint64_t m = mask & ~0xfull;
      uint64_t addr = orig & ~0xfull;
      if (b.is64 && i < 5) {
        const uint8_t hreg = static_cast<uint8_t>(reg + 4);
        const uint32_t horig = Cfg(hreg, 4);
        SetCfg(hreg, 0xffffffffu, 4);
        const uint32_t hmask = Cfg(hreg, 4);
        SetCfg(hreg, horig, 4);
        m |= uint64_t{hmask} << 32;
        addr |= uint64_t{horig} << 32;
      } else {
        m |= 0xffffffff00000000ull;
      }
      b.size = ~m + 1;
      b.address = addr;
    }
    if (o.assign_bars) {
      uint64_t& next = b.io ? io_next : mem_next;
      next = AlignUp(next, b.size);
      b.address = next;
      next += b.size;
      SetCfg(reg, static_cast<uint32_t>(b.address) | (orig & (b.io ? 3 : 0xf)),
             4);
      if (b.is64) SetCfg(static_cast<uint8_t>(reg + 4), b.address >> 32, 4);
    }
    if (b.is64) ++i;  // the upper half is not a BAR of its own
  }
  // pci_enable_device + pci_set_master.
  uint16_t enable = kCmdBusMaster;
  for (const Bar& b : bars_) {
    if (b.size != 0) enable |= b.io ? kCmdIo : kCmdMemory;
  }
  SetCfg(kRegCommand, cmd | enable, 2);
  return DriverError::kOk;
}

DriverError VirtioPciDriver::WalkCapabilities() {
  common_ = notify_ = isr_ = device_ = pci_cfg_ = Capability();
  msix_cap_ = 0;
  msix_vectors_ = 0;
  if ((Cfg(kRegStatus, 2) & kStatusCapList) == 0) return DriverError::kOk;
  uint8_t pos = static_cast<uint8_t>(Cfg(kRegCapPtr, 1) & 0xfc);
  for (int ttl = 0; ttl < kCapTtl && pos >= 0x40; ++ttl) {
    const uint8_t id = static_cast<uint8_t>(Cfg(pos, 1));
    const uint8_t next = static_cast<uint8_t>(Cfg(pos + 1, 1) & 0xfc);
    if (id == kCapMsix) {
      msix_cap_ = pos;
      msix_vectors_ = static_cast<uint16_t>((Cfg(pos + 2, 2) & 0x7ff) + 1);
    } else if (id == kCapVendor) {
      const uint8_t type = static_cast<uint8_t>(Cfg(pos + 3, 1));
      const uint8_t bar = static_cast<uint8_t>(Cfg(pos + 4, 1));
      Capability c;
      c.offset = pos;
      c.bar = bar;
      c.region_offset = Cfg(pos + 8, 4);
      c.length = Cfg(pos + 12, 4);
      Capability* slot = nullptr;
      switch (type) {
        case 1:
          slot = &common_;
          break;
        case 2:
          slot = &notify_;
          break;
        case 3:
          slot = &isr_;
          break;
        case 4:
          slot = &device_;
          break;
        case 5:
          slot = &pci_cfg_;
          break;
        default:
          break;
      }
      // virtio_pci_find_capability: the first of its type whose BAR is
      // there (the PCI_CFG window needs no BAR of its own).
      const bool bar_ok = bar < 6 && bars_[bar].size != 0;
      if (slot != nullptr && slot->offset == 0 && (bar_ok || type == 5)) {
        *slot = c;
      }
    }
    pos = next;
  }
  return DriverError::kOk;
}

// ---------------------------------------------------------------------------
// Register access.

uint32_t VirtioPciDriver::LegacyRead(uint32_t offset, int width) {
  return p_.InPort(static_cast<uint16_t>(bars_[0].address + offset), width);
}

void VirtioPciDriver::LegacyWrite(uint32_t offset, uint32_t value, int width) {
  p_.OutPort(static_cast<uint16_t>(bars_[0].address + offset), value, width);
}

uint64_t VirtioPciDriver::ModernRead(const Capability& cap, uint32_t offset,
                                     int width) {
  const Bar& b = bars_[cap.bar % 6];
  const uint64_t a = b.address + cap.region_offset + offset;
  if (b.io) return p_.InPort(static_cast<uint16_t>(a), width);
  return p_.MmioRead(a, width);
}

void VirtioPciDriver::ModernWrite(const Capability& cap, uint32_t offset,
                                  uint64_t value, int width) {
  const Bar& b = bars_[cap.bar % 6];
  const uint64_t a = b.address + cap.region_offset + offset;
  if (b.io) {
    p_.OutPort(static_cast<uint16_t>(a), static_cast<uint32_t>(value), width);
  } else {
    p_.MmioWrite(a, value, width);
  }
}

uint32_t VirtioPciDriver::PciCfgRead(uint8_t bar, uint32_t offset,
                                     uint32_t length) {
  const uint8_t c = pci_cfg_.offset;
  SetCfg(c + 4, bar, 1);
  SetCfg(c + 8, offset, 4);
  SetCfg(c + 12, length, 4);
  return static_cast<uint32_t>(
      Cfg(c + 16, 4) & WidthMask(length > 4 ? 4 : static_cast<int>(length)));
}

void VirtioPciDriver::PciCfgWrite(uint8_t bar, uint32_t offset, uint32_t length,
                                  uint32_t value) {
  const uint8_t c = pci_cfg_.offset;
  SetCfg(c + 4, bar, 1);
  SetCfg(c + 8, offset, 4);
  SetCfg(c + 12, length, 4);
  const int w = length == 1 || length == 2 ? static_cast<int>(length) : 4;
  SetCfg(c + 16, value, w);
}

uint8_t VirtioPciDriver::ReadStatus() {
  return static_cast<uint8_t>(legacy() ? LegacyRead(kLStatus, 1)
                                       : ModernRead(common_, kStatus, 1));
}

void VirtioPciDriver::WriteStatus(uint8_t status) {
  if (legacy()) {
    LegacyWrite(kLStatus, status, 1);
  } else {
    ModernWrite(common_, kStatus, status, 1);
  }
}

DriverError VirtioPciDriver::Reset() {
  WriteStatus(0);
  // vp_reset: "wait for the device to acknowledge"; legacy just flushes.
  for (int i = 0; i < kMaxPolls; ++i) {
    if (ReadStatus() == 0) return DriverError::kOk;
    p_.WaitForInterrupt();
  }
  return DriverError::kResetTimeout;
}

uint64_t VirtioPciDriver::ReadConfig(uint32_t offset, int width) {
  if (legacy()) {
    // Legacy vp_get: byte by byte; the bytes are guest-native (x86: LE).
    uint64_t v = 0;
    const uint32_t base = legacy_config_offset();
    for (int i = 0; i < width; ++i) {
      v |= uint64_t{LegacyRead(base + offset + i, 1)} << (8 * i);
    }
    return v;
  }
  // virtio_cread: retry while config_generation changes.
  uint64_t v = 0;
  for (int tries = 0; tries < 16; ++tries) {
    const uint64_t gen = ModernRead(common_, kGeneration, 1);
    if (width == 8) {
      v = ModernRead(device_, offset, 4) | ModernRead(device_, offset + 4, 4)
                                               << 32;
    } else {
      v = ModernRead(device_, offset, width);
    }
    if (ModernRead(common_, kGeneration, 1) == gen) break;
  }
  return v;
}

void VirtioPciDriver::WriteConfig(uint32_t offset, uint64_t value, int width) {
  if (legacy()) {
    const uint32_t base = legacy_config_offset();
    for (int i = 0; i < width; ++i) {
      LegacyWrite(base + offset + i, static_cast<uint8_t>(value >> (8 * i)), 1);
    }
    return;
  }
  if (width == 8) {
    ModernWrite(device_, offset, value & 0xffffffffu, 4);
    ModernWrite(device_, offset + 4, value >> 32, 4);
  } else {
    ModernWrite(device_, offset, value, width);
  }
}

// ---------------------------------------------------------------------------
// MSI-X.

DriverError VirtioPciDriver::EnableMsix() {
  if (msix_cap_ == 0) return DriverError::kNoCapability;
  const uint32_t table = Cfg(msix_cap_ + 4, 4);
  const Bar& b = bars_[table & 7];
  if ((table & 7) > 5 || b.size == 0 || b.io) {
    return DriverError::kBadCapability;
  }
  const uint64_t base = b.address + (table & ~7u);
  // msix_capability_init: enable with everything masked, program, unmask.
  uint16_t ctrl = static_cast<uint16_t>(Cfg(msix_cap_ + 2, 2));
  SetCfg(msix_cap_ + 2, ctrl | kMsixEnable | kMsixMaskAll, 2);
  for (uint16_t v = 0; v < msix_vectors_ && v < 1 + kMaxQueues; ++v) {
    const uint64_t e = base + 16ull * v;
    p_.MmioWrite(e + 0, msi_address_ & 0xffffffffu, 4);
    p_.MmioWrite(e + 4, msi_address_ >> 32, 4);
    p_.MmioWrite(e + 8, msi_data_base_ + v, 4);
    p_.MmioWrite(e + 12, 0, 4);  // unmasked
  }
  ctrl = static_cast<uint16_t>(Cfg(msix_cap_ + 2, 2));
  SetCfg(msix_cap_ + 2, (ctrl & ~kMsixMaskAll) | kMsixEnable, 2);
  // pci_intx_for_msi: INTx off while MSI-X is on.
  SetCfg(kRegCommand, Cfg(kRegCommand, 2) | kCmdIntxDisable, 2);
  msix_on_ = true;
  return DriverError::kOk;
}

void VirtioPciDriver::DisableMsix() {
  if (msix_cap_ != 0) {
    const uint16_t ctrl = static_cast<uint16_t>(Cfg(msix_cap_ + 2, 2));
    SetCfg(msix_cap_ + 2, ctrl & ~kMsixEnable, 2);
  }
  SetCfg(kRegCommand, Cfg(kRegCommand, 2) & ~kCmdIntxDisable, 2);
  msix_on_ = false;
}

// ---------------------------------------------------------------------------
// Probe.

DriverError VirtioPciDriver::Probe(const DriverOptions& o) {
  if (!found_) return DriverError::kNoDevice;
  mode_ = o.mode;
  msi_address_ = o.msi_address;
  msi_data_base_ = o.msi_data_base;
  nq_ = 0;
  config_interrupts_ = spurious_ = isr_reads_ = 0;
  DriverError e = SetupBars(o);
  if (e != DriverError::kOk) return e;
  e = WalkCapabilities();
  if (e != DriverError::kOk) return e;
  if (msix_on_) DisableMsix();
  e = legacy() ? ProbeLegacy(o) : ProbeModern(o);
  if (e != DriverError::kOk) return e;
  if (o.skip_driver_ok) return DriverError::kOk;
  AddStatus(kDriverOk);
  if (ReadStatus() & kNeedsReset) return DriverError::kNeedsReset;
  return DriverError::kOk;
}

// Interrupt setup shared by both probes (vp_find_vqs): MSI-X with the config
// vector written and read back, else INTx. Returns the vector for queue q
// through queues_[q].vector.
namespace {
uint16_t QueueVector(bool msix, uint16_t table_size, uint16_t nq, uint16_t q) {
  if (!msix) return VirtioPciDriver::kNoVector;
  if (table_size >= 1 + nq) return static_cast<uint16_t>(1 + q);  // per vq
  return 1;  // shared: config 0, every queue 1
}
}  // namespace

DriverError VirtioPciDriver::ProbeModern(const DriverOptions& o) {
  if (device_id_ < 0x1000 || device_id_ > 0x107f) {
    return DriverError::kUnsupported;
  }
  if (common_.offset == 0 || isr_.offset == 0 || notify_.offset == 0) {
    return DriverError::kNoCapability;  // Linux falls back to legacy here
  }
  // vp_modern_map_capability: the structure must fit its BAR.
  const Capability* const caps[] = {&common_, &isr_, &notify_, &device_};
  for (const Capability* c : caps) {
    if (c->offset == 0) continue;
    if (uint64_t{c->region_offset} + c->length > bars_[c->bar].size) {
      return DriverError::kBadCapability;
    }
  }
  if (common_.length < kCommonMinLen || isr_.length < 1) {
    return DriverError::kBadCapability;
  }
  notify_multiplier_ = Cfg(notify_.offset + 16, 4);

  // register_virtio_device: reset, ACKNOWLEDGE; virtio_dev_probe: DRIVER.
  DriverError e = Reset();
  if (e != DriverError::kOk) return e;
  AddStatus(kAck);
  AddStatus(kDriver);
  ModernWrite(common_, kDfSelect, 0, 4);
  device_features_ = ModernRead(common_, kDf, 4);
  ModernWrite(common_, kDfSelect, 1, 4);
  device_features_ |= ModernRead(common_, kDf, 4) << 32;
  // vp_finalize_features: "device uses modern interface but does not have
  // VIRTIO_F_VERSION_1".
  if ((device_features_ >> kFVersion1 & 1) == 0) {
    WriteStatus(ReadStatus() | 128);
    return DriverError::kNoVersion1;
  }
  driver_features_ = device_features_ & (o.features | 1ull << kFVersion1);
  ModernWrite(common_, kGfSelect, 0, 4);
  ModernWrite(common_, kGf, driver_features_ & 0xffffffffu, 4);
  ModernWrite(common_, kGfSelect, 1, 4);
  ModernWrite(common_, kGf, driver_features_ >> 32, 4);
  AddStatus(kFeaturesOk);
  if ((ReadStatus() & kFeaturesOk) == 0) {
    WriteStatus(ReadStatus() | 128);  // FAILED
    return DriverError::kFeaturesRefused;
  }

  // vp_find_vqs.
  uint16_t nq = static_cast<uint16_t>(ModernRead(common_, kNumQueues, 2));
  if (o.num_queues != 0 && o.num_queues < nq) nq = o.num_queues;
  if (nq > kMaxQueues) nq = kMaxQueues;
  const bool msix = o.use_msix && msix_cap_ != 0 && msix_vectors_ >= 2;
  if (msix) {
    e = EnableMsix();
    if (e != DriverError::kOk) return e;
    ModernWrite(common_, kMsixConfig, 0, 2);
    if (ModernRead(common_, kMsixConfig, 2) == kNoVector) {
      return DriverError::kVectorRefused;
    }
  }
  for (uint16_t q = 0; q < nq; ++q) {
    queues_[q].vector = QueueVector(msix, msix_vectors_, nq, q);
    e = SetupQueueModern(q, o);
    if (e != DriverError::kOk) return e;
    nq_ = static_cast<uint16_t>(q + 1);
  }
  // "Select and activate all queues. Has to be done last."
  for (uint16_t q = 0; q < nq_; ++q) {
    ModernWrite(common_, kQSelect, q, 2);
    ModernWrite(common_, kQEnable, 1, 2);
  }
  return DriverError::kOk;
}

DriverError VirtioPciDriver::SetupQueueModern(uint16_t q,
                                              const DriverOptions& o) {
  Queue& vq = queues_[q];
  ModernWrite(common_, kQSelect, q, 2);
  uint16_t num = static_cast<uint16_t>(ModernRead(common_, kQSize, 2));
  if (num == 0 || ModernRead(common_, kQEnable, 2) != 0) {
    return DriverError::kQueueUnavailable;
  }
  if (o.max_queue_size != 0 && num > o.max_queue_size) num = o.max_queue_size;
  if (num > kMaxQueueSize) num = kMaxQueueSize;
  vq.size = num;
  const uint64_t bytes =
      AlignUp(16ull * num + 6 + 2ull * num, kModernAlign) + 6 + 8ull * num;
  const uint64_t base = p_.AllocDma(bytes, 4096);
  if (base == 0) return DriverError::kNoMemory;
  InitRing(vq, base, kModernAlign);
  ModernWrite(common_, kQSize, num, 2);
  // vp_iowrite64_twopart: low half, then high half.
  ModernWrite(common_, kQDesc, vq.desc & 0xffffffffu, 4);
  ModernWrite(common_, kQDesc + 4, vq.desc >> 32, 4);
  ModernWrite(common_, kQDriver, vq.avail & 0xffffffffu, 4);
  ModernWrite(common_, kQDriver + 4, vq.avail >> 32, 4);
  ModernWrite(common_, kQDevice, vq.used & 0xffffffffu, 4);
  ModernWrite(common_, kQDevice + 4, vq.used >> 32, 4);
  const uint64_t off =
      ModernRead(common_, kQNotifyOff, 2) * uint64_t{notify_multiplier_};
  const uint32_t kick_width =
      (driver_features_ >> kFNotificationData & 1) != 0 ? 4 : 2;
  if (off + kick_width > notify_.length) return DriverError::kBadCapability;
  vq.notify = bars_[notify_.bar].address + notify_.region_offset + off;
  if (vq.vector != kNoVector) {
    ModernWrite(common_, kQVector, vq.vector, 2);
    if (ModernRead(common_, kQVector, 2) == kNoVector) {
      return DriverError::kVectorRefused;
    }
  }
  return DriverError::kOk;
}

DriverError VirtioPciDriver::ProbeLegacy(const DriverOptions& o) {
  // virtio_pci_legacy_dev.c: "We only own devices >= 0x1000 and <= 0x103f:
  // leave the rest to the modern driver", and the ABI version is revision 0.
  if (device_id_ < 0x1000 || device_id_ > 0x103f) {
    return DriverError::kUnsupported;
  }
  if (revision_ != 0) return DriverError::kUnsupported;
  if (bars_[0].size == 0 || !bars_[0].io) return DriverError::kNoCapability;
  DriverError e = Reset();
  if (e != DriverError::kOk) return e;
  AddStatus(kAck);
  AddStatus(kDriver);
  device_features_ = LegacyRead(kLHostFeatures, 4);
  // Only the low 32 bits exist; VERSION_1 cannot be taken, nor BAD_FEATURE.
  driver_features_ =
      device_features_ & o.features & 0xffffffffu & ~(1ull << 30);
  LegacyWrite(kLGuestFeatures, static_cast<uint32_t>(driver_features_), 4);

  uint16_t nq = kMaxQueues;
  if (o.num_queues != 0 && o.num_queues < nq) nq = o.num_queues;
  const bool msix = o.use_msix && msix_cap_ != 0 && msix_vectors_ >= 2;
  if (msix) {
    e = EnableMsix();
    if (e != DriverError::kOk) return e;
    LegacyWrite(kLConfigVector, 0, 2);
    if (LegacyRead(kLConfigVector, 2) == kNoVector) {
      return DriverError::kVectorRefused;
    }
  }
  // The legacy interface has no queue count: probe until QUEUE_NUM reads 0
  // (what a driver asking for N queues sees past the end).
  uint16_t present = 0;
  for (uint16_t q = 0; q < nq; ++q) {
    LegacyWrite(kLSelect, q, 2);
    if (LegacyRead(kLNum, 2) == 0) break;
    ++present;
  }
  for (uint16_t q = 0; q < present; ++q) {
    queues_[q].vector = QueueVector(msix, msix_vectors_, present, q);
    e = SetupQueueLegacy(q);
    if (e != DriverError::kOk) return e;
    nq_ = static_cast<uint16_t>(q + 1);
  }
  return DriverError::kOk;
}

DriverError VirtioPciDriver::SetupQueueLegacy(uint16_t q) {
  Queue& vq = queues_[q];
  LegacyWrite(kLSelect, q, 2);
  const uint16_t num = static_cast<uint16_t>(LegacyRead(kLNum, 2));
  if (num == 0 || LegacyRead(kLPfn, 4) != 0) {
    return DriverError::kQueueUnavailable;
  }
  if (num > kMaxQueueSize) return DriverError::kQueueTooLarge;
  vq.size = num;
  const uint64_t bytes =
      AlignUp(16ull * num + 6 + 2ull * num, kLegacyAlign) + 6 + 8ull * num;
  const uint64_t base = p_.AllocDma(bytes, kLegacyAlign);
  if (base == 0) return DriverError::kNoMemory;
  if ((base >> 12) >> 32 != 0) return DriverError::kNoMemory;
  InitRing(vq, base, kLegacyAlign);
  // "activate the queue"
  LegacyWrite(kLPfn, static_cast<uint32_t>(base >> 12), 4);
  vq.notify = bars_[0].address + kLNotify;
  if (vq.vector != kNoVector) {
    LegacyWrite(kLQueueVector, vq.vector, 2);
    if (LegacyRead(kLQueueVector, 2) == kNoVector) {
      LegacyWrite(kLPfn, 0, 4);  // out_deactivate
      return DriverError::kVectorRefused;
    }
  }
  return DriverError::kOk;
}

// ---------------------------------------------------------------------------
// Rings.

void VirtioPciDriver::InitRing(Queue& vq, uint64_t base, uint32_t align) {
  const uint16_t n = vq.size;
  vq.desc = base;
  vq.avail = base + 16ull * n;
  vq.used = AlignUp(vq.avail + 6 + 2ull * n, align);
  uint8_t zero[64] = {};
  const uint64_t end = vq.used + 6 + 8ull * n;
  for (uint64_t a = base; a < end; a += sizeof(zero)) {
    const uint64_t len = end - a < sizeof(zero) ? end - a : sizeof(zero);
    p_.MemWrite(a, zero, len);
  }
  for (uint16_t i = 0; i < n; ++i) {
    vq.next[i] = static_cast<uint16_t>(i + 1);
    vq.chain_len[i] = 0;
  }
  vq.free_head = 0;
  vq.num_free = n;
  vq.avail_idx = 0;
  vq.last_used = 0;
  vq.interrupts = 0;
  vq.seen_interrupts = 0;
  vq.ready = false;
}

uint16_t VirtioPciDriver::Load16(uint64_t a) {
  uint8_t b[2];
  p_.MemRead(a, b, 2);
  return static_cast<uint16_t>(b[0] | b[1] << 8);
}
uint32_t VirtioPciDriver::Load32(uint64_t a) {
  uint8_t b[4];
  p_.MemRead(a, b, 4);
  return b[0] | b[1] << 8 | b[2] << 16 | uint32_t{b[3]} << 24;
}
void VirtioPciDriver::Store16(uint64_t a, uint16_t v) {
  const uint8_t b[2] = {static_cast<uint8_t>(v), static_cast<uint8_t>(v >> 8)};
  p_.MemWrite(a, b, 2);
}
void VirtioPciDriver::Store32(uint64_t a, uint32_t v) {
  const uint8_t b[4] = {static_cast<uint8_t>(v), static_cast<uint8_t>(v >> 8),
                        static_cast<uint8_t>(v >> 16),
                        static_cast<uint8_t>(v >> 24)};
  p_.MemWrite(a, b, 4);
}
void VirtioPciDriver::Store64(uint64_t a, uint64_t v) {
  Store32(a, static_cast<uint32_t>(v));
  Store32(a + 4, static_cast<uint32_t>(v >> 32));
}

DriverError VirtioPciDriver::Post(uint16_t queue, const Buffer* buffers,
                                  int count, uint16_t* head) {
  if (queue >= nq_ || count <= 0) return DriverError::kBadState;
  Queue& vq = queues_[queue];
  if (count > vq.num_free) return DriverError::kNoSpace;
  const uint16_t first = vq.free_head;
  uint16_t idx = first;
  for (int i = 0; i < count; ++i) {
    const bool last = i == count - 1;
    const uint64_t d = vq.desc + 16ull * idx;
    Store64(d, buffers[i].address);
    Store32(d + 8, buffers[i].length);
    Store16(d + 12,
            static_cast<uint16_t>((buffers[i].writable ? kDescWrite : 0) |
                                  (last ? 0 : kDescNext)));
    Store16(d + 14, last ? 0 : vq.next[idx]);
    if (!last) idx = vq.next[idx];
  }
  vq.free_head = vq.next[idx];
  vq.num_free = static_cast<uint16_t>(vq.num_free - count);
  vq.chain_len[first] = static_cast<uint16_t>(count);
  Store16(vq.avail + 4 + 2ull * (vq.avail_idx % vq.size), first);
  // virtio_wmb: the entry before the index.
  p_.MemoryBarrier();
  vq.avail_idx = static_cast<uint16_t>(vq.avail_idx + 1);
  Store16(vq.avail + 2, vq.avail_idx);
  if (head != nullptr) *head = first;
  return DriverError::kOk;
}

void VirtioPciDriver::Kick(uint16_t queue) {
  if (queue >= nq_) return;
  Queue& vq = queues_[queue];
  // virtio_mb: the index before the doorbell.
  p_.MemoryBarrier();
  if (legacy()) {
    p_.OutPort(static_cast<uint16_t>(vq.notify), queue, 2);
  } else if ((driver_features_ >> kFNotificationData & 1) != 0) {
    // vp_notify_with_data: {le16 vqn, le16 next avail index}.
    p_.MmioWrite(vq.notify, queue | uint32_t{vq.avail_idx} << 16, 4);
  } else {
    p_.MmioWrite(vq.notify, queue, 2);
  }
}

int VirtioPciDriver::ServiceInterrupts() {
  int handled = 0;
  if (msix_on_) {
    uint64_t address;
    uint32_t data;
    while (p_.TakeMsi(&address, &data)) {
      ++handled;
      const uint32_t v = data - msi_data_base_;
      bool known = false;
      if (v == 0) {
        ++config_interrupts_;
        known = true;
      }
      for (uint16_t q = 0; q < nq_; ++q) {
        if (queues_[q].vector == v) {
          ++queues_[q].interrupts;
          known = true;
        }
      }
      if (!known) ++spurious_;
    }
    return handled;
  }
  if (!p_.IntxAsserted()) return 0;
  // vp_interrupt: reading the ISR acknowledges the interrupt.
  const uint8_t isr = static_cast<uint8_t>(legacy() ? LegacyRead(kLIsr, 1)
                                                    : ModernRead(isr_, 0, 1));
  ++isr_reads_;
  if (isr == 0) {
    ++spurious_;  // IRQ_NONE
    return 0;
  }
  if (isr & 2) ++config_interrupts_;
  if (isr & 1) {
    for (uint16_t q = 0; q < nq_; ++q) ++queues_[q].interrupts;
  }
  return 1;
}

DriverError VirtioPciDriver::WaitUsed(uint16_t queue, uint32_t* id,
                                      uint32_t* length) {
  if (queue >= nq_) return DriverError::kBadState;
  Queue& vq = queues_[queue];
  for (int polls = 0; polls < kMaxPolls; ++polls) {
    ServiceInterrupts();
    if (vq.interrupts != vq.seen_interrupts) {
      vq.seen_interrupts = vq.interrupts;
      vq.ready = true;
    }
    const uint16_t used_idx = Load16(vq.used + 2);
    if (vq.ready && used_idx == vq.last_used) vq.ready = false;
    if (vq.ready) {
      // virtio_rmb: the index before the entry.
      p_.MemoryBarrier();
      const uint64_t e = vq.used + 4 + 8ull * (vq.last_used % vq.size);
      const uint32_t head = Load32(e);
      const uint32_t len = Load32(e + 4);
      if (head >= vq.size || vq.chain_len[head] == 0) {
        return DriverError::kBadState;
      }
      uint16_t last = static_cast<uint16_t>(head);
      for (uint16_t i = 1; i < vq.chain_len[head]; ++i) last = vq.next[last];
      vq.next[last] = vq.free_head;
      vq.free_head = static_cast<uint16_t>(head);
      vq.num_free = static_cast<uint16_t>(vq.num_free + vq.chain_len[head]);
      vq.chain_len[head] = 0;
      vq.last_used = static_cast<uint16_t>(vq.last_used + 1);
      if ((driver_features_ >> kFEventIdx & 1) != 0) {
        // used_event: interrupt again for the next entry.
        Store16(vq.avail + 4 + 2ull * vq.size, vq.last_used);
      }
      if (id != nullptr) *id = head;
      if (length != nullptr) *length = len;
      return DriverError::kOk;
    }
    p_.WaitForInterrupt();
  }
  if (ReadStatus() & kNeedsReset) return DriverError::kNeedsReset;
  return DriverError::kTimeout;
}

}  // namespace vmmkit::tests::virtio_pci
