#include "pci/function.h"

#include <cstdint>
#include <vector>

#include "base/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vmmkit::pci {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::vmmkit::testing::StatusIs;
using Code = absl::StatusCode;

// A region that behaves like memory and remembers its last access.
class RamRegion : public RegionHandler {
 public:
  explicit RamRegion(size_t size) : bytes(size) {}
  void Read(uint64_t offset, absl::Span<uint8_t> data) override {
    last_offset = offset;
    last_size = data.size();
    for (size_t i = 0; i < data.size(); ++i) data[i] = bytes.at(offset + i);
  }
  void Write(uint64_t offset, absl::Span<const uint8_t> data) override {
    last_offset = offset;
    last_size = data.size();
    for (size_t i = 0; i < data.size(); ++i) bytes.at(offset + i) = data[i];
  }
  std::vector<uint8_t> bytes;
  uint64_t last_offset = ~uint64_t{0};
  size_t last_size = 0;
};

class RecordingIntx : public IntxSink {
 public:
  void SetIntx(bool asserted) override { levels.push_back(asserted); }
  std::vector<bool> levels;
};

class RecordingMsi : public MsiSink {
 public:
  void SendMsi(uint64_t address, uint32_t data) override {
    sent.push_back({address, data});
  }
  std::vector<std::pair<uint64_t, uint32_t>> sent;
};

ConfigSpace::Options Ids() {
  return {.vendor_id = 0x1234,
          .device_id = 0x5678,
          .class_code = 0xff0000,
          .interrupt_pin = 1};
}

TEST(GenericPciFunctionTest, RegionsReceiveRelativeOffsets) {
  GenericPciFunction fn(Ids());
  RamRegion a(0x100), b(0x10);
  ASSERT_OK(fn.AddBar(0, {.type = BarType::kMemory32, .size = 0x1000}));
  ASSERT_OK(fn.AddRegion(0, 0x0, 0x100, &a));
  ASSERT_OK(fn.AddRegion(0, 0x200, 0x10, &b));
  const uint8_t w[4] = {1, 2, 3, 4};
  fn.BarWrite(0, 0x20c, w);
  EXPECT_EQ(b.last_offset, 0xcu);
  EXPECT_THAT(absl::MakeConstSpan(b.bytes).subspan(0xc),
              ElementsAre(1, 2, 3, 4));
  uint8_t r[4] = {};
  fn.BarRead(0, 0x20c, absl::MakeSpan(r));
  EXPECT_THAT(r, ElementsAre(1, 2, 3, 4));
  fn.BarWrite(0, 0x10, w);
  EXPECT_EQ(a.last_offset, 0x10u);
  EXPECT_EQ(a.last_size, 4u);
}

TEST(GenericPciFunctionTest, HolesAndStraddlesReadAllOnes) {
  GenericPciFunction fn(Ids());
  RamRegion a(0x100);
  ASSERT_OK(fn.AddBar(0, {.type = BarType::kMemory32, .size = 0x1000}));
  ASSERT_OK(fn.AddRegion(0, 0x0, 0x100, &a));
  uint8_t r[4] = {};
  fn.BarRead(0, 0x800, absl::MakeSpan(r));
  EXPECT_THAT(r, ElementsAre(0xff, 0xff, 0xff, 0xff));
  fn.BarRead(0, 0xfe, absl::MakeSpan(r));  // crosses the region's end
  EXPECT_THAT(r, ElementsAre(0xff, 0xff, 0xff, 0xff));
  fn.BarRead(3, 0, absl::MakeSpan(r));  // no such BAR
  EXPECT_THAT(r, ElementsAre(0xff, 0xff, 0xff, 0xff));
  fn.BarRead(0, ~uint64_t{0}, absl::MakeSpan(r));
  EXPECT_THAT(r, ElementsAre(0xff, 0xff, 0xff, 0xff));
  const uint8_t w[4] = {9, 9, 9, 9};
  fn.BarWrite(0, 0xfe, w);
  fn.BarWrite(0, 0x800, w);
  fn.BarWrite(-1, 0, w);
  EXPECT_EQ(a.last_size, 0u);  // never reached
}

TEST(GenericPciFunctionTest, AddRegionErrors) {
  GenericPciFunction fn(Ids());
  RamRegion a(0x100);
  ASSERT_OK(fn.AddBar(2, {.type = BarType::kIo, .size = 0x40}));
  EXPECT_THAT(fn.AddRegion(0, 0, 4, &a), StatusIs(Code::kInvalidArgument));
  EXPECT_THAT(fn.AddRegion(2, 0, 0x41, &a), StatusIs(Code::kInvalidArgument));
  EXPECT_THAT(fn.AddRegion(2, 0x40, 1, &a), StatusIs(Code::kInvalidArgument));
  EXPECT_THAT(fn.AddRegion(2, 0, 0, &a), StatusIs(Code::kInvalidArgument));
  EXPECT_THAT(fn.AddRegion(2, 0, 4, nullptr), StatusIs(Code::kInvalidArgument));
  EXPECT_THAT(fn.AddRegion(2, ~uint64_t{0}, 2, &a),
              StatusIs(Code::kInvalidArgument));
  ASSERT_OK(fn.AddRegion(2, 0x10, 0x10, &a));
  EXPECT_THAT(fn.AddRegion(2, 0x1c, 8, &a), StatusIs(Code::kAlreadyExists));
  EXPECT_THAT(fn.AddRegion(2, 0x8, 9, &a), StatusIs(Code::kAlreadyExists));
  ASSERT_OK(fn.AddRegion(2, 0x20, 0x20, &a));
  ASSERT_OK(fn.AddRegion(2, 0x0, 0x10, &a));
}

TEST(GenericPciFunctionTest, MsixThroughTheBar) {
  GenericPciFunction fn(Ids());
  RecordingMsi sink;
  RamRegion regs(0x100);
  ASSERT_OK(fn.AddBar(1, {.type = BarType::kMemory32, .size = 0x4000}));
  ASSERT_OK(fn.AddRegion(1, 0, 0x100, &regs));
  EXPECT_EQ(fn.msix(), nullptr);
  // Overlapping an existing region: refused, and nothing added.
  EXPECT_THAT(fn.AddMsix({.num_vectors = 2,
                          .table_bar = 1,
                          .table_offset = 0,
                          .pba_bar = 1,
                          .pba_offset = 0x3000},
                         &sink),
              StatusIs(Code::kAlreadyExists));
  EXPECT_EQ(fn.config_space().FindCapability(kCapIdMsix), std::nullopt);
  ASSERT_OK_AND_ASSIGN(MsixController * msix,
                       fn.AddMsix({.num_vectors = 2,
                                   .table_bar = 1,
                                   .table_offset = 0x2000,
                                   .pba_bar = 1,
                                   .pba_offset = 0x3000},
                                  &sink));
  EXPECT_EQ(fn.msix(), msix);
  EXPECT_THAT(fn.AddMsix({.num_vectors = 2,
                          .table_bar = 1,
                          .table_offset = 0x1000,
                          .pba_bar = 1,
                          .pba_offset = 0x1800},
                         &sink),
              StatusIs(Code::kAlreadyExists));
  // The driver programs vector 1 through the BAR and enables MSI-X through
  // config space.
  const uint8_t entry[16] = {0x00, 0x00, 0xe0, 0xfe, 0, 0, 0, 0,
                             0x41, 0x00, 0x00, 0x00, 0, 0, 0, 0};
  fn.BarWrite(1, 0x2010, absl::MakeConstSpan(entry, 8));
  fn.BarWrite(1, 0x2018, absl::MakeConstSpan(entry + 8, 8));
  const uint32_t cap = msix->capability_offset();
  const uint8_t enable[2] = {0x00, 0x80};
  fn.ConfigWrite(cap + 2, enable);
  ASSERT_OK(msix->Raise(1));
  EXPECT_THAT(sink.sent,
              ElementsAre(std::pair<uint64_t, uint32_t>{0xfee00000, 0x41}));
  uint8_t pba[8] = {1};
  fn.BarRead(1, 0x3000, absl::MakeSpan(pba));
  EXPECT_THAT(pba, ElementsAre(0, 0, 0, 0, 0, 0, 0, 0));
}

TEST(GenericPciFunctionTest, IntxFollowsLevelAndDisableBit) {
  GenericPciFunction fn(Ids());
  RecordingIntx pin;
  fn.set_intx_sink(&pin);
  fn.SetIntxLevel(true);
  EXPECT_TRUE(fn.intx_asserted());
  EXPECT_TRUE(fn.config_space().status() & kStatusInterrupt);
  // INTx Disable: the pin drops, the status bit stays.
  const uint8_t disable[2] = {0x00, 0x04};
  fn.ConfigWrite(kRegCommand, disable);
  EXPECT_FALSE(fn.intx_asserted());
  EXPECT_TRUE(fn.config_space().status() & kStatusInterrupt);
  fn.SetIntxLevel(false);
  fn.SetIntxLevel(true);
  const uint8_t enable[2] = {0x00, 0x00};
  fn.ConfigWrite(kRegCommand, enable);
  EXPECT_TRUE(fn.intx_asserted());
  fn.SetIntxLevel(false);
  EXPECT_FALSE(fn.config_space().status() & kStatusInterrupt);
  EXPECT_THAT(pin.levels, ElementsAre(true, false, true, false));
}

TEST(GenericPciFunctionTest, NoPinNoIntx) {
  ConfigSpace::Options o = Ids();
  o.interrupt_pin = 0;
  GenericPciFunction fn(o);
  RecordingIntx pin;
  fn.set_intx_sink(&pin);
  fn.SetIntxLevel(true);
  EXPECT_FALSE(fn.intx_asserted());
  EXPECT_THAT(pin.levels, IsEmpty());
}

}  // namespace
}  // namespace vmmkit::pci
