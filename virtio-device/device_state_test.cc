#include "virtio-device/device_state.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "base/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "virtio-device/config_space.h"
#include "virtio-device/testing/test_driver.h"
#include "virtio-device/virtio_device.h"
#include "virtqueue/guest_memory.h"
#include "virtqueue/split_queue.h"

namespace vmmkit::virtio {
namespace {

using ::testing::Each;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::vmmkit::testing::IsOk;
using ::vmmkit::testing::StatusIs;
using ::vmmkit::virtio::testing::TestDriver;
using ::vmmkit::virtqueue::GuestMemoryMmap;
using ::vmmkit::virtqueue::QueueError;
using ::vmmkit::virtqueue::QueueErrorName;

constexpr uint64_t kMemSize = 16 << 20;
constexpr uint8_t kAckDriver = kStatusAcknowledge | kStatusDriver;
constexpr uint8_t kModernReady = kAckDriver | kStatusFeaturesOk;

// Config layout of the fake: u32 at 0, u16 at 4, u8 at 6 and 7, u64 at 8.
constexpr uint32_t kConfigSize = 16;

// A device that records what DeviceState asks of it and serves its queues by
// completing every chain with nothing written.
class FakeDevice final : public VirtioDevice {
 public:
  struct ConfigWrite {
    uint32_t offset;
    std::vector<uint8_t> data;
    Endian endian;
  };

  FakeDevice() : config(kConfigSize) {
    config.DeclareField(0, 4);
    config.DeclareField(4, 2);
    config.DeclareField(8, 8);
    config.SetU32(0, 0x11223344);
    config.SetU16(4, 0xAABB);
    config.SetU8(6, 0x5A);
    config.SetU64(8, 0x0102030405060708);
  }

  DeviceType type() const override { return DeviceType::kBlock; }
  absl::Span<const uint16_t> queue_max_sizes() const override {
    return queue_sizes;
  }
  Features offered_features() const override { return offered; }
  absl::Status AcceptFeatures(const Features& features) override {
    accepted.push_back(features);
    return accept_status;
  }

  uint32_t config_size() const override { return config.size(); }
  void ReadConfig(uint32_t offset, absl::Span<uint8_t> data,
                  Endian endian) override {
    ++config_reads;
    read_endian = endian;
    config.Read(offset, data, endian);
  }
  void WriteConfig(uint32_t offset, absl::Span<const uint8_t> data,
                   Endian endian) override {
    config_writes.push_back(
        {offset, std::vector<uint8_t>(data.begin(), data.end()), endian});
  }
  uint32_t config_generation() const override { return config.generation(); }

  absl::Status Activate(DeviceContext& context) override {
    ++activations;
    ctx = &context;
    activated_features = context.features();
    activated_legacy = context.legacy();
    if (!activate_status.ok()) ctx = nullptr;
    return activate_status;
  }
  void Reset() override {
    ++resets;
    ctx = nullptr;
  }
  void ProcessQueue(uint16_t index) override {
    processed.push_back(index);
    if (ctx == nullptr) return;
    SplitQueue* q = ctx->queue(index);
    if (q == nullptr) return;
    while (std::optional<virtqueue::DescriptorChain> chain = q->Pop()) {
      for (const virtqueue::Descriptor& d : *chain) (void)d;
      q->AddUsed(chain->head(), 0);
    }
    ctx->NotifyUsed(index);
  }

  // Configuration of the fake, set before the DeviceState is made.
  std::vector<uint16_t> queue_sizes = {16, 16};
  Features offered = Features::Of({kFVersion1, kFEventIdx, kFIndirectDesc});
  absl::Status accept_status;
  absl::Status activate_status;

  // What happened.
  ConfigSpace config;
  std::vector<Features> accepted;
  int activations = 0;
  int resets = 0;
  Features activated_features;
  bool activated_legacy = false;
  std::vector<uint16_t> processed;
  int config_reads = 0;
  Endian read_endian = Endian::kLittle;
  std::vector<ConfigWrite> config_writes;
  DeviceContext* ctx = nullptr;
};

class DeviceStateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto mem = GuestMemoryMmap::Create({{.guest_base = 0, .size = kMemSize}});
    ASSERT_OK(mem.status());
    memory_ = *std::move(mem);
    Make({}, {});
  }

  // (Re)makes the state and the driver, after the test changed device_.
  void Make(DeviceState::Options options, TestDriver::Options driver) {
    driver_.reset();
    state_.reset();
    state_ = std::make_unique<DeviceState>(device_, *memory_, options);
    driver_ = std::make_unique<TestDriver>(*state_, *memory_, driver);
  }

  void WriteFeatures(const Features& f) {
    for (uint32_t w = 0; w < Features::kWords; ++w) {
      state_->SetDriverFeatures(w, f.Word(w));
    }
  }

  // A modern queue layout for queue `index` at `base` (size 16).
  void ConfigureQueue(uint16_t index, uint64_t base, uint16_t size = 16) {
    SplitQueue& q = state_->queue_config(index);
    q.set_size(size);
    q.set_desc_table(base);
    q.set_avail_ring(base + 0x1000);
    q.set_used_ring(base + 0x2000);
  }

  // Modern probe by hand up to FEATURES_OK; queue 0 configured and enabled.
  void ModernUpToFeaturesOk(const Features& f) {
    state_->SetStatus(kStatusAcknowledge);
    state_->SetStatus(kAckDriver);
    WriteFeatures(f);
    state_->SetStatus(kModernReady);
    ASSERT_EQ(state_->status(), kModernReady);
    ConfigureQueue(0, 0x100000);
    state_->EnableQueue(0);
  }

  // Posts a one-buffer chain on queue `index` and kicks.
  void PostAndKick(uint16_t index) {
    const uint64_t buf = driver_->Alloc(16);
    ASSERT_OK(driver_->queue(index).AddChain({{buf, 16, true}}).status());
    driver_->Kick(index);
  }

  FakeDevice device_;  // outlives the state
  std::unique_ptr<GuestMemoryMmap> memory_;
  std::unique_ptr<DeviceState> state_;
  std::unique_ptr<TestDriver> driver_;
};

// ---- Status (§2.1).

TEST_F(DeviceStateTest, InitialState) {
  EXPECT_EQ(state_->status(), 0);
  EXPECT_FALSE(state_->active());
  EXPECT_TRUE(state_->legacy());
  EXPECT_EQ(state_->num_queues(), 2);
  EXPECT_EQ(state_->queue_config(0).max_size(), 16);
  EXPECT_EQ(state_->queue_config(0).size(), 16);
  EXPECT_FALSE(state_->queue_enabled(0));
  EXPECT_EQ(state_->queue_vector(0), DeviceState::kNoVector);
  EXPECT_EQ(state_->config_vector(), DeviceState::kNoVector);
  EXPECT_EQ(state_->queue(0), nullptr);
  EXPECT_EQ(state_->offered_features(), device_.offered);
  EXPECT_TRUE(state_->driver_features().empty());
  EXPECT_OK(state_->last_error());
  EXPECT_EQ(&state_->device(), &device_);
  EXPECT_EQ(&state_->memory(), memory_.get());
}

TEST_F(DeviceStateTest, ModernProbeStepByStep) {
  const Features f = Features::Of({kFVersion1, kFEventIdx});
  state_->SetStatus(kStatusAcknowledge);
  EXPECT_EQ(state_->status(), kStatusAcknowledge);
  state_->SetStatus(kAckDriver);
  EXPECT_EQ(state_->status(), kAckDriver);
  WriteFeatures(f);
  EXPECT_FALSE(state_->legacy());
  EXPECT_THAT(device_.accepted,
              IsEmpty());  // nothing checked until FEATURES_OK
  state_->SetStatus(kModernReady);
  EXPECT_EQ(state_->status(), kModernReady);
  EXPECT_THAT(device_.accepted, ElementsAre(f));
  ConfigureQueue(0, 0x100000);
  state_->EnableQueue(0);
  EXPECT_TRUE(state_->queue_enabled(0));
  EXPECT_FALSE(state_->active());
  EXPECT_EQ(device_.activations, 0);
  state_->SetStatus(kModernReady | kStatusDriverOk);
  EXPECT_EQ(state_->status(), kModernReady | kStatusDriverOk);
  EXPECT_TRUE(state_->active());
  EXPECT_EQ(device_.activations, 1);
  EXPECT_EQ(device_.activated_features, f);
  EXPECT_FALSE(device_.activated_legacy);
  ASSERT_NE(state_->queue(0), nullptr);
  EXPECT_TRUE(state_->queue(0)->ready());
  EXPECT_EQ(state_->queue(0)->endian(), Endian::kLittle);
  EXPECT_EQ(state_->queue(1), nullptr);  // never enabled
  EXPECT_EQ(state_->queue(2), nullptr);  // does not exist
  // DRIVER_OK written again (a read-modify-write of the status) starts
  // nothing twice.
  state_->SetStatus(kModernReady | kStatusDriverOk);
  EXPECT_EQ(device_.activations, 1);
  EXPECT_EQ(state_->stats().ignored_status_writes, 0u);
  EXPECT_OK(state_->last_error());
}

TEST_F(DeviceStateTest, WritingZeroResetsEverything) {
  ASSERT_OK(driver_->Start(Features::Of({kFEventIdx})));
  state_->set_queue_vector(0, 1);
  state_->set_queue_vector(1, 2);
  state_->set_config_vector(3);
  state_->MarkNeedsReset(absl::InternalError("boom"));
  ASSERT_TRUE(state_->active());
  state_->queue_config(1).set_size(8);  // ignored by the running ring, kept
  const uint64_t resets_before = state_->stats().resets;

  state_->SetStatus(0);
  EXPECT_EQ(state_->status(), 0);
  EXPECT_FALSE(state_->active());
  EXPECT_EQ(device_.resets, 2);  // the probe starts with a reset too
  EXPECT_EQ(state_->stats().resets, resets_before + 1);
  for (uint32_t w = 0; w < Features::kWords; ++w) {
    EXPECT_EQ(state_->DriverFeatures(w), 0u) << w;
  }
  EXPECT_TRUE(state_->legacy());  // until features are written again
  // What the last driver used survives the reset.
  EXPECT_EQ(state_->starts(), 1u);
  EXPECT_TRUE(state_->last_started_features().Has(kFEventIdx));
  for (uint16_t i = 0; i < 2; ++i) {
    EXPECT_FALSE(state_->queue_enabled(i));
    EXPECT_EQ(state_->queue(i), nullptr);
    EXPECT_EQ(state_->queue_vector(i), DeviceState::kNoVector);
    const SplitQueue& q = state_->queue_config(i);
    EXPECT_FALSE(q.ready());
    EXPECT_EQ(q.size(), 16);
    EXPECT_EQ(q.desc_table(), 0u);
    EXPECT_EQ(q.avail_ring(), 0u);
    EXPECT_EQ(q.used_ring(), 0u);
    EXPECT_EQ(q.next_avail(), 0);
    EXPECT_EQ(q.next_used(), 0);
    EXPECT_FALSE(q.event_idx());
  }
  EXPECT_EQ(state_->config_vector(), DeviceState::kNoVector);
  EXPECT_OK(state_->last_error());
  // Kicks after the reset reach nothing.
  driver_->Kick(0);
  EXPECT_THAT(device_.processed, IsEmpty());
  // And a new probe works from scratch.
  ASSERT_OK(driver_->Start(Features()));
  EXPECT_EQ(device_.activations, 2);
  EXPECT_EQ(state_->starts(), 2u);
  EXPECT_FALSE(state_->last_started_features().Has(kFEventIdx));
  PostAndKick(0);
  EXPECT_TRUE(driver_->queue(0).PopUsed().has_value());
}

TEST_F(DeviceStateTest, ResetInTheMiddleOfIo) {
  ASSERT_OK(driver_->Start(Features()));
  const uint64_t buf = driver_->Alloc(16);
  ASSERT_OK(driver_->queue(0).AddChain({{buf, 16, true}}).status());
  driver_->Reset();
  driver_->Kick(0);
  EXPECT_THAT(device_.processed, IsEmpty());
  EXPECT_EQ(driver_->queue(0).used_idx(), 0);
  EXPECT_EQ(state_->stats().spurious_notifications, 1u);
}

TEST_F(DeviceStateTest, ClearingAStatusBitIsIgnoredAndCounted) {
  state_->SetStatus(kAckDriver);
  state_->SetStatus(kStatusAcknowledge);  // clears DRIVER
  EXPECT_EQ(state_->status(), kAckDriver);
  EXPECT_EQ(state_->stats().ignored_status_writes, 1u);
  state_->SetStatus(kStatusDriver);  // clears ACKNOWLEDGE
  EXPECT_EQ(state_->status(), kAckDriver);
  EXPECT_EQ(state_->stats().ignored_status_writes, 2u);

  ASSERT_OK(driver_->Start(Features()));
  const uint8_t running = state_->status();
  ASSERT_EQ(running, kModernReady | kStatusDriverOk);
  state_->SetStatus(kModernReady);  // clears DRIVER_OK
  EXPECT_EQ(state_->status(), running);
  EXPECT_TRUE(state_->active());
  EXPECT_EQ(device_.resets, 1);  // the probe starts with a reset too
  // Setting FAILED while clearing FEATURES_OK is ignored as a whole.
  state_->SetStatus(kAckDriver | kStatusDriverOk | kStatusFailed);
  EXPECT_EQ(state_->status(), running);
  EXPECT_EQ(state_->stats().ignored_status_writes, 4u);
}

TEST_F(DeviceStateTest, DriverCannotSetNeedsReset) {
  state_->SetStatus(kStatusAcknowledge | kStatusNeedsReset);
  EXPECT_EQ(state_->status(), kStatusAcknowledge);
  ASSERT_OK(driver_->Start(Features()));
  const uint8_t running = state_->status();
  state_->SetStatus(running | kStatusNeedsReset);
  EXPECT_EQ(state_->status(), running);
  EXPECT_EQ(driver_->config_interrupts(), 0);
  EXPECT_OK(state_->last_error());
  // Nor clear it once the device set it: only a reset does.
  state_->MarkNeedsReset(absl::DataLossError("backend"));
  state_->SetStatus(running);
  EXPECT_EQ(state_->status(), running | kStatusNeedsReset);
}

TEST_F(DeviceStateTest, FailedStopsTheProbe) {
  state_->SetStatus(kAckDriver);
  state_->SetStatus(kAckDriver | kStatusFailed);
  EXPECT_EQ(state_->status(), kAckDriver | kStatusFailed);
  WriteFeatures(Features::Of({kFVersion1}));
  ConfigureQueue(0, 0x100000);
  state_->EnableQueue(0);
  state_->SetStatus(kModernReady | kStatusFailed | kStatusDriverOk);
  EXPECT_FALSE(state_->active());
  EXPECT_EQ(device_.activations, 0);
  EXPECT_EQ(state_->queue(0), nullptr);
  driver_->Kick(0);
  EXPECT_THAT(device_.processed, IsEmpty());
  state_->SetStatus(0);
  EXPECT_EQ(state_->status(), 0);
}

// ---- Features (§2.2).

TEST_F(DeviceStateTest, FeatureWordsCover128Bits) {
  device_.offered = Features::Of({0, 31, kFVersion1, 63, 64, 100, 127});
  Make({}, {});
  EXPECT_EQ(state_->DeviceFeatures(0), 0x80000001u);
  EXPECT_EQ(state_->DeviceFeatures(1), 0x80000001u);
  EXPECT_EQ(state_->DeviceFeatures(2), 0x00000001u);
  EXPECT_EQ(state_->DeviceFeatures(3), 0x80000010u);
  EXPECT_EQ(state_->DeviceFeatures(4), 0u);
  EXPECT_EQ(state_->DeviceFeatures(0xffffffff), 0u);

  state_->SetStatus(kAckDriver);
  state_->SetDriverFeatures(0, 0x80000001);
  state_->SetDriverFeatures(1, 0x80000001);
  state_->SetDriverFeatures(2, 1);
  state_->SetDriverFeatures(3, 0x80000010);
  state_->SetDriverFeatures(4, 0xffffffff);  // beyond: ignored
  state_->SetDriverFeatures(0xffffffff, 0xffffffff);
  EXPECT_EQ(state_->DriverFeatures(0), 0x80000001u);
  EXPECT_EQ(state_->DriverFeatures(1), 0x80000001u);
  EXPECT_EQ(state_->DriverFeatures(2), 1u);
  EXPECT_EQ(state_->DriverFeatures(3), 0x80000010u);
  EXPECT_EQ(state_->DriverFeatures(4), 0u);
  EXPECT_TRUE(state_->driver_features().Has(127));
  EXPECT_TRUE(state_->driver_features().Has(100));
  EXPECT_EQ(state_->driver_features(), device_.offered);
  state_->SetStatus(kModernReady);
  EXPECT_EQ(state_->status(), kModernReady);
  ASSERT_EQ(device_.accepted.size(), 1u);
  EXPECT_TRUE(device_.accepted[0].Has(127));
}

TEST_F(DeviceStateTest, DriverFeaturesFrozenAfterFeaturesOk) {
  ModernUpToFeaturesOk(Features::Of({kFVersion1, kFEventIdx}));
  state_->SetDriverFeatures(0, 0);
  state_->SetDriverFeatures(1, 0);
  state_->SetDriverFeatures(0, 1u << kFIndirectDesc);
  EXPECT_EQ(state_->driver_features(), Features::Of({kFVersion1, kFEventIdx}));
  state_->SetStatus(kModernReady | kStatusDriverOk);
  ASSERT_TRUE(state_->active());
  state_->SetDriverFeatures(0, 0);
  EXPECT_EQ(state_->features(), Features::Of({kFVersion1, kFEventIdx}));
  EXPECT_FALSE(state_->legacy());
}

TEST_F(DeviceStateTest, LegacyDriverFeaturesFrozenAfterDriverOk) {
  Make({}, {.legacy = true});
  ASSERT_OK(driver_->Start(Features::Of({kFEventIdx})));
  state_->SetDriverFeatures(0, 1u << kFIndirectDesc);
  state_->SetDriverFeatures(1, 1);  // VERSION_1 now would be too late
  EXPECT_EQ(state_->features(), Features::Of({kFEventIdx}));
  EXPECT_TRUE(state_->legacy());
}

TEST_F(DeviceStateTest, FeaturesOkAndDriverOkInOneWrite) {
  state_->SetStatus(kAckDriver);
  WriteFeatures(Features::Of({kFVersion1}));
  ConfigureQueue(0, 0x100000);
  state_->EnableQueue(0);
  state_->SetStatus(kModernReady | kStatusDriverOk);
  EXPECT_TRUE(state_->active());
  EXPECT_EQ(state_->status(), kModernReady | kStatusDriverOk);
  // The same write with features the device refuses: FEATURES_OK stays
  // clear, so DRIVER_OK has nothing to stand on.
  state_->SetStatus(0);
  state_->SetStatus(kAckDriver);
  WriteFeatures(Features::Of({kFVersion1, 3}));  // bit 3 not offered
  ConfigureQueue(0, 0x100000);
  state_->EnableQueue(0);
  state_->SetStatus(kModernReady | kStatusDriverOk);
  EXPECT_EQ(state_->status(), kAckDriver | kStatusDriverOk | kStatusNeedsReset);
  EXPECT_FALSE(state_->active());
  EXPECT_EQ(device_.activations, 1);
  EXPECT_EQ(driver_->config_interrupts(), 1);
}

TEST_F(DeviceStateTest, FeaturesOkRefusedForAFeatureNotOffered) {
  state_->SetStatus(kAckDriver);
  WriteFeatures(Features::Of({kFVersion1, 0}));  // bit 0 not offered
  state_->SetStatus(kModernReady);
  EXPECT_EQ(state_->status(), kAckDriver);
  EXPECT_EQ(state_->stats().refused_features_ok, 1u);
  EXPECT_THAT(device_.accepted, IsEmpty());  // refused before asking it
  // A high word too.
  WriteFeatures(Features::Of({kFVersion1, 100}));
  state_->SetStatus(kModernReady);
  EXPECT_EQ(state_->status(), kAckDriver);
  EXPECT_EQ(state_->stats().refused_features_ok, 2u);
  // FEATURES_OK is still clear, so the driver may try again.
  WriteFeatures(Features::Of({kFVersion1, kFEventIdx}));
  state_->SetStatus(kModernReady);
  EXPECT_EQ(state_->status(), kModernReady);
  EXPECT_EQ(state_->stats().refused_features_ok, 2u);
  EXPECT_THAT(device_.accepted,
              ElementsAre(Features::Of({kFVersion1, kFEventIdx})));
}

TEST_F(DeviceStateTest, FeaturesOkRefusedWhenTheDeviceRefuses) {
  device_.accept_status = absl::InvalidArgumentError("needs EVENT_IDX");
  state_->SetStatus(kAckDriver);
  WriteFeatures(Features::Of({kFVersion1, kFIndirectDesc}));
  state_->SetStatus(kModernReady);
  EXPECT_EQ(state_->status(), kAckDriver);
  EXPECT_EQ(state_->stats().refused_features_ok, 1u);
  EXPECT_THAT(device_.accepted,
              ElementsAre(Features::Of({kFVersion1, kFIndirectDesc})));
  // The refusal is not a device error.
  EXPECT_OK(state_->last_error());
  EXPECT_EQ(driver_->config_interrupts(), 0);
  // Through the test driver: kFailedPrecondition.
  EXPECT_THAT(driver_->Start(Features()),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(device_.activations, 0);
}

TEST_F(DeviceStateTest, ModernOnlyDeviceRequiresVersion1) {
  device_.offered = Features::Of({kFEventIdx});  // VERSION_1 not listed
  Make({.allow_legacy = false}, {});
  // The state offers VERSION_1 for a device that refuses legacy drivers.
  EXPECT_TRUE(state_->offered_features().Has(kFVersion1));
  EXPECT_EQ(state_->DeviceFeatures(1), 1u);
  state_->SetStatus(kAckDriver);
  WriteFeatures(Features::Of({kFEventIdx}));
  state_->SetStatus(kModernReady);
  EXPECT_EQ(state_->status(), kAckDriver);
  EXPECT_EQ(state_->stats().refused_features_ok, 1u);
  WriteFeatures(Features::Of({kFEventIdx, kFVersion1}));
  state_->SetStatus(kModernReady);
  EXPECT_EQ(state_->status(), kModernReady);
}

TEST_F(DeviceStateTest, TransitionalDeviceWithoutVersion1RefusesModernDriver) {
  device_.offered = Features::Of({kFEventIdx});  // a legacy-only device
  Make({}, {});
  EXPECT_FALSE(state_->offered_features().Has(kFVersion1));
  state_->SetStatus(kAckDriver);
  WriteFeatures(Features::Of({kFVersion1, kFEventIdx}));
  state_->SetStatus(kModernReady);
  EXPECT_EQ(state_->status(), kAckDriver);
  EXPECT_EQ(state_->stats().refused_features_ok, 1u);
  // The same driver falling back to legacy is served.
  WriteFeatures(Features::Of({kFEventIdx}));
  ConfigureQueue(0, 0x100000);
  state_->EnableQueue(0);
  state_->SetStatus(kAckDriver | kStatusDriverOk);
  EXPECT_TRUE(state_->active());
  EXPECT_TRUE(state_->legacy());
}

TEST_F(DeviceStateTest, ModernDriverOkWithoutFeaturesOkNeedsReset) {
  state_->SetStatus(kAckDriver);
  WriteFeatures(Features::Of({kFVersion1}));
  ConfigureQueue(0, 0x100000);
  state_->EnableQueue(0);
  state_->SetStatus(kAckDriver | kStatusDriverOk);
  EXPECT_EQ(state_->status(), kAckDriver | kStatusDriverOk | kStatusNeedsReset);
  EXPECT_FALSE(state_->active());
  EXPECT_EQ(device_.activations, 0);
  EXPECT_THAT(state_->last_error(),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(driver_->config_interrupts(), 1);
  EXPECT_EQ(state_->stats().config_interrupts, 1u);
  driver_->Kick(0);
  EXPECT_THAT(device_.processed, IsEmpty());
}

TEST_F(DeviceStateTest, DriverOkAfterRefusedFeaturesOkNeedsReset) {
  device_.accept_status = absl::InvalidArgumentError("no");
  state_->SetStatus(kAckDriver);
  WriteFeatures(Features::Of({kFVersion1}));
  state_->SetStatus(kModernReady);
  ASSERT_EQ(state_->status(), kAckDriver);
  state_->SetStatus(kAckDriver | kStatusDriverOk);
  EXPECT_TRUE(state_->status() & kStatusNeedsReset);
  EXPECT_EQ(device_.activations, 0);
  EXPECT_EQ(driver_->config_interrupts(), 1);
}

// ---- Legacy drivers: no VERSION_1.

class LegacyTest : public DeviceStateTest,
                   public ::testing::WithParamInterface<Endian> {};

TEST_P(LegacyTest, FeaturesCutToOfferedLow32AtDriverOk) {
  device_.offered = Features::Of(
      {0, 5, kFEventIdx, kFIndirectDesc, kFVersion1, kFRingReset, 64});
  Make({.guest_endian = GetParam()}, {.legacy = true});
  state_->SetStatus(kAckDriver);
  // Bit 1 not offered, bit 64 offered but out of a legacy driver's reach.
  state_->SetDriverFeatures(0, 1u << 0 | 1u << 1 | 1u << kFEventIdx);
  state_->SetDriverFeatures(2, 1);
  SplitQueue& q = state_->queue_config(0);
  q.set_size(16);
  ASSERT_OK(q.SetLegacyLayout(0x100000, 4096));
  state_->EnableQueue(0);
  state_->SetStatus(kAckDriver | kStatusDriverOk);
  ASSERT_TRUE(state_->active()) << state_->last_error();
  const Features expected = Features::Of({0, kFEventIdx});
  EXPECT_EQ(state_->features(), expected);
  EXPECT_EQ(device_.activated_features, expected);
  ASSERT_FALSE(device_.accepted.empty());
  EXPECT_EQ(device_.accepted.back(), expected);
  EXPECT_TRUE(device_.activated_legacy);
  EXPECT_TRUE(state_->legacy());
  EXPECT_EQ(state_->legacy_endian(), GetParam());
  EXPECT_EQ(state_->stats().refused_features_ok, 0u);
  EXPECT_EQ(state_->status(), kAckDriver | kStatusDriverOk);
  // The queues take the guest's byte order and the negotiated ring features.
  ASSERT_NE(device_.ctx, nullptr);
  SplitQueue* ring = device_.ctx->queue(0);
  ASSERT_NE(ring, nullptr);
  EXPECT_EQ(ring->endian(), GetParam());
  EXPECT_TRUE(ring->event_idx());
  EXPECT_FALSE(ring->indirect_allowed());
}

TEST_P(LegacyTest, ProbeAndServeThroughTheTestDriver) {
  Make({.guest_endian = GetParam()}, {.legacy = true});
  ASSERT_OK(driver_->Start(Features::Of({kFEventIdx, kFIndirectDesc})));
  EXPECT_TRUE(state_->legacy());
  for (uint16_t i = 0; i < 2; ++i) {
    ASSERT_NE(state_->queue(i), nullptr);
    EXPECT_EQ(state_->queue(i)->endian(), GetParam());
    EXPECT_TRUE(state_->queue(i)->event_idx());
    EXPECT_TRUE(state_->queue(i)->indirect_allowed());
  }
  PostAndKick(1);
  std::optional<virtqueue::VirtqUsedElem> used = driver_->queue(1).PopUsed();
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(driver_->queue_interrupts(1), 1);
  EXPECT_THAT(device_.processed, ElementsAre(1));
}

TEST_P(LegacyTest, LegacyDriverOnModernOnlyDeviceNeedsReset) {
  Make({.guest_endian = GetParam(), .allow_legacy = false}, {.legacy = true});
  EXPECT_THAT(driver_->Start(Features()),
              StatusIs(absl::StatusCode::kInternal));
  EXPECT_TRUE(state_->status() & kStatusNeedsReset);
  EXPECT_THAT(state_->last_error(),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_FALSE(state_->active());
  EXPECT_EQ(device_.activations, 0);
  EXPECT_THAT(device_.accepted, IsEmpty());
  EXPECT_EQ(driver_->config_interrupts(), 1);
}

TEST_P(LegacyTest, DeviceRefusingLegacyFeaturesNeedsReset) {
  device_.accept_status = absl::UnimplementedError("cannot");
  Make({.guest_endian = GetParam()}, {.legacy = true});
  EXPECT_THAT(driver_->Start(Features()),
              StatusIs(absl::StatusCode::kInternal));
  EXPECT_THAT(state_->last_error(), StatusIs(absl::StatusCode::kUnimplemented));
  EXPECT_EQ(device_.activations, 0);
  EXPECT_EQ(driver_->config_interrupts(), 1);
}

TEST_P(LegacyTest, ConfigByteOrderFollowsVersion1) {
  Make({.guest_endian = GetParam()}, {.legacy = true});
  const bool big = GetParam() == Endian::kBig;
  std::vector<uint8_t> buf(4);
  // Seed 003: a legacy driver reads config space before it writes features.
  // Until then every driver is taken for a legacy one.
  state_->SetStatus(kAckDriver);
  EXPECT_TRUE(state_->legacy());
  EXPECT_EQ(state_->legacy_endian(), GetParam());
  state_->ReadConfig(0, absl::MakeSpan(buf), state_->legacy_endian());
  EXPECT_EQ(device_.read_endian, GetParam());
  if (big) {
    EXPECT_THAT(buf, ElementsAre(0x11, 0x22, 0x33, 0x44));
  } else {
    EXPECT_THAT(buf, ElementsAre(0x44, 0x33, 0x22, 0x11));
  }
  EXPECT_EQ(driver_->ReadConfigU32(0), 0x11223344u);
  EXPECT_EQ(driver_->ReadConfigU16(4), 0xAABB);
  EXPECT_EQ(driver_->ReadConfigU64(8), 0x0102030405060708u);
  // VERSION_1 accepted: the legacy view is little-endian from now on.
  state_->SetDriverFeatures(1, 1);
  EXPECT_FALSE(state_->legacy());
  EXPECT_EQ(state_->legacy_endian(), Endian::kLittle);
  state_->ReadConfig(0, absl::MakeSpan(buf), state_->legacy_endian());
  EXPECT_EQ(device_.read_endian, Endian::kLittle);
  EXPECT_THAT(buf, ElementsAre(0x44, 0x33, 0x22, 0x11));
  // Taken back before FEATURES_OK: legacy again.
  state_->SetDriverFeatures(1, 0);
  EXPECT_EQ(state_->legacy_endian(), GetParam());
  // Reset forgets VERSION_1.
  state_->SetDriverFeatures(1, 1);
  state_->SetStatus(0);
  EXPECT_EQ(state_->legacy_endian(), GetParam());
}

INSTANTIATE_TEST_SUITE_P(GuestEndian, LegacyTest,
                         ::testing::Values(Endian::kLittle, Endian::kBig),
                         [](const ::testing::TestParamInfo<Endian>& info) {
                           return info.param == Endian::kBig ? "BigEndian"
                                                             : "LittleEndian";
                         });

TEST_F(DeviceStateTest, ModernQueuesAreLittleEndianOnABigEndianGuest) {
  Make({.guest_endian = Endian::kBig}, {});
  ASSERT_OK(driver_->Start(Features()));
  ASSERT_NE(state_->queue(0), nullptr);
  EXPECT_EQ(state_->queue(0)->endian(), Endian::kLittle);
  EXPECT_EQ(state_->legacy_endian(), Endian::kLittle);
  EXPECT_EQ(driver_->ReadConfigU32(0), 0x11223344u);
  PostAndKick(0);
  EXPECT_TRUE(driver_->queue(0).PopUsed().has_value());
}

// ---- Queues.

TEST_F(DeviceStateTest, QueueEnableDisableAndVectors) {
  state_->EnableQueue(1);
  EXPECT_TRUE(state_->queue_enabled(1));
  EXPECT_FALSE(state_->queue_enabled(0));
  state_->EnableQueue(2);  // out of range: ignored
  state_->EnableQueue(0xffff);
  EXPECT_FALSE(state_->queue_enabled(2));
  EXPECT_FALSE(state_->queue_enabled(0xffff));
  state_->set_queue_vector(0, 1);
  state_->set_queue_vector(1, 2);
  state_->set_queue_vector(5, 9);  // ignored
  EXPECT_EQ(state_->queue_vector(0), 1);
  EXPECT_EQ(state_->queue_vector(1), 2);
  EXPECT_EQ(state_->queue_vector(5), DeviceState::kNoVector);
  state_->set_config_vector(7);
  EXPECT_EQ(state_->config_vector(), 7);

  ConfigureQueue(1, 0x100000, 8);
  state_->DisableQueue(1);
  EXPECT_FALSE(state_->queue_enabled(1));
  EXPECT_EQ(state_->queue_config(1).size(), 16);  // back to the maximum
  EXPECT_EQ(state_->queue_config(1).desc_table(), 0u);
  EXPECT_EQ(state_->queue_vector(1), 2);  // the route stays
  state_->DisableQueue(9);                // out of range: ignored
  EXPECT_EQ(state_->config_vector(), 7);
}

TEST_F(DeviceStateTest, EnableQueueAfterDriverOkIsIgnored) {
  ModernUpToFeaturesOk(Features::Of({kFVersion1}));
  state_->SetStatus(kModernReady | kStatusDriverOk);
  ASSERT_TRUE(state_->active());
  ConfigureQueue(1, 0x200000);
  state_->EnableQueue(1);
  EXPECT_FALSE(state_->queue_enabled(1));
  EXPECT_EQ(state_->queue(1), nullptr);
  EXPECT_NE(state_->queue(0), nullptr);
}

TEST_F(DeviceStateTest, DisableQueueWhileRunningHidesItFromTheDevice) {
  ASSERT_OK(driver_->Start(Features()));
  state_->DisableQueue(0);
  EXPECT_EQ(state_->queue(0), nullptr);
  driver_->Kick(0);
  EXPECT_THAT(device_.processed, IsEmpty());
  EXPECT_EQ(state_->stats().spurious_notifications, 1u);
  EXPECT_NE(state_->queue(1), nullptr);
}

TEST_F(DeviceStateTest, RingFeaturesComeFromNegotiation) {
  ASSERT_OK(driver_->Start(Features::Of({kFEventIdx})));
  ASSERT_NE(state_->queue(0), nullptr);
  EXPECT_TRUE(state_->queue(0)->event_idx());
  EXPECT_FALSE(state_->queue(0)->indirect_allowed());
  ASSERT_OK(driver_->Start(Features::Of({kFIndirectDesc})));
  ASSERT_NE(state_->queue(1), nullptr);
  EXPECT_FALSE(state_->queue(1)->event_idx());
  EXPECT_TRUE(state_->queue(1)->indirect_allowed());
  // Offered but not taken: neither.
  ASSERT_OK(driver_->Start(Features()));
  EXPECT_FALSE(state_->queue(0)->event_idx());
  EXPECT_FALSE(state_->queue(0)->indirect_allowed());
}

TEST_F(DeviceStateTest, DriverOkWithQueueOutsideMemoryNeedsReset) {
  ModernUpToFeaturesOk(Features::Of({kFVersion1}));
  ConfigureQueue(1, kMemSize - 0x1000);  // avail and used beyond the end
  state_->EnableQueue(1);
  state_->SetStatus(kModernReady | kStatusDriverOk);
  EXPECT_TRUE(state_->status() & kStatusNeedsReset);
  EXPECT_THAT(state_->last_error(),
              StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("queue 1")));
  EXPECT_FALSE(state_->active());
  EXPECT_EQ(device_.activations, 0);
  EXPECT_EQ(driver_->config_interrupts(), 1);
  EXPECT_EQ(state_->queue(0), nullptr);
}

TEST_F(DeviceStateTest, DriverOkWithBadQueueSizeNeedsReset) {
  for (uint16_t size : {uint16_t{3}, uint16_t{32}, uint16_t{0}}) {
    SCOPED_TRACE(size);
    state_->SetStatus(0);
    ModernUpToFeaturesOk(Features::Of({kFVersion1}));
    state_->queue_config(0).set_size(size);
    state_->SetStatus(kModernReady | kStatusDriverOk);
    EXPECT_TRUE(state_->status() & kStatusNeedsReset);
    EXPECT_THAT(
        state_->last_error(),
        StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("queue 0")));
    EXPECT_FALSE(state_->active());
  }
  EXPECT_EQ(device_.activations, 0);
  EXPECT_EQ(driver_->config_interrupts(), 3);
}

TEST_F(DeviceStateTest, DriverOkWithMisalignedRingNeedsReset) {
  ModernUpToFeaturesOk(Features::Of({kFVersion1}));
  state_->queue_config(0).set_desc_table(0x100008);
  state_->SetStatus(kModernReady | kStatusDriverOk);
  EXPECT_THAT(state_->last_error(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_FALSE(state_->active());
}

TEST_F(DeviceStateTest, TestDriverReportsBadQueueAsInternal) {
  Make({}, {.queue_size = 32});  // above the device maximum of 16
  EXPECT_THAT(driver_->Start(Features()),
              StatusIs(absl::StatusCode::kInternal));
  EXPECT_THAT(state_->last_error(),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(DeviceStateTest, ActivateFailureNeedsReset) {
  device_.activate_status = absl::ResourceExhaustedError("no backend");
  EXPECT_THAT(driver_->Start(Features()),
              StatusIs(absl::StatusCode::kInternal));
  EXPECT_THAT(state_->last_error(),
              StatusIs(absl::StatusCode::kResourceExhausted, "no backend"));
  EXPECT_EQ(device_.activations, 1);
  EXPECT_EQ(device_.resets, 2);  // the probe's, then the half-started state
  EXPECT_FALSE(state_->active());
  EXPECT_EQ(state_->queue(0), nullptr);
  EXPECT_EQ(driver_->config_interrupts(), 1);
  driver_->Kick(0);
  EXPECT_THAT(device_.processed, IsEmpty());
  // A reset and a working device come back.
  device_.activate_status = absl::OkStatus();
  ASSERT_OK(driver_->Start(Features()));
  EXPECT_TRUE(state_->active());
}

// ---- Notifications.

TEST_F(DeviceStateTest, NotifyReachesOnlyEnabledQueuesOfAnActiveDevice) {
  state_->Notify(0);  // not started
  EXPECT_EQ(state_->stats().spurious_notifications, 1u);
  ModernUpToFeaturesOk(Features::Of({kFVersion1}));
  state_->Notify(0);  // not yet DRIVER_OK
  EXPECT_EQ(state_->stats().spurious_notifications, 2u);
  state_->SetStatus(kModernReady | kStatusDriverOk);
  ASSERT_TRUE(state_->active());
  state_->Notify(1);       // not enabled
  state_->Notify(2);       // no such queue
  state_->Notify(0xffff);  // nor this
  EXPECT_EQ(state_->stats().spurious_notifications, 5u);
  EXPECT_THAT(device_.processed, IsEmpty());
  state_->Notify(0);
  EXPECT_EQ(state_->stats().notifications, 1u);
  EXPECT_THAT(device_.processed, ElementsAre(0));
}

TEST_F(DeviceStateTest, NotifyUsedHonoursNoInterrupt) {
  ASSERT_OK(driver_->Start(Features()));
  PostAndKick(0);
  EXPECT_EQ(driver_->queue_interrupts(0), 1);
  EXPECT_EQ(state_->stats().queue_interrupts, 1u);
  driver_->queue(0).SetNoInterrupt(true);
  PostAndKick(0);
  PostAndKick(0);
  EXPECT_EQ(driver_->queue_interrupts(0), 1);
  EXPECT_EQ(state_->stats().suppressed_interrupts, 2u);
  EXPECT_EQ(driver_->queue(0).used_idx(), 3);  // served all the same
  driver_->queue(0).SetNoInterrupt(false);
  PostAndKick(0);
  EXPECT_EQ(driver_->queue_interrupts(0), 2);
  EXPECT_EQ(state_->stats().queue_interrupts, 2u);
  EXPECT_EQ(driver_->queue_interrupts(1), 0);
}

TEST_F(DeviceStateTest, NotifyUsedHonoursUsedEvent) {
  ASSERT_OK(driver_->Start(Features::Of({kFEventIdx})));
  // The first decision always interrupts.
  PostAndKick(0);
  EXPECT_EQ(driver_->queue_interrupts(0), 1);
  // used_event = 5: interrupt when used.idx moves past 5, i.e. reaches 6.
  driver_->queue(0).SetUsedEvent(5);
  for (int i = 0; i < 4; ++i) PostAndKick(0);  // used.idx 2..5
  EXPECT_EQ(driver_->queue(0).used_idx(), 5);
  EXPECT_EQ(driver_->queue_interrupts(0), 1);
  EXPECT_EQ(state_->stats().suppressed_interrupts, 4u);
  PostAndKick(0);  // used.idx 6
  EXPECT_EQ(driver_->queue_interrupts(0), 2);
  EXPECT_EQ(state_->stats().queue_interrupts, 2u);
  // A flag meant for the other mode does not suppress with event idx.
  driver_->queue(0).SetNoInterrupt(true);
  driver_->queue(0).SetUsedEvent(6);
  PostAndKick(0);  // used.idx 7
  EXPECT_EQ(driver_->queue_interrupts(0), 3);
}

TEST_F(DeviceStateTest, NotifyUsedForAbsentQueueDoesNothing) {
  ASSERT_OK(driver_->Start(Features()));
  state_->NotifyUsed(2);
  state_->NotifyUsed(0xffff);
  state_->DisableQueue(1);
  state_->NotifyUsed(1);
  EXPECT_EQ(state_->stats().queue_interrupts, 0u);
  EXPECT_EQ(state_->stats().suppressed_interrupts, 0u);
  EXPECT_EQ(driver_->queue_interrupts(1), 0);
}

TEST_F(DeviceStateTest, NotifyConfigChangeRaisesAConfigInterrupt) {
  ASSERT_OK(driver_->Start(Features()));
  const uint32_t gen = state_->config_generation();
  device_.config.SetU16(4, 0x1234);
  device_.ctx->NotifyConfigChange();
  EXPECT_EQ(driver_->config_interrupts(), 1);
  EXPECT_EQ(state_->stats().config_interrupts, 1u);
  EXPECT_EQ(state_->config_generation(), gen + 1);
  EXPECT_EQ(state_->config_generation(), device_.config.generation());
}

TEST_F(DeviceStateTest, WorksWithoutAnInterruptSink) {
  ASSERT_OK(driver_->Start(Features()));
  state_->set_interrupt_sink(nullptr);
  PostAndKick(0);
  state_->NotifyConfigChange();
  state_->MarkNeedsReset(absl::InternalError("x"));
  EXPECT_EQ(state_->stats().queue_interrupts, 1u);
  EXPECT_EQ(state_->stats().config_interrupts, 2u);
  EXPECT_EQ(driver_->queue_interrupts(0), 0);
  EXPECT_EQ(driver_->config_interrupts(), 0);
}

// ---- DEVICE_NEEDS_RESET (§2.1.2).

TEST_F(DeviceStateTest, MarkNeedsResetOnceWithOneConfigInterrupt) {
  ASSERT_OK(driver_->Start(Features()));
  const uint8_t running = state_->status();
  ASSERT_NE(device_.ctx, nullptr);
  device_.ctx->MarkNeedsReset(absl::DataLossError("backend gone"));
  EXPECT_EQ(state_->status(), running | kStatusNeedsReset);
  EXPECT_THAT(state_->last_error(),
              StatusIs(absl::StatusCode::kDataLoss, "backend gone"));
  EXPECT_EQ(driver_->config_interrupts(), 1);
  // Again: nothing changes, the first reason stays.
  device_.ctx->MarkNeedsReset(absl::InternalError("second"));
  EXPECT_THAT(state_->last_error(), StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_EQ(driver_->config_interrupts(), 1);
  EXPECT_EQ(state_->stats().config_interrupts, 1u);
  // The device is not served until reset.
  PostAndKick(0);
  EXPECT_THAT(device_.processed, IsEmpty());
  EXPECT_EQ(state_->stats().spurious_notifications, 1u);
  EXPECT_EQ(driver_->queue(0).used_idx(), 0);
  driver_->Reset();
  EXPECT_EQ(state_->status(), 0);
  EXPECT_OK(state_->last_error());
  EXPECT_EQ(device_.resets, 2);  // the probe starts with a reset too
}

TEST_F(DeviceStateTest, MarkNeedsResetBeforeDriverOk) {
  state_->MarkNeedsReset(absl::InternalError("at status 0"));
  EXPECT_EQ(state_->status(), 0);  // nothing to mark on a reset device
  EXPECT_OK(state_->last_error());
  state_->SetStatus(kAckDriver);
  state_->MarkNeedsReset(absl::InternalError("early"));
  EXPECT_EQ(state_->status(), kAckDriver | kStatusNeedsReset);
  // §2.1.2: the notification is owed only once DRIVER_OK is set.
  EXPECT_EQ(driver_->config_interrupts(), 0);
  // A device that needs a reset does not start.
  WriteFeatures(Features::Of({kFVersion1}));
  state_->SetStatus(kModernReady | kStatusNeedsReset);
  ConfigureQueue(0, 0x100000);
  state_->EnableQueue(0);
  state_->SetStatus(state_->status() | kStatusDriverOk);
  EXPECT_FALSE(state_->active());
  EXPECT_EQ(device_.activations, 0);
}

TEST_F(DeviceStateTest, BrokenRingNeedsResetAfterNotify) {
  ASSERT_OK(driver_->Start(Features()));
  // avail.idx jumps by more than the queue size.
  driver_->queue(0).SetAvailIdx(16 + 5);
  driver_->Kick(0);
  EXPECT_THAT(device_.processed, ElementsAre(0));
  EXPECT_TRUE(state_->status() & kStatusNeedsReset);
  EXPECT_THAT(state_->last_error(),
              StatusIs(absl::StatusCode::kOutOfRange,
                       QueueErrorName(QueueError::kAvailIndexJump)));
  EXPECT_EQ(driver_->config_interrupts(), 1);
  driver_->Kick(0);
  EXPECT_THAT(device_.processed, ElementsAre(0));
  EXPECT_EQ(driver_->config_interrupts(), 1);
}

TEST_F(DeviceStateTest, HeadOutOfRangeNeedsResetAfterNotify) {
  ASSERT_OK(driver_->Start(Features()));
  driver_->queue(1).SetAvailEntry(0, 99);
  driver_->queue(1).SetAvailIdx(1);
  driver_->Kick(1);
  EXPECT_THAT(state_->last_error(),
              StatusIs(absl::StatusCode::kOutOfRange,
                       QueueErrorName(QueueError::kHeadOutOfRange)));
  EXPECT_EQ(driver_->config_interrupts(), 1);
}

// ---- Configuration space (§2.5).

TEST_F(DeviceStateTest, ConfigReadsAtEveryWidthAndOffset) {
  std::vector<uint8_t> image(kConfigSize);
  device_.config.Read(0, absl::MakeSpan(image), Endian::kLittle);
  for (uint32_t width : {1u, 2u, 4u, 8u}) {
    for (uint64_t offset :
         {0ull, 4ull, 6ull, 12ull, 15ull, 16ull, 17ull, 0xfffffff8ull,
          0xffffffffull - width + 1, 0xffffffffull}) {
      SCOPED_TRACE(::testing::Message()
                   << "width " << width << " offset " << offset);
      std::vector<uint8_t> buf(width, 0xEE);
      const int reads_before = device_.config_reads;
      state_->ReadConfig(static_cast<uint32_t>(offset), absl::MakeSpan(buf),
                         Endian::kLittle);
      std::vector<uint8_t> expected(width, 0);
      for (uint32_t i = 0; i < width; ++i) {
        if (offset + i < kConfigSize) expected[i] = image[offset + i];
      }
      EXPECT_EQ(buf, expected);
      // Entirely beyond: the device is not asked.
      if (offset >= kConfigSize) {
        EXPECT_EQ(device_.config_reads, reads_before);
      }
    }
  }
}

TEST_F(DeviceStateTest, ConfigWritesBeyondTheEndAreDropped) {
  for (uint32_t width : {1u, 2u, 4u, 8u}) {
    SCOPED_TRACE(width);
    device_.config_writes.clear();
    const std::vector<uint8_t> data(width, 0x77);
    state_->WriteConfig(kConfigSize, data, Endian::kLittle);
    state_->WriteConfig(0xffffffff, data, Endian::kLittle);
    state_->WriteConfig(0xffffffff - width + 1, data, Endian::kBig);
    EXPECT_THAT(device_.config_writes, IsEmpty());
    // Inside: passed on whole, with the byte order given.
    state_->WriteConfig(0, data, Endian::kBig);
    ASSERT_EQ(device_.config_writes.size(), 1u);
    EXPECT_EQ(device_.config_writes[0].offset, 0u);
    EXPECT_EQ(device_.config_writes[0].data, data);
    EXPECT_EQ(device_.config_writes[0].endian, Endian::kBig);
    // Straddling the end: only the part inside.
    state_->WriteConfig(kConfigSize - 1, data, Endian::kLittle);
    ASSERT_EQ(device_.config_writes.size(), 2u);
    EXPECT_EQ(device_.config_writes[1].offset, kConfigSize - 1);
    EXPECT_THAT(device_.config_writes[1].data, ElementsAre(0x77));
  }
}

TEST_F(DeviceStateTest, EmptyConfigAccesses) {
  state_->ReadConfig(0, absl::Span<uint8_t>(), Endian::kBig);
  state_->ReadConfig(kConfigSize, absl::Span<uint8_t>(), Endian::kLittle);
  state_->WriteConfig(kConfigSize, absl::Span<const uint8_t>(),
                      Endian::kLittle);
  EXPECT_THAT(device_.config_writes, IsEmpty());
  EXPECT_EQ(state_->config_generation(), device_.config.generation());
}

TEST_F(DeviceStateTest, DeviceWithoutConfigSpace) {
  // The interface's defaults: no config space at all.
  class Bare final : public VirtioDevice {
   public:
    DeviceType type() const override { return DeviceType::kRng; }
    absl::Span<const uint16_t> queue_max_sizes() const override {
      return sizes_;
    }
    Features offered_features() const override {
      return Features::Of({kFVersion1});
    }
    absl::Status Activate(DeviceContext&) override { return absl::OkStatus(); }
    void Reset() override {}
    void ProcessQueue(uint16_t) override {}

   private:
    uint16_t sizes_[1] = {8};
  } bare;
  DeviceState state(bare, *memory_);
  EXPECT_EQ(state.config_size(), 0u);
  EXPECT_EQ(state.config_generation(), 0u);
  std::vector<uint8_t> buf(4, 0xEE);
  state.ReadConfig(0, absl::MakeSpan(buf), Endian::kLittle);
  EXPECT_THAT(buf, Each(0));
  state.WriteConfig(0, buf, Endian::kLittle);
  EXPECT_EQ(state.num_queues(), 1);
}

TEST_F(DeviceStateTest, DestroyingAnActiveStateResetsTheDevice) {
  ASSERT_OK(driver_->Start(Features()));
  driver_.reset();
  state_.reset();
  EXPECT_EQ(device_.resets, 2);  // the probe starts with a reset too
}

}  // namespace
}  // namespace vmmkit::virtio
