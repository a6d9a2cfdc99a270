#include "virtio-device/config_space.h"

#include <cstdint>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vmmkit::virtio {
namespace {

using ::testing::Each;
using ::testing::ElementsAre;
using virtqueue::Endian;

std::vector<uint8_t> ReadBytes(const ConfigSpace& config, uint32_t offset,
                               size_t n, Endian endian) {
  // Pre-filled so that a byte the read forgets to set shows up.
  std::vector<uint8_t> out(n, 0xAA);
  config.Read(offset, absl::MakeSpan(out), endian);
  return out;
}

std::vector<uint8_t> Decode(const ConfigSpace& config, uint32_t offset,
                            std::vector<uint8_t> data, Endian endian) {
  std::vector<uint8_t> out(data.size(), 0xAA);
  config.DecodeWrite(offset, data, endian, absl::MakeSpan(out));
  return out;
}

// A layout like a small device's: u32 at 0, two u16 at 4 and 6, a u8 at 8,
// a 6-byte array (a MAC) at 9, a u64 at 16.
class ConfigSpaceTest : public ::testing::Test {
 protected:
  ConfigSpaceTest() : config_(24) {
    config_.DeclareField(0, 4);
    config_.DeclareField(4, 2);
    config_.DeclareField(6, 2);
    config_.DeclareField(16, 8);
    config_.SetU32(0, 0x11223344);
    config_.SetU16(4, 0xAABB);
    config_.SetU16(6, 0xCCDD);
    config_.SetU8(8, 0x5A);
    const uint8_t mac[] = {1, 2, 3, 4, 5, 6};
    config_.SetBytes(9, mac);
    config_.SetU64(16, 0x0102030405060708);
  }

  ConfigSpace config_;
};

TEST(ConfigSpaceBasicsTest, StartsZeroedAtGenerationZero) {
  ConfigSpace config(12);
  EXPECT_EQ(config.size(), 12u);
  EXPECT_EQ(config.generation(), 0u);
  EXPECT_THAT(ReadBytes(config, 0, 12, Endian::kLittle), Each(0));
  EXPECT_THAT(ReadBytes(config, 0, 12, Endian::kBig), Each(0));
}

TEST_F(ConfigSpaceTest, StoresLittleEndian) {
  EXPECT_THAT(ReadBytes(config_, 0, 8, Endian::kLittle),
              ElementsAre(0x44, 0x33, 0x22, 0x11, 0xBB, 0xAA, 0xDD, 0xCC));
  EXPECT_THAT(ReadBytes(config_, 16, 8, Endian::kLittle),
              ElementsAre(8, 7, 6, 5, 4, 3, 2, 1));
  EXPECT_EQ(config_.U32(0), 0x11223344u);
  EXPECT_EQ(config_.U16(4), 0xAABB);
  EXPECT_EQ(config_.U16(6), 0xCCDD);
  EXPECT_EQ(config_.U8(8), 0x5A);
  EXPECT_EQ(config_.U8(1), 0x33);
  EXPECT_EQ(config_.U64(16), 0x0102030405060708u);
  // Accessors do not care about declared fields: a u16 read across two
  // fields is just the little-endian bytes there.
  EXPECT_EQ(config_.U16(3), 0xBB11);
}

TEST_F(ConfigSpaceTest, BigEndianReadsWholeFields) {
  EXPECT_THAT(ReadBytes(config_, 0, 4, Endian::kBig),
              ElementsAre(0x11, 0x22, 0x33, 0x44));
  EXPECT_THAT(ReadBytes(config_, 4, 2, Endian::kBig), ElementsAre(0xAA, 0xBB));
  EXPECT_THAT(ReadBytes(config_, 6, 2, Endian::kBig), ElementsAre(0xCC, 0xDD));
  EXPECT_THAT(ReadBytes(config_, 16, 8, Endian::kBig),
              ElementsAre(1, 2, 3, 4, 5, 6, 7, 8));
}

TEST_F(ConfigSpaceTest, BigEndianLeavesBytesAndArraysAlone) {
  // u8 and byte arrays (a MAC address) have no byte order.
  EXPECT_THAT(ReadBytes(config_, 8, 7, Endian::kBig),
              ElementsAre(0x5A, 1, 2, 3, 4, 5, 6));
  EXPECT_THAT(ReadBytes(config_, 8, 7, Endian::kLittle),
              ElementsAre(0x5A, 1, 2, 3, 4, 5, 6));
}

TEST_F(ConfigSpaceTest, BigEndianReadsPartsOfFields) {
  // One byte in the middle of a u32: its place in the big-endian value.
  EXPECT_THAT(ReadBytes(config_, 1, 1, Endian::kBig), ElementsAre(0x22));
  EXPECT_THAT(ReadBytes(config_, 2, 1, Endian::kBig), ElementsAre(0x33));
  EXPECT_THAT(ReadBytes(config_, 1, 1, Endian::kLittle), ElementsAre(0x33));
  // The upper and lower halves of the u32 as 16-bit reads.
  EXPECT_THAT(ReadBytes(config_, 0, 2, Endian::kBig), ElementsAre(0x11, 0x22));
  EXPECT_THAT(ReadBytes(config_, 2, 2, Endian::kBig), ElementsAre(0x33, 0x44));
  // A u16 read spanning the two u16 fields: the last byte of one and the
  // first of the other, each in big-endian order.
  EXPECT_THAT(ReadBytes(config_, 5, 2, Endian::kBig), ElementsAre(0xBB, 0xCC));
  EXPECT_THAT(ReadBytes(config_, 5, 2, Endian::kLittle),
              ElementsAre(0xAA, 0xDD));
  // A u32 read over both u16 fields.
  EXPECT_THAT(ReadBytes(config_, 4, 4, Endian::kBig),
              ElementsAre(0xAA, 0xBB, 0xCC, 0xDD));
  // A read spanning the u32 field and the first u16 field.
  EXPECT_THAT(ReadBytes(config_, 3, 2, Endian::kBig), ElementsAre(0x44, 0xAA));
  // A byte in the middle of the u64.
  EXPECT_THAT(ReadBytes(config_, 21, 1, Endian::kBig), ElementsAre(6));
}

TEST_F(ConfigSpaceTest, ReadsBeyondTheEndAreZero) {
  for (Endian e : {Endian::kLittle, Endian::kBig}) {
    EXPECT_THAT(ReadBytes(config_, 24, 4, e), Each(0));
    EXPECT_THAT(ReadBytes(config_, 100, 8, e), Each(0));
    EXPECT_THAT(ReadBytes(config_, 0xffffffff, 8, e), Each(0));
    EXPECT_THAT(ReadBytes(config_, 0xfffffffc, 4, e), Each(0));
  }
  // Partly inside: the bytes inside, then zeros.
  EXPECT_THAT(ReadBytes(config_, 22, 4, Endian::kLittle),
              ElementsAre(2, 1, 0, 0));
  EXPECT_THAT(ReadBytes(config_, 22, 4, Endian::kBig), ElementsAre(7, 8, 0, 0));
  // An empty read is fine.
  std::vector<uint8_t> none;
  config_.Read(3, absl::MakeSpan(none), Endian::kBig);
}

TEST_F(ConfigSpaceTest, AccessorsOutOfRange) {
  const uint32_t gen = config_.generation();
  EXPECT_EQ(config_.U8(24), 0);
  EXPECT_EQ(config_.U16(23), 0);  // straddles the end
  EXPECT_EQ(config_.U32(22), 0u);
  EXPECT_EQ(config_.U64(17), 0u);
  EXPECT_EQ(config_.U64(0xfffffffc), 0u);
  // Writes that do not fit write nothing, not even the part inside.
  config_.SetU32(22, 0xdeadbeef);
  config_.SetU64(0xfffffff8, 1);
  config_.SetU8(24, 1);
  const uint8_t bytes[] = {9, 9, 9};
  config_.SetBytes(22, bytes);
  config_.SetBytes(0xffffffff, bytes);
  EXPECT_EQ(config_.U64(16), 0x0102030405060708u);
  EXPECT_EQ(config_.generation(), gen);
}

TEST(ConfigSpaceBasicsTest, GenerationAdvancesOnlyOnChange) {
  ConfigSpace config(16);
  config.SetU32(0, 0);  // already 0
  EXPECT_EQ(config.generation(), 0u);
  config.SetU32(0, 7);
  EXPECT_EQ(config.generation(), 1u);
  config.SetU32(0, 7);
  EXPECT_EQ(config.generation(), 1u);
  config.SetU16(0, 7);  // the same low bytes
  EXPECT_EQ(config.generation(), 1u);
  config.SetU8(3, 1);
  EXPECT_EQ(config.generation(), 2u);
  config.SetU64(8, 0x8000000000000000);
  EXPECT_EQ(config.generation(), 3u);
  config.SetU64(8, 0x8000000000000000);
  EXPECT_EQ(config.generation(), 3u);
  const uint8_t same[] = {7, 0, 0, 1};
  config.SetBytes(0, same);
  EXPECT_EQ(config.generation(), 3u);
  const uint8_t other[] = {7, 0, 0, 2};
  config.SetBytes(0, other);
  EXPECT_EQ(config.generation(), 4u);
  // An empty SetBytes changes nothing.
  config.SetBytes(16, {});
  EXPECT_EQ(config.generation(), 4u);
  // Declaring fields is not a change of value.
  config.DeclareField(0, 4);
  EXPECT_EQ(config.generation(), 4u);
}

TEST(ConfigSpaceBasicsTest, DeclareFieldIgnoresBadWidthsAndRanges) {
  ConfigSpace config(8);
  config.SetU32(0, 0x11223344);
  config.SetU32(4, 0x55667788);
  config.DeclareField(0, 3);  // not a field width
  config.DeclareField(0, 1);
  config.DeclareField(6, 4);           // past the end
  config.DeclareField(8, 2);           // starts at the end
  config.DeclareField(0xfffffffe, 8);  // offset + width wraps
  // Nothing was declared: big-endian reads show the bytes as stored.
  EXPECT_THAT(ReadBytes(config, 0, 8, Endian::kBig),
              ElementsAre(0x44, 0x33, 0x22, 0x11, 0x88, 0x77, 0x66, 0x55));
  // A field exactly at the end is accepted.
  config.DeclareField(4, 4);
  EXPECT_THAT(ReadBytes(config, 4, 4, Endian::kBig),
              ElementsAre(0x55, 0x66, 0x77, 0x88));
}

TEST_F(ConfigSpaceTest, DecodeWriteLittleEndianIsTheBytes) {
  EXPECT_THAT(Decode(config_, 0, {1, 2, 3, 4}, Endian::kLittle),
              ElementsAre(1, 2, 3, 4));
  EXPECT_THAT(Decode(config_, 5, {1, 2}, Endian::kLittle), ElementsAre(1, 2));
  // Beyond the end too: the caller decides what to drop.
  EXPECT_THAT(Decode(config_, 30, {9}, Endian::kLittle), ElementsAre(9));
}

TEST_F(ConfigSpaceTest, DecodeWriteBigEndianWholeFields) {
  // A big-endian driver writes 0x01020304 to the u32 at 0.
  EXPECT_THAT(Decode(config_, 0, {1, 2, 3, 4}, Endian::kBig),
              ElementsAre(4, 3, 2, 1));
  // Both u16 fields in one 32-bit write.
  EXPECT_THAT(Decode(config_, 4, {0x12, 0x34, 0x56, 0x78}, Endian::kBig),
              ElementsAre(0x34, 0x12, 0x78, 0x56));
  EXPECT_THAT(Decode(config_, 16, {1, 2, 3, 4, 5, 6, 7, 8}, Endian::kBig),
              ElementsAre(8, 7, 6, 5, 4, 3, 2, 1));
  // Bytes and arrays pass through.
  EXPECT_THAT(Decode(config_, 8, {0x77, 0xA0, 0xA1}, Endian::kBig),
              ElementsAre(0x77, 0xA0, 0xA1));
  // Decoding stores nothing.
  EXPECT_EQ(config_.U32(0), 0x11223344u);
  EXPECT_EQ(config_.U8(8), 0x5A);
}

TEST_F(ConfigSpaceTest, DecodeWriteRoundTripsWithRead) {
  // Whatever a driver reads in its order and writes back unchanged decodes
  // to the stored little-endian bytes, at every offset and width.
  for (Endian e : {Endian::kLittle, Endian::kBig}) {
    for (uint32_t width : {1u, 2u, 4u, 8u}) {
      for (uint32_t offset = 0; offset + width <= config_.size();
           offset += width) {
        SCOPED_TRACE(testing::Message()
                     << "offset " << offset << " width " << width << " big "
                     << (e == Endian::kBig));
        std::vector<uint8_t> seen = ReadBytes(config_, offset, width, e);
        EXPECT_EQ(Decode(config_, offset, seen, e),
                  ReadBytes(config_, offset, width, Endian::kLittle));
      }
    }
  }
}

TEST_F(ConfigSpaceTest, DecodeWriteBeyondTheEnd) {
  // The part inside is decoded, the part outside passed through as given.
  ConfigSpace small(8);
  small.DeclareField(4, 4);
  EXPECT_THAT(Decode(small, 4, {0xA, 0xB, 0xC, 0xD, 1, 2, 3, 4}, Endian::kBig),
              ElementsAre(0x0D, 0x0C, 0x0B, 0x0A, 1, 2, 3, 4));
  EXPECT_THAT(Decode(config_, 0xfffffffe, {1, 2, 3, 4}, Endian::kBig),
              ElementsAre(1, 2, 3, 4));
  // A short `out` takes only what fits.
  std::vector<uint8_t> data = {1, 2, 3, 4};
  std::vector<uint8_t> out(2, 0xAA);
  config_.DecodeWrite(8, data, Endian::kBig, absl::MakeSpan(out));
  EXPECT_THAT(out, ElementsAre(1, 2));
}

TEST_F(ConfigSpaceTest, EmptyAccessesDoNothing) {
  // Empty spans (a zero-count CCW READ_CONF, say) may have a null data().
  const uint32_t gen = config_.generation();
  config_.Read(0, absl::Span<uint8_t>(), Endian::kLittle);
  config_.Read(4, absl::Span<uint8_t>(), Endian::kBig);
  config_.SetBytes(0, absl::Span<const uint8_t>());
  config_.DecodeWrite(0, absl::Span<const uint8_t>(), Endian::kBig,
                      absl::Span<uint8_t>());
  config_.DecodeWrite(0, absl::Span<const uint8_t>(), Endian::kLittle,
                      absl::Span<uint8_t>());
  EXPECT_EQ(config_.generation(), gen);
  EXPECT_EQ(config_.U32(0), 0x11223344u);
}

TEST(ConfigSpaceApplyWriteTest, PartialBigEndianFieldWrite) {
  ConfigSpace config(8);
  config.DeclareField(0, 4);
  config.SetU32(0, 0x11223344);
  // A big-endian driver writes only the field's most significant byte
  // (offset 0 in its order): stored little-endian, that is byte 3.
  const uint8_t top = 0xaa;
  std::vector<uint8_t> image =
      config.ApplyWrite(0, absl::MakeConstSpan(&top, 1), Endian::kBig);
  EXPECT_EQ(image[3], 0xaa);
  EXPECT_EQ(image[0], 0x44);
  // Little-endian: the byte lands where it is written. Nothing is stored.
  image = config.ApplyWrite(0, absl::MakeConstSpan(&top, 1), Endian::kLittle);
  EXPECT_EQ(image[0], 0xaa);
  EXPECT_EQ(config.U32(0), 0x11223344u);
}

}  // namespace
}  // namespace vmmkit::virtio
