#include "tests/virtio_ccw/driver.h"

#include <cstdlib>
#include <cstring>

#include "absl/strings/str_format.h"
#include "base/status.h"

namespace vmmkit::tests::virtio_ccw {

using ccw::Irb;
using ccw::Orb;
using virtqueue::Endian;
using virtqueue::testing::DriverQueue;

namespace {

constexpr uint8_t kCcwFlagSli = ccw::kCcwFlagSli;
// KVM_VIRTIO_CCW_RING_ALIGN.
constexpr uint32_t kRingAlign = 4096;
// VIRTIO_CCW_CONFIG_SIZE.
constexpr uint32_t kConfigArea = 0x100;

void PutBe(uint8_t* p, uint64_t v, size_t n) {
  for (size_t i = 0; i < n; ++i)
    p[n - 1 - i] = static_cast<uint8_t>(v >> (8 * i));
}
uint64_t GetBe(const uint8_t* p, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; ++i) v = v << 8 | p[i];
  return v;
}

// Linux's irb_is_error(): any channel status, any device status beyond
// channel end and device end, or a deferred condition code.
bool IrbIsError(const Irb& irb) {
  return irb.scsw.subchannel_status != 0 ||
         (irb.scsw.device_status &
          ~(ccw::kDevStatChannelEnd | ccw::kDevStatDeviceEnd)) != 0 ||
         (irb.scsw.control & ccw::kScswDeferredCcMask) != 0;
}

}  // namespace

LinuxVirtioCcwDriver::LinuxVirtioCcwDriver(const virtqueue::GuestMemory& memory,
                                           ccw::Subchannel& subchannel,
                                           ccw::VirtioCcwDevice& device,
                                           InterruptRecorder& irq,
                                           Options options)
    : memory_(memory),
      subchannel_(subchannel),
      device_(device),
      irq_(irq),
      options_(options),
      next_(options.arena_base) {
  subchannel_.set_concurrent_sense(options_.concurrent_sense);
  // One page of CCW slots, reused round-robin.
  ccw_slot_ = Alloc(4096, 4096);
  // vcdev->dma_area: indicators, indicators2 (the config block and status
  // byte live in their own allocations here).
  indicators_ = Alloc(8);
  indicators2_ = Alloc(8);
  // The adapter interrupt areas: the summary indicator bytes and a vector of
  // indicator bits (airq_iv), a cache line each.
  summary_ = Alloc(256, 256);
  airq_vector_ = Alloc(256, 256);
}

uint64_t LinuxVirtioCcwDriver::Alloc(uint64_t size, uint64_t align) {
  next_ = (next_ + align - 1) & ~(align - 1);
  const uint64_t addr = next_;
  next_ += size;
  // The arena is the test's business: overrunning it is a test bug.
  if (next_ > options_.arena_base + options_.arena_size ||
      !memory_.Fill(addr, size, 0).ok()) {
    std::abort();
  }
  return addr;
}

LinuxVirtioCcwDriver::Io LinuxVirtioCcwDriver::RunProgram(uint32_t cpa,
                                                          uint32_t intparm) {
  Io io;
  Orb orb;
  orb.intparm = intparm;
  // Linux's cio (cp_start / ccw_device_start_timeout_key): format-1 CCWs,
  // prefetch allowed, 64-bit IDAWs (c64), LPM of the one path.
  orb.control = ccw::kOrbFormat1 | ccw::kOrbPrefetch | ccw::kOrbFormat2Idaw |
                (0x80u << 8);
  orb.cpa = cpa;
  ++programs_;
  const int before = irq_.status_pending;
  if (absl::Status s = subchannel_.Start(orb); !s.ok()) {
    io.status = absl::InternalError(
        absl::StrFormat("START SUBCHANNEL: %s", s.ToString()));
    return io;
  }
  if (irq_.status_pending != before + 1 || irq_.last_intparm != intparm) {
    io.status = absl::InternalError("no I/O interruption for the program");
    return io;
  }
  std::optional<Irb> irb = subchannel_.Test();
  if (!irb.has_value()) {
    io.status = absl::InternalError("TEST SUBCHANNEL: no status pending");
    return io;
  }
  io.irb = *irb;
  // cio: a unit check without concurrent sense is followed by BASIC SENSE,
  // whose bytes the driver then sees in irb->ecw.
  if ((io.irb.scsw.device_status & ccw::kDevStatUnitCheck) &&
      !io.irb.has_concurrent_sense()) {
    const uint64_t sense = Alloc(ccw::kSenseBytes);
    const uint64_t slot = ccw_slot_ + 8 * ((programs_ + 256) % 512);
    ccw::Ccw1Wire wire =
        ccw::EncodeCcw1({.cmd = ccw::kCmdBasicSense,
                         .flags = kCcwFlagSli,
                         .count = ccw::kSenseBytes,
                         .data_address = static_cast<uint32_t>(sense)});
    (void)memory_.WriteObj(slot, wire);
    Orb sense_orb = orb;
    sense_orb.cpa = static_cast<uint32_t>(slot);
    if (subchannel_.Start(sense_orb).ok()) {
      if (std::optional<Irb> s = subchannel_.Test(); s.has_value()) {
        (void)memory_.Read(sense, absl::MakeSpan(io.irb.ecw));
      }
    }
  }
  last_irb_ = io.irb;
  if (IrbIsError(io.irb)) {
    // virtio_ccw_int_handler.
    if ((io.irb.scsw.device_status & ccw::kDevStatUnitCheck) &&
        (io.irb.ecw[0] & ccw::kSense0CommandReject)) {
      io.status = absl::UnimplementedError("command reject (-EOPNOTSUPP)");
    } else {
      io.status = absl::InternalError(absl::StrFormat(
          "I/O error (-EIO): device status 0x%02x subchannel status 0x%02x",
          io.irb.scsw.device_status, io.irb.scsw.subchannel_status));
    }
  }
  return io;
}

LinuxVirtioCcwDriver::Io LinuxVirtioCcwDriver::RunCcw(uint8_t cmd,
                                                      uint8_t flags,
                                                      uint16_t count,
                                                      uint32_t data,
                                                      uint32_t intparm) {
  const uint64_t slot = ccw_slot_ + 8 * (programs_ % 256);
  ccw::Ccw1Wire wire = ccw::EncodeCcw1(
      {.cmd = cmd, .flags = flags, .count = count, .data_address = data});
  (void)memory_.WriteObj(slot, wire);
  return RunProgram(static_cast<uint32_t>(slot), intparm);
}

absl::Status LinuxVirtioCcwDriver::SenseId() {
  // Done by cio before the driver binds: SENSE ID with SLI (the CIWs make the
  // data length vary).
  const uint64_t buf = Alloc(256);
  Io io =
      RunCcw(ccw::kCmdSenseId, kCcwFlagSli, 256, static_cast<uint32_t>(buf), 0);
  VMMKIT_RETURN_IF_ERROR(io.status);
  uint8_t id[8];
  VMMKIT_RETURN_IF_ERROR(memory_.Read(buf, absl::MakeSpan(id)));
  if (id[0] != 0xff) return absl::InternalError("SENSE ID byte 0 not 0xff");
  cu_type_ = static_cast<uint16_t>(GetBe(id + 1, 2));
  cu_model_ = id[3];
  // virtio_ids: CCW_DEVICE(0x3832, 0) matches any model of the type.
  if (cu_type_ != 0x3832) {
    return absl::NotFoundError(
        absl::StrFormat("control unit type 0x%04x is not virtio", cu_type_));
  }
  return absl::OkStatus();
}

absl::Status LinuxVirtioCcwDriver::SetTransportRev() {
  const uint64_t rev = Alloc(4);
  revision_ = options_.max_revision;
  absl::Status status;
  for (;;) {
    uint8_t info[4];
    PutBe(info, static_cast<uint64_t>(revision_), 2);
    PutBe(info + 2, 0, 2);  // none of the revisions carries data
    VMMKIT_RETURN_IF_ERROR(memory_.Write(rev, info));
    status = RunCcw(ccw::kVirtioCcwSetVirtioRev, 0, 4,
                    static_cast<uint32_t>(rev), kDoingSetVirtioRev)
                 .status;
    if (!absl::IsUnimplemented(status)) break;
    if (revision_ == 0) {
      // "The host device does not support setting the revision: let's
      // operate it in legacy mode."
      status = absl::OkStatus();
      break;
    }
    --revision_;
    if (revision_ < options_.min_revision) break;
  }
  return status;
}

absl::Status LinuxVirtioCcwDriver::ResetDevice() {
  status_ = 0;
  return RunCcw(ccw::kVirtioCcwVdevReset, 0, 0, 0, kDoingReset).status;
}

absl::StatusOr<uint8_t> LinuxVirtioCcwDriver::GetStatus() {
  if (revision_ < 2) return status_;
  const uint64_t area = Alloc(1);
  VMMKIT_RETURN_IF_ERROR(memory_.Write(area, absl::MakeConstSpan(&status_, 1)));
  // A failed READ_STATUS leaves the old status (the area is not written).
  (void)RunCcw(ccw::kVirtioCcwReadStatus, 0, 1, static_cast<uint32_t>(area),
               kDoingReadStatus);
  VMMKIT_RETURN_IF_ERROR(memory_.Read(area, absl::MakeSpan(&status_, 1)));
  return status_;
}

absl::Status LinuxVirtioCcwDriver::AddStatus(uint8_t bits) {
  VMMKIT_ASSIGN_OR_RETURN(uint8_t current, GetStatus());
  const uint8_t old = status_;
  const uint8_t status = static_cast<uint8_t>(current | bits);
  const uint64_t area = Alloc(1);
  VMMKIT_RETURN_IF_ERROR(memory_.Write(area, absl::MakeConstSpan(&status, 1)));
  Io io = RunCcw(ccw::kVirtioCcwWriteStatus, 0, 1, static_cast<uint32_t>(area),
                 kDoingWriteStatus);
  // "Write failed? We assume status is unchanged."
  status_ = io.status.ok() ? status : old;
  return io.status;
}

uint64_t LinuxVirtioCcwDriver::GetFeatures() {
  const uint64_t desc = Alloc(5);
  uint64_t features = 0;
  for (uint8_t index = 0; index < (revision_ == 0 ? 1 : 2); ++index) {
    uint8_t block[5] = {0, 0, 0, 0, index};
    if (!memory_.Write(desc, block).ok()) return 0;
    Io io = RunCcw(ccw::kVirtioCcwReadFeat, 0, 5, static_cast<uint32_t>(desc),
                   kDoingReadFeat);
    if (!io.status.ok()) return index == 0 ? 0 : features;
    if (!memory_.Read(desc, absl::MakeSpan(block)).ok()) return 0;
    // le32 even on s390.
    const uint64_t word = uint64_t{block[0]} | uint64_t{block[1]} << 8 |
                          uint64_t{block[2]} << 16 | uint64_t{block[3]} << 24;
    features |= word << (32 * index);
  }
  return features;
}

absl::Status LinuxVirtioCcwDriver::FinalizeFeatures(uint64_t features) {
  if (revision_ >= 1 && !(features >> virtio::kFVersion1 & 1)) {
    return absl::InvalidArgumentError(
        "device uses revision 1 but does not have VIRTIO_F_VERSION_1");
  }
  const uint64_t desc = Alloc(5);
  for (uint8_t index = 0; index < (revision_ == 0 ? 1 : 2); ++index) {
    const uint32_t word = static_cast<uint32_t>(features >> (32 * index));
    uint8_t block[5] = {static_cast<uint8_t>(word),
                        static_cast<uint8_t>(word >> 8),
                        static_cast<uint8_t>(word >> 16),
                        static_cast<uint8_t>(word >> 24), index};
    VMMKIT_RETURN_IF_ERROR(memory_.Write(desc, block));
    VMMKIT_RETURN_IF_ERROR(RunCcw(ccw::kVirtioCcwWriteFeat, 0, 5,
                                  static_cast<uint32_t>(desc), kDoingWriteFeat)
                               .status);
  }
  features_ = features;
  return absl::OkStatus();
}

absl::Status LinuxVirtioCcwDriver::SetupVq(uint16_t index) {
  // virtio_ccw_read_vq_conf.
  const uint64_t conf = Alloc(4);
  uint8_t block[4];
  PutBe(block, index, 2);
  PutBe(block + 2, 0, 2);
  VMMKIT_RETURN_IF_ERROR(memory_.Write(conf, block));
  VMMKIT_RETURN_IF_ERROR(RunCcw(ccw::kVirtioCcwReadVqConf, 0, 4,
                                static_cast<uint32_t>(conf), kDoingReadVqConf)
                             .status);
  VMMKIT_RETURN_IF_ERROR(memory_.Read(conf, absl::MakeSpan(block)));
  const uint16_t num = static_cast<uint16_t>(GetBe(block + 2, 2));
  if (num == 0) return absl::NotFoundError("queue has no entries (-ENOENT)");

  // vring_create_virtqueue with KVM_VIRTIO_CCW_RING_ALIGN.
  DriverQueue::Layout probe = DriverQueue::LegacyLayout(num, 0, kRingAlign);
  const uint64_t ring_bytes =
      probe.used + 6 + 8ull * num + 2;  // used ring with used_event
  const uint64_t base = Alloc(ring_bytes, kRingAlign);
  DriverQueue::Layout layout = DriverQueue::LegacyLayout(num, base, kRingAlign);
  auto q = std::make_unique<DriverQueue>(
      memory_, layout, revision_ == 0 ? Endian::kBig : Endian::kLittle);

  // Register it with the host: SET_VQ, flags 0.
  uint64_t info;
  uint16_t count;
  if (revision_ == 0) {
    ccw::VqInfoBlockLegacy b{};
    PutBe(b.queue, layout.desc, 8);
    PutBe(b.align, kRingAlign, 4);
    PutBe(b.index, index, 2);
    PutBe(b.num, num, 2);
    info = Alloc(sizeof(b));
    VMMKIT_RETURN_IF_ERROR(memory_.WriteObj(info, b));
    count = sizeof(b);
  } else {
    ccw::VqInfoBlock b{};
    PutBe(b.desc, layout.desc, 8);
    PutBe(b.index, index, 2);
    PutBe(b.num, num, 2);
    PutBe(b.avail, layout.avail, 8);
    PutBe(b.used, layout.used, 8);
    info = Alloc(sizeof(b));
    VMMKIT_RETURN_IF_ERROR(memory_.WriteObj(info, b));
    count = sizeof(b);
  }
  VMMKIT_RETURN_IF_ERROR(RunCcw(ccw::kVirtioCcwSetVq, 0, count,
                                static_cast<uint32_t>(info),
                                kDoingSetVq | index)
                             .status);
  q->set_event_idx(features_ >> virtio::kFEventIdx & 1);
  queues_.push_back(std::move(q));
  info_blocks_.push_back(info);
  reaped_.push_back(0);
  return absl::OkStatus();
}

absl::Status LinuxVirtioCcwDriver::RegisterAdapterIndicators(uint16_t nvqs) {
  (void)nvqs;  // the vector has room for a cache line of bits
  ccw::ThinintArea area{};
  PutBe(area.summary_indicator, summary_, 8);
  PutBe(area.indicator, airq_vector_, 8);
  PutBe(area.bit_nr, options_.adapter_bit_nr, 8);
  area.isc = options_.adapter_isc;
  const uint64_t addr = Alloc(sizeof(area));
  VMMKIT_RETURN_IF_ERROR(memory_.WriteObj(addr, area));
  return RunCcw(ccw::kVirtioCcwSetIndAdapter, kCcwFlagSli, sizeof(area),
                static_cast<uint32_t>(addr), kDoingSetIndAdapter)
      .status;
}

absl::Status LinuxVirtioCcwDriver::FindVqs(uint16_t nvqs) {
  for (uint16_t i = 0; i < nvqs; ++i) VMMKIT_RETURN_IF_ERROR(SetupVq(i));
  // The payload of SET_IND / SET_CONF_IND: the indicators' address.
  const uint64_t indicatorp = Alloc(8);
  uint8_t be[8];
  thinint_ = options_.adapter_interrupts;
  if (thinint_ && !RegisterAdapterIndicators(nvqs).ok()) {
    // "no error, just fall back to legacy interrupts"
    thinint_ = false;
  }
  if (!thinint_) {
    WriteIndicatorWord(indicators_, 0);
    PutBe(be, indicators_, 8);
    VMMKIT_RETURN_IF_ERROR(memory_.Write(indicatorp, be));
    VMMKIT_RETURN_IF_ERROR(RunCcw(ccw::kVirtioCcwSetInd, 0, 8,
                                  static_cast<uint32_t>(indicatorp),
                                  kDoingSetInd)
                               .status);
  }
  WriteIndicatorWord(indicators2_, 0);
  PutBe(be, indicators2_, 8);
  VMMKIT_RETURN_IF_ERROR(memory_.Write(indicatorp, be));
  return RunCcw(ccw::kVirtioCcwSetConfInd, 0, 8,
                static_cast<uint32_t>(indicatorp), kDoingSetConfInd)
      .status;
}

absl::Status LinuxVirtioCcwDriver::Probe(const virtio::Features& wanted) {
  VMMKIT_RETURN_IF_ERROR(SenseId());
  if (options_.legacy_only) {
    revision_ = 0;
  } else {
    VMMKIT_RETURN_IF_ERROR(SetTransportRev());
  }
  // register_virtio_device -> virtio_dev_probe.
  VMMKIT_RETURN_IF_ERROR(ResetDevice());
  VMMKIT_RETURN_IF_ERROR(AddStatus(virtio::kStatusAcknowledge));
  VMMKIT_RETURN_IF_ERROR(AddStatus(virtio::kStatusDriver));
  const uint64_t device_features = GetFeatures();
  // The driver's table plus the transport features the ring keeps
  // (VERSION_1, EVENT_IDX, INDIRECT_DESC are among `wanted` here).
  const uint64_t features = device_features & wanted.Low64();
  VMMKIT_RETURN_IF_ERROR(FinalizeFeatures(features));
  if (features >> virtio::kFVersion1 & 1) {
    // virtio_features_ok.
    (void)AddStatus(virtio::kStatusFeaturesOk);
    VMMKIT_ASSIGN_OR_RETURN(uint8_t status, GetStatus());
    if (!(status & virtio::kStatusFeaturesOk)) {
      return absl::FailedPreconditionError("virtio: device refuses features");
    }
  }
  VMMKIT_RETURN_IF_ERROR(FindVqs(device_.state().num_queues()));
  return AddStatus(virtio::kStatusDriverOk);
}

absl::Status LinuxVirtioCcwDriver::Remove() {
  VMMKIT_RETURN_IF_ERROR(ResetDevice());
  // "Driver should have reset device."
  VMMKIT_ASSIGN_OR_RETURN(uint8_t status, GetStatus());
  if (status != 0) {
    return absl::InternalError(
        absl::StrFormat("status 0x%02x after reset", status));
  }
  // virtio_ccw_del_vqs: virtio_ccw_drop_indicator, then every queue.
  absl::Status first_error;
  {
    Io io;
    if (thinint_) {
      ccw::ThinintArea area{};
      PutBe(area.summary_indicator, summary_, 8);
      area.isc = options_.adapter_isc;
      const uint64_t addr = Alloc(sizeof(area));
      VMMKIT_RETURN_IF_ERROR(memory_.WriteObj(addr, area));
      io = RunCcw(ccw::kVirtioCcwSetIndAdapter, 0, sizeof(area),
                  static_cast<uint32_t>(addr), kDoingSetIndAdapter);
    } else {
      const uint64_t addr = Alloc(8);
      io = RunCcw(ccw::kVirtioCcwSetInd, 0, 8, static_cast<uint32_t>(addr),
                  kDoingSetInd);
    }
    if (!io.status.ok()) first_error = io.status;
  }
  for (size_t i = 0; i < queues_.size(); ++i) {
    uint16_t count;
    if (revision_ == 0) {
      ccw::VqInfoBlockLegacy b{};
      PutBe(b.index, i, 2);
      VMMKIT_RETURN_IF_ERROR(memory_.WriteObj(info_blocks_[i], b));
      count = sizeof(b);
    } else {
      ccw::VqInfoBlock b{};
      PutBe(b.index, i, 2);
      VMMKIT_RETURN_IF_ERROR(memory_.WriteObj(info_blocks_[i], b));
      count = sizeof(b);
    }
    Io io = RunCcw(ccw::kVirtioCcwSetVq, 0, count,
                   static_cast<uint32_t>(info_blocks_[i]),
                   kDoingSetVq | static_cast<uint32_t>(i));
    if (!io.status.ok() && first_error.ok()) first_error = io.status;
  }
  queues_.clear();
  info_blocks_.clear();
  reaped_.clear();
  thinint_ = false;
  VMMKIT_RETURN_IF_ERROR(first_error);
  // "Acknowledge the device's existence again."
  return AddStatus(virtio::kStatusAcknowledge);
}

absl::Status LinuxVirtioCcwDriver::ReadConfig(uint32_t offset,
                                              absl::Span<uint8_t> out) {
  if (offset + out.size() > kConfigArea) {
    return absl::OutOfRangeError("beyond VIRTIO_CCW_CONFIG_SIZE");
  }
  const uint64_t area = Alloc(kConfigArea);
  // READ_CONF, flags 0, count offset + len.
  VMMKIT_RETURN_IF_ERROR(RunCcw(ccw::kVirtioCcwReadConf, 0,
                                static_cast<uint16_t>(offset + out.size()),
                                static_cast<uint32_t>(area), kDoingReadConfig)
                             .status);
  return memory_.Read(area + offset, out);
}

absl::Status LinuxVirtioCcwDriver::WriteConfig(uint32_t offset,
                                               absl::Span<const uint8_t> in) {
  if (offset + in.size() > kConfigArea) {
    return absl::OutOfRangeError("beyond VIRTIO_CCW_CONFIG_SIZE");
  }
  // "Make sure we don't overwrite fields": the bytes before `offset` are
  // what the device has.
  const uint64_t area = Alloc(kConfigArea);
  if (offset > 0) {
    VMMKIT_RETURN_IF_ERROR(RunCcw(ccw::kVirtioCcwReadConf, 0,
                                  static_cast<uint16_t>(offset),
                                  static_cast<uint32_t>(area), kDoingReadConfig)
                               .status);
  }
  VMMKIT_RETURN_IF_ERROR(memory_.Write(area + offset, in));
  return RunCcw(ccw::kVirtioCcwWriteConf, 0,
                static_cast<uint16_t>(offset + in.size()),
                static_cast<uint32_t>(area), kDoingWriteConfig)
      .status;
}

bool LinuxVirtioCcwDriver::Kick(uint16_t queue) {
  if (queue >= queues_.size() || !queues_[queue]->ShouldNotify()) return false;
  device_.Notify(queue);
  return true;
}

std::optional<virtqueue::VirtqUsedElem> LinuxVirtioCcwDriver::GetBuf(
    uint16_t queue) {
  if (queue >= queues_.size()) return std::nullopt;
  std::optional<virtqueue::VirtqUsedElem> e = queues_[queue]->PopUsed();
  if (e.has_value()) {
    ++reaped_[queue];
    if (features_ >> virtio::kFEventIdx & 1) {
      queues_[queue]->SetUsedEvent(reaped_[queue]);
    }
  }
  return e;
}

void LinuxVirtioCcwDriver::ReadIndicatorWord(uint64_t addr, uint64_t* value) {
  uint8_t be[8] = {};
  (void)memory_.Read(addr, absl::MakeSpan(be));
  *value = GetBe(be, 8);
}

void LinuxVirtioCcwDriver::WriteIndicatorWord(uint64_t addr, uint64_t value) {
  uint8_t be[8];
  PutBe(be, value, 8);
  (void)memory_.Write(addr, be);
}

LinuxVirtioCcwDriver::Interrupts LinuxVirtioCcwDriver::HandleInterrupts() {
  Interrupts seen;
  if (thinint_) {
    // virtio_airq_handler: scan the vector (bit numbers from the left), clear
    // the summary byte, scan again.
    for (int pass = 0; pass < 2; ++pass) {
      for (size_t q = 0; q < queues_.size(); ++q) {
        const uint64_t bit = options_.adapter_bit_nr + q;
        const uint64_t byte_addr = airq_vector_ + bit / 8;
        const uint8_t mask = static_cast<uint8_t>(0x80 >> (bit % 8));
        uint8_t byte = 0;
        (void)memory_.Read(byte_addr, absl::MakeSpan(&byte, 1));
        if (byte & mask) {
          byte = static_cast<uint8_t>(byte & ~mask);
          (void)memory_.Write(byte_addr, absl::MakeConstSpan(&byte, 1));
          seen.queues |= uint64_t{1} << q;
        }
      }
      if (pass == 0) {
        const uint8_t zero = 0;
        (void)memory_.Write(summary_, absl::MakeConstSpan(&zero, 1));
      }
    }
  } else {
    // virtio_ccw_int_handler: every set bit of the 64-bit word is a queue.
    uint64_t word;
    ReadIndicatorWord(indicators_, &word);
    seen.queues = word;
    WriteIndicatorWord(indicators_, 0);
  }
  uint64_t word2;
  ReadIndicatorWord(indicators2_, &word2);
  if (word2 & 1) {
    seen.config = true;
    WriteIndicatorWord(indicators2_, word2 & ~uint64_t{1});
  }
  return seen;
}

}  // namespace vmmkit::tests::virtio_ccw
