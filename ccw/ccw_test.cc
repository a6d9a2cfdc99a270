#include "ccw/ccw.h"

#include <cstring>
#include <memory>

#include "base/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "virtqueue/guest_memory.h"

namespace vmmkit::ccw {
namespace {

using virtqueue::GuestMemoryMmap;
using ::vmmkit::testing::StatusIs;

TEST(CcwTest, DecodesFormat0BigEndian) {
  const uint8_t raw[8] = {0x12, 0xAB, 0xCD, 0xEF, 0x60, 0x55, 0x01, 0x02};
  Ccw0Wire wire;
  std::memcpy(&wire, raw, 8);
  Ccw ccw = DecodeCcw(wire);
  EXPECT_EQ(ccw.cmd, 0x12);
  EXPECT_EQ(ccw.data_address, 0xABCDEFu);
  EXPECT_EQ(ccw.flags, 0x60);  // the reserved byte 5 is ignored
  EXPECT_EQ(ccw.count, 0x0102);
  EXPECT_TRUE(ccw.chain_command());
  EXPECT_TRUE(ccw.suppress_length());
  EXPECT_FALSE(ccw.chain_data());
}

TEST(CcwTest, DecodesFormat1BigEndian) {
  const uint8_t raw[8] = {0x83, 0x80, 0x12, 0x34, 0x7F, 0x01, 0x02, 0x08};
  Ccw1Wire wire;
  std::memcpy(&wire, raw, 8);
  Ccw ccw = DecodeCcw(wire);
  EXPECT_EQ(ccw.cmd, 0x83);
  EXPECT_EQ(ccw.flags, 0x80);
  EXPECT_EQ(ccw.count, 0x1234);
  EXPECT_EQ(ccw.data_address, 0x7F010208u);
  EXPECT_TRUE(ccw.chain_data());
}

TEST(CcwTest, EveryFlagInBothFormats) {
  struct FlagCase {
    uint8_t flag;
    bool (Ccw::*accessor)() const;
  };
  const FlagCase cases[] = {
      {kCcwFlagCd, &Ccw::chain_data},
      {kCcwFlagCc, &Ccw::chain_command},
      {kCcwFlagSli, &Ccw::suppress_length},
      {kCcwFlagSkip, &Ccw::skip},
      {kCcwFlagPci, &Ccw::pci},
      {kCcwFlagIda, &Ccw::indirect},
      {kCcwFlagSuspend, &Ccw::suspend},
      {kCcwFlagMida, &Ccw::modified_indirect},
  };
  for (const FlagCase& c : cases) {
    for (CcwFormat format : {CcwFormat::kFormat0, CcwFormat::kFormat1}) {
      const Ccw in{
          .cmd = 0x02, .flags = c.flag, .count = 9, .data_address = 0x123456};
      std::array<uint8_t, 8> bytes = EncodeCcw(in, format);
      Ccw out;
      if (format == CcwFormat::kFormat0) {
        EXPECT_EQ(bytes[4], c.flag);
        Ccw0Wire w;
        std::memcpy(&w, bytes.data(), 8);
        out = DecodeCcw(w);
      } else {
        EXPECT_EQ(bytes[1], c.flag);
        Ccw1Wire w;
        std::memcpy(&w, bytes.data(), 8);
        out = DecodeCcw(w);
      }
      EXPECT_EQ(out, in);
      EXPECT_TRUE((out.*c.accessor)()) << int{c.flag};
      // No other accessor reports the flag.
      for (const FlagCase& other : cases) {
        if (other.flag != c.flag) EXPECT_FALSE((out.*other.accessor)());
      }
    }
  }
}

TEST(CcwTest, CheckLengthRule) {
  // check_len = !(SLI && !CD)
  EXPECT_TRUE(Ccw{.flags = 0}.check_length());
  EXPECT_FALSE(Ccw{.flags = kCcwFlagSli}.check_length());
  EXPECT_TRUE(Ccw{.flags = kCcwFlagCd}.check_length());
  EXPECT_TRUE(Ccw{.flags = kCcwFlagSli | kCcwFlagCd}.check_length());
}

TEST(CcwTest, Format0KeepsOnly24AddressBits) {
  Ccw0Wire w = EncodeCcw0({.cmd = 1, .count = 1, .data_address = 0x7F123456});
  EXPECT_EQ(DecodeCcw(w).data_address, 0x123456u);
}

TEST(CcwTest, ClassifiesCommands) {
  EXPECT_EQ(ClassifyCommand(0x00), CommandType::kInvalid);
  EXPECT_EQ(ClassifyCommand(0xF0), CommandType::kInvalid);
  EXPECT_EQ(ClassifyCommand(0x01), CommandType::kWrite);
  EXPECT_EQ(ClassifyCommand(0x11), CommandType::kWrite);    // WRITE_FEAT
  EXPECT_EQ(ClassifyCommand(0x12), CommandType::kRead);     // READ_FEAT
  EXPECT_EQ(ClassifyCommand(0x13), CommandType::kControl);  // SET_VQ
  EXPECT_EQ(ClassifyCommand(0x03), CommandType::kControl);  // NOOP
  EXPECT_EQ(ClassifyCommand(0x04), CommandType::kSense);
  EXPECT_EQ(ClassifyCommand(0xE4), CommandType::kSense);  // SENSE ID
  EXPECT_EQ(ClassifyCommand(0x0C), CommandType::kReadBackward);
  EXPECT_EQ(ClassifyCommand(0x08), CommandType::kTransferInChannel);
  EXPECT_EQ(ClassifyCommand(0x18), CommandType::kTransferInChannel);
}

TEST(CcwTest, AddressLimits) {
  EXPECT_EQ(AddressLimit(CcwFormat::kFormat0), uint64_t{1} << 24);
  EXPECT_EQ(AddressLimit(CcwFormat::kFormat1), uint64_t{1} << 31);
}

TEST(CcwTest, ReadCcwChecksAlignmentMemoryAndLimit) {
  ASSERT_OK_AND_ASSIGN(
      auto mem,
      GuestMemoryMmap::Create({{.guest_base = 0, .size = 0x10000},
                               {.guest_base = 0xFFF000, .size = 0x2000}}));
  const Ccw ccw{
      .cmd = 0x13, .flags = kCcwFlagCc, .count = 24, .data_address = 0x2000};
  ASSERT_OK(mem->Write(0x100, EncodeCcw(ccw, CcwFormat::kFormat1)));
  ASSERT_OK_AND_ASSIGN(Ccw got, ReadCcw(*mem, 0x100, CcwFormat::kFormat1));
  EXPECT_EQ(got, ccw);
  EXPECT_THAT(ReadCcw(*mem, 0x104, CcwFormat::kFormat1),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ReadCcw(*mem, 0x20000, CcwFormat::kFormat1),
              StatusIs(absl::StatusCode::kOutOfRange));
  // The last doubleword below 2^24 is fine for format 0; 2^24 is not, though
  // it is guest memory.
  EXPECT_OK(ReadCcw(*mem, 0xFFFFF8, CcwFormat::kFormat0).status());
  EXPECT_THAT(ReadCcw(*mem, 0x1000000, CcwFormat::kFormat0),
              StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_OK(ReadCcw(*mem, 0x1000000, CcwFormat::kFormat1).status());
  EXPECT_THAT(ReadCcw(*mem, uint64_t{1} << 31, CcwFormat::kFormat1),
              StatusIs(absl::StatusCode::kOutOfRange));
}

TEST(CcwTest, OrbRoundTrip) {
  const uint8_t raw[12] = {0xDE, 0xAD, 0xBE, 0xEF, 0x00, 0x82,
                           0x80, 0x80, 0x00, 0x01, 0x00, 0x00};
  OrbWire wire{};
  std::memcpy(&wire, raw, 12);
  Orb orb = DecodeOrb(wire);
  EXPECT_EQ(orb.intparm, 0xDEADBEEFu);
  EXPECT_EQ(orb.format(), CcwFormat::kFormat1);
  EXPECT_EQ(orb.lpm(), 0x80);
  EXPECT_TRUE(orb.incorrect_length_suppression());
  EXPECT_TRUE(orb.control & kOrbFormat2Idaw);
  EXPECT_EQ(orb.cpa, 0x10000u);
  OrbWire again = EncodeOrb(orb);
  EXPECT_EQ(std::memcmp(&again, raw, 12), 0);
}

TEST(CcwTest, ScswAndIrbWireLayout) {
  Irb irb;
  irb.scsw = Scsw{.control = kScswFcStart | kScswScStatusPending,
                  .ccw_address = 0x12345678,
                  .device_status = kDevStatChannelEnd | kDevStatDeviceEnd,
                  .subchannel_status = kSchStatIncorrectLength,
                  .count = 0xABCD};
  irb.erw = kErwConcurrentSense | (32u << kErwSenseCountShift);
  irb.ecw[0] = kSense0CommandReject;
  IrbWire wire = EncodeIrb(irb);
  const uint8_t* b = reinterpret_cast<const uint8_t*>(&wire);
  const uint8_t scsw[12] = {0x00, 0x00, 0x40, 0x01, 0x12, 0x34,
                            0x56, 0x78, 0x0C, 0x40, 0xAB, 0xCD};
  EXPECT_EQ(std::memcmp(b, scsw, 12), 0);
  EXPECT_EQ(b[16], 0x01);  // ERW byte 0: concurrent sense (bit 7)
  EXPECT_EQ(b[17], 0x20);  // ERW byte 1: sense count 32 in bits 10-15
  EXPECT_EQ(b[32], 0x80);  // ECW byte 0
  EXPECT_EQ(DecodeScsw(wire.scsw), irb.scsw);
}

}  // namespace
}  // namespace vmmkit::ccw
