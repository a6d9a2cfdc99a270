#include "virtio-device/rng.h"

#include <memory>

#include "base/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "virtio-device/device_state.h"
#include "virtio-device/testing/test_driver.h"

namespace vmmkit::virtio {
namespace {

using ::vmmkit::virtio::testing::TestDriver;
using ::vmmkit::virtqueue::GuestMemoryMmap;
using ::vmmkit::virtqueue::VirtqUsedElem;

struct Mode {
  const char* name;
  bool legacy;
  Endian guest_endian;
};

class RngTest : public ::testing::TestWithParam<Mode> {
 protected:
  void SetUp() override {
    auto mem = GuestMemoryMmap::Create({{.guest_base = 0, .size = 16 << 20}});
    ASSERT_OK(mem.status());
    memory_ = *std::move(mem);
    state_ = std::make_unique<DeviceState>(
        rng_, *memory_,
        DeviceState::Options{.guest_endian = GetParam().guest_endian});
    driver_ = std::make_unique<TestDriver>(
        *state_, *memory_, TestDriver::Options{.legacy = GetParam().legacy});
  }

  RngDevice rng_;
  std::unique_ptr<GuestMemoryMmap> memory_;
  std::unique_ptr<DeviceState> state_;
  std::unique_ptr<TestDriver> driver_;
};

TEST_P(RngTest, FillsEveryWritableByte) {
  ASSERT_OK(driver_->Start(Features::Of({kFEventIdx, kFIndirectDesc})));
  EXPECT_EQ(state_->legacy(), GetParam().legacy);
  const uint64_t a = driver_->Alloc(64);
  const uint64_t b = driver_->Alloc(4096);
  ASSERT_OK(
      driver_->queue(0).AddChain({{a, 64, true}, {b, 4096, true}}).status());
  driver_->Kick(0);
  std::optional<VirtqUsedElem> used = driver_->queue(0).PopUsed();
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(used->len, 64u + 4096u);
  std::vector<uint8_t> bytes = driver_->Get(b, 4096);
  int nonzero = 0;
  for (uint8_t x : bytes) nonzero += x != 0;
  EXPECT_GT(nonzero, 3500);  // 4096 random bytes are not mostly zero
  EXPECT_EQ(driver_->queue_interrupts(0), 1);
  EXPECT_EQ(rng_.stats().requests, 1u);
  EXPECT_EQ(rng_.stats().bytes, 4160u);
}

TEST_P(RngTest, IndirectChain) {
  ASSERT_OK(driver_->Start(Features::Of({kFIndirectDesc})));
  const uint64_t table = driver_->Alloc(64);
  const uint64_t a = driver_->Alloc(100);
  const uint64_t b = driver_->Alloc(28);
  const virtqueue::testing::DriverQueue::Buffer bufs[] = {{a, 100, true},
                                                          {b, 28, true}};
  ASSERT_OK(driver_->queue(0).AddIndirectChain(table, bufs).status());
  driver_->Kick(0);
  std::optional<VirtqUsedElem> used = driver_->queue(0).PopUsed();
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(used->len, 128u);
}

TEST_P(RngTest, MalformedChainSetsNeedsReset) {
  ASSERT_OK(driver_->Start(Features()));
  // A descriptor pointing past the end of guest memory.
  driver_->queue(0).WriteDesc(0, (16 << 20) - 8, 64, virtqueue::kDescFWrite, 0);
  driver_->queue(0).Publish(0);
  driver_->Kick(0);
  EXPECT_TRUE(state_->status() & kStatusNeedsReset);
  EXPECT_EQ(driver_->config_interrupts(), 1);
  EXPECT_THAT(state_->last_error(),
              vmmkit::testing::StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_FALSE(driver_->queue(0).PopUsed().has_value());
  // Further kicks are ignored until reset; a reset brings the device back.
  driver_->Kick(0);
  driver_->Reset();
  EXPECT_EQ(state_->status(), 0);
  ASSERT_OK(driver_->Start(Features()));
  const uint64_t a = driver_->Alloc(16);
  ASSERT_OK(driver_->queue(0).AddChain({{a, 16, true}}).status());
  driver_->Kick(0);
  EXPECT_TRUE(driver_->queue(0).PopUsed().has_value());
}

TEST_P(RngTest, ResetMidIoTouchesNothing) {
  ASSERT_OK(driver_->Start(Features()));
  const uint64_t a = driver_->Alloc(16);
  ASSERT_OK(driver_->queue(0).AddChain({{a, 16, true}}).status());
  driver_->Reset();
  driver_->Kick(0);  // after reset: ignored
  EXPECT_EQ(driver_->queue(0).used_idx(), 0);
  EXPECT_EQ(rng_.stats().requests, 0u);
}

INSTANTIATE_TEST_SUITE_P(
    Modes, RngTest,
    ::testing::Values(Mode{"Modern", false, Endian::kLittle},
                      Mode{"LegacyLittleEndian", true, Endian::kLittle},
                      Mode{"LegacyBigEndian", true, Endian::kBig}),
    [](const ::testing::TestParamInfo<Mode>& info) { return info.param.name; });

}  // namespace
}  // namespace vmmkit::virtio
