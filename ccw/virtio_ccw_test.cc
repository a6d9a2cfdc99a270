// Malformed and edge-case channel programs against VirtioCcwDevice, each with
// the exact SCSW (device status, subchannel status, residual count, CCW
// address) and sense data the transport and the interpreter produce.
#include "ccw/virtio_ccw.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "base/status_matchers.h"
#include "ccw/ccw.h"
#include "ccw/subchannel.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "virtio-device/config_space.h"
#include "virtio-device/rng.h"
#include "virtio-device/virtio_device.h"
#include "virtqueue/guest_memory.h"

namespace vmmkit::ccw {
namespace {

using ::testing::ElementsAre;
using virtio::Features;
using virtqueue::Endian;
using virtqueue::GuestMemoryMmap;

constexpr uint8_t kCeDe = kDevStatChannelEnd | kDevStatDeviceEnd;
constexpr uint64_t kMemSize = 1 << 20;
constexpr uint32_t kProgram = 0x1000;
constexpr uint32_t kData = 0x2000;
constexpr uint32_t kData2 = 0x3000;
constexpr uint32_t kRings = 0x10000;

// Two queues (max 16 and 8), a 13-byte configuration, VERSION_1 and bit 0.
class FakeDevice final : public virtio::VirtioDevice {
 public:
  FakeDevice() : config_(13) {
    config_.DeclareField(0, 8);
    config_.DeclareField(8, 4);
    config_.SetU64(0, 0x0102030405060708ull);
    config_.SetU32(8, 0x0a0b0c0d);
    config_.SetU8(12, 0xee);
  }
  virtio::DeviceType type() const override {
    return virtio::DeviceType::kBalloon;
  }
  absl::Span<const uint16_t> queue_max_sizes() const override { return sizes_; }
  Features offered_features() const override {
    return Features::Of({virtio::kFVersion1, 0});
  }
  uint32_t config_size() const override { return config_.size(); }
  void ReadConfig(uint32_t offset, absl::Span<uint8_t> data,
                  Endian endian) override {
    config_.Read(offset, data, endian);
  }
  void WriteConfig(uint32_t offset, absl::Span<const uint8_t> data,
                   Endian) override {
    config_.SetBytes(offset, data);
  }
  absl::Status Activate(virtio::DeviceContext&) override {
    return absl::OkStatus();
  }
  void Reset() override {}
  void ProcessQueue(uint16_t) override {}

  virtio::ConfigSpace& config() { return config_; }

 private:
  const uint16_t sizes_[2] = {16, 8};
  virtio::ConfigSpace config_;
};

class Recorder final : public InterruptSink, public VirtioCcwInterrupts {
 public:
  void StatusPending(Subchannel&, uint32_t) override { ++pending; }
  void ClassicInterrupt() override { ++classic; }
  void AdapterInterrupt(uint8_t) override { ++adapter; }
  int pending = 0, classic = 0, adapter = 0;
};

std::vector<uint8_t> Be(uint64_t v, size_t n) {
  std::vector<uint8_t> out(n);
  for (size_t i = 0; i < n; ++i)
    out[n - 1 - i] = static_cast<uint8_t>(v >> (8 * i));
  return out;
}
std::vector<uint8_t> Cat(std::initializer_list<std::vector<uint8_t>> parts) {
  std::vector<uint8_t> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

class VirtioCcwTest : public ::testing::Test {
 protected:
  void SetUpDevice(VirtioCcwDevice::Options options) {
    auto mem = GuestMemoryMmap::Create({{.guest_base = 0, .size = kMemSize}});
    ASSERT_TRUE(mem.ok());
    memory_ = std::move(*mem);
    dev_ = std::make_unique<VirtioCcwDevice>(fake_, *memory_, options, &irq_);
    sch_ = std::make_unique<Subchannel>(*memory_, *dev_, irq_);
  }
  void SetUp() override { SetUpDevice({}); }

  void Put(uint64_t addr, const std::vector<uint8_t>& bytes) {
    ASSERT_OK(memory_->Write(addr, bytes));
  }
  std::vector<uint8_t> Get(uint64_t addr, size_t n) {
    std::vector<uint8_t> out(n);
    EXPECT_OK(memory_->Read(addr, absl::MakeSpan(out)));
    return out;
  }
  // Runs a format-1 program at kProgram.
  Irb Run(const std::vector<Ccw>& program) {
    for (size_t i = 0; i < program.size(); ++i) {
      EXPECT_OK(memory_->WriteObj(kProgram + 8 * i, EncodeCcw1(program[i])));
    }
    return Start(kProgram);
  }
  Irb Start(uint32_t cpa) {
    Orb orb{.intparm = 0x1234, .control = kOrbFormat1, .cpa = cpa};
    EXPECT_OK(sch_->Start(orb));
    std::optional<Irb> irb = sch_->Test();
    EXPECT_TRUE(irb.has_value());
    return irb.value_or(Irb{});
  }
  Irb Cmd(uint8_t cmd, uint8_t flags, uint16_t count, uint32_t data = kData) {
    return Run(
        {{.cmd = cmd, .flags = flags, .count = count, .data_address = data}});
  }
  // BASIC SENSE: the 32 sense bytes.
  std::vector<uint8_t> Sense() {
    Irb irb = Cmd(kCmdBasicSense, 0, kSenseBytes, 0x8000);
    EXPECT_EQ(irb.scsw.device_status, kCeDe);
    return Get(0x8000, kSenseBytes);
  }
  void SetRevision(uint16_t rev) {
    Put(kData, Cat({Be(rev, 2), Be(0, 2)}));
    Irb irb = Cmd(kVirtioCcwSetVirtioRev, 0, 4);
    ASSERT_EQ(irb.scsw.device_status, kCeDe);
    ASSERT_EQ(dev_->revision(), rev);
  }
  // The SCSW of an executed single-CCW program at kProgram.
  void ExpectDone(const Irb& irb, uint8_t subchannel_status, uint16_t count) {
    EXPECT_EQ(irb.scsw.device_status, kCeDe);
    EXPECT_EQ(irb.scsw.subchannel_status, subchannel_status);
    EXPECT_EQ(irb.scsw.count, count);
    EXPECT_EQ(irb.scsw.ccw_address, kProgram + 8);
    EXPECT_EQ(irb.scsw.control & kScswFcStart, kScswFcStart);
    EXPECT_EQ(irb.scsw.control &
                  (kScswScPrimary | kScswScSecondary | kScswScStatusPending),
              kScswScPrimary | kScswScSecondary | kScswScStatusPending);
    EXPECT_EQ((irb.scsw.control & kScswScAlert) != 0, subchannel_status != 0);
  }
  // A command reject of the single CCW at kProgram with `count`: unit check
  // alone, the full count as residual, sense byte 0 0x80 by BASIC SENSE.
  void ExpectReject(const Irb& irb, uint16_t count) {
    EXPECT_EQ(irb.scsw.device_status, kDevStatUnitCheck);
    EXPECT_EQ(irb.scsw.subchannel_status, 0);
    EXPECT_EQ(irb.scsw.count, count);
    EXPECT_EQ(irb.scsw.ccw_address, kProgram + 8);
    EXPECT_TRUE(irb.scsw.control & kScswScAlert);
    std::vector<uint8_t> sense = Sense();
    EXPECT_EQ(sense[0], kSense0CommandReject);
    for (size_t i = 1; i < sense.size(); ++i) EXPECT_EQ(sense[i], 0) << i;
  }
  // The revision-1 SET_VQ block.
  std::vector<uint8_t> VqBlock(uint64_t desc, uint16_t index, uint16_t num,
                               uint64_t avail, uint64_t used) {
    return Cat({Be(desc, 8), Be(0, 4), Be(index, 2), Be(num, 2), Be(avail, 8),
                Be(used, 8)});
  }
  std::vector<uint8_t> LegacyVqBlock(uint64_t queue, uint32_t align,
                                     uint16_t index, uint16_t num) {
    return Cat({Be(queue, 8), Be(align, 4), Be(index, 2), Be(num, 2)});
  }
  std::vector<uint8_t> Thinint(uint64_t summary, uint64_t ind, uint64_t bit_nr,
                               uint8_t isc) {
    return Cat({Be(summary, 8), Be(ind, 8), Be(bit_nr, 8), {isc}});
  }

  FakeDevice fake_;
  Recorder irq_;
  std::unique_ptr<GuestMemoryMmap> memory_;
  std::unique_ptr<VirtioCcwDevice> dev_;
  std::unique_ptr<Subchannel> sch_;
};

// ---------------------------------------------------------------------------
// Commands the device does not know.

TEST_F(VirtioCcwTest, SenseIdIdentifiesVirtio) {
  Irb irb = Cmd(kCmdSenseId, kCcwFlagSli, 64);
  ExpectDone(irb, 0, 56);
  EXPECT_THAT(Get(kData, 8),
              ElementsAre(0xff, 0x38, 0x32, 5 /* balloon */, 0, 0, 0, 0));
}

TEST_F(VirtioCcwTest, UnknownCommandsAreRejected) {
  SetRevision(2);
  for (uint8_t code :
       {0x01, 0x02, 0x05, 0x0c, 0x14, 0x23, 0x42, 0x83 + 0x10, 0xff, 0x63}) {
    SCOPED_TRACE(code);
    Irb irb = Cmd(code, 0, 16);
    ExpectReject(irb, 16);
  }
}

TEST_F(VirtioCcwTest, InvalidCommandCodeIsAProgramCheck) {
  Irb irb = Cmd(0x10, 0, 4);  // low four bits zero
  EXPECT_EQ(irb.scsw.device_status, 0);
  EXPECT_EQ(irb.scsw.subchannel_status, kSchStatProgramCheck);
  EXPECT_EQ(irb.scsw.ccw_address, kProgram + 8);
  // Nothing reached the device: the revision is still open.
  EXPECT_EQ(dev_->revision(), VirtioCcwDevice::kRevisionUnset);
}

TEST_F(VirtioCcwTest, RejectWithConcurrentSense) {
  sch_->set_concurrent_sense(true);
  SetRevision(1);
  Irb irb = Cmd(kVirtioCcwReadStatus, 0, 1);
  EXPECT_EQ(irb.scsw.device_status, kDevStatUnitCheck);
  ASSERT_TRUE(irb.has_concurrent_sense());
  EXPECT_EQ(irb.ecw[0], kSense0CommandReject);
  // Consumed: BASIC SENSE now reads zeros.
  EXPECT_EQ(Sense()[0], 0);
}

TEST_F(VirtioCcwTest, SenseIsClearedByTheNextCommand) {
  SetRevision(1);
  ExpectReject(Cmd(kVirtioCcwReadStatus, 0, 1), 1);  // reads the sense
  Irb irb = Cmd(kVirtioCcwReadStatus, 0, 1);
  EXPECT_EQ(irb.scsw.device_status, kDevStatUnitCheck);
  ExpectDone(Cmd(kCmdNoop, 0, 0), 0, 0);
  EXPECT_EQ(Sense()[0], 0);
}

// ---------------------------------------------------------------------------
// Lengths.

TEST_F(VirtioCcwTest, ShortCountWithoutSliIsIncorrectLength) {
  SetRevision(1);
  Put(kData, {0xff, 0xff, 0xff, 0xff, 0});
  // WRITE_FEAT needs 5 bytes; 3 given, no SLI: the device wanted more.
  Irb irb = Cmd(kVirtioCcwWriteFeat, 0, 3);
  ExpectDone(irb, kSchStatIncorrectLength, 0);
  EXPECT_EQ(dev_->state().DriverFeatures(0), 0u);
}

TEST_F(VirtioCcwTest, ShortCountWithSliIsACommandReject) {
  SetRevision(1);
  Put(kData, {0x01, 0, 0, 0, 0});
  Irb irb = Cmd(kVirtioCcwWriteFeat, kCcwFlagSli, 3);
  ExpectReject(irb, 3);
  EXPECT_EQ(dev_->state().DriverFeatures(0), 0u);
}

TEST_F(VirtioCcwTest, ShortCountsOfEveryBlockCommand) {
  SetRevision(2);
  struct Case {
    uint8_t cmd;
    uint16_t short_count;
  };
  for (Case c :
       {Case{kVirtioCcwSetVq, 31}, Case{kVirtioCcwSetInd, 7},
        Case{kVirtioCcwSetConfInd, 4}, Case{kVirtioCcwSetIndAdapter, 24},
        Case{kVirtioCcwReadVqConf, 1}, Case{kVirtioCcwReadFeat, 4},
        Case{kVirtioCcwWriteFeat, 4}, Case{kVirtioCcwWriteStatus, 0}}) {
    SCOPED_TRACE(c.cmd);
    Put(kData, std::vector<uint8_t>(32, 0));
    ExpectDone(Cmd(c.cmd, 0, c.short_count), kSchStatIncorrectLength, 0);
    if (c.short_count > 0)
      ExpectReject(Cmd(c.cmd, kCcwFlagSli, c.short_count), c.short_count);
  }
  EXPECT_EQ(dev_->state().status(), 0);
  EXPECT_FALSE(dev_->adapter_interrupts());
}

TEST_F(VirtioCcwTest, LongCountIsIncorrectLengthUnlessSli) {
  SetRevision(1);
  Put(kData, {0x01, 0, 0, 0, 0, 0xaa, 0xbb, 0xcc});
  // 8 bytes for a 5-byte block: executed, 3 left over.
  ExpectDone(Cmd(kVirtioCcwWriteFeat, 0, 8), kSchStatIncorrectLength, 3);
  EXPECT_EQ(dev_->state().DriverFeatures(0), 1u);
  Put(kData, {0x00, 0, 0, 0, 1});
  ExpectDone(Cmd(kVirtioCcwWriteFeat, kCcwFlagSli, 8), 0, 3);
  EXPECT_EQ(dev_->state().DriverFeatures(1), 0u);
  // SET_VIRTIO_REV-sized and SET_VQ-sized blocks alike.
  Put(kData, Be(0x8000, 8));
  ExpectDone(Cmd(kVirtioCcwSetConfInd, 0, 16), kSchStatIncorrectLength, 8);
  ExpectDone(Cmd(kVirtioCcwSetConfInd, kCcwFlagSli, 16), 0, 8);
}

TEST_F(VirtioCcwTest, IncorrectLengthStopsCommandChaining) {
  SetRevision(1);
  Put(kData, {0x01, 0, 0, 0, 0, 0, 0, 0});
  Put(kData2, {0x03});
  Irb irb =
      Run({{.cmd = kVirtioCcwWriteFeat,
            .flags = kCcwFlagCc,
            .count = 8,
            .data_address = kData},
           {.cmd = kVirtioCcwWriteStatus, .count = 1, .data_address = kData2}});
  ExpectDone(irb, kSchStatIncorrectLength, 3);
  EXPECT_EQ(dev_->state().status(), 0);
}

TEST_F(VirtioCcwTest, ReadConfResidualCount) {
  SetRevision(1);
  Put(kData, std::vector<uint8_t>(32, 0x77));
  // A prefix: 8 of 13 bytes, nothing left over.
  ExpectDone(Cmd(kVirtioCcwReadConf, 0, 8), 0, 0);
  EXPECT_THAT(Get(kData, 9), ElementsAre(8, 7, 6, 5, 4, 3, 2, 1, 0x77));
  // More than the space: 13 stored, 7 residual, incorrect length...
  Put(kData, std::vector<uint8_t>(32, 0x77));
  ExpectDone(Cmd(kVirtioCcwReadConf, 0, 20), kSchStatIncorrectLength, 7);
  EXPECT_EQ(Get(kData, 14)[12], 0xee);
  EXPECT_EQ(Get(kData, 14)[13], 0x77);
  // ... unless suppressed.
  ExpectDone(Cmd(kVirtioCcwReadConf, kCcwFlagSli, 20), 0, 7);
}

TEST_F(VirtioCcwTest, ReadConfLegacyIsBigEndian) {
  // Revision 0 fixed by the first (legacy) command.
  ExpectDone(Cmd(kVirtioCcwReadConf, 0, 12), 0, 0);
  EXPECT_EQ(dev_->revision(), 0);
  EXPECT_THAT(Get(kData, 12),
              ElementsAre(1, 2, 3, 4, 5, 6, 7, 8, 0x0a, 0x0b, 0x0c, 0x0d));
}

TEST_F(VirtioCcwTest, WriteConfPrefixAndOverlong) {
  SetRevision(1);
  Put(kData, {0x11, 0x22});
  ExpectDone(Cmd(kVirtioCcwWriteConf, 0, 2), 0, 0);
  EXPECT_EQ(fake_.config().U64(0), 0x0102030405062211ull);
  Put(kData, std::vector<uint8_t>(16, 0x33));
  ExpectDone(Cmd(kVirtioCcwWriteConf, 0, 16), kSchStatIncorrectLength, 3);
  EXPECT_EQ(fake_.config().U8(12), 0x33);
}

TEST_F(VirtioCcwTest, VdevResetWithZeroCount) {
  SetRevision(1);
  ExpectDone(Cmd(kVirtioCcwVdevReset, 0, 0, 0), 0, 0);
}

// ---------------------------------------------------------------------------
// Revisions.

TEST_F(VirtioCcwTest, CommandsOutsideTheRevision) {
  SetRevision(1);
  ExpectReject(Cmd(kVirtioCcwReadStatus, 0, 1), 1);
  // WRITE_FEAT index 4 does not exist (128 feature bits).
  Put(kData, {1, 0, 0, 0, 4});
  ExpectReject(Cmd(kVirtioCcwWriteFeat, 0, 5), 5);
  Put(kData, {1, 0, 0, 0, 3});
  ExpectDone(Cmd(kVirtioCcwWriteFeat, 0, 5), 0, 0);
  // READ_FEAT of an index beyond the set reads zeros.
  Put(kData, {0xff, 0xff, 0xff, 0xff, 9});
  ExpectDone(Cmd(kVirtioCcwReadFeat, 0, 5), 0, 0);
  EXPECT_THAT(Get(kData, 5), ElementsAre(0, 0, 0, 0, 9));
}

TEST_F(VirtioCcwTest, RevisionZeroCommands) {
  // A legacy driver: the first command fixes revision 0.
  ExpectDone(Cmd(kVirtioCcwVdevReset, 0, 0, 0), 0, 0);
  ASSERT_EQ(dev_->revision(), 0);
  ExpectReject(Cmd(kVirtioCcwReadStatus, 0, 1), 1);
  Put(kData, Thinint(0x8000, 0x8100, 0, 3));
  ExpectReject(Cmd(kVirtioCcwSetIndAdapter, kCcwFlagSli, 25), 25);
  // Feature word 1 is beyond a legacy driver.
  Put(kData, {0, 0, 0, 0, 1});
  ExpectReject(Cmd(kVirtioCcwWriteFeat, 0, 5), 5);
  ExpectDone(Cmd(kVirtioCcwReadFeat, 0, 5), 0, 0);
  EXPECT_THAT(Get(kData, 5), ElementsAre(0, 0, 0, 0, 1));  // VERSION_1 hidden
  Put(kData, {0, 0, 0, 0, 0});
  ExpectDone(Cmd(kVirtioCcwReadFeat, 0, 5), 0, 0);
  EXPECT_THAT(Get(kData, 5), ElementsAre(1, 0, 0, 0, 0));
  // READ_VQ_CONF predates revisions: Linux's legacy setup needs it.
  Put(kData, Be(1, 2));
  ExpectDone(Cmd(kVirtioCcwReadVqConf, 0, 4), 0, 0);
  EXPECT_THAT(Get(kData, 4), ElementsAre(0, 1, 0, 8));
  // And SET_VIRTIO_REV is too late now.
  Put(kData, Cat({Be(0, 2), Be(0, 2)}));
  ExpectReject(Cmd(kVirtioCcwSetVirtioRev, 0, 4), 4);
}

TEST_F(VirtioCcwTest, SecondSetVirtioRevIsRejected) {
  SetRevision(2);
  Put(kData, Cat({Be(1, 2), Be(0, 2)}));
  ExpectReject(Cmd(kVirtioCcwSetVirtioRev, 0, 4), 4);
  Put(kData, Cat({Be(2, 2), Be(0, 2)}));
  ExpectReject(Cmd(kVirtioCcwSetVirtioRev, 0, 4), 4);
  EXPECT_EQ(dev_->revision(), 2);
}

TEST_F(VirtioCcwTest, RevisionOutOfRangeOrWithData) {
  SetUpDevice({.min_revision = 1, .max_revision = 1});
  for (uint16_t rev : {0, 2, 3, 0xffff}) {
    SCOPED_TRACE(rev);
    Put(kData, Cat({Be(rev, 2), Be(0, 2)}));
    ExpectReject(Cmd(kVirtioCcwSetVirtioRev, 0, 4), 4);
  }
  Put(kData, Cat({Be(1, 2), Be(4, 2), Be(0, 4)}));
  ExpectReject(Cmd(kVirtioCcwSetVirtioRev, 0, 8), 8);
  EXPECT_EQ(dev_->revision(), VirtioCcwDevice::kRevisionUnset);
  SetRevision(1);
}

TEST_F(VirtioCcwTest, NonTransitionalDeviceRejectsLegacyFirstCommand) {
  SetUpDevice({.min_revision = 1, .max_revision = 2});
  ExpectReject(Cmd(kVirtioCcwReadFeat, 0, 5), 5);
  ExpectReject(Cmd(kVirtioCcwVdevReset, 0, 0, 0), 0);
  EXPECT_EQ(dev_->revision(), VirtioCcwDevice::kRevisionUnset);
  SetRevision(1);
}

TEST_F(VirtioCcwTest, SubchannelResetForgetsRevision) {
  SetRevision(2);
  dev_->Reset();
  EXPECT_EQ(dev_->revision(), VirtioCcwDevice::kRevisionUnset);
  SetRevision(1);
}

// ---------------------------------------------------------------------------
// Status and features.

TEST_F(VirtioCcwTest, RefusedFeaturesOkRejectsWriteStatus) {
  SetRevision(2);
  Put(kData2, {0x03});
  ExpectDone(Cmd(kVirtioCcwWriteStatus, 0, 1, kData2), 0, 0);
  // Bit 7 was never offered.
  Put(kData, {0x81, 0, 0, 0, 0});
  ExpectDone(Cmd(kVirtioCcwWriteFeat, 0, 5), 0, 0);
  Put(kData, {0x01, 0, 0, 0, 1});
  ExpectDone(Cmd(kVirtioCcwWriteFeat, 0, 5), 0, 0);
  Put(kData2, {0x0b});
  ExpectReject(Cmd(kVirtioCcwWriteStatus, 0, 1, kData2), 1);
  ExpectDone(Cmd(kVirtioCcwReadStatus, 0, 1, kData2), 0, 0);
  EXPECT_EQ(Get(kData2, 1)[0], 0x03);
  // Without the stray bit it is accepted.
  Put(kData, {0x01, 0, 0, 0, 0});
  ExpectDone(Cmd(kVirtioCcwWriteFeat, 0, 5), 0, 0);
  Put(kData2, {0x0b});
  ExpectDone(Cmd(kVirtioCcwWriteStatus, 0, 1, kData2), 0, 0);
  EXPECT_EQ(dev_->state().status(), 0x0b);
}

TEST_F(VirtioCcwTest, StatusWriteClearingBitsIsRejected) {
  SetRevision(2);
  Put(kData2, {0x03});
  ExpectDone(Cmd(kVirtioCcwWriteStatus, 0, 1, kData2), 0, 0);
  Put(kData2, {0x01});
  ExpectReject(Cmd(kVirtioCcwWriteStatus, 0, 1, kData2), 1);
  EXPECT_EQ(dev_->state().status(), 0x03);
  // The same value again is no change and accepted.
  Put(kData2, {0x03});
  ExpectDone(Cmd(kVirtioCcwWriteStatus, 0, 1, kData2), 0, 0);
}

TEST_F(VirtioCcwTest, ReadStatusAndVdevReset) {
  SetRevision(2);
  Put(kData2, {0x03});
  ExpectDone(Cmd(kVirtioCcwWriteStatus, 0, 1, kData2), 0, 0);
  ExpectDone(Cmd(kVirtioCcwReadStatus, 0, 1), 0, 0);
  EXPECT_EQ(Get(kData, 1)[0], 0x03);
  ExpectDone(Cmd(kVirtioCcwVdevReset, 0, 0, 0), 0, 0);
  ExpectDone(Cmd(kVirtioCcwReadStatus, 0, 1), 0, 0);
  EXPECT_EQ(Get(kData, 1)[0], 0);
}

// ---------------------------------------------------------------------------
// Queues.

TEST_F(VirtioCcwTest, SetVqChecks) {
  SetRevision(1);
  struct Case {
    const char* what;
    std::vector<uint8_t> block;
  };
  const uint64_t d = kRings, a = kRings + 0x1000, u = kRings + 0x2000;
  for (const Case& c : std::vector<Case>{
           {"index out of range", VqBlock(d, 2, 8, a, u)},
           {"index far out", VqBlock(d, 0xffff, 8, a, u)},
           {"size above max", VqBlock(d, 1, 16, a, u)},
           {"size not a power of two", VqBlock(d, 0, 12, a, u)},
           {"size zero", VqBlock(d, 0, 0, a, u)},
           {"desc outside memory", VqBlock(kMemSize - 64, 0, 16, a, u)},
           {"avail outside memory", VqBlock(d, 0, 16, kMemSize, u)},
           {"used outside memory", VqBlock(d, 0, 16, a, kMemSize - 8)},
           {"used misaligned", VqBlock(d, 0, 16, a, u + 2)},
           {"desc at 2^64 - 16", VqBlock(~uint64_t{15}, 0, 16, a, u)},
       }) {
    SCOPED_TRACE(c.what);
    Put(kData, c.block);
    ExpectReject(Cmd(kVirtioCcwSetVq, 0, 32), 32);
    EXPECT_FALSE(dev_->state().queue_enabled(0));
  }
  Put(kData, VqBlock(d, 0, 16, a, u));
  ExpectDone(Cmd(kVirtioCcwSetVq, 0, 32), 0, 0);
  EXPECT_TRUE(dev_->state().queue_enabled(0));
  EXPECT_EQ(dev_->state().queue_config(0).size(), 16);
  // desc 0 releases it.
  Put(kData, VqBlock(0, 0, 0, 0, 0));
  ExpectDone(Cmd(kVirtioCcwSetVq, 0, 32), 0, 0);
  EXPECT_FALSE(dev_->state().queue_enabled(0));
}

TEST_F(VirtioCcwTest, LegacySetVqChecks) {
  SetRevision(0);
  for (uint32_t align : {0u, 3u, 100u}) {
    SCOPED_TRACE(align);
    Put(kData, LegacyVqBlock(kRings, align, 0, 16));
    ExpectReject(Cmd(kVirtioCcwSetVq, 0, 16), 16);
  }
  Put(kData, LegacyVqBlock(kMemSize - 4096, 4096, 0, 16));
  ExpectReject(Cmd(kVirtioCcwSetVq, 0, 16), 16);
  // The revision-1 block length is too long for revision 0.
  Put(kData, LegacyVqBlock(kRings, 4096, 0, 16));
  ExpectDone(Cmd(kVirtioCcwSetVq, 0, 32), kSchStatIncorrectLength, 16);
  Put(kData, LegacyVqBlock(kRings, 4096, 0, 16));
  ExpectDone(Cmd(kVirtioCcwSetVq, 0, 16), 0, 0);
  EXPECT_TRUE(dev_->state().queue_enabled(0));
  EXPECT_EQ(dev_->state().queue_config(0).desc_table(), kRings);
}

TEST_F(VirtioCcwTest, SetVqAfterDriverOkIsRejected) {
  SetRevision(1);
  Put(kData, VqBlock(kRings, 0, 16, kRings + 0x1000, kRings + 0x2000));
  ExpectDone(Cmd(kVirtioCcwSetVq, 0, 32), 0, 0);
  Put(kData, {0x01, 0, 0, 0, 1});
  ExpectDone(Cmd(kVirtioCcwWriteFeat, 0, 5), 0, 0);
  Put(kData2, {0x0b});
  ExpectDone(Cmd(kVirtioCcwWriteStatus, 0, 1, kData2), 0, 0);
  Put(kData2, {0x0f});
  ExpectDone(Cmd(kVirtioCcwWriteStatus, 0, 1, kData2), 0, 0);
  ASSERT_TRUE(dev_->state().active());
  Put(kData, VqBlock(kRings + 0x4000, 1, 8, kRings + 0x5000, kRings + 0x6000));
  ExpectReject(Cmd(kVirtioCcwSetVq, 0, 32), 32);
  ExpectReject(Cmd(kVirtioCcwSetVq, 0, 32), 32);
  EXPECT_FALSE(dev_->state().queue_enabled(1));
}

TEST_F(VirtioCcwTest, ReadVqConfOutOfRange) {
  SetRevision(1);
  Put(kData, Be(2, 2));
  ExpectReject(Cmd(kVirtioCcwReadVqConf, 0, 4), 4);
  Put(kData, Be(0, 2));
  ExpectDone(Cmd(kVirtioCcwReadVqConf, 0, 4), 0, 0);
  EXPECT_THAT(Get(kData, 4), ElementsAre(0, 0, 0, 16));
}

// ---------------------------------------------------------------------------
// Indicators.

TEST_F(VirtioCcwTest, IndicatorAddressesOutsideMemory) {
  SetRevision(1);
  for (uint64_t addr : {kMemSize - 4, kMemSize, ~uint64_t{0} - 3}) {
    SCOPED_TRACE(addr);
    Put(kData, Be(addr, 8));
    ExpectReject(Cmd(kVirtioCcwSetInd, 0, 8), 8);
    ExpectReject(Cmd(kVirtioCcwSetConfInd, 0, 8), 8);
  }
  struct Case {
    const char* what;
    std::vector<uint8_t> area;
  };
  for (const Case& c : std::vector<Case>{
           {"summary outside", Thinint(kMemSize, 0x8000, 0, 3)},
           {"summary zero", Thinint(0, 0x8000, 0, 3)},
           {"indicator outside", Thinint(0x8000, kMemSize, 0, 3)},
           {"last queue bit outside", Thinint(0x8000, kMemSize - 1, 7, 3)},
           {"bit_nr huge", Thinint(0x8000, 0x8100, ~uint64_t{0}, 3)},
           {"isc above 7", Thinint(0x8000, 0x8100, 0, 8)},
       }) {
    SCOPED_TRACE(c.what);
    Put(kData, c.area);
    ExpectReject(Cmd(kVirtioCcwSetIndAdapter, 0, 25), 25);
    EXPECT_FALSE(dev_->adapter_interrupts());
  }
  // The last queue's bit in the last byte of memory is fine.
  Put(kData, Thinint(0x8000, kMemSize - 1, 6, 3));
  ExpectDone(Cmd(kVirtioCcwSetIndAdapter, 0, 25), 0, 0);
  EXPECT_TRUE(dev_->adapter_interrupts());
}

TEST_F(VirtioCcwTest, ClassicAndAdapterAreExclusive) {
  SetRevision(1);
  Put(kData, Thinint(0x8000, 0x8100, 0, 3));
  ExpectDone(Cmd(kVirtioCcwSetIndAdapter, 0, 25), 0, 0);
  Put(kData, Be(0x8200, 8));
  ExpectReject(Cmd(kVirtioCcwSetInd, 0, 8), 8);
  // The configuration indicator is classic either way.
  ExpectDone(Cmd(kVirtioCcwSetConfInd, 0, 8), 0, 0);

  SetUpDevice({});
  SetRevision(1);
  Put(kData, Be(0x8200, 8));
  ExpectDone(Cmd(kVirtioCcwSetInd, 0, 8), 0, 0);
  Put(kData, Thinint(0x8000, 0x8100, 0, 3));
  ExpectReject(Cmd(kVirtioCcwSetIndAdapter, 0, 25), 25);
  EXPECT_FALSE(dev_->adapter_interrupts());
  // Deregistering (address 0) opens the way again.
  Put(kData, Be(0, 8));
  ExpectDone(Cmd(kVirtioCcwSetInd, 0, 8), 0, 0);
  Put(kData, Thinint(0x8000, 0x8100, 0, 3));
  ExpectDone(Cmd(kVirtioCcwSetIndAdapter, 0, 25), 0, 0);
  Put(kData, Thinint(0x8000, 0, 0, 3));
  ExpectDone(Cmd(kVirtioCcwSetIndAdapter, 0, 25), 0, 0);
  EXPECT_FALSE(dev_->adapter_interrupts());
}

// ---------------------------------------------------------------------------
// Chaining.

TEST_F(VirtioCcwTest, DataChainedBlockAcrossTwoCcws) {
  SetRevision(1);
  const std::vector<uint8_t> block =
      VqBlock(kRings, 0, 16, kRings + 0x1000, kRings + 0x2000);
  Put(kData, std::vector<uint8_t>(block.begin(), block.begin() + 12));
  Put(kData2, std::vector<uint8_t>(block.begin() + 12, block.end()));
  Irb irb = Run({{.cmd = kVirtioCcwSetVq,
                  .flags = kCcwFlagCd,
                  .count = 12,
                  .data_address = kData},
                 {.cmd = 0, .count = 20, .data_address = kData2}});
  EXPECT_EQ(irb.scsw.device_status, kCeDe);
  EXPECT_EQ(irb.scsw.subchannel_status, 0);
  EXPECT_EQ(irb.scsw.ccw_address, kProgram + 16);
  EXPECT_TRUE(dev_->state().queue_enabled(0));
}

TEST_F(VirtioCcwTest, DataChainingAcrossABadAddressIsAProgramCheck) {
  SetRevision(1);
  const std::vector<uint8_t> block =
      VqBlock(kRings, 0, 16, kRings + 0x1000, kRings + 0x2000);
  Put(kData, std::vector<uint8_t>(block.begin(), block.begin() + 12));
  Irb irb = Run({{.cmd = kVirtioCcwSetVq,
                  .flags = kCcwFlagCd,
                  .count = 12,
                  .data_address = kData},
                 {.cmd = 0, .count = 20, .data_address = kMemSize - 8}});
  EXPECT_EQ(irb.scsw.device_status, kCeDe);
  EXPECT_EQ(irb.scsw.subchannel_status, kSchStatProgramCheck);
  EXPECT_EQ(irb.scsw.ccw_address, kProgram + 16);
  EXPECT_FALSE(dev_->state().queue_enabled(0));
  // A program check is no unit check: no sense.
  EXPECT_EQ(Sense()[0], 0);
}

TEST_F(VirtioCcwTest, BadDataAddressOnReadIsAProgramCheck) {
  SetRevision(1);
  Irb irb = Cmd(kVirtioCcwReadConf, 0, 13, kMemSize - 5);
  EXPECT_EQ(irb.scsw.device_status, kCeDe);
  EXPECT_EQ(irb.scsw.subchannel_status, kSchStatProgramCheck);
  irb = Cmd(kVirtioCcwWriteStatus, 0, 1, 0x7fffffff);
  EXPECT_EQ(irb.scsw.subchannel_status, kSchStatProgramCheck);
  EXPECT_EQ(dev_->state().status(), 0);
}

TEST_F(VirtioCcwTest, TypicalChainedSequence) {
  SetRevision(1);
  Put(kData, {0, 0, 0, 0, 1});
  Put(kData + 0x10, {0x01, 0, 0, 0, 1});
  Irb irb =
      Run({{.cmd = kVirtioCcwReadFeat,
            .flags = kCcwFlagCc,
            .count = 5,
            .data_address = kData},
           {.cmd = kVirtioCcwWriteFeat,
            .flags = kCcwFlagCc,
            .count = 5,
            .data_address = kData + 0x10},
           {.cmd = kVirtioCcwReadConf, .count = 13, .data_address = kData2}});
  EXPECT_EQ(irb.scsw.device_status, kCeDe);
  EXPECT_EQ(irb.scsw.subchannel_status, 0);
  EXPECT_EQ(irb.scsw.ccw_address, kProgram + 24);
  EXPECT_THAT(Get(kData, 5), ElementsAre(1, 0, 0, 0, 1));
  EXPECT_EQ(dev_->state().DriverFeatures(1), 1u);
  EXPECT_EQ(Get(kData2, 13)[12], 0xee);
}

TEST_F(VirtioCcwTest, RejectStopsTheChain) {
  SetRevision(1);
  Put(kData2, {0x03});
  Irb irb =
      Run({{.cmd = kVirtioCcwReadStatus,
            .flags = kCcwFlagCc,
            .count = 1,
            .data_address = kData},
           {.cmd = kVirtioCcwWriteStatus, .count = 1, .data_address = kData2}});
  EXPECT_EQ(irb.scsw.device_status, kDevStatUnitCheck);
  EXPECT_EQ(irb.scsw.ccw_address, kProgram + 8);
  EXPECT_EQ(dev_->state().status(), 0);
}

TEST_F(VirtioCcwTest, TicLoopsAreBounded) {
  SetRevision(1);
  // NOOP, TIC back to it: commands without data, forever.
  Irb irb = Run({{.cmd = kCmdNoop, .flags = kCcwFlagCc, .count = 0},
                 {.cmd = kCmdTic, .data_address = kProgram}});
  EXPECT_EQ(irb.scsw.subchannel_status, kSchStatProgramCheck);
  // READ_FEAT, TIC back: data every time, stopped by the CCW bound.
  Put(kData, {0, 0, 0, 0, 0});
  irb = Run({{.cmd = kVirtioCcwReadFeat,
              .flags = kCcwFlagCc,
              .count = 5,
              .data_address = kData},
             {.cmd = kCmdTic, .data_address = kProgram}});
  EXPECT_EQ(irb.scsw.subchannel_status, kSchStatProgramCheck);
  EXPECT_EQ(irb.scsw.device_status, 0);
  // TIC to TIC.
  irb = Run({{.cmd = kCmdNoop, .flags = kCcwFlagCc, .count = 0},
             {.cmd = kCmdTic, .data_address = kProgram + 16},
             {.cmd = kCmdTic, .data_address = kProgram}});
  EXPECT_EQ(irb.scsw.subchannel_status, kSchStatProgramCheck);
  EXPECT_EQ(irb.scsw.ccw_address, kProgram + 24);
  // A data chain looping through a TIC: the device takes the 13 bytes of its
  // configuration and stops while data chaining is still indicated.
  irb = Run({{.cmd = kVirtioCcwWriteConf,
              .flags = kCcwFlagCd,
              .count = 1,
              .data_address = kData},
             {.cmd = kCmdTic, .data_address = kProgram + 16},
             {.cmd = 0, .flags = kCcwFlagCd, .count = 1, .data_address = kData},
             {.cmd = kCmdTic, .data_address = kProgram + 16}});
  EXPECT_EQ(irb.scsw.device_status, kCeDe);
  EXPECT_EQ(irb.scsw.subchannel_status, kSchStatIncorrectLength);
  // With a tighter CCW bound the same loop ends in a program check before
  // the device has its 13 bytes.
  Subchannel small(*memory_, *dev_, irq_, {.max_ccws = 6});
  Orb orb{.control = kOrbFormat1, .cpa = kProgram};
  ASSERT_OK(small.Start(orb));
  std::optional<Irb> bounded = small.Test();
  ASSERT_TRUE(bounded.has_value());
  EXPECT_EQ(bounded->scsw.device_status, kCeDe);
  EXPECT_EQ(bounded->scsw.subchannel_status, kSchStatProgramCheck);
}

// ---------------------------------------------------------------------------
// Notifications and interrupts without a driver simulator.

TEST_F(VirtioCcwTest, NotifyBeforeDriverOkIsIgnored) {
  SetRevision(1);
  dev_->Notify(0);
  dev_->Notify(7);
  EXPECT_EQ(dev_->state().stats().spurious_notifications, 2u);
  EXPECT_EQ(irq_.classic + irq_.adapter, 0);
}

TEST(VirtioCcwRng, SenseIdModelIsTheDeviceType) {
  auto mem = GuestMemoryMmap::Create({{.guest_base = 0, .size = kMemSize}});
  ASSERT_TRUE(mem.ok());
  virtio::RngDevice rng;
  Recorder irq;
  VirtioCcwDevice dev(rng, **mem, {}, &irq);
  EXPECT_EQ(dev.sense_id().cu_type, 0x3832);
  EXPECT_EQ(dev.sense_id().cu_model, 4);
}

}  // namespace
}  // namespace vmmkit::ccw
