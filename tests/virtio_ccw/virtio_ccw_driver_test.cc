// The Linux virtio-ccw driver simulator against VirtioCcwDevice: revision
// negotiation over device [min, max] ranges, legacy-only drivers, legacy
// big-endian and modern I/O on virtio-rng, classic and adapter interrupts,
// configuration space in both byte orders, refused features, teardown.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/status_matchers.h"
#include "ccw/ccw.h"
#include "ccw/subchannel.h"
#include "ccw/virtio_ccw.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/virtio_ccw/driver.h"
#include "virtio-device/blk.h"
#include "virtio-device/config_space.h"
#include "virtio-device/rng.h"
#include "virtio-device/virtio_device.h"
#include "virtqueue/guest_memory.h"

namespace vmmkit::tests::virtio_ccw {
namespace {

using ::testing::Each;
using virtio::Features;
using virtqueue::Endian;
using virtqueue::GuestMemoryMmap;
using ::vmmkit::testing::StatusIs;

// The probes below leave EVENT_IDX out; RngWithEventIdxKeepsGettingKicks
// covers it.
constexpr uint64_t kModernFeatures = (uint64_t{1} << virtio::kFVersion1) |
                                     (uint64_t{1} << virtio::kFIndirectDesc);

Features Wanted() {
  return Features::Of({virtio::kFVersion1, virtio::kFIndirectDesc});
}

// A device with a configuration space: le64 at 0, le32 at 8 (writable), a
// byte at 12. It refuses feature bit 1 when that is accepted.
class ConfigDevice final : public virtio::VirtioDevice {
 public:
  static constexpr uint32_t kSize = 13;
  ConfigDevice() : config_(kSize) {
    config_.DeclareField(0, 8);
    config_.DeclareField(8, 4);
    config_.SetU64(0, 0x0102030405060708ull);
    config_.SetU32(8, 0x11223344u);
    config_.SetU8(12, 0x5a);
  }
  virtio::DeviceType type() const override {
    return virtio::DeviceType::kConsole;
  }
  absl::Span<const uint16_t> queue_max_sizes() const override { return sizes_; }
  Features offered_features() const override {
    return Features::Of({virtio::kFVersion1, 0, 1});
  }
  absl::Status AcceptFeatures(const Features& f) override {
    if (f.Has(1)) return absl::InvalidArgumentError("bit 1 refused");
    return absl::OkStatus();
  }
  uint32_t config_size() const override { return kSize; }
  void ReadConfig(uint32_t offset, absl::Span<uint8_t> data,
                  Endian endian) override {
    config_.Read(offset, data, endian);
  }
  void WriteConfig(uint32_t offset, absl::Span<const uint8_t> data,
                   Endian endian) override {
    std::vector<uint8_t> le(data.size());
    config_.DecodeWrite(offset, data, endian, absl::MakeSpan(le));
    // Only the le32 at 8 is writable.
    for (size_t i = 0; i < le.size(); ++i) {
      const uint32_t at = offset + static_cast<uint32_t>(i);
      if (at >= 8 && at < 12) {
        config_.SetBytes(at, absl::MakeConstSpan(&le[i], 1));
      }
    }
  }
  uint32_t config_generation() const override { return config_.generation(); }
  absl::Status Activate(virtio::DeviceContext& ctx) override {
    ctx_ = &ctx;
    return absl::OkStatus();
  }
  void Reset() override { ctx_ = nullptr; }
  void ProcessQueue(uint16_t) override {}

  void Change() {
    config_.SetU8(12, static_cast<uint8_t>(config_.U8(12) + 1));
    if (ctx_ != nullptr) ctx_->NotifyConfigChange();
  }
  const virtio::ConfigSpace& config() const { return config_; }

 private:
  const uint16_t sizes_[2] = {64, 16};
  virtio::ConfigSpace config_;
  virtio::DeviceContext* ctx_ = nullptr;
};

// Guest memory, a device behind a VirtioCcwDevice and a subchannel.
class Machine {
 public:
  Machine(virtio::VirtioDevice& device, ccw::VirtioCcwDevice::Options options) {
    auto mem = GuestMemoryMmap::Create({{.guest_base = 0, .size = 16 << 20}});
    EXPECT_TRUE(mem.ok());
    memory = std::move(*mem);
    transport =
        std::make_unique<ccw::VirtioCcwDevice>(device, *memory, options, &irq);
    subchannel = std::make_unique<ccw::Subchannel>(*memory, *transport, irq);
  }
  std::unique_ptr<LinuxVirtioCcwDriver> Driver(
      LinuxVirtioCcwDriver::Options options = {}) {
    return std::make_unique<LinuxVirtioCcwDriver>(*memory, *subchannel,
                                                  *transport, irq, options);
  }

  std::unique_ptr<GuestMemoryMmap> memory;
  InterruptRecorder irq;
  std::unique_ptr<ccw::VirtioCcwDevice> transport;
  std::unique_ptr<ccw::Subchannel> subchannel;
};

// Posts one rng request of `len` bytes, kicks, and reaps it through the
// interrupt path. Returns the used length.
absl::StatusOr<uint32_t> RngRequest(Machine& m, LinuxVirtioCcwDriver& drv,
                                    uint32_t len) {
  const uint64_t buf = drv.Alloc(len);
  absl::StatusOr<uint16_t> head = drv.queue(0).AddChain({{buf, len, true}});
  if (!head.ok()) return head.status();
  const int before = m.irq.classic + m.irq.adapter;
  if (!drv.Kick(0)) return absl::InternalError("device wants no kick");
  if (m.irq.classic + m.irq.adapter == before) {
    // With the summary byte still set no adapter interrupt comes; the
    // indicator bit must still be there.
    if (!drv.adapter_interrupts_in_use()) {
      return absl::InternalError("no interrupt");
    }
  }
  LinuxVirtioCcwDriver::Interrupts seen = drv.HandleInterrupts();
  if (!(seen.queues & 1)) return absl::InternalError("queue 0 not signalled");
  std::optional<virtqueue::VirtqUsedElem> used = drv.GetBuf(0);
  if (!used.has_value()) return absl::InternalError("nothing used");
  if (used->id != *head) return absl::InternalError("wrong head");
  std::vector<uint8_t> data(len);
  if (absl::Status s = m.memory->Read(buf, absl::MakeSpan(data)); !s.ok()) {
    return s;
  }
  if (len >= 16 &&
      std::all_of(data.begin(), data.end(), [](uint8_t b) { return b == 0; })) {
    return absl::InternalError("buffer not filled");
  }
  return used->len;
}

// ---------------------------------------------------------------------------
// Revision negotiation.

struct RangeCase {
  uint16_t min, max;
  int expected;  // the revision Linux (REV_MAX 2) ends at
};

class RevisionTest : public ::testing::TestWithParam<RangeCase> {};

TEST_P(RevisionTest, LinuxStepsDownAndDoesRngIo) {
  const RangeCase& c = GetParam();
  virtio::RngDevice rng;
  Machine m(rng, {.min_revision = c.min, .max_revision = c.max});
  auto drv = m.Driver();
  ASSERT_OK(drv->Probe(Wanted()));
  EXPECT_EQ(drv->cu_type(), 0x3832);
  EXPECT_EQ(drv->cu_model(), static_cast<uint8_t>(virtio::DeviceType::kRng));
  EXPECT_EQ(drv->revision(), c.expected);
  EXPECT_EQ(m.transport->revision(), c.expected);
  EXPECT_EQ(m.transport->state().status(),
            virtio::kStatusAcknowledge | virtio::kStatusDriver |
                virtio::kStatusDriverOk |
                (c.expected >= 1 ? virtio::kStatusFeaturesOk : 0));
  EXPECT_TRUE(m.transport->state().active());
  if (c.expected == 0) {
    // Legacy: 32 feature bits only, no VERSION_1, big-endian rings.
    EXPECT_EQ(drv->features(), kModernFeatures & 0xffffffffu);
    EXPECT_TRUE(m.transport->state().legacy());
    EXPECT_EQ(drv->queue(0).endian(), Endian::kBig);
    // Adapter interrupts are a revision-1 command: Linux falls back.
    EXPECT_FALSE(drv->adapter_interrupts_in_use());
  } else {
    EXPECT_EQ(drv->features(), kModernFeatures);
    EXPECT_FALSE(m.transport->state().legacy());
    EXPECT_EQ(drv->queue(0).endian(), Endian::kLittle);
    EXPECT_TRUE(drv->adapter_interrupts_in_use());
  }
  for (uint32_t len : {16u, 64u, 4096u}) {
    ASSERT_OK_AND_ASSIGN(uint32_t used, RngRequest(m, *drv, len));
    EXPECT_EQ(used, len);
  }
  EXPECT_EQ(rng.stats().requests, 3u);
  ASSERT_OK(drv->Remove());
  EXPECT_EQ(m.transport->state().status(), virtio::kStatusAcknowledge);
  EXPECT_FALSE(m.transport->state().queue_enabled(0));
  EXPECT_FALSE(m.transport->adapter_interrupts());
}

INSTANTIATE_TEST_SUITE_P(Ranges, RevisionTest,
                         ::testing::Values(RangeCase{0, 2, 2},
                                           RangeCase{0, 0, 0},
                                           RangeCase{1, 2, 2},
                                           RangeCase{2, 2, 2},
                                           RangeCase{0, 1, 1}),
                         [](const ::testing::TestParamInfo<RangeCase>& info) {
                           return "Min" + std::to_string(info.param.min) +
                                  "Max" + std::to_string(info.param.max);
                         });

// Linux kicks only when avail.idx passes avail_event (vring_need_event). The
// device side must move avail_event as it consumes chains: SplitQueue::Pop
// does so when it finds the ring empty (as QEMU's virtqueue_pop does).
TEST(EventIdx, RngWithEventIdxKeepsGettingKicks) {
  virtio::RngDevice rng;
  Machine m(rng, {});
  auto drv = m.Driver();
  ASSERT_OK(drv->Probe(Features::Of({virtio::kFVersion1, virtio::kFEventIdx})));
  for (int i = 0; i < 3; ++i) {
    ASSERT_OK_AND_ASSIGN(uint32_t used, RngRequest(m, *drv, 16));
    EXPECT_EQ(used, 16u);
  }
}

TEST(RevisionNegotiation, RejectsAreCommandRejectsWithSense) {
  virtio::RngDevice rng;
  Machine m(rng, {.min_revision = 0, .max_revision = 0});
  // Without concurrent sense the driver collects the sense with BASIC SENSE.
  auto drv = m.Driver({.concurrent_sense = false});
  ASSERT_OK(drv->SenseId());
  ASSERT_OK(drv->SetTransportRev());
  EXPECT_EQ(drv->revision(), 0);
  // 2 rejected, 1 rejected (each followed by a BASIC SENSE), 0 accepted.
  EXPECT_EQ(drv->programs_run(), 1u + 3u);
  EXPECT_EQ(m.irq.status_pending, 1 + 3 + 2);
  EXPECT_EQ(m.transport->revision(), 0);
  const ccw::Irb& irb = drv->last_irb();
  EXPECT_EQ(irb.scsw.device_status,
            ccw::kDevStatChannelEnd | ccw::kDevStatDeviceEnd);
  EXPECT_EQ(irb.scsw.count, 0);
}

TEST(RevisionNegotiation, DriverMinimumAboveDeviceMaximumFails) {
  virtio::RngDevice rng;
  Machine m(rng, {.min_revision = 0, .max_revision = 0});
  auto drv = m.Driver({.max_revision = 2, .min_revision = 1});
  ASSERT_OK(drv->SenseId());
  EXPECT_THAT(drv->SetTransportRev(),
              StatusIs(absl::StatusCode::kUnimplemented));
  EXPECT_EQ(m.transport->revision(), ccw::VirtioCcwDevice::kRevisionUnset);
}

TEST(RevisionNegotiation, LegacyOnlyDriverOnTransitionalDevice) {
  virtio::RngDevice rng;
  Machine m(rng, {.min_revision = 0, .max_revision = 2});
  auto drv = m.Driver({.legacy_only = true, .adapter_interrupts = false});
  ASSERT_OK(drv->Probe(Wanted()));
  EXPECT_EQ(m.transport->revision(), 0);
  EXPECT_TRUE(m.transport->state().legacy());
  ASSERT_OK_AND_ASSIGN(uint32_t used, RngRequest(m, *drv, 128));
  EXPECT_EQ(used, 128u);
}

TEST(RevisionNegotiation, MinimumOneRefusesLegacyOnlyDriver) {
  virtio::RngDevice rng;
  Machine m(rng, {.min_revision = 1, .max_revision = 2});
  auto drv = m.Driver({.legacy_only = true});
  // The first virtio command (VDEV_RESET) is rejected.
  EXPECT_THAT(drv->Probe(Wanted()), StatusIs(absl::StatusCode::kUnimplemented));
  const ccw::Irb& irb = drv->last_irb();
  EXPECT_EQ(irb.scsw.device_status, ccw::kDevStatUnitCheck);
  EXPECT_TRUE(irb.has_concurrent_sense());
  EXPECT_EQ(irb.ecw[0], ccw::kSense0CommandReject);
  EXPECT_EQ(m.transport->revision(), ccw::VirtioCcwDevice::kRevisionUnset);
  EXPECT_EQ(m.transport->state().status(), 0);
  // And a transitional Linux whose SET_VIRTIO_REV(1) works is fine.
  auto modern = m.Driver();
  ASSERT_OK(modern->Probe(Wanted()));
  EXPECT_EQ(modern->revision(), 2);
}

TEST(RevisionNegotiation, OldLinuxAgainstRevisionTwoOnlyDevice) {
  // A Linux with VIRTIO_CCW_REV_MAX 1: 1 is rejected, then 0 is rejected,
  // which it takes for a legacy device; its first legacy command is refused.
  virtio::RngDevice rng;
  Machine m(rng, {.min_revision = 2, .max_revision = 2});
  auto drv = m.Driver({.max_revision = 1});
  EXPECT_THAT(drv->Probe(Wanted()), StatusIs(absl::StatusCode::kUnimplemented));
  EXPECT_EQ(drv->revision(), 0);
  EXPECT_EQ(m.transport->revision(), ccw::VirtioCcwDevice::kRevisionUnset);
}

TEST(RevisionNegotiation, SubchannelResetForgetsTheRevision) {
  virtio::RngDevice rng;
  Machine m(rng, {});
  auto drv = m.Driver();
  ASSERT_OK(drv->Probe(Wanted()));
  ASSERT_OK(drv->Remove());
  // Set offline and online again: the revision must be negotiated anew.
  m.transport->Reset();
  m.subchannel->Reset();
  EXPECT_EQ(m.transport->revision(), ccw::VirtioCcwDevice::kRevisionUnset);
  auto again = m.Driver({.max_revision = 1});
  ASSERT_OK(again->Probe(Wanted()));
  EXPECT_EQ(again->revision(), 1);
  ASSERT_OK_AND_ASSIGN(uint32_t used, RngRequest(m, *again, 32));
  EXPECT_EQ(used, 32u);
}

// ---------------------------------------------------------------------------
// Interrupts.

TEST(Interrupts, ClassicIndicatorsBigEndianWord) {
  virtio::RngDevice rng;
  Machine m(rng, {});
  auto drv = m.Driver({.adapter_interrupts = false});
  ASSERT_OK(drv->Probe(Wanted()));
  EXPECT_FALSE(drv->adapter_interrupts_in_use());
  EXPECT_FALSE(m.transport->adapter_interrupts());
  const uint64_t buf = drv->Alloc(32);
  ASSERT_OK(drv->queue(0).AddChain({{buf, 32, true}}).status());
  drv->Kick(0);
  EXPECT_EQ(m.irq.classic, 1);
  EXPECT_EQ(m.irq.adapter, 0);
  // Queue 0 is bit 0 of a big-endian 64-bit word: the last byte.
  uint8_t word[8];
  ASSERT_OK(m.memory->Read(drv->indicators_addr(), absl::MakeSpan(word)));
  EXPECT_THAT(word, ::testing::ElementsAre(0, 0, 0, 0, 0, 0, 0, 1));
  LinuxVirtioCcwDriver::Interrupts seen = drv->HandleInterrupts();
  EXPECT_EQ(seen.queues, 1u);
  EXPECT_FALSE(seen.config);
  ASSERT_TRUE(drv->GetBuf(0).has_value());
  ASSERT_OK(m.memory->Read(drv->indicators_addr(), absl::MakeSpan(word)));
  EXPECT_THAT(word, Each(0));
}

TEST(Interrupts, AdapterSummaryAndMsbFirstBits) {
  virtio::RngDevice rng;
  Machine m(rng, {});
  auto drv = m.Driver({.adapter_bit_nr = 13, .adapter_isc = 6});
  ASSERT_OK(drv->Probe(Wanted()));
  ASSERT_TRUE(drv->adapter_interrupts_in_use());
  EXPECT_TRUE(m.transport->adapter_interrupts());
  auto post = [&]() {
    const uint64_t buf = drv->Alloc(16);
    ASSERT_OK(drv->queue(0).AddChain({{buf, 16, true}}).status());
    drv->Kick(0);
  };
  auto byte_at = [&](uint64_t addr) {
    uint8_t b = 0;
    EXPECT_OK(m.memory->Read(addr, absl::MakeSpan(&b, 1)));
    return b;
  };
  post();
  EXPECT_EQ(m.irq.adapter, 1);
  EXPECT_EQ(m.irq.last_isc, 6);
  EXPECT_EQ(m.irq.classic, 0);
  EXPECT_EQ(byte_at(drv->summary_indicator_addr()), 0x01);
  // Bit 13 counted from the left: byte 1, mask 0x04.
  EXPECT_EQ(byte_at(drv->adapter_vector_addr()), 0);
  EXPECT_EQ(byte_at(drv->adapter_vector_addr() + 1), 0x04);
  EXPECT_EQ(byte_at(drv->adapter_vector_addr() + 2), 0);
  // The summary byte is still set: no second adapter interrupt.
  post();
  EXPECT_EQ(m.irq.adapter, 1);
  LinuxVirtioCcwDriver::Interrupts seen = drv->HandleInterrupts();
  EXPECT_EQ(seen.queues, 1u);
  EXPECT_EQ(byte_at(drv->summary_indicator_addr()), 0);
  EXPECT_EQ(byte_at(drv->adapter_vector_addr() + 1), 0);
  EXPECT_TRUE(drv->GetBuf(0).has_value());
  EXPECT_TRUE(drv->GetBuf(0).has_value());
  // Cleared: the next notification interrupts again.
  post();
  EXPECT_EQ(m.irq.adapter, 2);
  EXPECT_EQ(drv->HandleInterrupts().queues, 1u);
}

TEST(Interrupts, ConfigChangeUsesClassicConfigIndicator) {
  ConfigDevice dev;
  Machine m(dev, {});
  auto drv = m.Driver();
  ASSERT_OK(drv->Probe(Features::Of({virtio::kFVersion1})));
  ASSERT_TRUE(drv->adapter_interrupts_in_use());
  dev.Change();
  EXPECT_EQ(m.irq.classic, 1);
  EXPECT_EQ(m.irq.adapter, 0);
  uint8_t word[8];
  ASSERT_OK(
      m.memory->Read(drv->config_indicators_addr(), absl::MakeSpan(word)));
  EXPECT_THAT(word, ::testing::ElementsAre(0, 0, 0, 0, 0, 0, 0, 1));
  LinuxVirtioCcwDriver::Interrupts seen = drv->HandleInterrupts();
  EXPECT_TRUE(seen.config);
  EXPECT_EQ(seen.queues, 0u);
  uint8_t b;
  ASSERT_OK(drv->ReadConfig(12, absl::MakeSpan(&b, 1)));
  EXPECT_EQ(b, 0x5b);
}

TEST(Interrupts, TwoQueuesSetTheirOwnBits) {
  ConfigDevice dev;  // two queues, no I/O: notify through DeviceState
  Machine m(dev, {});
  auto drv = m.Driver({.adapter_interrupts = false});
  ASSERT_OK(drv->Probe(Features::Of({virtio::kFVersion1})));
  ASSERT_EQ(drv->num_queues(), 2u);
  // The device signals queue 1 (as after used entries).
  ASSERT_OK(drv->queue(1).AddChain({{drv->Alloc(8), 8, true}}).status());
  virtqueue::SplitQueue* q = m.transport->state().queue(1);
  ASSERT_NE(q, nullptr);
  std::optional<virtqueue::DescriptorChain> chain = q->Pop();
  ASSERT_TRUE(chain.has_value());
  q->AddUsed(chain->head(), 0);
  m.transport->state().NotifyUsed(1);
  uint8_t word[8];
  ASSERT_OK(m.memory->Read(drv->indicators_addr(), absl::MakeSpan(word)));
  EXPECT_EQ(word[7], 0x02);
  EXPECT_EQ(drv->HandleInterrupts().queues, 2u);
}

// ---------------------------------------------------------------------------
// Configuration space and features.

class ConfigTest : public ::testing::TestWithParam<int> {};

TEST_P(ConfigTest, ReadAndWriteInTheDriversByteOrder) {
  const int revision = GetParam();
  ConfigDevice dev;
  Machine m(dev, {.min_revision = 0,
                  .max_revision = static_cast<uint16_t>(revision)});
  auto drv = m.Driver();
  ASSERT_OK(drv->Probe(Features::Of({virtio::kFVersion1, 0})));
  ASSERT_EQ(drv->revision(), revision);
  const bool big = revision == 0;
  uint8_t b8[8];
  // offset 0, len 8: READ_CONF with count 8 of a 13-byte space.
  ASSERT_OK(drv->ReadConfig(0, absl::MakeSpan(b8)));
  EXPECT_EQ(drv->last_irb().scsw.count, 0);
  EXPECT_EQ(drv->last_irb().scsw.subchannel_status, 0);
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) {
    v |= uint64_t{b8[i]} << (big ? 8 * (7 - i) : 8 * i);
  }
  EXPECT_EQ(v, 0x0102030405060708ull);
  uint8_t b4[4];
  ASSERT_OK(drv->ReadConfig(8, absl::MakeSpan(b4)));
  uint32_t w = big ? (b4[0] << 24 | b4[1] << 16 | b4[2] << 8 | b4[3])
                   : (b4[0] | b4[1] << 8 | b4[2] << 16 | uint32_t{b4[3]} << 24);
  EXPECT_EQ(w, 0x11223344u);
  // Write 0xa1b2c3d4 to the le32 at 8 in the driver's order.
  const uint8_t out_be[4] = {0xa1, 0xb2, 0xc3, 0xd4};
  const uint8_t out_le[4] = {0xd4, 0xc3, 0xb2, 0xa1};
  ASSERT_OK(drv->WriteConfig(8, big ? out_be : out_le));
  EXPECT_EQ(drv->last_irb().scsw.count, 0);
  EXPECT_EQ(dev.config().U32(8), 0xa1b2c3d4u);
  EXPECT_EQ(dev.config().U64(0), 0x0102030405060708ull);
}

INSTANTIATE_TEST_SUITE_P(Revisions, ConfigTest, ::testing::Values(0, 1, 2));

TEST(Features, RefusedFeaturesOkAtRevisionTwoIsReadBack) {
  ConfigDevice dev;
  Machine m(dev, {});
  auto drv = m.Driver();
  EXPECT_THAT(drv->Probe(Features::Of({virtio::kFVersion1, 1})),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(drv->revision(), 2);
  EXPECT_EQ(m.transport->state().status(),
            virtio::kStatusAcknowledge | virtio::kStatusDriver);
}

TEST(Features, RefusedFeaturesOkAtRevisionOneIsACommandReject) {
  ConfigDevice dev;
  Machine m(dev, {.min_revision = 0, .max_revision = 1});
  auto drv = m.Driver();
  EXPECT_THAT(drv->Probe(Features::Of({virtio::kFVersion1, 1})),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(drv->revision(), 1);
  // The WRITE_STATUS was rejected, so the cached status never had it.
  EXPECT_TRUE(drv->last_irb().scsw.device_status & ccw::kDevStatUnitCheck);
  EXPECT_EQ(m.transport->state().status(),
            virtio::kStatusAcknowledge | virtio::kStatusDriver);
}

TEST(Features, BothWordsAreNegotiated) {
  virtio::RngDevice rng;
  Machine m(rng, {});
  auto drv = m.Driver();
  ASSERT_OK(drv->Probe(Features::Of({virtio::kFVersion1})));
  EXPECT_EQ(m.transport->state().driver_features(),
            Features::Of({virtio::kFVersion1}));
}

TEST(Teardown, RemoveAndProbeAgainWithoutOffline) {
  virtio::RngDevice rng;
  Machine m(rng, {});
  auto drv = m.Driver();
  ASSERT_OK(drv->Probe(Wanted()));
  ASSERT_OK(drv->Remove());
  // A driver rebind: the virtio core probes again on the same revision.
  ASSERT_OK(drv->ResetDevice());
  ASSERT_OK(drv->AddStatus(virtio::kStatusAcknowledge));
  ASSERT_OK(drv->AddStatus(virtio::kStatusDriver));
  ASSERT_OK(drv->FinalizeFeatures(drv->GetFeatures() & kModernFeatures));
  ASSERT_OK(drv->AddStatus(virtio::kStatusFeaturesOk));
  ASSERT_OK(drv->FindVqs(1));
  ASSERT_OK(drv->AddStatus(virtio::kStatusDriverOk));
  ASSERT_OK_AND_ASSIGN(uint32_t used, RngRequest(m, *drv, 64));
  EXPECT_EQ(used, 64u);
}

// ---------------------------------------------------------------------------
// virtio-blk: real reads and writes in legacy big-endian and modern modes.

class BlkTest : public ::testing::TestWithParam<int> {};

TEST_P(BlkTest, WriteThenReadThroughTheImage) {
  const int revision = GetParam();
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string path = std::string(tmp != nullptr ? tmp : "/tmp") +
                           "/vccw_blk_" + std::to_string(revision) + "_" +
                           std::to_string(getpid()) + ".img";
  {
    int fd = open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
    ASSERT_GE(fd, 0);
    std::vector<uint8_t> image(1 << 20);
    for (size_t i = 0; i < image.size(); ++i) {
      image[i] = static_cast<uint8_t>(i * 7 + 3);
    }
    ASSERT_EQ(pwrite(fd, image.data(), image.size(), 0),
              static_cast<ssize_t>(image.size()));
    close(fd);
  }
  ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<virtio::BlockDevice> blk,
      virtio::BlockDevice::Create({.path = path, .serial = "vccw-test"}));
  Machine m(*blk, {.min_revision = 0,
                   .max_revision = static_cast<uint16_t>(revision)});
  auto drv = m.Driver();
  ASSERT_OK(drv->Probe(Features::Of(
      {virtio::kFVersion1, virtio::kBlkFFlush, virtio::kBlkFBlkSize})));
  ASSERT_EQ(drv->revision(), revision);
  const bool big = revision == 0;
  EXPECT_EQ(m.transport->state().legacy(), big);
  EXPECT_EQ(drv->cu_model(), static_cast<uint8_t>(virtio::DeviceType::kBlock));

  // capacity: le64 (guest-native for legacy) at offset 0.
  uint8_t cap[8];
  ASSERT_OK(drv->ReadConfig(0, absl::MakeSpan(cap)));
  uint64_t sectors = 0;
  for (int i = 0; i < 8; ++i) {
    sectors |= uint64_t{cap[i]} << (big ? 8 * (7 - i) : 8 * i);
  }
  EXPECT_EQ(sectors, (1u << 20) / 512);

  auto put = [&](uint64_t addr, uint64_t v, int n) {
    std::vector<uint8_t> b(n);
    for (int i = 0; i < n; ++i) {
      b[big ? n - 1 - i : i] = static_cast<uint8_t>(v >> (8 * i));
    }
    ASSERT_OK(m.memory->Write(addr, b));
  };
  // One request: header {type, reserved, sector}, data, status.
  auto request = [&](uint32_t type, uint64_t sector, uint64_t data,
                     uint32_t len, bool data_writable) -> uint8_t {
    const uint64_t hdr = drv->Alloc(16);
    const uint64_t status = drv->Alloc(1);
    put(hdr, type, 4);
    put(hdr + 4, 0, 4);
    put(hdr + 8, sector, 8);
    EXPECT_OK(m.memory->Fill(status, 1, 0xff));
    absl::StatusOr<uint16_t> head = drv->queue(0).AddChain(
        {{hdr, 16, false}, {data, len, data_writable}, {status, 1, true}});
    EXPECT_TRUE(head.ok());
    EXPECT_TRUE(drv->Kick(0));
    EXPECT_EQ(drv->HandleInterrupts().queues, 1u);
    std::optional<virtqueue::VirtqUsedElem> used = drv->GetBuf(0);
    EXPECT_TRUE(used.has_value());
    uint8_t st = 0xee;
    EXPECT_OK(m.memory->Read(status, absl::MakeSpan(&st, 1)));
    return st;
  };
  const uint64_t out = drv->Alloc(4096, 4096);
  std::vector<uint8_t> pattern(4096);
  for (size_t i = 0; i < pattern.size(); ++i) {
    pattern[i] = static_cast<uint8_t>(0xa5 ^ i ^ revision);
  }
  ASSERT_OK(m.memory->Write(out, pattern));
  EXPECT_EQ(request(virtio::kBlkTOut, 8, out, 4096, false), virtio::kBlkSOk);
  const uint64_t in = drv->Alloc(4096, 4096);
  EXPECT_EQ(request(virtio::kBlkTIn, 8, in, 4096, true), virtio::kBlkSOk);
  std::vector<uint8_t> back(4096);
  ASSERT_OK(m.memory->Read(in, absl::MakeSpan(back)));
  EXPECT_EQ(back, pattern);
  // Sector 0 is still the original image.
  EXPECT_EQ(request(virtio::kBlkTIn, 0, in, 512, true), virtio::kBlkSOk);
  ASSERT_OK(m.memory->Read(in, absl::MakeSpan(back.data(), 4)));
  EXPECT_THAT(std::vector<uint8_t>(back.begin(), back.begin() + 4),
              ::testing::ElementsAre(3, 10, 17, 24));
  // Beyond the capacity: IOERR.
  EXPECT_EQ(request(virtio::kBlkTIn, sectors, in, 512, true),
            virtio::kBlkSIoErr);
  ASSERT_OK(drv->Remove());
  // The write reached the file.
  int fd = open(path.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  std::vector<uint8_t> file(4096);
  ASSERT_EQ(pread(fd, file.data(), file.size(), 8 * 512), 4096);
  close(fd);
  unlink(path.c_str());
  EXPECT_EQ(file, pattern);
}

INSTANTIATE_TEST_SUITE_P(Revisions, BlkTest, ::testing::Values(0, 1, 2));

}  // namespace
}  // namespace vmmkit::tests::virtio_ccw
