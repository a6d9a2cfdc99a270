#include "pci/msix.h"

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "base/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "pci/config_space.h"

namespace vmmkit::pci {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::vmmkit::testing::StatusIs;
using Code = absl::StatusCode;

struct Msi {
  uint64_t address;
  uint32_t data;
  friend bool operator==(const Msi&, const Msi&) = default;
};

class RecordingSink : public MsiSink {
 public:
  void SendMsi(uint64_t address, uint32_t data) override {
    sent.push_back({address, data});
  }
  std::vector<Msi> sent;
};

class MsixTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK(config_.AddBar(1, {.type = BarType::kMemory32, .size = 0x2000}));
    ASSERT_OK_AND_ASSIGN(msix_, MsixController::Create(config_,
                                                       {.num_vectors = 100,
                                                        .table_bar = 1,
                                                        .table_offset = 0,
                                                        .pba_bar = 1,
                                                        .pba_offset = 0x1000},
                                                       &sink_));
  }

  uint32_t CapOffset() const { return msix_->capability_offset(); }
  void WriteControl(uint16_t v) {
    const uint8_t b[2] = {static_cast<uint8_t>(v),
                          static_cast<uint8_t>(v >> 8)};
    config_.Write(CapOffset() + 2, b);
  }
  void Enable(bool function_mask = false) {
    WriteControl(kMsixEnable | (function_mask ? kMsixFunctionMask : 0));
  }
  void TableWrite32(uint64_t off, uint32_t v) {
    const uint8_t b[4] = {static_cast<uint8_t>(v), static_cast<uint8_t>(v >> 8),
                          static_cast<uint8_t>(v >> 16),
                          static_cast<uint8_t>(v >> 24)};
    msix_->TableWrite(off, b);
  }
  uint32_t TableRead32(uint64_t off) {
    uint8_t b[4];
    msix_->TableRead(off, absl::MakeSpan(b));
    return b[0] | (b[1] << 8) | (b[2] << 16) | (uint32_t{b[3]} << 24);
  }
  uint64_t PbaRead64(uint64_t off) {
    uint8_t b[8];
    msix_->PbaRead(off, absl::MakeSpan(b));
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= uint64_t{b[i]} << (8 * i);
    return v;
  }
  // Programs vector `v` and unmasks it, as a driver would.
  void Program(uint16_t v, uint64_t addr, uint32_t data, bool unmask = true) {
    TableWrite32(16 * v, static_cast<uint32_t>(addr));
    TableWrite32(16 * v + 4, static_cast<uint32_t>(addr >> 32));
    TableWrite32(16 * v + 8, data);
    if (unmask) TableWrite32(16 * v + 12, 0);
  }

  ConfigSpace config_{{.vendor_id = 0x1af4, .device_id = 0x1041}};
  RecordingSink sink_;
  std::unique_ptr<MsixController> msix_;
};

TEST_F(MsixTest, Capability) {
  const uint32_t at = CapOffset();
  EXPECT_EQ(at, 0x40u);
  EXPECT_EQ(config_.Get8(at), kCapIdMsix);
  EXPECT_EQ(config_.Get16(at + 2), 99);  // table size N - 1
  EXPECT_EQ(config_.Get32(at + 4), 0x0u | 1);
  EXPECT_EQ(config_.Get32(at + 8), 0x1000u | 1);
  EXPECT_TRUE(config_.status() & kStatusCapabilityList);
  EXPECT_EQ(msix_->table_size(), 1600u);
  EXPECT_EQ(msix_->pba_size(), 16u);
  // Only Enable and Function Mask are writable.
  WriteControl(0xffff);
  EXPECT_EQ(config_.Get16(at + 2), 0xc000 | 99);
  EXPECT_TRUE(msix_->enabled());
  EXPECT_TRUE(msix_->function_masked());
  const uint8_t ones[4] = {0xff, 0xff, 0xff, 0xff};
  config_.Write(at + 4, ones);
  config_.Write(at + 8, ones);
  EXPECT_EQ(config_.Get32(at + 4), 0x0u | 1);
  EXPECT_EQ(config_.Get32(at + 8), 0x1000u | 1);
}

TEST_F(MsixTest, CreateErrors) {
  ConfigSpace c({});
  RecordingSink s;
  ASSERT_OK(c.AddBar(0, {.type = BarType::kIo, .size = 0x100}));
  ASSERT_OK(c.AddBar(1, {.type = BarType::kMemory32, .size = 0x1000}));
  auto create = [&](MsixController::Options o, MsiSink* sink) {
    return MsixController::Create(c, o, sink);
  };
  EXPECT_THAT(
      create(
          {.num_vectors = 0, .table_bar = 1, .pba_bar = 1, .pba_offset = 0x800},
          &s),
      StatusIs(Code::kInvalidArgument));
  EXPECT_THAT(create({.num_vectors = 2049,
                      .table_bar = 1,
                      .pba_bar = 1,
                      .pba_offset = 0x800},
                     &s),
              StatusIs(Code::kInvalidArgument));
  EXPECT_THAT(
      create(
          {.num_vectors = 1, .table_bar = 1, .pba_bar = 1, .pba_offset = 0x800},
          nullptr),
      StatusIs(Code::kInvalidArgument));
  // I/O BAR, missing BAR, bad BAR index.
  EXPECT_THAT(
      create(
          {.num_vectors = 1, .table_bar = 0, .pba_bar = 1, .pba_offset = 0x800},
          &s),
      StatusIs(Code::kInvalidArgument));
  EXPECT_THAT(
      create(
          {.num_vectors = 1, .table_bar = 2, .pba_bar = 1, .pba_offset = 0x800},
          &s),
      StatusIs(Code::kInvalidArgument));
  EXPECT_THAT(
      create(
          {.num_vectors = 1, .table_bar = 7, .pba_bar = 1, .pba_offset = 0x800},
          &s),
      StatusIs(Code::kInvalidArgument));
  // Misaligned, too big for the BAR, overlapping.
  EXPECT_THAT(create({.num_vectors = 1,
                      .table_bar = 1,
                      .table_offset = 4,
                      .pba_bar = 1,
                      .pba_offset = 0x800},
                     &s),
              StatusIs(Code::kInvalidArgument));
  EXPECT_THAT(create({.num_vectors = 200,
                      .table_bar = 1,
                      .pba_bar = 1,
                      .pba_offset = 0xff8},
                     &s),
              StatusIs(Code::kInvalidArgument));
  EXPECT_THAT(
      create(
          {.num_vectors = 4, .table_bar = 1, .pba_bar = 1, .pba_offset = 0x38},
          &s),
      StatusIs(Code::kInvalidArgument));
  EXPECT_THAT(create({.num_vectors = 1,
                      .table_bar = 1,
                      .pba_bar = 1,
                      .pba_offset = 0x1000},
                     &s),
              StatusIs(Code::kInvalidArgument));
  // No capability was left behind.
  EXPECT_EQ(c.FindCapability(kCapIdMsix), std::nullopt);
}

TEST_F(MsixTest, EntriesStartMaskedAndZero) {
  for (uint16_t v : {0, 50, 99}) {
    EXPECT_EQ(TableRead32(16 * v), 0u);
    EXPECT_EQ(TableRead32(16 * v + 4), 0u);
    EXPECT_EQ(TableRead32(16 * v + 8), 0u);
    EXPECT_EQ(TableRead32(16 * v + 12), kMsixVectorMasked);
    EXPECT_EQ(msix_->message(v), (MsiMessage{0, 0, true}));
  }
  EXPECT_EQ(msix_->message(100), (MsiMessage{0, 0, true}));
}

TEST_F(MsixTest, TableDwordAndQwordAccesses) {
  TableWrite32(16 * 3, 0xfee01000);
  TableWrite32(16 * 3 + 4, 0x1);
  TableWrite32(16 * 3 + 8, 0x4041);
  TableWrite32(16 * 3 + 12, 0xfffffffe);  // reserved bits read zero
  EXPECT_EQ(msix_->message(3), (MsiMessage{0x1fee01000, 0x4041, false}));
  EXPECT_EQ(TableRead32(16 * 3 + 12), 0u);
  uint8_t q[8];
  msix_->TableRead(16 * 3, absl::MakeSpan(q));
  EXPECT_THAT(q, ElementsAre(0x00, 0x10, 0xe0, 0xfe, 0x01, 0, 0, 0));
  const uint8_t w[8] = {0x22, 0, 0, 0, 0x01, 0, 0, 0};  // data, masked
  msix_->TableWrite(16 * 3 + 8, w);
  EXPECT_EQ(msix_->message(3), (MsiMessage{0x1fee01000, 0x22, true}));
}

TEST_F(MsixTest, MalformedTableAndPbaAccesses) {
  Program(0, 0xfee00000, 1);
  uint8_t b2[2] = {};
  msix_->TableRead(0, absl::MakeSpan(b2));
  EXPECT_THAT(b2, ElementsAre(0xff, 0xff));
  uint8_t b4[4] = {};
  msix_->TableRead(2, absl::MakeSpan(b4));  // misaligned
  EXPECT_THAT(b4, ElementsAre(0xff, 0xff, 0xff, 0xff));
  msix_->TableRead(1600, absl::MakeSpan(b4));  // past the table
  EXPECT_THAT(b4, ElementsAre(0xff, 0xff, 0xff, 0xff));
  uint8_t b8[8] = {};
  msix_->TableRead(4, absl::MakeSpan(b8));  // QWORD not QWORD-aligned
  EXPECT_EQ(b8[0], 0xff);
  msix_->TableRead(~uint64_t{0} - 3, absl::MakeSpan(b4));
  EXPECT_THAT(b4, ElementsAre(0xff, 0xff, 0xff, 0xff));
  const uint8_t zero2[2] = {};
  msix_->TableWrite(8, zero2);
  const uint8_t zero4[4] = {};
  msix_->TableWrite(9, zero4);
  msix_->TableWrite(1600, zero4);
  msix_->TableWrite(~uint64_t{0} - 3, zero4);
  EXPECT_EQ(msix_->message(0), (MsiMessage{0xfee00000, 1, false}));
  msix_->PbaRead(16, absl::MakeSpan(b4));
  EXPECT_THAT(b4, ElementsAre(0xff, 0xff, 0xff, 0xff));
  msix_->PbaRead(2, absl::MakeSpan(b4));
  EXPECT_THAT(b4, ElementsAre(0xff, 0xff, 0xff, 0xff));
}

TEST_F(MsixTest, RaiseRejectsOutOfRangeAndDisabled) {
  EXPECT_THAT(msix_->Raise(100), StatusIs(Code::kOutOfRange));
  EXPECT_THAT(msix_->Raise(0xffff), StatusIs(Code::kOutOfRange));
  EXPECT_THAT(msix_->ClearPending(100), StatusIs(Code::kOutOfRange));
  Program(0, 0xfee00000, 7);
  EXPECT_THAT(msix_->Raise(0), StatusIs(Code::kFailedPrecondition));
  EXPECT_FALSE(msix_->pending(0));
  EXPECT_THAT(sink_.sent, IsEmpty());
  EXPECT_FALSE(msix_->pending(100));
}

TEST_F(MsixTest, UnmaskedVectorIsSentAtOnce) {
  Enable();
  Program(5, 0xfee00000, 0x31);
  ASSERT_OK(msix_->Raise(5));
  EXPECT_THAT(sink_.sent, ElementsAre(Msi{0xfee00000, 0x31}));
  EXPECT_FALSE(msix_->pending(5));
}

TEST_F(MsixTest, MaskedVectorPendsAndIsDeliveredOnUnmask) {
  Enable();
  Program(70, 0xfee00000, 0x70, /*unmask=*/false);
  ASSERT_OK(msix_->Raise(70));
  ASSERT_OK(msix_->Raise(70));  // still one pending bit
  EXPECT_THAT(sink_.sent, IsEmpty());
  EXPECT_TRUE(msix_->pending(70));
  EXPECT_EQ(PbaRead64(0), 0u);
  EXPECT_EQ(PbaRead64(8), uint64_t{1} << 6);
  uint8_t b4[4];
  msix_->PbaRead(12, absl::MakeSpan(b4));
  EXPECT_THAT(b4, ElementsAre(0, 0, 0, 0));
  // The PBA is read-only.
  const uint8_t zero8[8] = {};
  msix_->PbaWrite(8, zero8);
  EXPECT_TRUE(msix_->pending(70));
  // Change the message while masked: the new one is what gets sent.
  TableWrite32(16 * 70 + 8, 0x71);
  EXPECT_THAT(sink_.sent, IsEmpty());
  TableWrite32(16 * 70 + 12, 0);
  EXPECT_THAT(sink_.sent, ElementsAre(Msi{0xfee00000, 0x71}));
  EXPECT_FALSE(msix_->pending(70));
  EXPECT_EQ(PbaRead64(8), 0u);
}

TEST_F(MsixTest, FunctionMaskPendsAndIsDeliveredWhenCleared) {
  Enable(/*function_mask=*/true);
  Program(1, 0xfee00000, 1);
  Program(2, 0xfee00000, 2);
  Program(3, 0xfee00000, 3, /*unmask=*/false);
  ASSERT_OK(msix_->Raise(2));
  ASSERT_OK(msix_->Raise(3));
  ASSERT_OK(msix_->Raise(1));
  EXPECT_THAT(sink_.sent, IsEmpty());
  EXPECT_EQ(PbaRead64(0), 0b1110u);
  Enable(/*function_mask=*/false);
  // Vector 3 keeps its own mask.
  EXPECT_THAT(sink_.sent, ElementsAre(Msi{0xfee00000, 1}, Msi{0xfee00000, 2}));
  EXPECT_EQ(PbaRead64(0), 0b1000u);
}

TEST_F(MsixTest, PendingSurvivesDisableAndIsSentWhenReenabled) {
  Enable(/*function_mask=*/true);
  Program(0, 0xfee00000, 9);
  ASSERT_OK(msix_->Raise(0));
  WriteControl(0);  // disable and unmask: nothing may be sent
  EXPECT_THAT(sink_.sent, IsEmpty());
  EXPECT_TRUE(msix_->pending(0));
  Enable();
  EXPECT_THAT(sink_.sent, ElementsAre(Msi{0xfee00000, 9}));
}

TEST_F(MsixTest, ClearPending) {
  Enable();
  Program(4, 0xfee00000, 4, /*unmask=*/false);
  ASSERT_OK(msix_->Raise(4));
  ASSERT_OK(msix_->ClearPending(4));
  TableWrite32(16 * 4 + 12, 0);
  EXPECT_THAT(sink_.sent, IsEmpty());
}

TEST_F(MsixTest, ObserverHearsEntryAndControlChanges) {
  std::vector<uint16_t> vectors;
  std::vector<std::pair<bool, bool>> controls;
  msix_->SetObserver([&](uint16_t v) { vectors.push_back(v); },
                     [&](bool e, bool m) {
                       controls.push_back({e, m});
                     });
  TableWrite32(16 * 9, 0xfee00000);
  TableWrite32(16 * 9, 0xfee00000);  // unchanged: no call
  TableWrite32(16 * 9 + 12, 0);
  EXPECT_THAT(vectors, ElementsAre(9, 9));
  Enable(true);
  Enable(true);
  Enable(false);
  WriteControl(0);
  EXPECT_THAT(controls,
              ElementsAre(std::pair{true, true}, std::pair{true, false},
                          std::pair{false, false}));
}

TEST_F(MsixTest, Reset) {
  Enable(true);
  Program(0, 0xfee00000, 1);
  ASSERT_OK(msix_->Raise(0));
  msix_->Reset();
  EXPECT_FALSE(msix_->enabled());
  EXPECT_FALSE(msix_->function_masked());
  EXPECT_FALSE(msix_->pending(0));
  EXPECT_EQ(msix_->message(0), (MsiMessage{0, 0, true}));
  EXPECT_EQ(config_.Get16(CapOffset() + 2), 99);
}

}  // namespace
}  // namespace vmmkit::pci
