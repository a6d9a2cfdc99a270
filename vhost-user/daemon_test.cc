// Runs the vmmkit-vhost-user binary as the interop tests do: flags, the
// "listening on" line, a front-end round trip, --once, SIGTERM.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "base/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "vhost-user/testing/front_end.h"

namespace vmmkit::vhost_user {
namespace {

using ::testing::HasSubstr;
using ::vmmkit::vhost_user::testing::FakeFrontEnd;
using ::vmmkit::virtqueue::testing::DriverQueue;

constexpr char kBinary[] = "vhost-user/vmmkit-vhost-user";
constexpr uint64_t kVersion1Bit = uint64_t{1} << 32;

// A child process with stdout and stderr captured.
class Daemon {
 public:
  explicit Daemon(std::vector<std::string> args) {
    int out[2], err[2];
    if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) abort();
    pid_ = fork();
    if (pid_ == 0) {
      dup2(out[1], 1);
      dup2(err[1], 2);
      std::vector<char*> argv;
      argv.push_back(const_cast<char*>(kBinary));
      for (std::string& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(kBinary, argv.data());
      _exit(127);
    }
    close(out[1]);
    close(err[1]);
    out_ = out[0];
    err_ = err[0];
  }
  ~Daemon() {
    if (pid_ > 0 && !exited_) {
      kill(pid_, SIGKILL);
      Wait();
    }
    close(out_);
    close(err_);
  }
  // Reads stderr until it holds `text` (or 10 s pass, or EOF).
  bool WaitForStderr(const std::string& text) {
    for (int i = 0; i < 100 && stderr_.find(text) == std::string::npos; ++i) {
      pollfd p{err_, POLLIN, 0};
      if (poll(&p, 1, 100) == 1) {
        char buf[512];
        const ssize_t n = read(err_, buf, sizeof(buf));
        if (n <= 0) break;
        stderr_.append(buf, n);
      }
    }
    return stderr_.find(text) != std::string::npos;
  }
  // The exit status (or 128 + signal), waiting up to 10 s.
  int Wait() {
    for (int i = 0; i < 1000; ++i) {
      int status;
      const pid_t r = waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        exited_ = true;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      usleep(10000);
    }
    return -1;
  }
  std::string ReadAll(bool from_stdout) {
    std::string s = from_stdout ? "" : stderr_;
    char buf[4096];
    ssize_t n;
    while ((n = read(from_stdout ? out_ : err_, buf, sizeof(buf))) > 0) {
      s.append(buf, n);
    }
    return s;
  }
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  int out_ = -1, err_ = -1;
  bool exited_ = false;
  std::string stderr_;
};

class DaemonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // sun_path holds 107 bytes: TEST_TMPDIR can be longer.
    std::strcpy(dir_, "/tmp/vmmkit-vud-XXXXXX");
    ASSERT_NE(mkdtemp(dir_), nullptr);
    socket_ = std::string(dir_) + "/vu.sock";
  }
  void TearDown() override {
    unlink(socket_.c_str());
    unlink(image_.c_str());
    rmdir(dir_);
  }
  bool SocketExists() const { return access(socket_.c_str(), F_OK) == 0; }

  char dir_[32];
  std::string socket_;
  std::string image_;
};

TEST_F(DaemonTest, BadFlagsExitWithStatus2) {
  const std::vector<std::vector<std::string>> cases = {
      {"--socket=" + socket_},  // no --device
      {"--socket=" + socket_, "--device=floppy"},
      {"--device=rng"},  // no --socket
      {"--socket=" + socket_, "--device=rng", "--bogus=1"},
      {"--socket=" + socket_, "--device=blk"},  // no --image
      {"--socket=" + socket_, "--device=blk", "--image=/x", "--num-queues=x"},
      {"--socket=" + socket_, "--device=blk", "--image=/x", "--num-queues=0"},
      {"--socket=" + socket_, "--device=rng", "--queue-size=100"},
      {"--socket=" + socket_, "--device=rng", "--once=maybe"},
      {"--socket=" + socket_, "--device=net", "--tap=t0", "--mac=zz"},
      {"positional"},
  };
  for (const auto& args : cases) {
    Daemon d(args);
    EXPECT_EQ(d.Wait(), 2) << args.back();
    EXPECT_THAT(d.ReadAll(false), HasSubstr("usage:")) << args.back();
  }
  EXPECT_FALSE(SocketExists());
}

TEST_F(DaemonTest, HelpExitsZero) {
  Daemon d({"--help"});
  EXPECT_EQ(d.Wait(), 0);
  EXPECT_THAT(d.ReadAll(true), HasSubstr("--device=blk|net|rng|console"));
}

TEST_F(DaemonTest, MissingImageExits1) {
  Daemon d({"--socket=" + socket_, "--device=blk",
            "--image=" + std::string(dir_) + "/none.img"});
  EXPECT_EQ(d.Wait(), 1);
}

TEST_F(DaemonTest, RngOnceServesOneFrontEndThenExits) {
  // A stale socket file from an earlier run is replaced.
  {
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strcpy(a.sun_path, socket_.c_str());
    ASSERT_EQ(bind(s, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    close(s);
  }
  Daemon d({"--socket=" + socket_, "--device=rng", "--once"});
  ASSERT_TRUE(d.WaitForStderr("vmmkit-vhost-user: listening on " + socket_))
      << d.ReadAll(false);
  ASSERT_OK_AND_ASSIGN(auto fe, FakeFrontEnd::Connect(socket_, {}));
  ASSERT_OK(fe->Init());  // with REPLY_ACK: every request answered
  ASSERT_OK(fe->Start(
      kVersion1Bit,
      {{.size = 256, .desc = 0x10000, .avail = 0x11000, .used = 0x12000}}));
  ASSERT_OK(fe->ring(0).AddChain({{0x100000, 128, true}}).status());
  fe->Kick(0);
  ASSERT_TRUE(fe->WaitCall(0));
  std::optional<virtqueue::VirtqUsedElem> used = fe->ring(0).PopUsed();
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(used->len, 128u);
  ASSERT_OK_AND_ASSIGN(std::vector<uint32_t> bases, fe->Stop());
  EXPECT_EQ(bases, std::vector<uint32_t>{1});
  fe->Close();
  EXPECT_EQ(d.Wait(), 0);
  EXPECT_FALSE(SocketExists());
}

TEST_F(DaemonTest, BlkWritesThenSigtermFlushesAndExits) {
  image_ = std::string(dir_) + "/disk.img";
  {
    const int fd = open(image_.c_str(), O_CREAT | O_RDWR, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(ftruncate(fd, 1 << 20), 0);
    close(fd);
  }
  Daemon d({"--socket=" + socket_, "--device=blk", "--image=" + image_,
            "--queue-size=128"});
  ASSERT_TRUE(d.WaitForStderr("listening on")) << d.ReadAll(false);
  ASSERT_OK_AND_ASSIGN(auto fe, FakeFrontEnd::Connect(socket_, {}));
  ASSERT_OK(fe->Init());
  ASSERT_OK_AND_ASSIGN(std::vector<uint8_t> cap, fe->GetConfig(0, 8));
  EXPECT_EQ(cap[1], 2048 >> 8);  // 2048 sectors, little-endian
  // 256 is above --queue-size.
  EXPECT_THAT(fe->SetVringNum(0, 256),
              vmmkit::testing::StatusIs(absl::StatusCode::kAborted));
  ASSERT_OK(fe->Start(
      kVersion1Bit,
      {{.size = 128, .desc = 0x10000, .avail = 0x11000, .used = 0x12000}}));
  struct {
    uint32_t type, reserved;
    uint64_t sector;
  } hdr{1, 0, 3};  // OUT, sector 3
  ASSERT_OK(fe->memory().WriteObj(0x200000, hdr));
  ASSERT_OK(fe->memory().Fill(0x201000, 512, 0x5a));
  ASSERT_OK(fe->ring(0)
                .AddChain({{0x200000, 16, false},
                           {0x201000, 512, false},
                           {0x202000, 1, true}})
                .status());
  fe->Kick(0);
  ASSERT_TRUE(fe->WaitCall(0));
  ASSERT_TRUE(fe->ring(0).PopUsed().has_value());
  ASSERT_OK_AND_ASSIGN(uint8_t status, fe->memory().ReadObj<uint8_t>(0x202000));
  EXPECT_EQ(status, 0);

  ASSERT_EQ(kill(d.pid(), SIGTERM), 0);
  EXPECT_EQ(d.Wait(), 0);
  EXPECT_FALSE(SocketExists());
  const int fd = open(image_.c_str(), O_RDONLY);
  std::vector<uint8_t> disk(512);
  ASSERT_EQ(pread(fd, disk.data(), 512, 3 * 512), 512);
  close(fd);
  EXPECT_EQ(disk, std::vector<uint8_t>(512, 0x5a));
}

}  // namespace
}  // namespace vmmkit::vhost_user
