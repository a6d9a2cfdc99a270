#include "ccw/subchannel.h"

#include <algorithm>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <vector>

#include "base/status_matchers.h"
#include "ccw/ccw.h"
#include "ccw/command_handler.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "virtqueue/guest_memory.h"

namespace vmmkit::ccw {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using virtqueue::GuestMemoryMmap;
using ::vmmkit::testing::StatusIs;

constexpr uint8_t kCeDe = kDevStatChannelEnd | kDevStatDeviceEnd;
constexpr uint8_t kCmdWrite = 0x11;    // like WRITE_FEAT
constexpr uint8_t kCmdRead = 0x12;     // like READ_FEAT
constexpr uint8_t kCmdControl = 0x13;  // like SET_VQ
constexpr uint8_t kCmdUnknown = 0x97;

// A device whose commands are test lambdas; it records what it saw.
class FakeDevice final : public CcwCommandHandler {
 public:
  using Fn = std::function<CommandResult(const Command&, CcwData&)>;

  SenseIdData sense_id() const override { return id; }
  CommandResult Execute(const Command& command, CcwData& data) override {
    seen.push_back(command);
    auto it = handlers.find(command.code);
    if (it == handlers.end()) return CommandResult::CommandReject();
    return it->second(command, data);
  }

  SenseIdData id{.cu_type = 0x3832, .cu_model = 2};
  std::map<uint8_t, Fn> handlers;
  std::vector<Command> seen;
};

class RecordingSink final : public InterruptSink {
 public:
  void StatusPending(Subchannel&, uint32_t intparm) override {
    intparms.push_back(intparm);
  }
  std::vector<uint32_t> intparms;
};

// Device behaviours.
FakeDevice::Fn Store(std::vector<uint8_t> bytes) {
  return [bytes](const Command&, CcwData& data) {
    (void)data.CopyToGuest(bytes);
    return CommandResult::Accepted();
  };
}
FakeDevice::Fn Fetch(size_t n, std::vector<uint8_t>* got) {
  return [n, got](const Command&, CcwData& data) {
    std::vector<uint8_t> buf(n);
    absl::StatusOr<size_t> r = data.CopyFromGuest(absl::MakeSpan(buf));
    if (r.ok()) buf.resize(*r);
    if (got) *got = buf;
    return CommandResult::Accepted();
  };
}

class SubchannelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK_AND_ASSIGN(
        mem_, GuestMemoryMmap::Create({{.guest_base = 0, .size = 0x100000}}));
    sch_ = std::make_unique<Subchannel>(*mem_, device_, sink_);
  }

  void Put(uint64_t address, Ccw ccw, CcwFormat format = CcwFormat::kFormat1) {
    ASSERT_OK(mem_->Write(address, EncodeCcw(ccw, format)));
  }
  void PutBytes(uint64_t address, std::vector<uint8_t> bytes) {
    ASSERT_OK(mem_->Write(address, bytes));
  }
  std::vector<uint8_t> GetBytes(uint64_t address, size_t n) {
    std::vector<uint8_t> out(n);
    EXPECT_OK(mem_->Read(address, absl::MakeSpan(out)));
    return out;
  }

  Irb Run(uint32_t cpa, CcwFormat format = CcwFormat::kFormat1,
          uint32_t control = 0) {
    Orb orb{.intparm = 0xCAFE,
            .control = control | 0x8000 |
                       (format == CcwFormat::kFormat1 ? kOrbFormat1 : 0),
            .cpa = cpa};
    EXPECT_OK(sch_->Start(orb));
    std::optional<Irb> irb = sch_->Test();
    EXPECT_TRUE(irb.has_value());
    return irb.value_or(Irb{});
  }

  std::unique_ptr<GuestMemoryMmap> mem_;
  FakeDevice device_;
  RecordingSink sink_;
  std::unique_ptr<Subchannel> sch_;
};

TEST_F(SubchannelTest, SingleWriteCommand) {
  std::vector<uint8_t> got;
  device_.handlers[kCmdWrite] = Fetch(5, &got);
  Put(0x1000, {.cmd = kCmdWrite, .count = 5, .data_address = 0x2000});
  PutBytes(0x2000, {1, 2, 3, 4, 5});
  Irb irb = Run(0x1000);
  EXPECT_THAT(got, ElementsAre(1, 2, 3, 4, 5));
  EXPECT_EQ(irb.scsw.device_status, kCeDe);
  EXPECT_EQ(irb.scsw.subchannel_status, 0);
  EXPECT_EQ(irb.scsw.count, 0);
  EXPECT_EQ(irb.scsw.ccw_address, 0x1008u);
  EXPECT_EQ(irb.scsw.control, kScswFcStart | kScswFormat1 | kScswScPrimary |
                                  kScswScSecondary | kScswScStatusPending);
  EXPECT_FALSE(irb.has_concurrent_sense());
  EXPECT_THAT(sink_.intparms, ElementsAre(0xCAFE));
  ASSERT_EQ(device_.seen.size(), 1u);
  EXPECT_EQ(device_.seen[0].code, kCmdWrite);
  EXPECT_EQ(device_.seen[0].count, 5);
  EXPECT_EQ(device_.seen[0].ccw_address, 0x1000u);
  EXPECT_TRUE(device_.seen[0].first_in_program);
  EXPECT_EQ(device_.seen[0].type(), CommandType::kWrite);
  EXPECT_FALSE(sch_->status_pending());
}

TEST_F(SubchannelTest, StatusPendingRefusesStart) {
  device_.handlers[kCmdControl] = Fetch(0, nullptr);
  Put(0x1000, {.cmd = kCmdControl, .count = 0});
  Orb orb{.control = kOrbFormat1, .cpa = 0x1000};
  ASSERT_OK(sch_->Start(orb));
  EXPECT_TRUE(sch_->status_pending());
  EXPECT_THAT(sch_->Start(orb),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_TRUE(sch_->Test().has_value());
  EXPECT_FALSE(sch_->Test().has_value());
  EXPECT_OK(sch_->Start(orb));
  sch_->Reset();
  EXPECT_FALSE(sch_->status_pending());
}

TEST_F(SubchannelTest, OrbChecks) {
  EXPECT_THAT(sch_->Start({.control = kOrbFormat1 | 0x2, .cpa = 0x1000}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(sch_->Start({.control = kOrbFormat1, .cpa = 0x80001000}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(
      sch_->Start({.control = kOrbFormat1 | kOrbTransportMode, .cpa = 0x1000}),
      StatusIs(absl::StatusCode::kUnimplemented));
  EXPECT_TRUE(sink_.intparms.empty());
  // Linux's ORB (H bit, LPM, prefetch) is accepted.
  Put(0x1000, {.cmd = kCmdNoop, .flags = kCcwFlagSli, .count = 1});
  EXPECT_OK(sch_->Start(
      {.control = kOrbFormat1 | kOrbFormat2Idaw | kOrbPrefetch | 0x8000,
       .cpa = 0x1000}));
}

TEST_F(SubchannelTest, StartAtReadsTheOrbFromGuestMemory) {
  Put(0x1000, {.cmd = kCmdNoop, .flags = kCcwFlagSli, .count = 1});
  OrbWire orb =
      EncodeOrb({.intparm = 77, .control = kOrbFormat1, .cpa = 0x1000});
  ASSERT_OK(mem_->WriteObj(0x3000, orb));
  ASSERT_OK(sch_->StartAt(0x3000));
  EXPECT_THAT(sink_.intparms, ElementsAre(77u));
  EXPECT_EQ(sch_->Test()->scsw.device_status, kCeDe);
  EXPECT_THAT(sch_->StartAt(0x3002),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(sch_->StartAt(0x200000), StatusIs(absl::StatusCode::kOutOfRange));
}

TEST_F(SubchannelTest, CommandChain) {
  std::vector<uint8_t> a, b;
  device_.handlers[kCmdWrite] = Fetch(2, &a);
  device_.handlers[kCmdControl] = Fetch(3, &b);
  device_.handlers[kCmdRead] = Store({9, 8, 7, 6});
  Put(0x1000, {.cmd = kCmdWrite,
               .flags = kCcwFlagCc,
               .count = 2,
               .data_address = 0x2000});
  Put(0x1008, {.cmd = kCmdControl,
               .flags = kCcwFlagCc,
               .count = 3,
               .data_address = 0x2010});
  Put(0x1010, {.cmd = kCmdRead, .count = 4, .data_address = 0x2020});
  PutBytes(0x2000, {1, 2});
  PutBytes(0x2010, {3, 4, 5});
  Irb irb = Run(0x1000);
  EXPECT_THAT(a, ElementsAre(1, 2));
  EXPECT_THAT(b, ElementsAre(3, 4, 5));
  EXPECT_THAT(GetBytes(0x2020, 4), ElementsAre(9, 8, 7, 6));
  ASSERT_EQ(device_.seen.size(), 3u);
  EXPECT_FALSE(device_.seen[1].first_in_program);
  EXPECT_EQ(irb.scsw.device_status, kCeDe);
  EXPECT_EQ(irb.scsw.subchannel_status, 0);
  EXPECT_EQ(irb.scsw.ccw_address, 0x1018u);
}

TEST_F(SubchannelTest, DataChainingStoresAcrossThreeCcws) {
  device_.handlers[kCmdRead] = Store({1, 2, 3, 4, 5, 6, 7, 8, 9});
  Put(0x1000, {.cmd = kCmdRead,
               .flags = kCcwFlagCd,
               .count = 3,
               .data_address = 0x2000});
  // The command codes of data-chained CCWs are ignored (even invalid ones).
  Put(0x1008,
      {.cmd = 0x00, .flags = kCcwFlagCd, .count = 2, .data_address = 0x3000});
  Put(0x1010, {.cmd = 0xFF, .count = 4, .data_address = 0x4000});
  Irb irb = Run(0x1000);
  EXPECT_THAT(GetBytes(0x2000, 4), ElementsAre(1, 2, 3, 0));
  EXPECT_THAT(GetBytes(0x3000, 3), ElementsAre(4, 5, 0));
  EXPECT_THAT(GetBytes(0x4000, 5), ElementsAre(6, 7, 8, 9, 0));
  EXPECT_EQ(irb.scsw.device_status, kCeDe);
  EXPECT_EQ(irb.scsw.subchannel_status, 0);
  EXPECT_EQ(irb.scsw.count, 0);
  EXPECT_EQ(irb.scsw.ccw_address, 0x1018u);
  ASSERT_EQ(device_.seen.size(), 1u);
  EXPECT_TRUE(device_.seen[0].data_chained());
}

TEST_F(SubchannelTest, DataChainingGathersOutputAndCommandChainsAfter) {
  std::vector<uint8_t> got;
  device_.handlers[kCmdWrite] = Fetch(6, &got);
  device_.handlers[kCmdControl] = Fetch(0, nullptr);
  Put(0x1000, {.cmd = kCmdWrite,
               .flags = kCcwFlagCd,
               .count = 2,
               .data_address = 0x2000});
  // Only the last CCW's CC flag counts.
  Put(0x1008,
      {.cmd = 0, .flags = kCcwFlagCc, .count = 4, .data_address = 0x3000});
  Put(0x1010, {.cmd = kCmdControl, .count = 0});
  PutBytes(0x2000, {1, 2});
  PutBytes(0x3000, {3, 4, 5, 6});
  Irb irb = Run(0x1000);
  EXPECT_THAT(got, ElementsAre(1, 2, 3, 4, 5, 6));
  ASSERT_EQ(device_.seen.size(), 2u);
  EXPECT_EQ(device_.seen[1].ccw_address, 0x1010u);
  EXPECT_EQ(irb.scsw.device_status, kCeDe);
  EXPECT_EQ(irb.scsw.ccw_address, 0x1018u);
}

TEST_F(SubchannelTest, DataChainingIntoBadDataAddressMidway) {
  absl::Status seen;
  device_.handlers[kCmdRead] = [&](const Command&, CcwData& data) {
    std::vector<uint8_t> bytes = {1, 2, 3, 4, 5, 6};
    seen = data.CopyToGuest(bytes).status();
    // Every later call fails the same way.
    EXPECT_THAT(data.Skip(1), StatusIs(absl::StatusCode::kOutOfRange));
    EXPECT_THAT(data.status(), StatusIs(absl::StatusCode::kOutOfRange));
    return CommandResult::Accepted();
  };
  Put(0x1000, {.cmd = kCmdRead,
               .flags = kCcwFlagCd | kCcwFlagCc,
               .count = 3,
               .data_address = 0x2000});
  // 2 bytes fit, the third is past the end of guest memory.
  Put(0x1008, {.cmd = 0, .count = 3, .data_address = 0xFFFFE});
  Put(0x1010, {.cmd = kCmdRead, .count = 1, .data_address = 0x2000});
  Irb irb = Run(0x1000);
  EXPECT_THAT(seen, StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(GetBytes(0x2000, 3), ElementsAre(1, 2, 3));
  EXPECT_THAT(GetBytes(0xFFFFE, 2), ElementsAre(4, 5));
  EXPECT_EQ(irb.scsw.subchannel_status, kSchStatProgramCheck);
  EXPECT_EQ(irb.scsw.device_status, kCeDe);
  EXPECT_EQ(irb.scsw.ccw_address, 0x1010u);
  EXPECT_EQ(irb.scsw.count, 1);  // 2 of the second CCW's 3 bytes were used
  EXPECT_TRUE(irb.scsw.control & kScswScAlert);
  EXPECT_EQ(device_.seen.size(), 1u);  // command chaining stopped
}

TEST_F(SubchannelTest, DataChainingIntoInvalidCcws) {
  struct Case {
    Ccw second;
    absl::StatusCode code;
  };
  const Case cases[] = {
      {{.cmd = 0, .count = 0, .data_address = 0x3000},
       absl::StatusCode::kInvalidArgument},  // count 0 while data chaining
      {{.cmd = 0, .flags = kCcwFlagMida, .count = 4, .data_address = 0x3000},
       absl::StatusCode::kUnimplemented},
      {{.cmd = 0, .flags = kCcwFlagSuspend, .count = 4, .data_address = 0x3000},
       absl::StatusCode::kUnimplemented},
      {{.cmd = 0, .count = 4, .data_address = 0x80003000},
       absl::StatusCode::kInvalidArgument},
  };
  for (const Case& c : cases) {
    absl::Status seen;
    device_.handlers[kCmdRead] = [&](const Command&, CcwData& data) {
      seen = data.CopyToGuest(std::vector<uint8_t>(6, 1)).status();
      return CommandResult::Accepted();
    };
    Put(0x1000, {.cmd = kCmdRead,
                 .flags = kCcwFlagCd,
                 .count = 3,
                 .data_address = 0x2000});
    Put(0x1008, c.second);
    Irb irb = Run(0x1000);
    EXPECT_THAT(seen, StatusIs(c.code));
    EXPECT_EQ(irb.scsw.subchannel_status, kSchStatProgramCheck);
    EXPECT_EQ(irb.scsw.ccw_address, 0x1010u);
  }
}

TEST_F(SubchannelTest, DataChainNotReachedIsNotFetched) {
  // The device takes exactly the first CCW's count: the garbage CCW after it
  // is never fetched, but data chaining was still indicated, so incorrect
  // length (SLI is ignored with CD).
  device_.handlers[kCmdRead] = Store({1, 2, 3});
  Put(0x1000, {.cmd = kCmdRead,
               .flags = kCcwFlagCd | kCcwFlagSli,
               .count = 3,
               .data_address = 0x2000});
  Put(0x1008, {.cmd = 0, .flags = kCcwFlagIda, .count = 0});
  Irb irb = Run(0x1000);
  EXPECT_EQ(irb.scsw.subchannel_status, kSchStatIncorrectLength);
  EXPECT_EQ(irb.scsw.device_status, kCeDe);
  EXPECT_EQ(irb.scsw.count, 0);
  EXPECT_EQ(irb.scsw.ccw_address, 0x1008u);
}

TEST_F(SubchannelTest, TicInCommandAndDataChaining) {
  std::vector<uint8_t> got;
  device_.handlers[kCmdWrite] = Fetch(4, &got);
  Put(0x1000, {.cmd = kCmdNoop, .flags = kCcwFlagCc | kCcwFlagSli, .count = 1});
  Put(0x1008, {.cmd = kCmdTic, .data_address = 0x5000});
  Put(0x5000, {.cmd = kCmdWrite,
               .flags = kCcwFlagCd,
               .count = 2,
               .data_address = 0x2000});
  Put(0x5008, {.cmd = kCmdTic, .data_address = 0x6000});
  Put(0x6000, {.cmd = 0, .count = 2, .data_address = 0x3000});
  PutBytes(0x2000, {1, 2});
  PutBytes(0x3000, {3, 4});
  Irb irb = Run(0x1000);
  EXPECT_THAT(got, ElementsAre(1, 2, 3, 4));
  EXPECT_EQ(irb.scsw.device_status, kCeDe);
  EXPECT_EQ(irb.scsw.subchannel_status, 0);
  EXPECT_EQ(irb.scsw.ccw_address, 0x6008u);
}

TEST_F(SubchannelTest, TicRules) {
  struct Case {
    const char* name;
    std::vector<std::pair<uint64_t, Ccw>> program;
    uint32_t expected_ccw_address;
  };
  const Ccw noop_cc{
      .cmd = kCmdNoop, .flags = kCcwFlagCc | kCcwFlagSli, .count = 1};
  const Case cases[] = {
      {"first CCW is a TIC",
       {{0x1000, {.cmd = kCmdTic, .data_address = 0x2000}}},
       0x1008},
      {"TIC to TIC",
       {{0x1000, noop_cc},
        {0x1008, {.cmd = kCmdTic, .data_address = 0x2000}},
        {0x2000, {.cmd = kCmdTic, .data_address = 0x3000}}},
       0x2008},
      {"misaligned TIC address",
       {{0x1000, noop_cc}, {0x1008, {.cmd = kCmdTic, .data_address = 0x2004}}},
       0x1010},
      {"TIC outside memory",
       {{0x1000, noop_cc},
        {0x1008, {.cmd = kCmdTic, .data_address = 0x200000}}},
       0x1010},
      {"format-1 TIC with flags",
       {{0x1000, noop_cc},
        {0x1008,
         {.cmd = kCmdTic, .flags = kCcwFlagCc, .data_address = 0x2000}}},
       0x1010},
      {"format-1 TIC with a count",
       {{0x1000, noop_cc},
        {0x1008, {.cmd = kCmdTic, .count = 8, .data_address = 0x2000}}},
       0x1010},
      {"format-1 TIC with high command bits",
       {{0x1000, noop_cc}, {0x1008, {.cmd = 0x18, .data_address = 0x2000}}},
       0x1010},
  };
  for (const Case& c : cases) {
    for (const auto& [address, ccw] : c.program) Put(address, ccw);
    Irb irb = Run(0x1000);
    EXPECT_EQ(irb.scsw.subchannel_status, kSchStatProgramCheck) << c.name;
    EXPECT_EQ(irb.scsw.device_status, 0) << c.name;
    EXPECT_EQ(irb.scsw.ccw_address, c.expected_ccw_address) << c.name;
    EXPECT_TRUE(irb.scsw.control & kScswScAlert) << c.name;
  }
}

TEST_F(SubchannelTest, Format0TicIgnoresHighBitsFlagsAndCount) {
  device_.handlers[kCmdControl] = Fetch(0, nullptr);
  Put(0x1000, {.cmd = kCmdNoop, .flags = kCcwFlagCc | kCcwFlagSli, .count = 1},
      CcwFormat::kFormat0);
  Put(0x1008,
      {.cmd = 0xF8, .flags = 0xFF, .count = 0xFFFF, .data_address = 0x2000},
      CcwFormat::kFormat0);
  Put(0x2000, {.cmd = kCmdControl, .flags = kCcwFlagSli, .count = 1},
      CcwFormat::kFormat0);
  Irb irb = Run(0x1000, CcwFormat::kFormat0);
  EXPECT_EQ(irb.scsw.subchannel_status, 0);
  EXPECT_EQ(irb.scsw.ccw_address, 0x2008u);
  EXPECT_FALSE(irb.scsw.control & kScswFormat1);
}

TEST_F(SubchannelTest, TicLoopIsBounded) {
  // NOOP; TIC back to the NOOP: no data, so the no-data bound ends it.
  Put(0x1000, {.cmd = kCmdNoop, .flags = kCcwFlagCc | kCcwFlagSli, .count = 1});
  Put(0x1008, {.cmd = kCmdTic, .data_address = 0x1000});
  Irb irb = Run(0x1000);
  EXPECT_EQ(irb.scsw.subchannel_status, kSchStatProgramCheck);

  // A loop that moves data each round ends at the CCW bound.
  device_.handlers[kCmdWrite] = Fetch(1, nullptr);
  Put(0x1000, {.cmd = kCmdWrite,
               .flags = kCcwFlagCc,
               .count = 1,
               .data_address = 0x2000});
  irb = Run(0x1000);
  EXPECT_EQ(irb.scsw.subchannel_status, kSchStatProgramCheck);
  EXPECT_LE(device_.seen.size(), sch_->options().max_ccws);
  EXPECT_GT(device_.seen.size(), 400u);

  // A data chain looping through a TIC ends at the CCW bound as well.
  absl::Status seen;
  device_.handlers[kCmdRead] = [&](const Command&, CcwData& data) {
    seen = data.Skip(1 << 30).status();
    return CommandResult::Accepted();
  };
  Put(0x1000, {.cmd = kCmdRead,
               .flags = kCcwFlagCd,
               .count = 100,
               .data_address = 0x2000});
  Put(0x1008, {.cmd = kCmdTic, .data_address = 0x1000});
  irb = Run(0x1000);
  EXPECT_THAT(seen, StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_EQ(irb.scsw.subchannel_status, kSchStatProgramCheck);
}

TEST_F(SubchannelTest, NoDataBound) {
  for (uint64_t i = 0; i < 300; ++i) {
    Put(0x1000 + 8 * i, {.cmd = kCmdNoop, .flags = kCcwFlagCc, .count = 0});
  }
  Irb irb = Run(0x1000);
  EXPECT_EQ(irb.scsw.subchannel_status, kSchStatProgramCheck);
  EXPECT_EQ(irb.scsw.ccw_address, 0x1000u + 8 * 255 + 8);
}

TEST_F(SubchannelTest, ShortAndLongCountsWithAndWithoutSli) {
  device_.handlers[kCmdRead] = Store({1, 2, 3, 4, 5});
  device_.handlers[kCmdWrite] = Fetch(10, nullptr);
  device_.handlers[kCmdControl] = Fetch(0, nullptr);
  struct Case {
    uint8_t cmd;
    uint8_t flags;
    uint16_t count;
    uint8_t expect_sch_status;
    uint16_t expect_residual;
    size_t expect_commands;
  };
  const Case cases[] = {
      // Device stores 5 bytes into a count of 8: residual 3.
      {kCmdRead, 0, 8, kSchStatIncorrectLength, 3, 1},
      {kCmdRead, kCcwFlagSli, 8, 0, 3, 2},
      // Device wants 10 bytes from a count of 8: residual 0, "long".
      {kCmdWrite, 0, 8, kSchStatIncorrectLength, 0, 1},
      {kCmdWrite, kCcwFlagSli, 8, 0, 0, 2},
      // Exact.
      {kCmdRead, 0, 5, 0, 0, 2},
      {kCmdWrite, 0, 10, 0, 0, 2},
  };
  for (const Case& c : cases) {
    device_.seen.clear();
    Put(0x1000, {.cmd = c.cmd,
                 .flags = uint8_t(c.flags | kCcwFlagCc),
                 .count = c.count,
                 .data_address = 0x2000});
    Put(0x1008, {.cmd = kCmdControl, .count = 0});
    Irb irb = Run(0x1000);
    EXPECT_EQ(irb.scsw.subchannel_status, c.expect_sch_status);
    EXPECT_EQ(irb.scsw.device_status, kCeDe);
    EXPECT_EQ(device_.seen.size(), c.expect_commands);  // IL stops chaining
    if (c.expect_commands == 1) {
      EXPECT_EQ(irb.scsw.count, c.expect_residual);
      EXPECT_EQ(irb.scsw.ccw_address, 0x1008u);
      EXPECT_TRUE(irb.scsw.control & kScswScAlert);
    }
  }
}

TEST_F(SubchannelTest, SelectorThenResultLikeReadFeat) {
  // READ_FEAT-like: read the index at offset 4, store 4 bytes at offset 0:
  // the command used 5 bytes.
  uint8_t index = 0xFF;
  device_.handlers[kCmdRead] = [&](const Command&, CcwData& data) {
    EXPECT_OK(data.Skip(4).status());
    EXPECT_OK(data.CopyFromGuest(absl::MakeSpan(&index, 1)).status());
    data.Rewind();
    EXPECT_EQ(data.position(), 0u);
    const uint8_t features[4] = {0x01, 0x02, 0x03, 0x04};
    EXPECT_OK(data.CopyToGuest(features).status());
    return CommandResult::Accepted();
  };
  PutBytes(0x2000, {0, 0, 0, 0, 1});
  Put(0x1000, {.cmd = kCmdRead,
               .flags = kCcwFlagSli,
               .count = 8,
               .data_address = 0x2000});
  Irb irb = Run(0x1000);
  EXPECT_EQ(index, 1);
  EXPECT_THAT(GetBytes(0x2000, 5), ElementsAre(1, 2, 3, 4, 1));
  EXPECT_EQ(irb.scsw.subchannel_status, 0);
  EXPECT_EQ(irb.scsw.count, 3);
  Put(0x1000, {.cmd = kCmdRead, .count = 8, .data_address = 0x2000});
  irb = Run(0x1000);
  EXPECT_EQ(irb.scsw.subchannel_status, kSchStatIncorrectLength);
  EXPECT_EQ(irb.scsw.count, 3);
}

TEST_F(SubchannelTest, ConfigSpaceCommandsLikeVirtioCcw) {
  // READ_CONF / WRITE_CONF: the config space from offset 0, `count` bytes;
  // a count past the end of a 6-byte config space leaves a residual.
  std::vector<uint8_t> config = {1, 2, 3, 4, 5, 6};
  device_.handlers[0x22] = [&](const Command& cmd, CcwData& data) {
    const size_t n = std::min<size_t>(cmd.count, config.size());
    (void)data.CopyToGuest(absl::MakeConstSpan(config.data(), n));
    return CommandResult::Accepted();
  };
  device_.handlers[0x21] = [&](const Command& cmd, CcwData& data) {
    std::vector<uint8_t> buf(std::min<size_t>(cmd.count, config.size()));
    absl::StatusOr<size_t> n = data.CopyFromGuest(absl::MakeSpan(buf));
    if (!n.ok()) return CommandResult::Accepted();  // program check wins
    std::copy(buf.begin(), buf.begin() + *n, config.begin());
    return CommandResult::Accepted();
  };
  PutBytes(0x2000, {9, 9, 9, 9, 9, 9, 9, 9, 9, 9});
  Put(0x1000, {.cmd = 0x21, .count = 3, .data_address = 0x2000});
  Irb irb = Run(0x1000);
  EXPECT_EQ(irb.scsw.subchannel_status, 0);
  EXPECT_THAT(config, ElementsAre(9, 9, 9, 4, 5, 6));
  Put(0x1000, {.cmd = 0x22, .count = 10, .data_address = 0x3000});
  irb = Run(0x1000);
  EXPECT_EQ(irb.scsw.subchannel_status, kSchStatIncorrectLength);
  EXPECT_EQ(irb.scsw.count, 4);
  EXPECT_THAT(GetBytes(0x3000, 6), ElementsAre(9, 9, 9, 4, 5, 6));
  Put(0x1000,
      {.cmd = 0x22, .flags = kCcwFlagSli, .count = 10, .data_address = 0x3000});
  irb = Run(0x1000);
  EXPECT_EQ(irb.scsw.subchannel_status, 0);
  EXPECT_EQ(irb.scsw.count, 4);
}

TEST_F(SubchannelTest, ZeroCounts) {
  device_.handlers[kCmdControl] = Fetch(0, nullptr);
  device_.handlers[kCmdWrite] = Fetch(4, nullptr);
  // Format 1, no data chaining: valid (VDEV_RESET).
  Put(0x1000, {.cmd = kCmdControl, .count = 0});
  Irb irb = Run(0x1000);
  EXPECT_EQ(irb.scsw.subchannel_status, 0);
  EXPECT_EQ(irb.scsw.device_status, kCeDe);
  ASSERT_EQ(device_.seen.size(), 1u);
  EXPECT_EQ(device_.seen.back().count, 0);
  // A device that wants data from a zero count: incorrect length.
  Put(0x1000, {.cmd = kCmdWrite, .count = 0});
  irb = Run(0x1000);
  EXPECT_EQ(irb.scsw.subchannel_status, kSchStatIncorrectLength);
  EXPECT_EQ(irb.scsw.count, 0);
  // Format 1 with CD: invalid count.
  device_.seen.clear();
  Put(0x1000, {.cmd = kCmdWrite, .flags = kCcwFlagCd, .count = 0});
  irb = Run(0x1000);
  EXPECT_EQ(irb.scsw.subchannel_status, kSchStatProgramCheck);
  EXPECT_EQ(irb.scsw.device_status, 0);
  // Format 0: always invalid.
  Put(0x1000, {.cmd = kCmdControl, .count = 0}, CcwFormat::kFormat0);
  irb = Run(0x1000, CcwFormat::kFormat0);
  EXPECT_EQ(irb.scsw.subchannel_status, kSchStatProgramCheck);
  EXPECT_EQ(irb.scsw.ccw_address, 0x1008u);
  EXPECT_TRUE(device_.seen.empty());
}

TEST_F(SubchannelTest, ImmediateOperationsAndSuppressionMode) {
  // A NOOP with a nonzero count and no SLI: incorrect length only for
  // format-1 CCWs without the ORB's L bit.
  Put(0x1000, {.cmd = kCmdNoop, .count = 4}, CcwFormat::kFormat1);
  Irb irb = Run(0x1000);
  EXPECT_EQ(irb.scsw.subchannel_status, kSchStatIncorrectLength);
  EXPECT_EQ(irb.scsw.device_status, kCeDe);
  EXPECT_EQ(irb.scsw.count, 4);
  irb = Run(0x1000, CcwFormat::kFormat1, kOrbIncorrectLengthSuppression);
  EXPECT_EQ(irb.scsw.subchannel_status, 0);
  EXPECT_EQ(irb.scsw.count, 4);
  Put(0x1000, {.cmd = kCmdNoop, .count = 4}, CcwFormat::kFormat0);
  irb = Run(0x1000, CcwFormat::kFormat0);
  EXPECT_EQ(irb.scsw.subchannel_status, 0);
  EXPECT_EQ(irb.scsw.count, 4);
  irb = Run(0x1000, CcwFormat::kFormat0, kOrbIncorrectLengthSuppression);
  EXPECT_EQ(irb.scsw.subchannel_status, 0);
  // Not immediate: the device wanted data. The L bit does not apply.
  device_.handlers[kCmdControl] = Fetch(8, nullptr);
  Put(0x1000, {.cmd = kCmdControl, .count = 4, .data_address = 0x2000});
  irb = Run(0x1000, CcwFormat::kFormat1, kOrbIncorrectLengthSuppression);
  EXPECT_EQ(irb.scsw.subchannel_status, kSchStatIncorrectLength);
}

TEST_F(SubchannelTest, CcwAddressChecks) {
  Irb irb = Run(0x1004);  // misaligned
  EXPECT_EQ(irb.scsw.subchannel_status, kSchStatProgramCheck);
  EXPECT_EQ(irb.scsw.device_status, 0);
  EXPECT_EQ(irb.scsw.ccw_address, 0x100Cu);
  irb = Run(0x200000);  // outside memory
  EXPECT_EQ(irb.scsw.subchannel_status, kSchStatProgramCheck);
  // Command chaining off the end of guest memory.
  Put(0xFFFF8,
      {.cmd = kCmdNoop, .flags = kCcwFlagCc | kCcwFlagSli, .count = 1});
  irb = Run(0xFFFF8);
  EXPECT_EQ(irb.scsw.subchannel_status, kSchStatProgramCheck);
  EXPECT_EQ(irb.scsw.ccw_address, 0x100008u);
}

TEST_F(SubchannelTest, InvalidCommandCodesAndUnsupportedFlags) {
  // IDA is supported: see the IdaTest tests.
  const Ccw bad[] = {
      {.cmd = 0x00, .count = 1, .data_address = 0x2000},
      {.cmd = 0x70, .count = 1, .data_address = 0x2000},
      {.cmd = kCmdWrite,
       .flags = kCcwFlagMida,
       .count = 1,
       .data_address = 0x2000},
      {.cmd = kCmdWrite,
       .flags = kCcwFlagSuspend,
       .count = 1,
       .data_address = 0x2000},
      {.cmd = kCmdWrite, .count = 1, .data_address = 0x80002000},
  };
  for (const Ccw& ccw : bad) {
    Put(0x1000, ccw);
    Irb irb = Run(0x1000, CcwFormat::kFormat1, kOrbSuspendControl);
    EXPECT_EQ(irb.scsw.subchannel_status, kSchStatProgramCheck);
    EXPECT_EQ(irb.scsw.ccw_address, 0x1008u);
  }
  EXPECT_TRUE(device_.seen.empty());
}

TEST_F(SubchannelTest, DataAddressOutsideMemory) {
  absl::Status seen;
  device_.handlers[kCmdRead] = [&](const Command&, CcwData& data) {
    seen = data.CopyToGuest(std::vector<uint8_t>(8, 7)).status();
    return CommandResult::Accepted();
  };
  Put(0x1000, {.cmd = kCmdRead, .count = 8, .data_address = 0xFFFFC});
  Irb irb = Run(0x1000);
  EXPECT_THAT(seen, StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(GetBytes(0xFFFFC, 4), ElementsAre(7, 7, 7, 7));
  EXPECT_EQ(irb.scsw.subchannel_status, kSchStatProgramCheck);
  EXPECT_EQ(irb.scsw.count, 4);
  // An address the device never touches is no error.
  device_.handlers[kCmdRead] = Store({});
  Put(0x1000, {.cmd = kCmdRead,
               .flags = kCcwFlagSli,
               .count = 8,
               .data_address = 0x7FFF0000});
  irb = Run(0x1000);
  EXPECT_EQ(irb.scsw.subchannel_status, 0);
}

TEST_F(SubchannelTest, SkipSuppressesStores) {
  device_.handlers[kCmdRead] = Store({1, 2, 3, 4, 5, 6});
  Put(0x1000, {.cmd = kCmdRead,
               .flags = kCcwFlagCd | kCcwFlagSkip,
               .count = 3,
               .data_address = 0x7FFF0000});  // not checked when skipping
  Put(0x1008, {.cmd = 0, .count = 3, .data_address = 0x2000});
  Irb irb = Run(0x1000);
  EXPECT_EQ(irb.scsw.subchannel_status, 0);
  EXPECT_THAT(GetBytes(0x2000, 3), ElementsAre(4, 5, 6));
}

TEST_F(SubchannelTest, PciFlagIsReported) {
  device_.handlers[kCmdControl] = Fetch(0, nullptr);
  Put(0x1000, {.cmd = kCmdControl, .flags = kCcwFlagPci, .count = 0});
  Irb irb = Run(0x1000);
  EXPECT_EQ(irb.scsw.subchannel_status, kSchStatPci);
  EXPECT_FALSE(irb.scsw.control & kScswScAlert);
}

TEST_F(SubchannelTest, CommandRejectSenseAndBasicSense) {
  Put(0x1000, {.cmd = kCmdNoop, .flags = kCcwFlagCc | kCcwFlagSli, .count = 1});
  Put(0x1008, {.cmd = kCmdUnknown,
               .flags = kCcwFlagCc,
               .count = 16,
               .data_address = 0x2000});
  Put(0x1010, {.cmd = kCmdNoop, .flags = kCcwFlagSli, .count = 1});
  Irb irb = Run(0x1000);
  EXPECT_EQ(irb.scsw.device_status, kDevStatUnitCheck);
  EXPECT_EQ(irb.scsw.subchannel_status, 0);
  EXPECT_EQ(irb.scsw.count, 16);
  EXPECT_EQ(irb.scsw.ccw_address, 0x1010u);
  EXPECT_TRUE(irb.scsw.control & kScswScAlert);
  EXPECT_FALSE(irb.has_concurrent_sense());
  EXPECT_EQ(sch_->sense()[0], kSense0CommandReject);

  // BASIC SENSE reads the sense bytes and clears them.
  PutBytes(0x3000, std::vector<uint8_t>(40, 0xEE));
  Put(0x1000, {.cmd = kCmdBasicSense, .count = 32, .data_address = 0x3000});
  irb = Run(0x1000);
  EXPECT_EQ(irb.scsw.device_status, kCeDe);
  EXPECT_EQ(irb.scsw.subchannel_status, 0);
  std::vector<uint8_t> expected(32, 0);
  expected[0] = 0x80;
  expected.push_back(0xEE);
  EXPECT_THAT(GetBytes(0x3000, 33), ElementsAreArray(expected));
  EXPECT_EQ(sch_->sense()[0], 0);

  // A short BASIC SENSE without SLI is incorrect length.
  Put(0x1000, {.cmd = kCmdBasicSense, .count = 8, .data_address = 0x3000});
  irb = Run(0x1000);
  EXPECT_EQ(irb.scsw.subchannel_status, kSchStatIncorrectLength);
}

TEST_F(SubchannelTest, SenseIsClearedByTheNextOtherCommand) {
  Put(0x1000, {.cmd = kCmdUnknown, .count = 1, .data_address = 0x2000});
  Run(0x1000);
  EXPECT_EQ(sch_->sense()[0], kSense0CommandReject);
  Put(0x1000, {.cmd = kCmdNoop, .flags = kCcwFlagSli, .count = 1});
  Run(0x1000);
  EXPECT_EQ(sch_->sense()[0], 0);
}

TEST_F(SubchannelTest, ConcurrentSense) {
  sch_->set_concurrent_sense(true);
  Put(0x1000, {.cmd = kCmdUnknown, .count = 1, .data_address = 0x2000});
  Irb irb = Run(0x1000);
  EXPECT_EQ(irb.scsw.device_status, kDevStatUnitCheck);
  ASSERT_TRUE(irb.has_concurrent_sense());
  EXPECT_EQ((irb.erw >> kErwSenseCountShift) & 0x3f, 32u);
  EXPECT_EQ(irb.ecw[0], kSense0CommandReject);
  EXPECT_EQ(sch_->sense()[0], 0);  // consumed
  IrbWire wire = EncodeIrb(irb);
  EXPECT_EQ(wire.ecw[0], 0x80);
  // Not presented without a unit check.
  Put(0x1000, {.cmd = kCmdNoop, .flags = kCcwFlagSli, .count = 1});
  irb = Run(0x1000);
  EXPECT_FALSE(irb.has_concurrent_sense());
}

TEST_F(SubchannelTest, OtherDeviceResults) {
  SenseData sense{};
  sense[0] = kSense0EquipmentCheck;
  sense[1] = 0x42;
  device_.handlers[kCmdWrite] = [&](const Command&, CcwData&) {
    return CommandResult::UnitCheck(sense);
  };
  device_.handlers[kCmdRead] = [](const Command&, CcwData&) {
    return CommandResult::UnitException();
  };
  device_.handlers[kCmdControl] = [](const Command&, CcwData&) {
    return CommandResult::ProgramCheck();
  };
  Put(0x1000, {.cmd = kCmdWrite, .count = 1, .data_address = 0x2000});
  Irb irb = Run(0x1000);
  EXPECT_EQ(irb.scsw.device_status, kCeDe | kDevStatUnitCheck);
  EXPECT_EQ(sch_->sense(), sense);
  Put(0x1000, {.cmd = kCmdRead, .count = 1, .data_address = 0x2000});
  irb = Run(0x1000);
  EXPECT_EQ(irb.scsw.device_status, kCeDe | kDevStatUnitException);
  // After a command that chained successfully, too.
  Put(0x1000, {.cmd = kCmdNoop, .flags = kCcwFlagCc | kCcwFlagSli, .count = 1});
  Put(0x1008, {.cmd = kCmdControl, .count = 1, .data_address = 0x2000});
  irb = Run(0x1000);
  EXPECT_EQ(irb.scsw.subchannel_status, kSchStatProgramCheck);
  EXPECT_EQ(irb.scsw.device_status, 0);
  EXPECT_EQ(irb.scsw.ccw_address, 0x1010u);
}

TEST_F(SubchannelTest, SenseId) {
  device_.id.cu_model = 4;  // virtio rng
  device_.id.dev_type = 0x3832;
  device_.id.dev_model = 1;
  device_.id.ciws[0] = {.type = 0, .command = 0xFA, .count = 0x80};
  device_.id.num_ciws = 1;
  PutBytes(0x2000, std::vector<uint8_t>(16, 0xEE));
  Put(0x1000, {.cmd = kCmdSenseId,
               .flags = kCcwFlagSli,
               .count = 256,
               .data_address = 0x2000});
  Irb irb = Run(0x1000);
  EXPECT_EQ(irb.scsw.device_status, kCeDe);
  EXPECT_EQ(irb.scsw.subchannel_status, 0);
  EXPECT_EQ(irb.scsw.count, 256 - 12);
  EXPECT_THAT(GetBytes(0x2000, 13),
              ElementsAre(0xFF, 0x38, 0x32, 0x04, 0x38, 0x32, 0x01, 0x00, 0x40,
                          0xFA, 0x00, 0x80, 0xEE));
  EXPECT_TRUE(device_.seen.empty());  // generic: the device is not asked
  // Linux's 8-byte SENSE ID without CIWs room, without SLI: incorrect length.
  Put(0x1000, {.cmd = kCmdSenseId, .count = 8, .data_address = 0x2000});
  irb = Run(0x1000);
  EXPECT_EQ(irb.scsw.subchannel_status, kSchStatIncorrectLength);
  EXPECT_EQ(GetBytes(0x2000, 1)[0], 0xFF);
}

// Indirect data addressing: the CCW's data address designates a list of IDAWs.
class IdaTest : public SubchannelTest {
 protected:
  void PutIdaw1(uint64_t address, uint32_t idaw) {
    uint8_t b[4];
    StoreBe32(b, idaw);
    ASSERT_OK(mem_->Write(address, b));
  }
  void PutIdaw2(uint64_t address, uint64_t idaw) {
    uint8_t b[8];
    StoreBe32(b, static_cast<uint32_t>(idaw >> 32));
    StoreBe32(b + 4, static_cast<uint32_t>(idaw));
    ASSERT_OK(mem_->Write(address, b));
  }
  static std::vector<uint8_t> Pattern(size_t n) {
    std::vector<uint8_t> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(i * 7 + 1);
    return v;
  }
};

TEST_F(IdaTest, Format2IdawsWith4KBlocksLikeLinux) {
  // 6000 bytes starting 100 bytes before a 4K boundary: three blocks.
  const std::vector<uint8_t> data = Pattern(6000);
  device_.handlers[kCmdRead] = Store(data);
  PutIdaw2(0x3000, 0x10000 - 100);
  PutIdaw2(0x3008, 0x20000);
  PutIdaw2(0x3010, 0x40000);
  Put(0x1000, {.cmd = kCmdRead,
               .flags = kCcwFlagIda,
               .count = 6000,
               .data_address = 0x3000});
  Irb irb = Run(0x1000, CcwFormat::kFormat1, kOrbFormat2Idaw);
  EXPECT_EQ(irb.scsw.subchannel_status, 0);
  EXPECT_EQ(irb.scsw.count, 0);
  std::vector<uint8_t> got = GetBytes(0x10000 - 100, 100);
  std::vector<uint8_t> more = GetBytes(0x20000, 4096);
  got.insert(got.end(), more.begin(), more.end());
  more = GetBytes(0x40000, 6000 - 100 - 4096);
  got.insert(got.end(), more.begin(), more.end());
  EXPECT_EQ(got, data);
}

TEST_F(IdaTest, Format2IdawsWith2KBlocks) {
  const std::vector<uint8_t> data = Pattern(3000);
  device_.handlers[kCmdRead] = Store(data);
  PutIdaw2(0x3000, 0x10000);
  PutIdaw2(0x3008, 0x20800);
  Put(0x1000, {.cmd = kCmdRead,
               .flags = kCcwFlagIda,
               .count = 3000,
               .data_address = 0x3000});
  Irb irb = Run(0x1000, CcwFormat::kFormat1, kOrbFormat2Idaw | kOrbIdaw2K);
  EXPECT_EQ(irb.scsw.subchannel_status, 0);
  std::vector<uint8_t> got = GetBytes(0x10000, 2048);
  std::vector<uint8_t> more = GetBytes(0x20800, 3000 - 2048);
  got.insert(got.end(), more.begin(), more.end());
  EXPECT_EQ(got, data);
}

TEST_F(IdaTest, Format1IdawsWith2KBlocksAndOutput) {
  const std::vector<uint8_t> data = Pattern(3000);
  PutIdaw1(0x3000, 0x10000 + 2048 - 10);
  PutIdaw1(0x3004, 0x30000);
  PutIdaw1(0x3008, 0x50000);
  PutBytes(0x10000 + 2048 - 10, {data.begin(), data.begin() + 10});
  PutBytes(0x30000, {data.begin() + 10, data.begin() + 2058});
  PutBytes(0x50000, {data.begin() + 2058, data.end()});
  std::vector<uint8_t> got;
  device_.handlers[kCmdWrite] = Fetch(3000, &got);
  Put(0x1000, {.cmd = kCmdWrite,
               .flags = kCcwFlagIda,
               .count = 3000,
               .data_address = 0x3000});
  Irb irb = Run(0x1000);
  EXPECT_EQ(irb.scsw.subchannel_status, 0);
  EXPECT_EQ(got, data);
}

TEST_F(IdaTest, IdaInDataChainingAndFormat0) {
  device_.handlers[kCmdRead] = Store({1, 2, 3, 4, 5, 6});
  PutIdaw1(0x3000, 0x4000);
  Put(0x1000,
      {.cmd = kCmdRead,
       .flags = kCcwFlagCd,
       .count = 2,
       .data_address = 0x2000},
      CcwFormat::kFormat0);
  Put(0x1008,
      {.cmd = 0, .flags = kCcwFlagIda, .count = 4, .data_address = 0x3000},
      CcwFormat::kFormat0);
  Irb irb = Run(0x1000, CcwFormat::kFormat0);
  EXPECT_EQ(irb.scsw.subchannel_status, 0);
  EXPECT_THAT(GetBytes(0x2000, 2), ElementsAre(1, 2));
  EXPECT_THAT(GetBytes(0x4000, 4), ElementsAre(3, 4, 5, 6));
}

TEST_F(IdaTest, InvalidIdaws) {
  struct Case {
    const char* name;
    uint32_t list;
    std::vector<std::pair<uint64_t, uint32_t>> idaws;  // format 1
    absl::StatusCode code;
    size_t stored;
  };
  const Case cases[] = {
      {"misaligned list", 0x3002, {}, absl::StatusCode::kInvalidArgument, 0},
      {"list outside memory", 0x100000, {}, absl::StatusCode::kOutOfRange, 0},
      {"bit 0 set",
       0x3000,
       {{0x3000, 0x80004000}},
       absl::StatusCode::kInvalidArgument,
       0},
      {"second IDAW not on a block boundary",
       0x3000,
       {{0x3000, 0x4000 + 2048 - 16}, {0x3004, 0x6010}},
       absl::StatusCode::kInvalidArgument,
       16},
      {"second IDAW beyond the list's memory",
       0xFFFFC,
       {{0xFFFFC, 0x4000 + 2048 - 16}},
       absl::StatusCode::kOutOfRange,
       16},
      {"IDAW data outside memory",
       0x3000,
       {{0x3000, 0x7FFFF000}},
       absl::StatusCode::kOutOfRange,
       0},
  };
  for (const Case& c : cases) {
    absl::StatusOr<size_t> result;
    device_.handlers[kCmdRead] = [&](const Command&, CcwData& data) {
      result = data.CopyToGuest(std::vector<uint8_t>(64, 9));
      EXPECT_EQ(data.position(), c.stored) << c.name;
      return CommandResult::Accepted();
    };
    for (const auto& [address, idaw] : c.idaws) PutIdaw1(address, idaw);
    Put(0x1000, {.cmd = kCmdRead,
                 .flags = kCcwFlagIda,
                 .count = 64,
                 .data_address = c.list});
    Irb irb = Run(0x1000);
    EXPECT_THAT(result, StatusIs(c.code)) << c.name;
    EXPECT_EQ(irb.scsw.subchannel_status, kSchStatProgramCheck) << c.name;
    EXPECT_EQ(irb.scsw.ccw_address, 0x1008u) << c.name;
    EXPECT_EQ(irb.scsw.count, 64 - c.stored) << c.name;
  }
}

// Memory straddling each format's address limit.
class AddressLimitTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK_AND_ASSIGN(
        mem_,
        GuestMemoryMmap::Create({{.guest_base = 0, .size = 0x10000},
                                 {.guest_base = 0xFFF000, .size = 0x2000},
                                 {.guest_base = 0x7FFFF000, .size = 0x2000}}));
    sch_ = std::make_unique<Subchannel>(*mem_, device_, sink_);
    device_.handlers[kCmdRead] = [this](const Command&, CcwData& data) {
      seen_ = data.CopyToGuest(std::vector<uint8_t>(16, 5)).status();
      return CommandResult::Accepted();
    };
  }
  Irb Run(uint32_t cpa, CcwFormat format) {
    EXPECT_OK(sch_->Start(
        {.control = format == CcwFormat::kFormat1 ? kOrbFormat1 : 0u,
         .cpa = cpa}));
    return sch_->Test().value_or(Irb{});
  }

  std::unique_ptr<GuestMemoryMmap> mem_;
  FakeDevice device_;
  RecordingSink sink_;
  std::unique_ptr<Subchannel> sch_;
  absl::Status seen_;
};

TEST_F(AddressLimitTest, Format0DataBeyond24Bits) {
  ASSERT_OK(mem_->Write(
      0x1000,
      EncodeCcw({.cmd = kCmdRead, .count = 16, .data_address = 0xFFFFF8},
                CcwFormat::kFormat0)));
  Irb irb = Run(0x1000, CcwFormat::kFormat0);
  EXPECT_THAT(seen_, StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_EQ(irb.scsw.subchannel_status, kSchStatProgramCheck);
  EXPECT_EQ(irb.scsw.count, 8);
  // The same in format 1 is fine: the memory is there.
  ASSERT_OK(mem_->Write(
      0x1000,
      EncodeCcw({.cmd = kCmdRead, .count = 16, .data_address = 0xFFFFF8},
                CcwFormat::kFormat1)));
  irb = Run(0x1000, CcwFormat::kFormat1);
  EXPECT_EQ(irb.scsw.subchannel_status, 0);
}

TEST_F(AddressLimitTest, Format0CcwBeyond24Bits) {
  ASSERT_OK(mem_->Write(0xFFFFF8, EncodeCcw({.cmd = kCmdNoop,
                                             .flags = kCcwFlagCc | kCcwFlagSli,
                                             .count = 1},
                                            CcwFormat::kFormat0)));
  ASSERT_OK(mem_->Write(
      0x1000000, EncodeCcw({.cmd = kCmdNoop, .flags = kCcwFlagSli, .count = 1},
                           CcwFormat::kFormat0)));
  Irb irb = Run(0xFFFFF8, CcwFormat::kFormat0);
  EXPECT_EQ(irb.scsw.subchannel_status, kSchStatProgramCheck);
  EXPECT_EQ(irb.scsw.ccw_address, 0x1000008u);
  irb = Run(0x1000000, CcwFormat::kFormat0);
  EXPECT_EQ(irb.scsw.subchannel_status, kSchStatProgramCheck);
  // Format 1 continues across 2^24.
  ASSERT_OK(mem_->Write(0xFFFFF8, EncodeCcw({.cmd = kCmdNoop,
                                             .flags = kCcwFlagCc | kCcwFlagSli,
                                             .count = 1},
                                            CcwFormat::kFormat1)));
  ASSERT_OK(mem_->Write(
      0x1000000, EncodeCcw({.cmd = kCmdNoop, .flags = kCcwFlagSli, .count = 1},
                           CcwFormat::kFormat1)));
  irb = Run(0xFFFFF8, CcwFormat::kFormat1);
  EXPECT_EQ(irb.scsw.subchannel_status, 0);
}

TEST_F(AddressLimitTest, Format1DataBeyond31Bits) {
  ASSERT_OK(mem_->Write(
      0x1000,
      EncodeCcw({.cmd = kCmdRead, .count = 16, .data_address = 0x7FFFFFFC},
                CcwFormat::kFormat1)));
  Irb irb = Run(0x1000, CcwFormat::kFormat1);
  EXPECT_THAT(seen_, StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_EQ(irb.scsw.subchannel_status, kSchStatProgramCheck);
  EXPECT_EQ(irb.scsw.count, 12);
}

}  // namespace
}  // namespace vmmkit::ccw
