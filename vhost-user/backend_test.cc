#include "vhost-user/backend.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "base/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "vhost-user/event_loop.h"
#include "vhost-user/testing/front_end.h"
#include "virtio-device/blk.h"
#include "virtio-device/console.h"
#include "virtio-device/rng.h"

namespace vmmkit::vhost_user {
namespace {

using ::testing::HasSubstr;
using ::vmmkit::testing::IsOk;
using ::vmmkit::testing::StatusIs;
using ::vmmkit::vhost_user::testing::FakeFrontEnd;
using ::vmmkit::virtqueue::VirtqUsedElem;
using ::vmmkit::virtqueue::testing::DriverQueue;
using Buffer = DriverQueue::Buffer;

constexpr uint64_t kVersion1Bit = uint64_t{1} << 32;
constexpr uint64_t kIndirectBit = uint64_t{1} << 28;
constexpr uint64_t kEventIdxBit = uint64_t{1} << 29;
constexpr uint64_t kBuffer = 0x100000;  // data buffers in guest memory

DriverQueue::Layout Layout(uint16_t size, uint64_t base = 0x10000) {
  return {.size = size,
          .desc = base,
          .avail = base + 0x1000 * ((16 * size + 0xfff) / 0x1000),
          .used = base + 0x1000 * ((16 * size + 0xfff) / 0x1000) + 0x1000};
}

std::string TempDir() {
  const char* dir = std::getenv("TEST_TMPDIR");
  return dir != nullptr ? dir : "/tmp";
}

int OpenFdCount() {
  int n = 0;
  DIR* d = opendir("/proc/self/fd");
  while (dirent* e = readdir(d)) n += e->d_name[0] != '.';
  closedir(d);
  return n;
}

// A back end over a socketpair, run in the test's thread through the
// EventLoop (so the loop's dispatch is exercised too).
class BackendTest : public ::testing::Test {
 protected:
  void Connect(virtio::VirtioDevice& device) {
    ASSERT_OK_AND_ASSIGN(backend_, Backend::Create(device));
    ASSERT_OK_AND_ASSIGN(loop_, EventLoop::Create());
    ASSERT_OK(Reconnect());
  }
  absl::Status Reconnect() {
    VMMKIT_ASSIGN_OR_RETURN(fe_, FakeFrontEnd::Create({}));
    VMMKIT_RETURN_IF_ERROR(backend_->Attach(fe_->TakeBackendSocket()));
    fe_->set_pump([this] { Pump(); });
    return absl::OkStatus();
  }
  // The back end goes before the devices the subclasses own.
  void TearDown() override {
    backend_.reset();
    fe_.reset();
  }
  void Pump() {
    for (int i = 0; i < 4; ++i) ASSERT_OK(loop_->RunOnce(*backend_, 0));
  }
  // Sends `request` with `payload` and NEED_REPLY; the ack value.
  uint64_t Ack(Request request, absl::Span<const uint8_t> payload,
               absl::Span<const int> fds = {}) {
    EXPECT_OK(fe_->Send(request, kFlagNeedReply, payload, fds));
    absl::StatusOr<std::vector<uint8_t>> reply = fe_->ReceiveReply(request);
    EXPECT_OK(reply.status());
    if (!reply.ok() || reply->size() != 8) return ~uint64_t{0};
    uint64_t v;
    std::memcpy(&v, reply->data(), 8);
    return v;
  }

  std::unique_ptr<Backend> backend_;
  std::unique_ptr<EventLoop> loop_;
  std::unique_ptr<FakeFrontEnd> fe_;
};

// ---------------------------------------------------------------------------
// rng

class RngTest : public BackendTest {
 protected:
  void SetUp() override { Connect(rng_); }
  void StartRing() {
    ASSERT_OK(fe_->Init());
    ASSERT_OK(fe_->Start(kVersion1Bit | kIndirectBit, {Layout(256)}));
  }
  // Posts one writable buffer, kicks, and returns the used element.
  std::optional<VirtqUsedElem> RngRequest(uint32_t len) {
    absl::StatusOr<uint16_t> head =
        fe_->ring(0).AddChain({{kBuffer, len, true}});
    EXPECT_OK(head.status());
    fe_->Kick(0);
    Pump();
    return fe_->ring(0).PopUsed();
  }
  void StopThenRestartWithoutDisable(bool protocol_bit);
  virtio::RngDevice rng_;
};

TEST_F(RngTest, SetupAsQemuDoesThenRoundTrip) {
  ASSERT_OK_AND_ASSIGN(uint64_t features, fe_->GetFeatures());
  EXPECT_TRUE(features & (uint64_t{1} << kFProtocolFeatures));
  EXPECT_TRUE(features & kVersion1Bit);
  ASSERT_OK_AND_ASSIGN(uint64_t protocol, fe_->GetProtocolFeatures());
  EXPECT_EQ(protocol, kSupportedProtocolFeatures);
  ASSERT_OK(fe_->SetProtocolFeatures(protocol));
  ASSERT_OK_AND_ASSIGN(uint64_t queues, fe_->GetQueueNum());
  EXPECT_EQ(queues, 1u);
  ASSERT_OK(fe_->SetOwner());
  ASSERT_OK(fe_->Start(kVersion1Bit, {Layout(256)}));
  EXPECT_TRUE(backend_->device_active());
  EXPECT_FALSE(backend_->legacy());

  fe_->memory().Fill(kBuffer, 64, 0).IgnoreError();
  std::optional<VirtqUsedElem> used = RngRequest(64);
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(used->len, 64u);
  EXPECT_TRUE(fe_->CallSignalled(0));
  std::vector<uint8_t> bytes(64);
  ASSERT_OK(fe_->memory().Read(kBuffer, absl::MakeSpan(bytes)));
  int nonzero = 0;
  for (uint8_t b : bytes) nonzero += b != 0;
  EXPECT_GT(nonzero, 32);  // 64 random bytes
  EXPECT_EQ(rng_.stats().bytes, 64u);
  EXPECT_EQ(backend_->stats().kicks, 1u);
  EXPECT_EQ(backend_->stats().calls, 1u);
  EXPECT_EQ(backend_->stats().refused, 0u);
}

TEST_F(RngTest, GetVringBaseStopsTheRingAndReturnsNextAvail) {
  StartRing();
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(RngRequest(16).has_value());
  ASSERT_OK_AND_ASSIGN(std::vector<uint32_t> bases, fe_->Stop());
  EXPECT_EQ(bases, std::vector<uint32_t>{3});
  EXPECT_FALSE(backend_->device_active());
  // A stopped ring serves nothing.
  ASSERT_OK(fe_->ring(0).AddChain({{kBuffer, 16, true}}).status());
  fe_->Kick(0);
  Pump();
  EXPECT_FALSE(fe_->ring(0).PopUsed().has_value());

  // Restart where it stopped, as QEMU does after a stop.
  ASSERT_OK(fe_->SetVringNum(0, 256));
  ASSERT_OK(fe_->SetVringBase(0, 3));
  ASSERT_OK(fe_->SetVringAddr(0, Layout(256)));
  ASSERT_OK(fe_->SetVringKick(0));
  ASSERT_OK(fe_->SetVringEnable(0, 1));
  EXPECT_TRUE(backend_->device_active());
  // The chain posted while stopped is served at the start.
  std::optional<VirtqUsedElem> used = fe_->ring(0).PopUsed();
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(used->len, 16u);
  EXPECT_EQ(fe_->ring(0).used_idx(), 4u);
  ASSERT_OK_AND_ASSIGN(uint32_t base, fe_->GetVringBase(0));
  EXPECT_EQ(base, 4u);
}

// GET_VRING_BASE alone stops a ring (the front-end need not disable it
// first, and without the protocol-features bit rings are always enabled):
// it starts again only with a new SET_VRING_KICK, so that the SET_VRING_NUM,
// SET_VRING_BASE and SET_VRING_ADDR of QEMU's restart sequence are taken and
// the ring resumes from the base the front-end sends.
void RngTest::StopThenRestartWithoutDisable(bool protocol_bit) {
  const uint64_t bit = protocol_bit ? uint64_t{1} << kFProtocolFeatures : 0;
  ASSERT_OK(fe_->Init());
  ASSERT_OK(fe_->Start(kVersion1Bit, {Layout(256)}, protocol_bit));
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(RngRequest(16).has_value());
  ASSERT_OK_AND_ASSIGN(uint32_t base, fe_->GetVringBase(0));
  EXPECT_EQ(base, 2u);
  EXPECT_FALSE(backend_->device_active());
  // A chain posted while stopped; the stopped ring ignores its kick.
  EXPECT_FALSE(RngRequest(16).has_value());
  // vhost_dev_start again: features, table, then the ring.
  ASSERT_OK(fe_->SetFeatures(kVersion1Bit | bit));
  ASSERT_OK(fe_->SetMemTable());
  ASSERT_OK(fe_->SetVringNum(0, 256));
  ASSERT_OK(fe_->SetVringBase(0, 2));
  ASSERT_OK(fe_->SetVringAddr(0, Layout(256)));
  EXPECT_FALSE(backend_->device_active());
  ASSERT_OK(fe_->SetVringKick(0));
  ASSERT_OK(fe_->SetVringCall(0));
  if (protocol_bit) ASSERT_OK(fe_->SetVringEnable(0, 1));
  EXPECT_TRUE(backend_->device_active());
  // The chain posted while stopped is served from base 2.
  std::optional<VirtqUsedElem> used = fe_->ring(0).PopUsed();
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(used->len, 16u);
  EXPECT_EQ(backend_->stats().refused, 0u);
  ASSERT_OK_AND_ASSIGN(base, fe_->GetVringBase(0));
  EXPECT_EQ(base, 3u);
}

TEST_F(RngTest, StoppedRingRestartsOnNewKickOnly) {
  StopThenRestartWithoutDisable(/*protocol_bit=*/false);
}

TEST_F(RngTest, StoppedRingRestartsOnNewKickOnlyWithProtocolBit) {
  StopThenRestartWithoutDisable(/*protocol_bit=*/true);
}

TEST_F(RngTest, RingsStartEnabledWithoutProtocolFeaturesBit) {
  ASSERT_OK(fe_->Init());
  ASSERT_OK(fe_->Start(kVersion1Bit, {Layout(256)},
                       /*protocol_features_bit=*/false));
  EXPECT_TRUE(backend_->device_active());
  EXPECT_TRUE(RngRequest(8).has_value());
}

TEST_F(RngTest, DisabledRingIgnoresKicksUntilEnabled) {
  StartRing();
  ASSERT_OK(fe_->SetVringEnable(0, 0));
  ASSERT_OK(fe_->ring(0).AddChain({{kBuffer, 8, true}}).status());
  fe_->Kick(0);
  Pump();
  EXPECT_FALSE(fe_->ring(0).PopUsed().has_value());
  EXPECT_EQ(backend_->stats().ignored_kicks, 1u);
  ASSERT_OK(fe_->SetVringEnable(0, 1));
  EXPECT_TRUE(fe_->ring(0).PopUsed().has_value());
}

TEST_F(RngTest, EventIdxSuppressesCalls) {
  ASSERT_OK(fe_->Init());
  ASSERT_OK(fe_->Start(kVersion1Bit | kEventIdxBit, {Layout(256)}));
  // The first used buffer is always signalled (nothing was signalled
  // before, as in QEMU); then used_event = 5 asks for a call only once the
  // used index passes 5.
  ASSERT_TRUE(RngRequest(4).has_value());
  EXPECT_TRUE(fe_->CallSignalled(0));
  fe_->ring(0).SetUsedEvent(5);
  for (int i = 2; i <= 5; ++i) {
    ASSERT_TRUE(RngRequest(4).has_value());
    EXPECT_FALSE(fe_->CallSignalled(0)) << i;
  }
  ASSERT_TRUE(RngRequest(4).has_value());
  EXPECT_TRUE(fe_->CallSignalled(0));
  EXPECT_EQ(backend_->stats().suppressed_calls, 4u);
  EXPECT_EQ(backend_->stats().calls, 2u);
}

TEST_F(RngTest, DisconnectResetsAndTheNextFrontEndIsServed) {
  StartRing();
  ASSERT_TRUE(RngRequest(8).has_value());
  fe_->Close();
  Pump();
  EXPECT_FALSE(backend_->connected());
  EXPECT_FALSE(backend_->device_active());
  EXPECT_EQ(backend_->stats().disconnects, 1u);
  EXPECT_OK(backend_->last_error());

  ASSERT_OK(Reconnect());
  StartRing();
  std::optional<VirtqUsedElem> used = RngRequest(32);
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(used->len, 32u);
  EXPECT_EQ(backend_->stats().connections, 2u);
  EXPECT_EQ(backend_->stats().activations, 2u);
}

TEST_F(RngTest, ListenAcceptsOneFrontEndAtATime) {
  backend_->Disconnect(absl::OkStatus());
  // sun_path holds 107 bytes: TEST_TMPDIR can be longer.
  char dir[] = "/tmp/vmmkit-vu-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::string path = std::string(dir) + "/rng.sock";
  ASSERT_OK(backend_->Listen(path));
  ASSERT_OK_AND_ASSIGN(auto a, FakeFrontEnd::Connect(path, {}));
  Pump();
  EXPECT_TRUE(backend_->connected());
  a->set_pump([this] { Pump(); });
  ASSERT_OK(a->Init());
  ASSERT_OK(a->Start(kVersion1Bit, {Layout(256)}));
  // A second front-end waits in the backlog while the first is served.
  ASSERT_OK_AND_ASSIGN(auto b, FakeFrontEnd::Connect(path, {}));
  b->set_pump([this] { Pump(); });
  ASSERT_OK(b->Send(Request::kGetFeatures, 0, {}));
  ASSERT_OK(a->ring(0).AddChain({{kBuffer, 8, true}}).status());
  a->Kick(0);
  Pump();
  EXPECT_TRUE(a->ring(0).PopUsed().has_value());
  a->Close();
  Pump();
  // Now the second is accepted and its queued request answered.
  ASSERT_OK(b->ReceiveReply(Request::kGetFeatures).status());
  EXPECT_EQ(backend_->stats().connections, 3u);
  // A stale socket file is replaced.
  backend_.reset();
  ASSERT_OK_AND_ASSIGN(backend_, Backend::Create(rng_));
  ASSERT_OK(backend_->Listen(path));
  backend_.reset();  // removes the socket file
  EXPECT_NE(access(path.c_str(), F_OK), 0);
  rmdir(dir);
}

// ---- hostile front-ends (with REPLY_ACK: refusals are acks of 1)

class HostileTest : public RngTest {
 protected:
  void SetUp() override {
    RngTest::SetUp();
    ASSERT_OK(fe_->Init());
  }
  void ExpectRefused(absl::Status s, absl::StatusCode code,
                     const std::string& text) {
    EXPECT_THAT(s, StatusIs(absl::StatusCode::kAborted));
    EXPECT_THAT(backend_->last_error(), StatusIs(code, HasSubstr(text)));
    EXPECT_TRUE(backend_->connected());
  }
};

TEST_F(HostileTest, WrongPayloadSize) {
  EXPECT_EQ(Ack(Request::kSetVringNum, std::vector<uint8_t>(4)), 1u);
  EXPECT_THAT(backend_->last_error(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("payload is 4 bytes, expected 8")));
  EXPECT_EQ(Ack(Request::kSetFeatures, std::vector<uint8_t>(12)), 1u);
  EXPECT_EQ(Ack(Request::kSetOwner, std::vector<uint8_t>(8)), 1u);
  EXPECT_EQ(backend_->stats().refused, 3u);
  EXPECT_TRUE(backend_->connected());
}

TEST_F(HostileTest, MissingAndExtraFds) {
  // SET_VRING_KICK without NOFD needs one fd.
  EXPECT_EQ(Ack(Request::kSetVringKick, EncodeU64(0)), 1u);
  EXPECT_THAT(backend_->last_error(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("0 file descriptors, expected 1")));
  // NOFD with an fd is one too many; SET_VRING_NUM takes none. The fds
  // the back end received are closed again.
  const int before = OpenFdCount();
  {
    ScopedFd e(eventfd(0, EFD_CLOEXEC));
    const int fds[2] = {e.get(), e.get()};
    EXPECT_EQ(Ack(Request::kSetVringKick, EncodeU64(kVringNoFd), fds), 1u);
    EXPECT_EQ(Ack(Request::kSetVringNum, EncodeVringState({0, 256}), fds), 1u);
    EXPECT_THAT(backend_->last_error(),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         HasSubstr("2 file descriptors, expected 0")));
  }
  EXPECT_EQ(OpenFdCount(), before);
}

TEST_F(HostileTest, RingIndexOutOfRange) {
  ExpectRefused(fe_->SetVringNum(1, 256), absl::StatusCode::kOutOfRange,
                "vring index 1 out of range (1 queues)");
  ExpectRefused(fe_->SetVringKick(200), absl::StatusCode::kOutOfRange,
                "vring index 200");
  ExpectRefused(fe_->SetVringEnable(7, 1), absl::StatusCode::kOutOfRange,
                "vring index 7");
  // GET_VRING_BASE has a reply of its own, which cannot carry an error:
  // the connection closes.
  EXPECT_THAT(fe_->GetVringBase(3), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_FALSE(backend_->connected());
  EXPECT_THAT(backend_->last_error(), StatusIs(absl::StatusCode::kOutOfRange,
                                               HasSubstr("vring index 3")));
}

TEST_F(HostileTest, VringNumNotPowerOfTwoOrAboveMax) {
  ExpectRefused(fe_->SetVringNum(0, 100), absl::StatusCode::kInvalidArgument,
                "SET_VRING_NUM 100 for vring 0: not a power of two in 1..256");
  ExpectRefused(fe_->SetVringNum(0, 512), absl::StatusCode::kInvalidArgument,
                "SET_VRING_NUM 512");
  ExpectRefused(fe_->SetVringNum(0, 0), absl::StatusCode::kInvalidArgument,
                "SET_VRING_NUM 0");
  EXPECT_OK(fe_->SetVringNum(0, 128));
  ExpectRefused(fe_->SetVringBase(0, 0x10000),
                absl::StatusCode::kInvalidArgument, "16 bits");
}

TEST_F(HostileTest, VringAddrBeforeMemTable) {
  ExpectRefused(fe_->SetVringAddr(0, Layout(256)),
                absl::StatusCode::kFailedPrecondition,
                "SET_VRING_ADDR before SET_MEM_TABLE");
}

TEST_F(HostileTest, VringAddrOutsideMemTable) {
  ASSERT_OK(fe_->SetMemTable());
  VringAddr addr{.index = 0,
                 .desc = fe_->UserAddr(0x10000),
                 .used = fe_->UserAddr(0x12000),
                 .avail = fe_->UserAddr(4 << 20)};  // one past the end
  ExpectRefused(fe_->SetVringAddr(addr), absl::StatusCode::kOutOfRange,
                "outside the memory table");
  addr.avail = 0x1000;  // a guest address, not a user address
  ExpectRefused(fe_->SetVringAddr(addr), absl::StatusCode::kOutOfRange,
                "front-end address 0x1000");
  addr.avail = fe_->UserAddr(0x11000);
  addr.flags = kVringFLog;
  ExpectRefused(fe_->SetVringAddr(addr), absl::StatusCode::kUnimplemented,
                "dirty logging");
  addr.flags = 0x10;
  ExpectRefused(fe_->SetVringAddr(addr), absl::StatusCode::kInvalidArgument,
                "unknown flags");
}

TEST_F(HostileTest, RingAreaCrossingTheEndOfMemoryFailsAtStart) {
  ASSERT_OK(fe_->SetFeatures(kVersion1Bit));
  ASSERT_OK(fe_->SetMemTable());
  ASSERT_OK(fe_->SetVringNum(0, 256));
  // The used ring starts inside memory but does not fit.
  ASSERT_OK(fe_->SetVringAddr({.index = 0,
                               .desc = fe_->UserAddr(0x10000),
                               .used = fe_->UserAddr((4 << 20) - 64),
                               .avail = fe_->UserAddr(0x11000)}));
  ExpectRefused(fe_->SetVringKick(0), absl::StatusCode::kOutOfRange, "vring 0");
  EXPECT_FALSE(backend_->device_active());
}

TEST_F(HostileTest, MemTableWhileRunning) {
  ASSERT_OK(fe_->Start(kVersion1Bit, {Layout(256)}));
  // The same table again is harmless.
  EXPECT_OK(fe_->SetMemTable());
  std::vector<MemRegion> table = fe_->MemTable();
  table[0].size = 2 << 20;
  const int fd = fe_->memory().fd();
  ExpectRefused(fe_->SetMemTable(table, absl::MakeConstSpan(&fd, 1)),
                absl::StatusCode::kFailedPrecondition,
                "SET_MEM_TABLE while vrings are running");
  EXPECT_TRUE(backend_->device_active());
  // The ring still works.
  ASSERT_OK(fe_->ring(0).AddChain({{kBuffer, 8, true}}).status());
  fe_->Kick(0);
  Pump();
  EXPECT_TRUE(fe_->ring(0).PopUsed().has_value());
}

TEST_F(HostileTest, BadMemTables) {
  const int fd = fe_->memory().fd();
  std::vector<MemRegion> table = fe_->MemTable();
  const int two[2] = {fd, fd};
  // The fd count must match the region count.
  EXPECT_EQ(Ack(Request::kSetMemTable, EncodeMemTable(table), two), 1u);
  EXPECT_THAT(backend_->last_error(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("2 file descriptors, expected 1")));
  // Beyond the end of the memfd (4 MiB).
  table[0].size = 8 << 20;
  ExpectRefused(fe_->SetMemTable(table, absl::MakeConstSpan(&fd, 1)),
                absl::StatusCode::kInvalidArgument, "beyond the end");
  table[0].size = 0;
  ExpectRefused(fe_->SetMemTable(table, absl::MakeConstSpan(&fd, 1)),
                absl::StatusCode::kInvalidArgument, "empty");
  // Two regions overlapping in guest memory.
  std::vector<MemRegion> overlap = {
      {.guest_addr = 0, .size = 2 << 20, .user_addr = 0x10000000},
      {.guest_addr = 1 << 20,
       .size = 1 << 20,
       .user_addr = 0x20000000,
       .mmap_offset = 2 << 20}};
  ExpectRefused(fe_->SetMemTable(overlap, two),
                absl::StatusCode::kInvalidArgument, "overlap in guest memory");
  // Nine regions are more than a table holds.
  std::vector<MemRegion> nine(9);
  std::vector<int> eight_fds(8, fd);
  EXPECT_EQ(Ack(Request::kSetMemTable, EncodeMemTable(nine), eight_fds), 1u);
  EXPECT_THAT(backend_->last_error(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("9 regions (1..8 allowed)")));
  // Nine fds do not even fit a message.
  std::vector<int> nine_fds(9, fd);
  ASSERT_OK(fe_->Send(Request::kSetMemTable, kFlagNeedReply,
                      EncodeMemTable(nine), nine_fds));
  EXPECT_TRUE(fe_->BackEndClosed());
  EXPECT_THAT(backend_->last_error(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("more than 8 fds")));
}

TEST_F(HostileTest, FeaturesNotOffered) {
  ExpectRefused(fe_->SetFeatures(kVersion1Bit | (uint64_t{1} << 5)),
                absl::StatusCode::kInvalidArgument, "not offered: 0x20");
  ExpectRefused(fe_->SetProtocolFeatures(uint64_t{1} << kProtocolLogShmfd),
                absl::StatusCode::kInvalidArgument, "not offered: 0x2");
}

TEST_F(HostileTest, PollingRingRefused) {
  EXPECT_EQ(Ack(Request::kSetVringKick, EncodeU64(kVringNoFd)), 1u);
  EXPECT_THAT(backend_->last_error(), StatusIs(absl::StatusCode::kUnimplemented,
                                               HasSubstr("polling rings")));
  // A call without fd is fine: no notifications.
  EXPECT_EQ(Ack(Request::kSetVringCall, EncodeU64(kVringNoFd)), 0u);
}

TEST_F(HostileTest, UnknownRequests) {
  // With NEED_REPLY the refusal is an ack and the connection stays.
  EXPECT_EQ(Ack(static_cast<Request>(99), {}), 1u);
  EXPECT_THAT(backend_->last_error(), StatusIs(absl::StatusCode::kUnimplemented,
                                               HasSubstr("request 99")));
  EXPECT_EQ(Ack(Request::kSetLogBase, std::vector<uint8_t>(16)), 1u);
  EXPECT_TRUE(backend_->connected());
  // Without it there is no way to report the failure: the connection closes.
  ASSERT_OK(fe_->Send(static_cast<Request>(99), 0, {}));
  EXPECT_TRUE(fe_->BackEndClosed());
  EXPECT_FALSE(backend_->connected());
}

TEST_F(HostileTest, GetConfigBeyondConfigSpace) {
  // rng has no configuration space: the reply is empty.
  EXPECT_THAT(fe_->GetConfig(0, 4), StatusIs(absl::StatusCode::kAborted));
  EXPECT_THAT(backend_->last_error(),
              StatusIs(absl::StatusCode::kOutOfRange,
                       HasSubstr("beyond the 0-byte device configuration")));
  EXPECT_TRUE(backend_->connected());
  // A config access above 256 bytes is malformed.
  ConfigAccess big{.offset = 0, .size = 300};
  big.data.assign(300, 0);
  ASSERT_OK(fe_->Send(Request::kGetConfig, 0, EncodeConfig(big)));
  ASSERT_OK_AND_ASSIGN(std::vector<uint8_t> reply,
                       fe_->ReceiveReply(Request::kGetConfig));
  EXPECT_TRUE(reply.empty());
}

TEST_F(HostileTest, MalformedHeaderClosesTheConnection) {
  // Version 2.
  std::vector<uint8_t> msg = EncodeRequest(1, 0, {});
  msg[4] = 2;
  ASSERT_OK(fe_->SendRaw(msg));
  EXPECT_TRUE(fe_->BackEndClosed());
  EXPECT_THAT(
      backend_->last_error(),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("version 2")));
}

TEST_F(HostileTest, OversizedPayloadClosesTheConnection) {
  std::vector<uint8_t> msg = EncodeRequest(2, 0, {});
  msg[8] = 0;
  msg[9] = 0;
  msg[10] = 1;  // 65536 bytes
  ASSERT_OK(fe_->SendRaw(msg));
  EXPECT_TRUE(fe_->BackEndClosed());
  EXPECT_THAT(
      backend_->last_error(),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("exceeds 4096")));
}

TEST_F(HostileTest, TruncatedMessageThenClose) {
  std::vector<uint8_t> msg = EncodeRequest(2, 0, EncodeU64(1));
  msg.resize(15);
  ASSERT_OK(fe_->SendRaw(msg));
  EXPECT_TRUE(backend_->connected());  // waits for the rest, never blocks
  fe_->Close();
  Pump();
  EXPECT_FALSE(backend_->connected());
  EXPECT_THAT(
      backend_->last_error(),
      StatusIs(absl::StatusCode::kDataLoss, HasSubstr("middle of a message")));
}

TEST_F(HostileTest, TooManyFdsClosesTheConnection) {
  ScopedFd e(eventfd(0, EFD_CLOEXEC));
  std::vector<int> fds(12, e.get());
  ASSERT_OK(fe_->Send(Request::kSetOwner, 0, {}, fds));
  EXPECT_TRUE(fe_->BackEndClosed());
  EXPECT_THAT(backend_->last_error(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("more than 8 fds")));
}

TEST_F(HostileTest, RefusalWithoutAckClosesTheConnection) {
  backend_->Disconnect(absl::OkStatus());
  ASSERT_OK(Reconnect());
  ASSERT_OK(fe_->Init(/*protocol=*/uint64_t{1} << kProtocolMq));  // no acks
  EXPECT_THAT(fe_->SetVringNum(0, 3), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_FALSE(backend_->connected());
  EXPECT_THAT(backend_->last_error(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("SET_VRING_NUM 3")));
}

TEST_F(HostileTest, MalformedChainStopsTheDeviceAndSignalsErr) {
  ASSERT_OK(fe_->Start(kVersion1Bit, {Layout(256)}));
  ASSERT_OK(fe_->SetVringErr(0));
  // A buffer beyond guest memory.
  ASSERT_OK(fe_->ring(0).AddChain({{(4 << 20) - 8, 64, true}}).status());
  fe_->Kick(0);
  Pump();
  EXPECT_TRUE(fe_->ErrSignalled(0));
  EXPECT_THAT(backend_->last_error(), StatusIs(absl::StatusCode::kOutOfRange));
  // Later kicks are not served.
  ASSERT_OK(fe_->ring(0).AddChain({{kBuffer, 8, true}}).status());
  fe_->Kick(0);
  Pump();
  EXPECT_EQ(backend_->stats().ignored_kicks, 1u);
  // Stopping and restarting the ring recovers.
  ASSERT_OK(fe_->Stop().status());
  EXPECT_FALSE(backend_->device_active());
}

TEST_F(HostileTest, PipeAsKickFd) {
  ASSERT_OK(fe_->Start(kVersion1Bit, {Layout(256)}));
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  ScopedFd r(p[0]), w(p[1]);
  EXPECT_EQ(Ack(Request::kSetVringKick, EncodeU64(0), {&p[0], 1}), 0u);
  r.reset();  // the back end has its own
  ASSERT_OK(fe_->ring(0).AddChain({{kBuffer, 8, true}}).status());
  const uint8_t bytes[24] = {};
  ASSERT_EQ(write(w.get(), bytes, sizeof(bytes)), 24);
  Pump();
  EXPECT_TRUE(fe_->ring(0).PopUsed().has_value());
  // One 8-byte read per kick (what drains an eventfd); the pipe's other
  // bytes keep it readable for the next rounds.
  EXPECT_EQ(backend_->stats().kicks, 3u);
  // The writer gone: end of file, the kick fd is dropped, the front-end
  // stays connected.
  w.reset();
  Pump();
  EXPECT_TRUE(backend_->connected());
  for (const Backend::Watch& watch : backend_->watches()) {
    EXPECT_NE(watch.source, Backend::Source::kKick);
  }
}

TEST_F(HostileTest, ResetDeviceForgetsTheSetup) {
  ASSERT_OK(fe_->Start(kVersion1Bit, {Layout(256)}));
  ASSERT_OK(fe_->ResetDevice());
  EXPECT_FALSE(backend_->device_active());
  // The memory table is gone too.
  ExpectRefused(fe_->SetVringAddr(0, Layout(256)),
                absl::StatusCode::kFailedPrecondition, "before SET_MEM_TABLE");
}

// ---------------------------------------------------------------------------
// console: a device fd the kernel cannot poll

TEST_F(BackendTest, UnpollableDeviceFdIsLeftOut) {
  ScopedFd null(open("/dev/null", O_RDONLY | O_CLOEXEC));
  ASSERT_OK_AND_ASSIGN(auto console,
                       virtio::ConsoleDevice::Create({.input_fd = null.get()}));
  Connect(*console);
  ASSERT_EQ(console->backend_fds().size(), 1u);
  // Rounds of the loop go on, and the front-end is still served.
  Pump();
  ASSERT_OK(fe_->Init());
  ASSERT_OK(fe_->Start(kVersion1Bit, {Layout(64), Layout(64, 0x20000)}));
  EXPECT_TRUE(backend_->device_active());
  backend_.reset();
}

TEST_F(BackendTest, ActivatesOnceEveryConfiguredRingIsEnabled) {
  ASSERT_OK_AND_ASSIGN(auto console,
                       virtio::ConsoleDevice::Create({.output_fd = -1}));
  Connect(*console);
  ASSERT_OK(fe_->Init());
  ASSERT_OK(
      fe_->SetFeatures(kVersion1Bit | (uint64_t{1} << kFProtocolFeatures)));
  ASSERT_OK(fe_->SetMemTable());
  for (uint32_t i = 0; i < 2; ++i) {
    ASSERT_OK(fe_->SetVringNum(i, 64));
    ASSERT_OK(fe_->SetVringAddr(i, Layout(64, 0x10000 + 0x10000 * i)));
    ASSERT_OK(fe_->SetVringKick(i));
    ASSERT_OK(fe_->SetVringCall(i));
  }
  ASSERT_OK(fe_->SetVringEnable(0, 1));
  // Ring 1 is configured but not enabled yet: the device waits for it.
  EXPECT_FALSE(backend_->device_active());
  EXPECT_EQ(backend_->queue(0), nullptr);
  ASSERT_OK(fe_->SetVringEnable(1, 1));
  EXPECT_TRUE(backend_->device_active());
  EXPECT_NE(backend_->queue(0), nullptr);
  EXPECT_NE(backend_->queue(1), nullptr);
  EXPECT_EQ(backend_->stats().activations, 1u);
  // Running rings refuse reconfiguration; the same features are fine.
  EXPECT_THAT(fe_->SetVringNum(1, 32), StatusIs(absl::StatusCode::kAborted));
  EXPECT_THAT(backend_->last_error(),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("vring 1 is running")));
  EXPECT_OK(
      fe_->SetFeatures(kVersion1Bit | (uint64_t{1} << kFProtocolFeatures)));
  EXPECT_THAT(fe_->SetFeatures(uint64_t{1} << kFProtocolFeatures),
              StatusIs(absl::StatusCode::kAborted));
  EXPECT_THAT(backend_->last_error(),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("changes features while vrings are running")));
  // Stopping one ring keeps the device; stopping both resets it.
  ASSERT_OK_AND_ASSIGN(uint32_t base, fe_->GetVringBase(1));
  EXPECT_EQ(base, 0u);
  EXPECT_TRUE(backend_->device_active());
  EXPECT_EQ(backend_->queue(1), nullptr);
  ASSERT_OK(fe_->GetVringBase(0).status());
  EXPECT_FALSE(backend_->device_active());
  backend_.reset();
}

// ---------------------------------------------------------------------------
// blk

constexpr uint64_t kImageSize = 1 << 20;  // 2048 sectors

class BlkTest : public BackendTest {
 protected:
  void SetUp() override {
    path_ = TempDir() + "/blk-XXXXXX";
    const int fd = mkstemp(path_.data());
    ASSERT_GE(fd, 0);
    ASSERT_EQ(ftruncate(fd, kImageSize), 0);
    close(fd);
    ASSERT_OK_AND_ASSIGN(blk_, virtio::BlockDevice::Create({.path = path_}));
    Connect(*blk_);
    ASSERT_OK(fe_->Init());
  }
  void TearDown() override {
    BackendTest::TearDown();
    unlink(path_.c_str());
  }

  // One request: header at 0x200000, data at 0x201000, status at 0x203000.
  // Returns the status byte, or -1 if nothing was used.
  int Io(uint32_t type, uint64_t sector, uint32_t len) {
    const uint64_t hdr = 0x200000, data = 0x201000, status = 0x203000;
    virtio::BlkReqHeader h{.type = type, .reserved = 0, .sector = sector};
    EXPECT_OK(fe_->memory().WriteObj(hdr, h));
    EXPECT_OK(fe_->memory().Fill(status, 1, 0xff));
    std::vector<Buffer> chain = {{hdr, 16, false}};
    if (len > 0) chain.push_back({data, len, type == virtio::kBlkTIn});
    chain.push_back({status, 1, true});
    EXPECT_OK(fe_->ring(0).AddChain(chain).status());
    fe_->Kick(0);
    Pump();
    std::optional<VirtqUsedElem> used = fe_->ring(0).PopUsed();
    if (!used.has_value()) return -1;
    EXPECT_TRUE(fe_->CallSignalled(0));
    absl::StatusOr<uint8_t> s = fe_->memory().ReadObj<uint8_t>(status);
    if (!s.ok()) return -1;
    // The data read and the status byte; only the status on an error.
    EXPECT_EQ(used->len,
              1 + (type == virtio::kBlkTIn && *s == virtio::kBlkSOk ? len : 0));
    return *s;
  }
  void WriteReadRoundTrip() {
    std::vector<uint8_t> pattern(1024);
    for (size_t i = 0; i < pattern.size(); ++i) pattern[i] = i * 13 + 7;
    ASSERT_OK(fe_->memory().Write(0x201000, pattern));
    ASSERT_EQ(Io(virtio::kBlkTOut, 5, 1024), virtio::kBlkSOk);
    // On disk at sector 5.
    std::vector<uint8_t> disk(1024);
    const int fd = open(path_.c_str(), O_RDONLY);
    ASSERT_EQ(pread(fd, disk.data(), disk.size(), 5 * 512), 1024);
    close(fd);
    EXPECT_EQ(disk, pattern);
    // And back through the ring.
    ASSERT_OK(fe_->memory().Fill(0x201000, 1024, 0));
    ASSERT_EQ(Io(virtio::kBlkTIn, 5, 1024), virtio::kBlkSOk);
    std::vector<uint8_t> back(1024);
    ASSERT_OK(fe_->memory().Read(0x201000, absl::MakeSpan(back)));
    EXPECT_EQ(back, pattern);
    // Past the end of the disk.
    EXPECT_EQ(Io(virtio::kBlkTIn, 2048, 512), virtio::kBlkSIoErr);
  }

  std::string path_;
  std::unique_ptr<virtio::BlockDevice> blk_;
};

TEST_F(BlkTest, GetConfigCapacity) {
  ASSERT_OK_AND_ASSIGN(std::vector<uint8_t> cap, fe_->GetConfig(0, 8));
  uint64_t sectors;
  std::memcpy(&sectors, cap.data(), 8);
  EXPECT_EQ(sectors, kImageSize / 512);
  // All of struct virtio_blk_config, as QEMU 7.2 reads it.
  ASSERT_OK_AND_ASSIGN(std::vector<uint8_t> all,
                       fe_->GetConfig(0, virtio::kBlkConfigSize));
  EXPECT_EQ(all.size(), virtio::kBlkConfigSize);
  EXPECT_EQ(std::vector<uint8_t>(all.begin(), all.begin() + 8), cap);
  // One byte too far.
  EXPECT_THAT(fe_->GetConfig(virtio::kBlkConfigSize - 4, 8),
              StatusIs(absl::StatusCode::kAborted));
  EXPECT_THAT(backend_->last_error(),
              StatusIs(absl::StatusCode::kOutOfRange,
                       HasSubstr("beyond the 60-byte device configuration")));
}

TEST_F(BlkTest, SetConfigWriteback) {
  const uint32_t wce = offsetof(virtio::BlkConfig, writeback);
  const uint8_t zero = 0;
  ASSERT_OK(fe_->SetConfig(wce, absl::MakeConstSpan(&zero, 1)));
  ASSERT_OK_AND_ASSIGN(std::vector<uint8_t> b, fe_->GetConfig(wce, 1));
  EXPECT_EQ(b[0], 0);
  EXPECT_EQ(backend_->stats().refused, 0u);
}

TEST_F(BlkTest, ModernWriteAndRead) {
  ASSERT_OK(fe_->Start(kVersion1Bit | (uint64_t{1} << virtio::kBlkFFlush),
                       {Layout(256)}));
  EXPECT_FALSE(backend_->legacy());
  WriteReadRoundTrip();
  EXPECT_EQ(blk_->stats().out, 1u);
  EXPECT_EQ(blk_->stats().in, 2u);
}

TEST_F(BlkTest, LegacyWriteAndRead) {
  // A transitional device driven by a legacy driver: no VERSION_1.
  ASSERT_OK(fe_->Start(uint64_t{1} << virtio::kBlkFFlush, {Layout(128)}));
  EXPECT_TRUE(backend_->legacy());
  EXPECT_TRUE(backend_->device_active());
  WriteReadRoundTrip();
}

TEST_F(BlkTest, LegacyWithoutProtocolFeaturesBit) {
  ASSERT_OK(fe_->Start(0, {Layout(128)}, /*protocol_features_bit=*/false));
  EXPECT_TRUE(backend_->legacy());
  WriteReadRoundTrip();
}

TEST_F(BlkTest, TwoRegionsWithRingsInTheSecond) {
  // Replace the front-end by one with memory in two regions, like QEMU's
  // split around the PCI hole.
  FakeFrontEnd::Options o;
  o.regions = {{0, 1 << 20}, {1ull << 32, 4 << 20}};
  ASSERT_OK_AND_ASSIGN(fe_, FakeFrontEnd::Create(o));
  backend_->Disconnect(absl::OkStatus());
  ASSERT_OK(backend_->Attach(fe_->TakeBackendSocket()));
  fe_->set_pump([this] { Pump(); });
  ASSERT_OK(fe_->Init());
  ASSERT_OK(fe_->Start(kVersion1Bit, {Layout(256, (1ull << 32) + 0x10000)}));
  const uint64_t hdr = (1ull << 32) + 0x200000;
  virtio::BlkReqHeader h{.type = virtio::kBlkTIn, .reserved = 0, .sector = 0};
  ASSERT_OK(fe_->memory().WriteObj(hdr, h));
  ASSERT_OK(fe_->ring(0)
                .AddChain({{hdr, 16, false},
                           {0x1000, 512, true},  // data in the first region
                           {hdr + 0x1000, 1, true}})
                .status());
  fe_->Kick(0);
  Pump();
  std::optional<VirtqUsedElem> used = fe_->ring(0).PopUsed();
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(used->len, 513u);
}

}  // namespace
}  // namespace vmmkit::vhost_user
