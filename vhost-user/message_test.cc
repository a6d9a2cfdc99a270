#include "vhost-user/message.h"

#include <dirent.h>
#include <sys/eventfd.h>

#include <cstring>
#include <vector>

#include "absl/strings/str_format.h"
#include "base/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vmmkit::vhost_user {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::vmmkit::testing::StatusIs;

uint32_t R(Request r) { return static_cast<uint32_t>(r); }

std::vector<ScopedFd> EventFds(int n) {
  std::vector<ScopedFd> fds;
  for (int i = 0; i < n; ++i) fds.emplace_back(eventfd(0, EFD_CLOEXEC));
  return fds;
}

int OpenFdCount() {
  int n = 0;
  DIR* d = opendir("/proc/self/fd");
  while (dirent* e = readdir(d)) n += e->d_name[0] != '.';
  closedir(d);
  return n;
}

TEST(MessageTest, HeaderIsLittleEndian) {
  const std::vector<uint8_t> m =
      EncodeRequest(R(Request::kSetVringNum), kFlagNeedReply,
                    EncodeVringState({.index = 1, .num = 0x100}));
  ASSERT_EQ(m.size(), 20u);
  EXPECT_THAT(std::vector<uint8_t>(m.begin(), m.begin() + 12),
              ElementsAre(8, 0, 0, 0, 9, 0, 0, 0, 8, 0, 0, 0));
  EXPECT_THAT(std::vector<uint8_t>(m.begin() + 12, m.end()),
              ElementsAre(1, 0, 0, 0, 0, 1, 0, 0));
  const WireHeader h = DecodeHeader(m);
  EXPECT_EQ(h.request, 8u);
  EXPECT_EQ(h.flags, kVersion1 | kFlagNeedReply);
  EXPECT_EQ(h.size, 8u);
}

TEST(MessageTest, DecodesEachPayloadKind) {
  ASSERT_OK_AND_ASSIGN(Message f,
                       DecodeMessage(EncodeRequest(R(Request::kSetFeatures), 0,
                                                   EncodeU64(0x140000000ull)),
                                     {}));
  EXPECT_EQ(f.type(), Request::kSetFeatures);
  EXPECT_EQ(f.u64, 0x140000000ull);
  EXPECT_FALSE(f.need_reply());

  ASSERT_OK_AND_ASSIGN(
      Message s,
      DecodeMessage(EncodeRequest(R(Request::kGetVringBase), kFlagNeedReply,
                                  EncodeVringState({3, 77})),
                    {}));
  EXPECT_EQ(s.state.index, 3u);
  EXPECT_EQ(s.state.num, 77u);
  EXPECT_TRUE(s.need_reply());

  VringAddr a{.index = 1,
              .flags = 0,
              .desc = 0x1000,
              .used = 0x3000,
              .avail = 0x2000,
              .log = 0x9000};
  ASSERT_OK_AND_ASSIGN(
      Message am,
      DecodeMessage(
          EncodeRequest(R(Request::kSetVringAddr), 0, EncodeVringAddr(a)), {}));
  EXPECT_EQ(am.addr.index, 1u);
  EXPECT_EQ(am.addr.desc, 0x1000u);
  EXPECT_EQ(am.addr.used, 0x3000u);
  EXPECT_EQ(am.addr.avail, 0x2000u);
  EXPECT_EQ(am.addr.log, 0x9000u);

  std::vector<MemRegion> table = {{0, 0x100000, 0x7f00000000, 0},
                                  {1ull << 32, 0x200000, 0x7f10000000, 4096}};
  ASSERT_OK_AND_ASSIGN(Message mt,
                       DecodeMessage(EncodeRequest(R(Request::kSetMemTable), 0,
                                                   EncodeMemTable(table)),
                                     EventFds(2)));
  EXPECT_EQ(mt.regions, table);
  EXPECT_EQ(mt.fds.size(), 2u);
  EXPECT_TRUE(mt.fds[0].valid());

  ConfigAccess c{.offset = 4, .size = 3, .flags = 1, .data = {7, 8, 9}};
  ASSERT_OK_AND_ASSIGN(
      Message cm,
      DecodeMessage(EncodeRequest(R(Request::kSetConfig), 0, EncodeConfig(c)),
                    {}));
  EXPECT_EQ(cm.config.offset, 4u);
  EXPECT_EQ(cm.config.size, 3u);
  EXPECT_EQ(cm.config.flags, 1u);
  EXPECT_THAT(cm.config.data, ElementsAre(7, 8, 9));

  ASSERT_OK_AND_ASSIGN(
      Message k,
      DecodeMessage(EncodeRequest(R(Request::kSetVringKick), 0, EncodeU64(5)),
                    EventFds(1)));
  EXPECT_EQ(k.vring_index(), 5u);
  EXPECT_FALSE(k.vring_no_fd());
  EXPECT_EQ(k.fds.size(), 1u);
  ASSERT_OK_AND_ASSIGN(Message nofd,
                       DecodeMessage(EncodeRequest(R(Request::kSetVringCall), 0,
                                                   EncodeU64(kVringNoFd | 2)),
                                     {}));
  EXPECT_EQ(nofd.vring_index(), 2u);
  EXPECT_TRUE(nofd.vring_no_fd());
  EXPECT_TRUE(nofd.fds.empty());
}

TEST(MessageTest, HeaderErrors) {
  EXPECT_THAT(DecodeMessage(std::vector<uint8_t>(11), {}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("shorter than header")));
  std::vector<uint8_t> m = EncodeRequest(R(Request::kGetFeatures), 0, {});
  m[4] = 2;  // version 2
  EXPECT_THAT(DecodeMessage(m, {}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("version 2, expected 1")));
  m[4] = 1 | kFlagReply;
  EXPECT_THAT(DecodeMessage(m, {}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("REPLY flag on a request")));
  m[4] = 1 | 0x10;
  EXPECT_THAT(DecodeMessage(m, {}), StatusIs(absl::StatusCode::kInvalidArgument,
                                             HasSubstr("reserved flags")));
  // The size field must match the bytes.
  m = EncodeRequest(R(Request::kSetFeatures), 0, EncodeU64(1));
  m.pop_back();
  EXPECT_THAT(DecodeMessage(m, {}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("7 bytes for a 8-byte payload")));
}

TEST(MessageTest, PayloadSizesPerRequest) {
  struct Case {
    Request request;
    size_t size;
  };
  for (const Case& c :
       {Case{Request::kGetFeatures, 8}, Case{Request::kSetOwner, 1},
        Case{Request::kSetFeatures, 4}, Case{Request::kSetFeatures, 16},
        Case{Request::kSetVringNum, 12}, Case{Request::kSetVringAddr, 32},
        Case{Request::kGetVringBase, 0}, Case{Request::kSetVringEnable, 4},
        Case{Request::kSetVringKick, 4}}) {
    EXPECT_THAT(
        DecodeMessage(
            EncodeRequest(R(c.request), 0, std::vector<uint8_t>(c.size)), {}),
        StatusIs(absl::StatusCode::kInvalidArgument,
                 HasSubstr(absl::StrFormat("payload is %u bytes", c.size))))
        << RequestName(R(c.request));
  }
  // A memory table sized for 2 regions that says 1.
  std::vector<uint8_t> mt =
      EncodeMemTable({{0, 4096, 0, 0}, {8192, 4096, 8192, 0}});
  mt[0] = 1;
  EXPECT_THAT(DecodeMessage(EncodeRequest(R(Request::kSetMemTable), 0, mt),
                            EventFds(1)),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("payload is 72 bytes, expected 40")));
  // A config payload shorter than its size field.
  ConfigAccess c{.offset = 0, .size = 8, .data = {1, 2}};
  EXPECT_THAT(
      DecodeMessage(EncodeRequest(R(Request::kGetConfig), 0, EncodeConfig(c)),
                    {}),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("payload is 14 bytes, expected 20")));
  c.size = 257;
  c.data.assign(257, 0);
  EXPECT_THAT(
      DecodeMessage(EncodeRequest(R(Request::kSetConfig), 0, EncodeConfig(c)),
                    {}),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("config size 257 exceeds 256")));
}

TEST(MessageTest, RegionCountBounds) {
  EXPECT_THAT(
      DecodeMessage(
          EncodeRequest(R(Request::kSetMemTable), 0, EncodeMemTable({})), {}),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("0 regions (1..8 allowed)")));
  std::vector<MemRegion> nine(9);
  EXPECT_THAT(DecodeMessage(EncodeRequest(R(Request::kSetMemTable), 0,
                                          EncodeMemTable(nine)),
                            EventFds(8)),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("9 regions (1..8 allowed)")));
}

TEST(MessageTest, FdCountsAndReservedBits) {
  EXPECT_THAT(
      DecodeMessage(EncodeRequest(R(Request::kSetVringKick), 0, EncodeU64(0)),
                    {}),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("0 file descriptors, expected 1")));
  EXPECT_THAT(DecodeMessage(EncodeRequest(R(Request::kSetVringErr), 0,
                                          EncodeU64(kVringNoFd)),
                            EventFds(1)),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("1 file descriptors, expected 0")));
  EXPECT_THAT(DecodeMessage(
                  EncodeRequest(R(Request::kSetVringCall), 0, EncodeU64(0x200)),
                  EventFds(1)),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("reserved bits in 0x200")));
  EXPECT_THAT(
      DecodeMessage(EncodeRequest(R(Request::kSetFeatures), 0, EncodeU64(0)),
                    EventFds(1)),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("1 file descriptors, expected 0")));
  EXPECT_THAT(
      DecodeMessage(EncodeRequest(R(Request::kSetOwner), 0, {}), EventFds(9)),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("9 file descriptors")));
}

TEST(MessageTest, FdsNotKeptAreClosed) {
  const int before = OpenFdCount();
  {
    // Refused: all closed.
    EXPECT_FALSE(
        DecodeMessage(EncodeRequest(R(Request::kSetOwner), 0, {}), EventFds(3))
            .ok());
    // Unknown request: closed too.
    EXPECT_THAT(
        DecodeMessage(EncodeRequest(77, 0, {}), EventFds(2)),
        StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("request 77")));
    EXPECT_EQ(OpenFdCount(), before);
    // Accepted: kept in the message while it lives.
    absl::StatusOr<Message> m = DecodeMessage(
        EncodeRequest(R(Request::kSetVringKick), 0, EncodeU64(0)), EventFds(1));
    ASSERT_OK(m.status());
    EXPECT_EQ(OpenFdCount(), before + 1);
  }
  EXPECT_EQ(OpenFdCount(), before);
}

TEST(MessageTest, UnsupportedKnownRequests) {
  for (Request r :
       {Request::kSetLogBase, Request::kSetLogFd, Request::kGetInflightFd,
        Request::kSetStatus, Request::kAddMemReg, Request::kSetBackendReqFd}) {
    EXPECT_THAT(DecodeMessage(EncodeRequest(R(r), 0, {}), {}),
                StatusIs(absl::StatusCode::kUnimplemented,
                         HasSubstr(RequestName(R(r)))));
  }
}

TEST(MessageTest, Replies) {
  const std::vector<uint8_t> r = EncodeReplyU64(R(Request::kGetFeatures), 5);
  const WireHeader h = DecodeHeader(r);
  EXPECT_EQ(h.request, 1u);
  EXPECT_EQ(h.flags, kVersion1 | kFlagReply);
  EXPECT_EQ(h.size, 8u);
  EXPECT_EQ(r[12], 5);
  const std::vector<uint8_t> v =
      EncodeReplyVringState(R(Request::kGetVringBase), {.index = 2, .num = 9});
  EXPECT_THAT(std::vector<uint8_t>(v.begin() + 12, v.end()),
              ElementsAre(2, 0, 0, 0, 9, 0, 0, 0));
}

}  // namespace
}  // namespace vmmkit::vhost_user
