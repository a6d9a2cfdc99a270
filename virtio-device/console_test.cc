#include "virtio-device/console.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "base/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "virtio-device/device_state.h"
#include "virtio-device/testing/test_driver.h"

namespace vmmkit::virtio {
namespace {

using ::testing::ElementsAre;
using ::vmmkit::testing::StatusIs;
using ::vmmkit::virtio::testing::TestDriver;
using ::vmmkit::virtqueue::GuestMemoryMmap;
using ::vmmkit::virtqueue::VirtqUsedElem;
using Buffer = ::vmmkit::virtqueue::testing::DriverQueue::Buffer;

constexpr uint64_t kMemSize = 16 << 20;

struct Mode {
  const char* name;
  bool legacy;
  Endian guest_endian;
};
void PrintTo(const Mode& mode, std::ostream* os) { *os << mode.name; }

std::vector<uint8_t> Bytes(const std::string& s) {
  return std::vector<uint8_t>(s.begin(), s.end());
}

class ConsoleTest : public ::testing::TestWithParam<Mode> {
 protected:
  void SetUp() override {
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    device_fd_ = sv[0];
    host_fd_ = sv[1];
    ASSERT_EQ(fcntl(host_fd_, F_SETFL, O_NONBLOCK), 0);
    MakeConsole({.input_fd = device_fd_,
                 .output_fd = device_fd_,
                 .emergency_write = true});
  }
  void TearDown() override {
    driver_.reset();
    state_.reset();
    console_.reset();
    close(device_fd_);
    close(host_fd_);
  }

  void MakeConsole(const ConsoleDevice::Options& options) {
    driver_.reset();
    state_.reset();
    auto console = ConsoleDevice::Create(options);
    ASSERT_OK(console.status());
    console_ = *std::move(console);
    if (memory_ == nullptr) {
      auto mem = GuestMemoryMmap::Create({{.guest_base = 0, .size = kMemSize}});
      ASSERT_OK(mem.status());
      memory_ = *std::move(mem);
    }
    state_ = std::make_unique<DeviceState>(
        *console_, *memory_,
        DeviceState::Options{.guest_endian = GetParam().guest_endian});
    driver_ = std::make_unique<TestDriver>(
        *state_, *memory_, TestDriver::Options{.legacy = GetParam().legacy});
  }

  TestDriver& drv() { return *driver_; }

  // Posts guest output in descriptors cut at `cuts`.
  void PostOutput(absl::Span<const uint8_t> data, std::vector<size_t> cuts) {
    const uint64_t a = drv().Alloc(data.size());
    drv().Put(a, data);
    std::vector<Buffer> bufs;
    size_t at = 0;
    cuts.push_back(data.size());
    for (size_t cut : cuts) {
      bufs.push_back({a + at, static_cast<uint32_t>(cut - at), false});
      at = cut;
    }
    ASSERT_OK(drv().queue(1).AddChain(bufs).status());
  }
  uint64_t PostInputBuffer(uint32_t n) {
    const uint64_t a = drv().Alloc(n);
    EXPECT_OK(drv().queue(0).AddChain({{a, n, true}}).status());
    return a;
  }
  std::string HostRead() {
    std::string out;
    char buf[4096];
    for (;;) {
      const ssize_t n = read(host_fd_, buf, sizeof(buf));
      if (n <= 0) break;
      out.append(buf, static_cast<size_t>(n));
    }
    return out;
  }
  void HostWrite(const std::string& s) {
    ASSERT_EQ(write(host_fd_, s.data(), s.size()),
              static_cast<ssize_t>(s.size()));
  }

  int device_fd_ = -1;
  int host_fd_ = -1;
  std::unique_ptr<ConsoleDevice> console_;
  std::unique_ptr<GuestMemoryMmap> memory_;
  std::unique_ptr<DeviceState> state_;
  std::unique_ptr<TestDriver> driver_;
};

TEST_P(ConsoleTest, GuestOutputReachesHost) {
  ASSERT_OK(drv().Start(Features()));
  PostOutput(Bytes("hello, world\n"), {5, 6});
  drv().Kick(1);
  std::optional<VirtqUsedElem> used = drv().queue(1).PopUsed();
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(used->len, 0u);
  EXPECT_EQ(drv().queue_interrupts(1), 1);
  EXPECT_EQ(HostRead(), "hello, world\n");
  EXPECT_EQ(console_->stats().tx_bytes, 13u);
  EXPECT_EQ(console_->stats().tx_chains, 1u);
}

TEST_P(ConsoleTest, HostInputReachesGuest) {
  ASSERT_OK(drv().Start(Features()));
  const uint64_t a = PostInputBuffer(64);
  drv().Kick(0);
  HostWrite("ls -l\n");
  ASSERT_THAT(console_->backend_fds(), ElementsAre(device_fd_));
  console_->ProcessBackend();
  std::optional<VirtqUsedElem> used = drv().queue(0).PopUsed();
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(used->len, 6u);
  EXPECT_EQ(drv().Get(a, 6), Bytes("ls -l\n"));
  EXPECT_EQ(drv().queue_interrupts(0), 1);
  // Nothing more to read: the next buffer stays posted.
  PostInputBuffer(64);
  console_->ProcessBackend();
  EXPECT_FALSE(drv().queue(0).PopUsed().has_value());
}

TEST_P(ConsoleTest, InputSpansBuffers) {
  ASSERT_OK(drv().Start(Features()));
  const uint64_t a = PostInputBuffer(40);
  const uint64_t b = PostInputBuffer(40);
  const uint64_t c = PostInputBuffer(40);
  std::string input(100, 'x');
  for (size_t i = 0; i < input.size(); ++i) input[i] = 'a' + i % 26;
  HostWrite(input);
  console_->ProcessBackend();
  std::string got;
  const uint64_t addrs[] = {a, b, c};
  const uint32_t lens[] = {40, 40, 20};
  for (int i = 0; i < 3; ++i) {
    std::optional<VirtqUsedElem> used = drv().queue(0).PopUsed();
    ASSERT_TRUE(used.has_value());
    EXPECT_EQ(used->len, lens[i]);
    const std::vector<uint8_t> part = drv().Get(addrs[i], used->len);
    got.append(part.begin(), part.end());
  }
  EXPECT_EQ(got, input);
}

TEST_P(ConsoleTest, InputWaitsForBuffers) {
  ASSERT_OK(drv().Start(Features::Of({kFEventIdx})));
  // One round trip first, so that the notification check below depends on
  // the device having moved avail_event.
  PostInputBuffer(1);
  EXPECT_TRUE(drv().queue(0).ShouldNotify());
  drv().Kick(0);
  HostWrite("1");
  console_->ProcessBackend();
  ASSERT_TRUE(drv().queue(0).PopUsed().has_value());
  HostWrite("typed early");
  console_->ProcessBackend();
  console_->ProcessBackend();  // no buffers: nothing read, nothing lost
  EXPECT_EQ(console_->stats().rx_bytes, 1u);
  EXPECT_EQ(console_->stats().rx_chains, 1u);
  const uint64_t a = PostInputBuffer(64);
  // The device asked to be told about new buffers.
  EXPECT_TRUE(drv().queue(0).ShouldNotify());
  drv().Kick(0);
  std::optional<VirtqUsedElem> used = drv().queue(0).PopUsed();
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(used->len, 11u);
  EXPECT_EQ(drv().Get(a, 11), Bytes("typed early"));
}

TEST_P(ConsoleTest, PartialWritesKeepEveryByte) {
  // A small socket buffer: the host side takes little at a time.
  int small = 4096;
  ASSERT_EQ(
      setsockopt(device_fd_, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
  ASSERT_EQ(setsockopt(host_fd_, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)),
            0);
  ASSERT_OK(drv().Start(Features::Of({kFEventIdx})));
  // 200 KiB in one chain, more than the pending-output limit, then a small
  // chain behind it.
  std::vector<uint8_t> big(200 * 1024);
  for (size_t i = 0; i < big.size(); ++i)
    big[i] = static_cast<uint8_t>(i % 251);
  PostOutput(big, {100000});
  PostOutput(Bytes("tail"), {});
  drv().Kick(1);
  EXPECT_GT(console_->output_pending(), 0u);
  EXPECT_LE(console_->output_pending(), ConsoleDevice::kMaxPendingOutput);
  EXPECT_EQ(drv().queue(1).PendingUsed(), 0);  // the big chain is held
  std::string got;
  for (int rounds = 0; rounds < 10000 && got.size() < big.size() + 4;
       ++rounds) {
    got += HostRead();
    console_->ProcessBackend();  // the VMM saw POLLOUT
  }
  got += HostRead();
  ASSERT_EQ(got.size(), big.size() + 4);
  EXPECT_TRUE(got.compare(0, big.size(), std::string(big.begin(), big.end())) ==
              0);
  EXPECT_EQ(got.substr(big.size()), "tail");
  EXPECT_EQ(drv().queue(1).PendingUsed(), 2);
  EXPECT_EQ(console_->output_pending(), 0u);
  EXPECT_GT(console_->stats().partial_writes, 0u);
  EXPECT_EQ(console_->stats().tx_dropped, 0u);
}

TEST_P(ConsoleTest, ConfigAndResize) {
  ASSERT_OK(drv().Start(Features::Of({kConsoleFSize})));
  EXPECT_EQ(drv().ReadConfigU16(0), 80);
  EXPECT_EQ(drv().ReadConfigU16(2), 24);
  EXPECT_EQ(drv().ReadConfigU32(4), 1u);  // max_nr_ports
  const bool big = GetParam().legacy && GetParam().guest_endian == Endian::kBig;
  EXPECT_THAT(drv().ReadConfig(0, 2),
              big ? ElementsAre(0, 80) : ElementsAre(80, 0));
  const uint32_t gen = state_->config_generation();
  console_->SetSize(132, 43);
  EXPECT_EQ(drv().config_interrupts(), 1);
  EXPECT_NE(state_->config_generation(), gen);
  EXPECT_EQ(drv().ReadConfigU16(0), 132);
  EXPECT_EQ(drv().ReadConfigU16(2), 43);
  console_->SetSize(132, 43);  // unchanged: no interrupt
  EXPECT_EQ(drv().config_interrupts(), 1);
  // Config is read-only.
  const uint8_t zero[4] = {};
  state_->WriteConfig(0, zero, drv().endian());
  EXPECT_EQ(console_->cols(), 132);
}

TEST_P(ConsoleTest, ResizeWithoutSizeFeatureIsSilent) {
  ASSERT_OK(drv().Start(Features()));
  console_->SetSize(100, 30);
  EXPECT_EQ(drv().config_interrupts(), 0);
  EXPECT_EQ(console_->rows(), 30);
}

TEST_P(ConsoleTest, EmergencyWrite) {
  EXPECT_TRUE(console_->offered_features().Has(kConsoleFEmergWrite));
  // Works on an unconfigured device, in the driver's byte order.
  const Endian e =
      GetParam().legacy ? GetParam().guest_endian : Endian::kLittle;
  auto write_char = [&](char c) {
    uint8_t v[4] = {};
    v[e == Endian::kLittle ? 0 : 3] = static_cast<uint8_t>(c);
    state_->WriteConfig(8, v, e);
  };
  write_char('!');
  ASSERT_OK(drv().Start(Features::Of({kConsoleFEmergWrite})));
  write_char('?');
  EXPECT_EQ(HostRead(), "!?");
  EXPECT_EQ(console_->stats().emergency_bytes, 2u);
}

TEST_P(ConsoleTest, EmergencyWriteOneByteAtATime) {
  // Linux's legacy virtio-pci writes configuration one byte at a time: the
  // character is the byte that lands in emerg_wr's least significant byte,
  // whichever byte order the driver uses.
  const Endian e =
      GetParam().legacy ? GetParam().guest_endian : Endian::kLittle;
  uint8_t v[4] = {};
  v[e == Endian::kLittle ? 0 : 3] = 'x';
  for (uint32_t i = 0; i < 4; ++i) {
    state_->WriteConfig(8 + i, absl::MakeConstSpan(&v[i], 1), e);
  }
  EXPECT_EQ(HostRead(), "x");
  EXPECT_EQ(console_->stats().emergency_bytes, 1u);
}

TEST_P(ConsoleTest, NoEmergencyWriteUnlessOffered) {
  MakeConsole({.input_fd = device_fd_, .output_fd = device_fd_});
  EXPECT_FALSE(console_->offered_features().Has(kConsoleFEmergWrite));
  const uint8_t v[4] = {'!', 0, 0, 0};
  state_->WriteConfig(8, v, Endian::kLittle);
  EXPECT_EQ(HostRead(), "");
}

TEST_P(ConsoleTest, TransmitChainWithWritableBufferNeedsReset) {
  ASSERT_OK(drv().Start(Features()));
  const uint64_t a = drv().Alloc(16);
  ASSERT_OK(
      drv().queue(1).AddChain({{a, 8, false}, {a + 8, 8, true}}).status());
  drv().Kick(1);
  EXPECT_TRUE(state_->status() & kStatusNeedsReset);
  EXPECT_THAT(state_->last_error(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(drv().config_interrupts(), 1);
  EXPECT_EQ(HostRead(), "");
}

TEST_P(ConsoleTest, ReceiveChainWithReadableBufferNeedsReset) {
  ASSERT_OK(drv().Start(Features()));
  const uint64_t a = drv().Alloc(16);
  ASSERT_OK(drv().queue(0).AddChain({{a, 16, false}}).status());
  HostWrite("x");
  drv().Kick(0);
  EXPECT_TRUE(state_->status() & kStatusNeedsReset);
  EXPECT_THAT(state_->last_error(),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_P(ConsoleTest, ChainOutsideMemoryNeedsReset) {
  ASSERT_OK(drv().Start(Features()));
  drv().queue(1).WriteDesc(0, kMemSize - 4, 64, 0, 0);
  drv().queue(1).Publish(0);
  drv().Kick(1);
  EXPECT_TRUE(state_->status() & kStatusNeedsReset);
  EXPECT_THAT(state_->last_error(), StatusIs(absl::StatusCode::kOutOfRange));
  // Reset, and the console works again.
  ASSERT_OK(drv().Start(Features()));
  PostOutput(Bytes("ok"), {});
  drv().Kick(1);
  EXPECT_EQ(HostRead(), "ok");
}

TEST_P(ConsoleTest, ResetMidIo) {
  int small = 4096;
  ASSERT_EQ(
      setsockopt(device_fd_, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
  ASSERT_OK(drv().Start(Features()));
  std::vector<uint8_t> big(200 * 1024, 'b');
  PostOutput(big, {});
  drv().Kick(1);  // taken in part, held
  PostInputBuffer(64);
  drv().Kick(0);
  drv().Reset();
  // After reset: kicks, input and POLLOUT touch nothing of the old driver.
  HostWrite("late");
  console_->ProcessBackend();
  drv().Kick(0);
  drv().Kick(1);
  EXPECT_EQ(drv().queue(0).used_idx(), 0);
  EXPECT_EQ(drv().queue(1).used_idx(), 0);
  EXPECT_EQ(console_->stats().rx_bytes, 0u);
  // What was taken before the reset is still written, and no more.
  std::string got;
  for (int i = 0; i < 1000 && console_->output_pending() > 0; ++i) {
    got += HostRead();
    console_->ProcessBackend();
  }
  got += HostRead();
  EXPECT_GT(got.size(), 0u);
  EXPECT_LT(got.size(), big.size());
  EXPECT_EQ(got, std::string(got.size(), 'b'));
  // The input waited for the next driver.
  ASSERT_OK(drv().Start(Features()));
  const uint64_t a = PostInputBuffer(64);
  drv().Kick(0);
  std::optional<VirtqUsedElem> used = drv().queue(0).PopUsed();
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(drv().Get(a, used->len), Bytes("late"));
}

TEST_P(ConsoleTest, EndOfInput) {
  ASSERT_OK(drv().Start(Features()));
  PostInputBuffer(64);
  HostWrite("bye");
  shutdown(host_fd_, SHUT_WR);
  console_->ProcessBackend();
  std::optional<VirtqUsedElem> used = drv().queue(0).PopUsed();
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(used->len, 3u);
  PostInputBuffer(64);
  console_->ProcessBackend();
  EXPECT_TRUE(console_->input_closed());
  EXPECT_THAT(console_->input_status(),
              StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_TRUE(console_->backend_fds().empty());
  // Output still works.
  PostOutput(Bytes("still here"), {});
  drv().Kick(1);
  EXPECT_EQ(HostRead(), "still here");
}

TEST_P(ConsoleTest, OutputToAFileWithoutInput) {
  char path[] = "/tmp/console_test_XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  unlink(path);
  MakeConsole({.output_fd = fd});
  EXPECT_TRUE(console_->backend_fds().empty());
  ASSERT_OK(drv().Start(Features()));
  PostOutput(Bytes("to the file"), {3});
  drv().Kick(1);
  EXPECT_TRUE(drv().queue(1).PopUsed().has_value());
  char buf[32] = {};
  EXPECT_EQ(pread(fd, buf, sizeof(buf), 0), 11);
  EXPECT_EQ(std::string(buf), "to the file");
  driver_.reset();
  state_.reset();
  console_.reset();
  close(fd);
}

TEST_P(ConsoleTest, NoOutputFdDropsAndCompletes) {
  MakeConsole({});
  ASSERT_OK(drv().Start(Features()));
  PostOutput(Bytes("nowhere"), {});
  drv().Kick(1);
  EXPECT_TRUE(drv().queue(1).PopUsed().has_value());
  EXPECT_EQ(console_->stats().tx_dropped, 7u);
}

TEST_P(ConsoleTest, ClosedReaderDropsOutput) {
  ASSERT_OK(drv().Start(Features()));
  close(host_fd_);
  host_fd_ = open("/dev/null", O_RDONLY | O_CLOEXEC);  // for TearDown
  PostOutput(Bytes("lost"), {});
  drv().Kick(1);  // EPIPE, without SIGPIPE on a socket
  EXPECT_TRUE(drv().queue(1).PopUsed().has_value());
  EXPECT_EQ(console_->stats().tx_dropped, 4u);
  EXPECT_FALSE(console_->output_status().ok());
  EXPECT_FALSE(state_->status() & kStatusNeedsReset);
}

TEST_P(ConsoleTest, CreateRejectsBadOptions) {
  EXPECT_THAT(ConsoleDevice::Create({.queue_size = 3}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_FALSE(ConsoleDevice::Create({.input_fd = 1 << 20}).ok());
}

INSTANTIATE_TEST_SUITE_P(
    Modes, ConsoleTest,
    ::testing::Values(Mode{"Modern", false, Endian::kLittle},
                      Mode{"LegacyLittleEndian", true, Endian::kLittle},
                      Mode{"LegacyBigEndian", true, Endian::kBig}),
    [](const ::testing::TestParamInfo<Mode>& info) { return info.param.name; });

}  // namespace
}  // namespace vmmkit::virtio
