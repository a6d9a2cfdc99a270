#include "pci/config_space.h"

#include <cstdint>
#include <utility>
#include <vector>

#include "base/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vmmkit::pci {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::vmmkit::testing::StatusIs;

uint32_t ReadN(ConfigSpace& c, uint32_t offset, size_t width) {
  uint8_t b[8] = {};
  c.Read(offset, absl::MakeSpan(b, width));
  uint32_t v = 0;
  for (size_t i = 0; i < width && i < 4; ++i) v |= uint32_t{b[i]} << (8 * i);
  return v;
}
uint32_t Read32(ConfigSpace& c, uint32_t o) { return ReadN(c, o, 4); }
uint16_t Read16(ConfigSpace& c, uint32_t o) { return ReadN(c, o, 2); }
uint8_t Read8(ConfigSpace& c, uint32_t o) { return ReadN(c, o, 1); }

void WriteN(ConfigSpace& c, uint32_t offset, uint32_t value, size_t width) {
  uint8_t b[4];
  for (int i = 0; i < 4; ++i) b[i] = (value >> (8 * i)) & 0xff;
  c.Write(offset, absl::MakeConstSpan(b, width));
}
void Write32(ConfigSpace& c, uint32_t o, uint32_t v) { WriteN(c, o, v, 4); }
void Write16(ConfigSpace& c, uint32_t o, uint16_t v) { WriteN(c, o, v, 2); }
void Write8(ConfigSpace& c, uint32_t o, uint8_t v) { WriteN(c, o, v, 1); }

ConfigSpace::Options Ids() {
  return {.vendor_id = 0x1af4,
          .device_id = 0x1041,
          .revision_id = 1,
          .class_code = 0x020000,
          .subsystem_vendor_id = 0x1af4,
          .subsystem_id = 0x1100,
          .interrupt_pin = 1};
}

TEST(ConfigSpaceTest, HeaderFields) {
  ConfigSpace c(Ids());
  EXPECT_EQ(c.size(), kConfigSpaceSize);
  EXPECT_EQ(Read32(c, kRegVendorId), 0x10411af4u);
  EXPECT_EQ(Read8(c, kRegRevisionId), 1);
  EXPECT_EQ(Read32(c, kRegRevisionId), 0x02000001u);  // class | revision
  EXPECT_EQ(Read8(c, kRegHeaderType), 0);
  EXPECT_EQ(Read16(c, kRegSubsystemVendorId), 0x1af4);
  EXPECT_EQ(Read16(c, kRegSubsystemId), 0x1100);
  EXPECT_EQ(Read8(c, kRegInterruptPin), 1);
  EXPECT_EQ(Read8(c, kRegCapabilitiesPointer), 0);
  EXPECT_EQ(Read16(c, kRegStatus), 0);
  EXPECT_EQ(Read16(c, kRegCommand), 0);
}

TEST(ConfigSpaceTest, MultiFunctionBit) {
  ConfigSpace::Options o = Ids();
  o.multi_function = true;
  ConfigSpace c(o);
  EXPECT_EQ(Read8(c, kRegHeaderType), kHeaderTypeMultiFunction);
  c.SetMultiFunction(false);
  EXPECT_EQ(Read8(c, kRegHeaderType), 0);
}

TEST(ConfigSpaceTest, ReadOnlyFieldsIgnoreWrites) {
  ConfigSpace c(Ids());
  Write32(c, kRegVendorId, 0);
  Write32(c, kRegRevisionId, 0xffffffff);
  Write16(c, kRegSubsystemId, 0);
  Write8(c, kRegInterruptPin, 4);
  Write8(c, kRegCapabilitiesPointer, 0x40);
  Write32(c, kRegExpansionRom, 0xffffffff);
  Write8(c, 0x80, 0x55);
  EXPECT_EQ(Read32(c, kRegVendorId), 0x10411af4u);
  EXPECT_EQ(Read32(c, kRegRevisionId), 0x02000001u);
  EXPECT_EQ(Read16(c, kRegSubsystemId), 0x1100);
  EXPECT_EQ(Read8(c, kRegInterruptPin), 1);
  EXPECT_EQ(Read8(c, kRegCapabilitiesPointer), 0);
  EXPECT_EQ(Read32(c, kRegExpansionRom), 0u);
  EXPECT_EQ(Read8(c, 0x80), 0);
}

TEST(ConfigSpaceTest, WritableFields) {
  ConfigSpace c(Ids());
  Write16(c, kRegCommand, 0xffff);
  EXPECT_EQ(Read16(c, kRegCommand), kCommandWritable);
  EXPECT_TRUE(c.io_enabled());
  EXPECT_TRUE(c.memory_enabled());
  EXPECT_TRUE(c.bus_master_enabled());
  EXPECT_TRUE(c.intx_disabled());
  Write8(c, kRegCommand, 0);  // low byte only
  EXPECT_EQ(Read16(c, kRegCommand), kCommandWritable & 0xff00);
  EXPECT_FALSE(c.io_enabled());
  EXPECT_TRUE(c.intx_disabled());
  Write8(c, kRegInterruptLine, 11);
  EXPECT_EQ(Read8(c, kRegInterruptLine), 11);
  Write8(c, kRegCacheLineSize, 16);
  EXPECT_EQ(Read8(c, kRegCacheLineSize), 16);
}

TEST(ConfigSpaceTest, StatusErrorBitsAreWriteOneToClear) {
  ConfigSpace c(Ids());
  c.SetInterruptStatus(true);
  c.Set16(kRegStatus, c.status() | kStatusW1c);
  ASSERT_EQ(Read16(c, kRegStatus), kStatusW1c | kStatusInterrupt);
  Write16(c, kRegStatus, 0);  // writing 0 changes nothing
  EXPECT_EQ(Read16(c, kRegStatus), kStatusW1c | kStatusInterrupt);
  Write16(c, kRegStatus, 1 << 13);  // clears just that bit
  EXPECT_EQ(Read16(c, kRegStatus),
            (kStatusW1c & ~(1 << 13)) | kStatusInterrupt);
  Write16(c, kRegStatus, 0xffff);  // interrupt status is read-only
  EXPECT_EQ(Read16(c, kRegStatus), kStatusInterrupt);
  // A dword write to command+status: the command half writes, status W1C.
  c.Set16(kRegStatus, c.status() | (1 << 15));
  Write32(c, kRegCommand, 0x80000002);
  EXPECT_EQ(Read16(c, kRegCommand), kCommandMemory);
  EXPECT_EQ(Read16(c, kRegStatus), kStatusInterrupt);
  c.SetInterruptStatus(false);
  EXPECT_EQ(Read16(c, kRegStatus), 0);
}

TEST(ConfigSpaceTest, MalformedAccessesReadAllOnesAndWriteNothing) {
  ConfigSpace c(Ids());
  uint8_t b3[3] = {0, 0, 0};
  c.Read(0, absl::MakeSpan(b3));
  EXPECT_THAT(b3, ElementsAre(0xff, 0xff, 0xff));
  uint8_t b8[8] = {};
  c.Read(0, absl::MakeSpan(b8));
  EXPECT_THAT(b8, ElementsAre(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff));
  c.Read(0, absl::Span<uint8_t>());        // zero width: nothing to fill
  EXPECT_EQ(Read32(c, 254), 0xffffffffu);  // crosses the end
  EXPECT_EQ(Read8(c, 256), 0xff);
  EXPECT_EQ(Read32(c, 0xfffffffe), 0xffffffffu);
  EXPECT_EQ(Read8(c, 255), 0);  // the last byte is fine
  const uint8_t cmd3[3] = {7, 0, 0};
  c.Write(kRegCommand, cmd3);
  const uint8_t cmd8[8] = {7, 0, 0, 0, 0, 0, 0, 0};
  c.Write(kRegCommand, cmd8);
  WriteN(c, 0xfffffffe, 0xffffffff, 4);
  EXPECT_EQ(Read16(c, kRegCommand), 0);
}

TEST(ConfigSpaceTest, UnalignedAccessesInsideTheSpace) {
  ConfigSpace c(Ids());
  EXPECT_EQ(Read32(c, 1), 0x0010411au);  // vendor high, device, command
  EXPECT_EQ(Read16(c, 3), 0x0010u);
  Write16(c, 3, 0xffff);  // high byte of device id (RO), command low byte
  EXPECT_EQ(Read16(c, kRegCommand), kCommandWritable & 0xff);
  EXPECT_EQ(Read16(c, kRegDeviceId), 0x1041);
}

TEST(ConfigSpaceTest, ExtendedSpace) {
  ConfigSpace::Options o = Ids();
  o.extended = true;
  ConfigSpace ext(o);
  EXPECT_EQ(ext.size(), kExtendedConfigSpaceSize);
  EXPECT_EQ(Read32(ext, 0x100), 0u);
  EXPECT_EQ(Read32(ext, 0xffc), 0u);
  EXPECT_EQ(Read32(ext, 0xffe), 0xffffffffu);
  ConfigSpace plain(Ids());
  EXPECT_EQ(Read32(plain, 0x100), 0xffffffffu);
}

TEST(ConfigSpaceTest, SetMasks) {
  ConfigSpace c(Ids());
  const uint8_t w[2] = {0xff, 0x0f};
  const uint8_t w1c[2] = {0x00, 0xf0};
  ASSERT_OK(c.SetMasks(0x90, w, w1c));
  c.Set16(0x90, 0xf000);
  Write16(c, 0x90, 0x3fab);
  EXPECT_EQ(Read16(c, 0x90), 0xcfab);
  EXPECT_THAT(c.SetMasks(0xff, w), StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(c.SetMasks(0x90, w, absl::MakeConstSpan(w1c, 1)),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

// --- BARs --------------------------------------------------------------

struct SizingCase {
  BarSpec spec;
  uint32_t low;   // what the low register reads after all-ones
  uint32_t high;  // the upper register of a 64-bit pair
};

class BarSizingTest
    : public ::testing::TestWithParam<std::tuple<SizingCase, int>> {};

TEST_P(BarSizingTest, WriteAllOnesReadsSizeMaskAtEveryWidth) {
  const auto& [sc, width] = GetParam();
  ConfigSpace c(Ids());
  ASSERT_OK(c.AddBar(2, sc.spec));
  const uint32_t reg = kRegBar0 + 8;
  const bool wide = sc.spec.type == BarType::kMemory64;
  // Save, size, restore, the way Linux's __pci_read_base does it, but in
  // pieces of `width` bytes.
  const uint32_t orig = Read32(c, reg);
  for (uint32_t i = 0; i < (wide ? 8u : 4u); i += width) {
    WriteN(c, reg + i, 0xffffffff, width);
  }
  uint32_t low = 0, high = 0;
  for (uint32_t i = 0; i < 4; i += width) {
    low |= ReadN(c, reg + i, width) << (8 * i);
    if (wide) high |= ReadN(c, reg + 4 + i, width) << (8 * i);
  }
  EXPECT_EQ(low, sc.low);
  if (wide) EXPECT_EQ(high, sc.high);
  uint64_t size =
      ~uint64_t{low & (sc.spec.type == BarType::kIo ? kBarIoAddressMask
                                                    : kBarMemAddressMask)};
  if (wide) {
    size = ~((uint64_t{high} << 32) | (low & kBarMemAddressMask));
  } else {
    size &= 0xffffffff;
  }
  EXPECT_EQ(size + 1, sc.spec.size);
  Write32(c, reg, orig);
  if (wide) Write32(c, reg + 4, 0);
  EXPECT_EQ(c.BarAddress(2), 0u);
  EXPECT_EQ(Read32(c, reg), orig);
}

INSTANTIATE_TEST_SUITE_P(
    Bars, BarSizingTest,
    ::testing::Combine(
        ::testing::Values(
            SizingCase{{BarType::kIo, 0x40, false}, 0xffffffc1, 0},
            SizingCase{{BarType::kIo, 4, false}, 0xfffffffd, 0},
            SizingCase{{BarType::kMemory32, 0x1000, false}, 0xfffff000, 0},
            SizingCase{{BarType::kMemory32, 0x1000, true}, 0xfffff008, 0},
            SizingCase{{BarType::kMemory32, 16, false}, 0xfffffff0, 0},
            SizingCase{
                {BarType::kMemory64, 0x4000, true}, 0xffffc00c, 0xffffffff},
            SizingCase{{BarType::kMemory64, uint64_t{1} << 33, false},
                       0x00000004,
                       0xfffffffe}),
        ::testing::Values(1, 2, 4)));

TEST(ConfigSpaceTest, BytesWrittenToPartsOfABar) {
  ConfigSpace c(Ids());
  ASSERT_OK(c.AddBar(0, {.type = BarType::kMemory32, .size = 0x10000}));
  Write8(c, kRegBar0 + 3, 0xfe);
  EXPECT_EQ(c.BarAddress(0), 0xfe000000u);
  Write8(c, kRegBar0 + 1, 0xff);  // below the size: read-only zero
  Write8(c, kRegBar0, 0xff);      // type bits: read-only
  Write8(c, kRegBar0 + 2, 0x12);
  EXPECT_EQ(Read32(c, kRegBar0), 0xfe120000u);
  Write16(c, kRegBar0 + 2, 0xffff);
  EXPECT_EQ(Read32(c, kRegBar0), 0xffff0000u);
}

TEST(ConfigSpaceTest, SixtyFourBitPair) {
  ConfigSpace c(Ids());
  ASSERT_OK(c.AddBar(
      4, {.type = BarType::kMemory64, .size = 0x4000, .prefetchable = true}));
  EXPECT_EQ(Read32(c, kRegBar0 + 16), kBarMemType64 | kBarPrefetchable);
  EXPECT_EQ(c.bar(4).type, BarType::kMemory64);
  EXPECT_EQ(c.bar(5).type, BarType::kNone);  // the upper half
  Write32(c, kRegBar0 + 16, 0x12348000);
  Write32(c, kRegBar0 + 20, 0x00000080);
  EXPECT_EQ(c.BarAddress(4), 0x0000008012348000u);
  EXPECT_EQ(c.BarAddress(5), 0u);
  EXPECT_THAT(c.AddBar(5, {.type = BarType::kMemory32, .size = 0x1000}),
              StatusIs(absl::StatusCode::kAlreadyExists));
  ASSERT_OK(c.SetBarAddress(4, 0x123400004000));
  EXPECT_EQ(Read32(c, kRegBar0 + 16), 0x00004000u | 0xc);
  EXPECT_EQ(Read32(c, kRegBar0 + 20), 0x1234u);
}

TEST(ConfigSpaceTest, UnusedBarsReadZero) {
  ConfigSpace c(Ids());
  for (int b = 0; b < kNumBars; ++b) {
    Write32(c, kRegBar0 + 4 * b, 0xffffffff);
    EXPECT_EQ(Read32(c, kRegBar0 + 4 * b), 0u) << b;
    EXPECT_EQ(c.BarAddress(b), 0u);
    EXPECT_FALSE(c.BarDecodingEnabled(b));
  }
  EXPECT_EQ(c.bar(-1).type, BarType::kNone);
  EXPECT_EQ(c.bar(6).type, BarType::kNone);
  EXPECT_EQ(c.BarAddress(17), 0u);
}

TEST(ConfigSpaceTest, AddBarErrors) {
  ConfigSpace c(Ids());
  using Code = absl::StatusCode;
  EXPECT_THAT(c.AddBar(6, {.type = BarType::kIo, .size = 4}),
              StatusIs(Code::kInvalidArgument));
  EXPECT_THAT(c.AddBar(-1, {.type = BarType::kIo, .size = 4}),
              StatusIs(Code::kInvalidArgument));
  EXPECT_THAT(c.AddBar(0, {.type = BarType::kIo, .size = 48}),
              StatusIs(Code::kInvalidArgument));
  EXPECT_THAT(c.AddBar(0, {.type = BarType::kIo, .size = 2}),
              StatusIs(Code::kInvalidArgument));
  EXPECT_THAT(c.AddBar(0, {.type = BarType::kIo, .size = 0x20000}),
              StatusIs(Code::kInvalidArgument));
  EXPECT_THAT(
      c.AddBar(0, {.type = BarType::kIo, .size = 16, .prefetchable = true}),
      StatusIs(Code::kInvalidArgument));
  EXPECT_THAT(c.AddBar(0, {.type = BarType::kMemory32, .size = 8}),
              StatusIs(Code::kInvalidArgument));
  EXPECT_THAT(
      c.AddBar(0, {.type = BarType::kMemory32, .size = uint64_t{1} << 32}),
      StatusIs(Code::kInvalidArgument));
  EXPECT_THAT(c.AddBar(0, {.type = BarType::kNone, .size = 16}),
              StatusIs(Code::kInvalidArgument));
  EXPECT_THAT(c.AddBar(0, {.type = BarType::kMemory32, .size = 0}),
              StatusIs(Code::kInvalidArgument));
  EXPECT_THAT(c.AddBar(5, {.type = BarType::kMemory64, .size = 16}),
              StatusIs(Code::kInvalidArgument));
  ASSERT_OK(c.AddBar(1, {.type = BarType::kMemory32, .size = 16}));
  EXPECT_THAT(c.AddBar(1, {.type = BarType::kMemory32, .size = 16}),
              StatusIs(Code::kAlreadyExists));
  EXPECT_THAT(c.AddBar(0, {.type = BarType::kMemory64, .size = 16}),
              StatusIs(Code::kAlreadyExists));
}

TEST(ConfigSpaceTest, SetBarAddress) {
  ConfigSpace c(Ids());
  ASSERT_OK(c.AddBar(0, {.type = BarType::kIo, .size = 0x20}));
  ASSERT_OK(c.AddBar(
      1, {.type = BarType::kMemory32, .size = 0x1000, .prefetchable = true}));
  ASSERT_OK(c.SetBarAddress(0, 0xc040));
  EXPECT_EQ(Read32(c, kRegBar0), 0xc041u);
  ASSERT_OK(c.SetBarAddress(1, 0xfebff000));
  EXPECT_EQ(Read32(c, kRegBar0 + 4), 0xfebff008u);
  EXPECT_EQ(c.BarAddress(1), 0xfebff000u);
  EXPECT_THAT(c.SetBarAddress(0, 0xc050),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(c.SetBarAddress(1, 0x100000000),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(c.SetBarAddress(2, 0x1000),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(ConfigSpaceTest, DecodingFollowsCommandRegister) {
  ConfigSpace c(Ids());
  ASSERT_OK(c.AddBar(0, {.type = BarType::kIo, .size = 0x20}));
  ASSERT_OK(c.AddBar(2, {.type = BarType::kMemory64, .size = 0x1000}));
  EXPECT_FALSE(c.BarDecodingEnabled(0));
  EXPECT_FALSE(c.BarDecodingEnabled(2));
  Write16(c, kRegCommand, kCommandIo);
  EXPECT_TRUE(c.BarDecodingEnabled(0));
  EXPECT_FALSE(c.BarDecodingEnabled(2));
  Write16(c, kRegCommand, kCommandMemory);
  EXPECT_FALSE(c.BarDecodingEnabled(0));
  EXPECT_TRUE(c.BarDecodingEnabled(2));
  EXPECT_FALSE(c.BarDecodingEnabled(3));
}

// --- Capabilities ------------------------------------------------------

// Walks the list as Linux's __pci_find_next_cap_ttl does: the pointer with
// its low two bits masked, at most 48 hops, stopping at 0xff ids and
// pointers below 0x40.
std::vector<std::pair<uint8_t, uint32_t>> WalkLikeLinux(ConfigSpace& c) {
  std::vector<std::pair<uint8_t, uint32_t>> out;
  if (!(Read16(c, kRegStatus) & kStatusCapabilityList)) return out;
  uint32_t pos = Read8(c, kRegCapabilitiesPointer);
  for (int ttl = 48; ttl > 0 && pos >= 0x40; --ttl) {
    pos &= ~3u;
    const uint16_t ent = Read16(c, pos);
    const uint8_t id = ent & 0xff;
    if (id == 0xff) break;
    out.push_back({id, pos});
    pos = ent >> 8;
  }
  return out;
}

TEST(CapabilityTest, ListIsLinkedInOrderAndWalkable) {
  ConfigSpace c(Ids());
  const uint8_t body5[5] = {1, 2, 3, 4, 5};
  const uint8_t body14[14] = {};
  ASSERT_OK_AND_ASSIGN(uint32_t a, c.AddCapability(kCapIdVendor, body5));
  ASSERT_OK_AND_ASSIGN(uint32_t b, c.AddCapability(kCapIdVendor, body14));
  ASSERT_OK_AND_ASSIGN(uint32_t m, c.AddCapability(kCapIdMsix, body14));
  EXPECT_EQ(a, 0x40u);
  EXPECT_EQ(b, 0x48u);  // 0x40 + 7 rounded up to a dword
  EXPECT_EQ(m, 0x58u);
  EXPECT_TRUE(Read16(c, kRegStatus) & kStatusCapabilityList);
  EXPECT_EQ(Read8(c, kRegCapabilitiesPointer), 0x40);
  EXPECT_THAT(WalkLikeLinux(c),
              ElementsAre(std::pair<uint8_t, uint32_t>{kCapIdVendor, 0x40},
                          std::pair<uint8_t, uint32_t>{kCapIdVendor, 0x48},
                          std::pair<uint8_t, uint32_t>{kCapIdMsix, 0x58}));
  EXPECT_EQ(Read8(c, 0x42), 1);
  EXPECT_EQ(Read8(c, 0x46), 5);
  EXPECT_EQ(c.FindCapability(kCapIdMsix), 0x58u);
  EXPECT_EQ(c.FindCapability(kCapIdMsi), std::nullopt);
}

TEST(CapabilityTest, ChosenOffsetsAndTheNextFreeOneAfterThem) {
  ConfigSpace c(Ids());
  const uint8_t body[6] = {};
  ASSERT_OK_AND_ASSIGN(uint32_t a,
                       c.AddCapability(kCapIdVendor, body, {.offset = 0x80}));
  ASSERT_OK_AND_ASSIGN(uint32_t b,
                       c.AddCapability(kCapIdVendor, body, {.offset = 0x40}));
  ASSERT_OK_AND_ASSIGN(uint32_t d, c.AddCapability(kCapIdMsi, body));
  EXPECT_EQ(a, 0x80u);
  EXPECT_EQ(b, 0x40u);
  EXPECT_EQ(d, 0x88u);
  // Linked in the order added, wherever they sit.
  EXPECT_THAT(WalkLikeLinux(c),
              ElementsAre(std::pair<uint8_t, uint32_t>{kCapIdVendor, 0x80},
                          std::pair<uint8_t, uint32_t>{kCapIdVendor, 0x40},
                          std::pair<uint8_t, uint32_t>{kCapIdMsi, 0x88}));
}

TEST(CapabilityTest, Errors) {
  ConfigSpace c(Ids());
  using Code = absl::StatusCode;
  const uint8_t body[6] = {};
  EXPECT_THAT(c.AddCapability(kCapIdVendor, body, {.offset = 0x42}),
              StatusIs(Code::kInvalidArgument));
  EXPECT_THAT(c.AddCapability(kCapIdVendor, body, {.offset = 0x3c}),
              StatusIs(Code::kInvalidArgument));
  EXPECT_THAT(c.AddCapability(kCapIdVendor, body, {.offset = 0xfc}),
              StatusIs(Code::kResourceExhausted));
  EXPECT_THAT(c.AddCapability(kCapIdVendor, body, {.offset = 0x100}),
              StatusIs(Code::kResourceExhausted));
  ConfigSpace::CapabilityOptions bad_mask;
  bad_mask.writable = {0xff};
  EXPECT_THAT(c.AddCapability(kCapIdVendor, body, bad_mask),
              StatusIs(Code::kInvalidArgument));
  ConfigSpace::CapabilityOptions bad_w1c;
  bad_w1c.write_1_to_clear = {0xff, 0xff};
  EXPECT_THAT(c.AddCapability(kCapIdVendor, body, bad_w1c),
              StatusIs(Code::kInvalidArgument));
  // Nothing was added by the failures.
  EXPECT_EQ(Read8(c, kRegCapabilitiesPointer), 0);
  EXPECT_FALSE(Read16(c, kRegStatus) & kStatusCapabilityList);

  ASSERT_OK(c.AddCapability(kCapIdVendor, body, {.offset = 0x40}));
  EXPECT_THAT(c.AddCapability(kCapIdVendor, body, {.offset = 0x44}),
              StatusIs(Code::kAlreadyExists));
  // Fill the rest of the space, then run out.
  const std::vector<uint8_t> big(0x100 - 0x48 - 2);
  ASSERT_OK(c.AddCapability(kCapIdVendor, big));
  EXPECT_THAT(c.AddCapability(kCapIdVendor, {}),
              StatusIs(Code::kResourceExhausted));
}

TEST(CapabilityTest, BodyMasks) {
  ConfigSpace c(Ids());
  const uint8_t body[4] = {0xaa, 0xbb, 0xf0, 0x00};
  ConfigSpace::CapabilityOptions o;
  o.writable = {0x00, 0x0f, 0x00, 0xff};
  o.write_1_to_clear = {0x00, 0x00, 0xf0, 0x00};
  ASSERT_OK_AND_ASSIGN(uint32_t at, c.AddCapability(kCapIdVendor, body, o));
  Write32(c, at, 0xffffffff);  // id and next are read-only
  EXPECT_EQ(Read16(c, at), kCapIdVendor);
  Write32(c, at + 2, 0x12301255);
  // RO 0xaa; 0xbb keeps its high nibble, takes 2; 0xf0 loses the W1C bits
  // written (0x30); the last byte takes 0x12.
  EXPECT_EQ(Read32(c, at + 2), 0x12c0b2aau);
}

TEST(CapabilityTest, HooksSeeTheirPartOfEachAccess) {
  ConfigSpace c(Ids());
  const uint8_t body[2] = {};
  std::vector<std::pair<uint32_t, uint32_t>> reads_a, reads_b;
  std::vector<std::pair<uint32_t, std::vector<uint8_t>>> writes_b;
  ConfigSpace::CapabilityOptions a;
  a.on_read = [&](uint32_t off, uint32_t len) {
    reads_a.push_back({off, len});
    c.Set8(0x40 + 3, 0x77);  // refresh before the read is copied out
  };
  ConfigSpace::CapabilityOptions b;
  b.writable = {0xff, 0xff};
  b.on_read = [&](uint32_t off, uint32_t len) {
    reads_b.push_back({off, len});
  };
  b.on_write = [&](uint32_t off, absl::Span<const uint8_t> data) {
    writes_b.push_back({off, std::vector<uint8_t>(data.begin(), data.end())});
  };
  ASSERT_OK(c.AddCapability(kCapIdVendor, body, std::move(a)));  // 0x40..0x43
  ASSERT_OK(c.AddCapability(kCapIdVendor, body, std::move(b)));  // 0x44..0x47
  EXPECT_EQ(Read8(c, 0x43), 0x77);
  // A dword at 0x42 covers the end of one and the start of the other.
  Read32(c, 0x42);
  EXPECT_THAT(reads_a, ElementsAre(std::pair<uint32_t, uint32_t>{3, 1},
                                   std::pair<uint32_t, uint32_t>{2, 2}));
  EXPECT_THAT(reads_b, ElementsAre(std::pair<uint32_t, uint32_t>{0, 2}));
  Write32(c, 0x44, 0xddccbbaa);
  ASSERT_EQ(writes_b.size(), 1u);
  EXPECT_EQ(writes_b[0].first, 0u);
  EXPECT_THAT(writes_b[0].second, ElementsAre(0xaa, 0xbb, 0xcc, 0xdd));
  EXPECT_EQ(Read16(c, 0x46), 0xddcc);
  // Header accesses do not reach the hooks.
  Read32(c, 0);
  Write32(c, kRegCommand, 0);
  EXPECT_EQ(reads_b.size(), 2u);
  EXPECT_EQ(writes_b.size(), 1u);
}

}  // namespace
}  // namespace vmmkit::pci

namespace vmmkit::pci {
namespace {

// Linux's pci_find_next_ext_capability: from 0x100, at most
// (4096 - 256) / 8 hops, stopping at a zero header or a next below 0x100.
std::vector<std::pair<uint16_t, uint32_t>> WalkExtendedLikeLinux(
    ConfigSpace& c) {
  std::vector<std::pair<uint16_t, uint32_t>> out;
  uint32_t pos = 0x100;
  for (int ttl = (4096 - 256) / 8; ttl > 0; --ttl) {
    const uint32_t header = Read32(c, pos);
    if (header == 0 || header == 0xffffffff) break;
    out.push_back({static_cast<uint16_t>(header & 0xffff), pos});
    pos = (header >> 20) & 0xffc;
    if (pos < 0x100) break;
  }
  return out;
}

ConfigSpace::Options Extended() {
  ConfigSpace::Options o = Ids();
  o.extended = true;
  return o;
}

TEST(ExtendedCapabilityTest, ListStartsAt0x100AndIsWalkable) {
  ConfigSpace c(Extended());
  EXPECT_THAT(WalkExtendedLikeLinux(c), IsEmpty());
  const uint8_t body[6] = {1, 2, 3, 4, 5, 6};
  ASSERT_OK_AND_ASSIGN(uint32_t a, c.AddExtendedCapability(0x000b, 1, body));
  ASSERT_OK_AND_ASSIGN(uint32_t b, c.AddExtendedCapability(0x0001, 2, body));
  ASSERT_OK_AND_ASSIGN(
      uint32_t d, c.AddExtendedCapability(0x0023, 1, body, {.offset = 0x800}));
  EXPECT_EQ(a, 0x100u);
  EXPECT_EQ(b, 0x10cu);
  EXPECT_EQ(d, 0x800u);
  EXPECT_EQ(Read32(c, 0x100), 0x10c1000bu);
  EXPECT_EQ(Read32(c, 0x104), 0x04030201u);
  EXPECT_THAT(WalkExtendedLikeLinux(c),
              ElementsAre(std::pair<uint16_t, uint32_t>{0x000b, 0x100},
                          std::pair<uint16_t, uint32_t>{0x0001, 0x10c},
                          std::pair<uint16_t, uint32_t>{0x0023, 0x800}));
  EXPECT_EQ(c.FindExtendedCapability(0x0001), 0x10cu);
  EXPECT_EQ(c.FindExtendedCapability(0x0002), std::nullopt);
  // The two lists are separate: standard ones still start at 0x40.
  ASSERT_OK_AND_ASSIGN(uint32_t s, c.AddCapability(kCapIdVendor, body));
  EXPECT_EQ(s, 0x40u);
  EXPECT_EQ(c.FindCapability(0x0b), std::nullopt);
  Write32(c, 0x100, 0);  // headers are read-only
  EXPECT_EQ(Read32(c, 0x100), 0x10c1000bu);
}

TEST(ExtendedCapabilityTest, Errors) {
  using Code = absl::StatusCode;
  const uint8_t body[4] = {};
  ConfigSpace plain(Ids());
  EXPECT_THAT(plain.AddExtendedCapability(1, 1, body),
              StatusIs(Code::kFailedPrecondition));
  ConfigSpace c(Extended());
  EXPECT_THAT(c.AddExtendedCapability(1, 1, body, {.offset = 0x200}),
              StatusIs(Code::kInvalidArgument));  // the first is at 0x100
  EXPECT_THAT(c.AddExtendedCapability(1, 16, body),
              StatusIs(Code::kInvalidArgument));
  ConfigSpace::CapabilityOptions bad_mask;
  bad_mask.writable = {1};
  EXPECT_THAT(c.AddExtendedCapability(1, 1, body, bad_mask),
              StatusIs(Code::kInvalidArgument));
  ASSERT_OK(c.AddExtendedCapability(1, 1, body));
  EXPECT_THAT(c.AddExtendedCapability(2, 1, body, {.offset = 0x102}),
              StatusIs(Code::kInvalidArgument));
  EXPECT_THAT(c.AddExtendedCapability(2, 1, body, {.offset = 0xc0}),
              StatusIs(Code::kInvalidArgument));
  EXPECT_THAT(c.AddExtendedCapability(2, 1, body, {.offset = 0x104}),
              StatusIs(Code::kAlreadyExists));
  EXPECT_THAT(c.AddExtendedCapability(2, 1, body, {.offset = 0xffc}),
              StatusIs(Code::kResourceExhausted));
  EXPECT_THAT(c.AddExtendedCapability(2, 1, body, {.offset = 0x1000}),
              StatusIs(Code::kResourceExhausted));
  ASSERT_OK(c.AddExtendedCapability(2, 1, body, {.offset = 0xff8}));
}

TEST(ExtendedCapabilityTest, BodyMasksAndHooks) {
  ConfigSpace c(Extended());
  const uint8_t body[4] = {};
  std::vector<std::pair<uint32_t, size_t>> writes;
  ConfigSpace::CapabilityOptions o;
  o.writable = {0xff, 0x00, 0xff, 0x00};
  o.on_write = [&](uint32_t off, absl::Span<const uint8_t> data) {
    writes.push_back({off, data.size()});
  };
  ASSERT_OK(c.AddExtendedCapability(0x10, 1, body, std::move(o)));
  Write32(c, 0x104, 0xffffffff);
  EXPECT_EQ(Read32(c, 0x104), 0x00ff00ffu);
  Write16(c, 0x102, 0xffff);  // header half: read-only, hook sees it
  EXPECT_EQ(Read32(c, 0x100), 0x00010010u);
  EXPECT_THAT(writes, ElementsAre(std::pair<uint32_t, size_t>{4, 4},
                                  std::pair<uint32_t, size_t>{2, 2}));
}

}  // namespace
}  // namespace vmmkit::pci
