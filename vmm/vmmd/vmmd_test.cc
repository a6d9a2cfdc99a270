// The vmmd binary as a user runs it: spawned, spoken to over its Unix socket,
// stopped with SIGTERM.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "vmm/api/testing/subprocess.h"
#include "vmm/api/testing/tiny_guest.h"
#include "vmm/api/vmmkit.grpc.pb.h"
#include "vmm/vm.h"

namespace vmmkit::api {
namespace {

using testing::Daemon;
using testing::Runfile;

std::string ReadFile(const std::string& path) {
  std::ifstream f(path);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

class VmmdTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // TEST_TMPDIR is too long for a Unix socket path (108 bytes).
    char tmpl[] = "/tmp/vmmd-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    socket_ = dir_ + "/run/vmmd.sock";
    log_ = ::testing::TempDir() + "/vmmd.log";
  }
  void TearDown() override {
    unlink(socket_.c_str());
    rmdir((dir_ + "/run").c_str());
    rmdir(dir_.c_str());
  }

  std::unique_ptr<v1::VmService::Stub> Connect() {
    return v1::VmService::NewStub(grpc::CreateChannel(
        "unix:" + socket_, grpc::InsecureChannelCredentials()));
  }

  std::string dir_, socket_, log_;
};

TEST_F(VmmdTest, ServesOnAPrivateUnixSocketAndExitsCleanlyOnSigterm) {
  Daemon d = Daemon::Start(
      {Runfile("vmm/vmmd/vmmd"), "--listen=unix:" + socket_}, log_);
  ASSERT_TRUE(d.WaitForSocket(socket_, absl::Seconds(20))) << ReadFile(log_);
  struct stat st;
  ASSERT_EQ(stat((dir_ + "/run").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  ASSERT_EQ(stat(socket_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  // The log line comes right after the socket starts answering.
  for (int i = 0; i < 200 && !absl::StrContains(ReadFile(log_), "listening");
       ++i) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_THAT(ReadFile(log_), ::testing::HasSubstr("listening on unix:"));

  auto stub = Connect();
  grpc::ClientContext ctx;
  v1::ListVmsResponse list;
  ASSERT_TRUE(stub->ListVms(&ctx, {}, &list).ok());
  EXPECT_EQ(list.vms_size(), 0);
  grpc::ClientContext ctx2;
  v1::VmRequest req;
  req.set_vm_id("nope");
  v1::VmInfo info;
  EXPECT_EQ(stub->GetVm(&ctx2, req, &info).error_code(),
            grpc::StatusCode::NOT_FOUND);

  // A second daemon on the same socket refuses to start and leaves the first
  // one alone.
  testing::Result second =
      testing::Run({Runfile("vmm/vmmd/vmmd"), "--listen=unix:" + socket_});
  EXPECT_EQ(second.exit_code, 1);
  EXPECT_THAT(second.err, ::testing::HasSubstr("already listens"));
  grpc::ClientContext ctx3;
  EXPECT_TRUE(stub->ListVms(&ctx3, {}, &list).ok());

  EXPECT_EQ(d.Terminate(SIGTERM, absl::Seconds(30)), 0) << ReadFile(log_);
  EXPECT_NE(access(socket_.c_str(), F_OK), 0) << "socket left behind";
  EXPECT_THAT(ReadFile(log_), ::testing::HasSubstr("exited cleanly"));
}

TEST_F(VmmdTest, RefusesNonLoopbackAndMalformedListenAddresses) {
  for (const char* bad : {"--listen=0.0.0.0:7777", "--listen=10.1.2.3:1",
                          "--listen=unix:relative.sock", "--listen=nonsense",
                          "--listen=127.0.0.1:99999"}) {
    testing::Result r = testing::Run({Runfile("vmm/vmmd/vmmd"), bad});
    EXPECT_EQ(r.exit_code, 2) << bad << ": " << r.err;
  }
}

TEST_F(VmmdTest, HelpListsItsFlags) {
  testing::Result r = testing::Run({Runfile("vmm/vmmd/vmmd"), "--help"});
  const std::string all = r.out + r.err;
  for (const char* want : {"--listen", "--max_vms", "--stop_timeout"}) {
    EXPECT_TRUE(absl::StrContains(all, want)) << want << " in\n" << all;
  }
  EXPECT_FALSE(absl::StrContains(all, "No flags matched")) << all;
}

TEST_F(VmmdTest, ServesOnLoopbackTcp) {
  Daemon d =
      Daemon::Start({Runfile("vmm/vmmd/vmmd"), "--listen=127.0.0.1:0"}, log_);
  // The log names the port it picked.
  std::string port;
  for (int i = 0; i < 400 && port.empty(); ++i) {
    std::string log = ReadFile(log_);
    size_t at = log.find("listening on 127.0.0.1:");
    if (at != std::string::npos) {
      size_t begin = at + std::string("listening on 127.0.0.1:").size();
      size_t end = log.find_first_not_of("0123456789", begin);
      port = log.substr(begin, end - begin);
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
  ASSERT_FALSE(port.empty()) << ReadFile(log_);
  auto stub = v1::VmService::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + port, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  v1::ListVmsResponse list;
  EXPECT_TRUE(stub->ListVms(&ctx, {}, &list).ok());
  EXPECT_EQ(d.Terminate(SIGTERM, absl::Seconds(30)), 0);
}

TEST_F(VmmdTest, SigtermStopsRunningVmsGracefully) {
  std::string why_not;
  if (!vmm::KvmUsable(&why_not)) {
    GTEST_SKIP() << "/dev/kvm is not usable here: " << why_not;
  }
  const std::string tiny =
      testing::WriteTinyGuest(::testing::TempDir() + "/tiny.elf");
  Daemon d = Daemon::Start({Runfile("vmm/vmmd/vmmd"),
                            "--listen=unix:" + socket_, "--stop_timeout=10s"},
                           log_);
  ASSERT_TRUE(d.WaitForSocket(socket_, absl::Seconds(20))) << ReadFile(log_);
  auto stub = Connect();
  for (const char* name : {"one", "two"}) {
    grpc::ClientContext c1, c2;
    v1::CreateVmRequest create;
    create.set_vm_id(name);
    create.mutable_config()->set_kernel(tiny);
    create.mutable_config()->set_memory_mib(16);
    v1::VmInfo info;
    ASSERT_TRUE(stub->CreateVm(&c1, create, &info).ok());
    v1::VmRequest start;
    start.set_vm_id(name);
    ASSERT_TRUE(stub->StartVm(&c2, start, &info).ok());
    EXPECT_EQ(info.state(), v1::VM_STATE_RUNNING);
  }
  // A console stream stays open across the shutdown.
  grpc::ClientContext console_ctx;
  auto stream = stub->StreamConsole(&console_ctx);
  v1::ConsoleRequest first;
  first.set_vm_id("one");
  first.set_replay(true);
  ASSERT_TRUE(stream->Write(first));
  std::string out;
  v1::ConsoleChunk chunk;
  while (!absl::StrContains(out, "up") && stream->Read(&chunk)) {
    out += chunk.data();
  }
  EXPECT_EQ(out, testing::kTinyGuestBanner);

  EXPECT_EQ(d.Terminate(SIGTERM, absl::Seconds(60)), 0) << ReadFile(log_);
  bool stopped = false;
  while (stream->Read(&chunk)) stopped = stopped || chunk.vm_stopped();
  EXPECT_TRUE(stopped) << "the stream did not report the VM's stop";
  stream->Finish();
  EXPECT_THAT(ReadFile(log_), ::testing::HasSubstr("exited cleanly"));
}

}  // namespace
}  // namespace vmmkit::api
