// vmmctl as a user runs it, against a vmmd spawned by the test: exit codes,
// --json output parsed back into the API's messages, --help.
#include <unistd.h>

#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "vmm/api/testing/subprocess.h"
#include "vmm/api/testing/tiny_guest.h"
#include "vmm/api/vmmkit.pb.h"
#include "vmm/vm.h"

namespace vmmkit::api {
namespace {

using testing::Daemon;
using ::testing::HasSubstr;
using testing::Result;
using testing::Runfile;

std::string ReadFile(const std::string& path) {
  std::ifstream f(path);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

template <typename Message>
Message ParseJson(const std::string& json) {
  Message m;
  auto status = google::protobuf::util::JsonStringToMessage(json, &m);
  EXPECT_TRUE(status.ok()) << status.ToString() << "\n" << json;
  return m;
}

class VmmctlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/vmmctl-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    socket_ = dir_ + "/vmmd.sock";
    log_ = ::testing::TempDir() + "/vmmd.log";
    daemon_ = std::make_unique<Daemon>(Daemon::Start(
        {Runfile("vmm/vmmd/vmmd"), "--listen=unix:" + socket_}, log_));
    ASSERT_TRUE(daemon_->WaitForSocket(socket_, absl::Seconds(20)))
        << ReadFile(log_);
    tiny_ = testing::WriteTinyGuest(::testing::TempDir() + "/tiny.elf");
  }
  void TearDown() override {
    if (daemon_) EXPECT_EQ(daemon_->Terminate(SIGTERM, absl::Seconds(60)), 0);
    unlink(socket_.c_str());
    rmdir(dir_.c_str());
  }

  Result Ctl(std::vector<std::string> args, const std::string& input = "") {
    std::vector<std::string> argv = {Runfile("vmm/vmmctl/vmmctl"), "--socket",
                                     socket_};
    argv.insert(argv.end(), args.begin(), args.end());
    return testing::Run(argv, absl::Seconds(90), input);
  }

  std::string dir_, socket_, log_, tiny_;
  std::unique_ptr<Daemon> daemon_;
};

TEST_F(VmmctlTest, HelpAndUsageErrors) {
  Result help = Ctl({"--help"});
  EXPECT_EQ(help.exit_code, 0);
  for (const char* cmd : {"create", "add-device", "remove-device", "start",
                          "pause", "resume", "stop", "wait", "delete", "get",
                          "list", "metrics", "console", "exit codes"}) {
    EXPECT_THAT(help.out, HasSubstr(cmd));
  }
  Result create_help = Ctl({"create", "--help"});
  EXPECT_EQ(create_help.exit_code, 0);
  EXPECT_THAT(create_help.out, HasSubstr("--kernel"));
  EXPECT_THAT(create_help.out, HasSubstr("--memory"));
  Result add_help = Ctl({"help", "add-device"});
  EXPECT_EQ(add_help.exit_code, 0);
  EXPECT_THAT(add_help.out, HasSubstr("--transport"));

  EXPECT_EQ(Ctl({}).exit_code, 2);
  Result unknown = Ctl({"frobnicate"});
  EXPECT_EQ(unknown.exit_code, 2);
  EXPECT_THAT(unknown.err, HasSubstr("unknown command"));
  EXPECT_EQ(Ctl({"list", "--bogus"}).exit_code, 2);
  EXPECT_EQ(Ctl({"get"}).exit_code, 2);            // missing VM
  EXPECT_EQ(Ctl({"get", "a", "b"}).exit_code, 2);  // one too many
  EXPECT_EQ(Ctl({"create", "x"}).exit_code, 2);    // no --kernel
  EXPECT_EQ(
      Ctl({"create", "x", "--kernel", tiny_, "--memory", "lots"}).exit_code, 2);
  EXPECT_EQ(Ctl({"stop", "x", "--timeout", "soon"}).exit_code, 2);
  EXPECT_EQ(Ctl({"add-device", "x", "--type", "gpu"}).exit_code, 2);
  Result wrong_flag = Ctl({"add-device", "x", "--type", "rng", "--image", "d"});
  EXPECT_EQ(wrong_flag.exit_code, 2);
  EXPECT_THAT(wrong_flag.err, HasSubstr("--image is for --type blk"));
}

TEST_F(VmmctlTest, ErrorsHaveDistinctExitCodes) {
  Result get = Ctl({"get", "nope"});
  EXPECT_EQ(get.exit_code, 4);
  EXPECT_THAT(get.err, HasSubstr("not found"));
  Result create = Ctl({"create", "x", "--kernel", "/nonexistent/vmlinuz"});
  EXPECT_EQ(create.exit_code, 3);
  EXPECT_THAT(create.err, HasSubstr("/nonexistent/vmlinuz"));
  Result bad_name = Ctl({"get", "no/slashes"});
  EXPECT_EQ(bad_name.exit_code, 3);
  // No daemon there.
  Result down = testing::Run({Runfile("vmm/vmmctl/vmmctl"), "--socket",
                              dir_ + "/nobody.sock", "list"});
  EXPECT_EQ(down.exit_code, 7);
  EXPECT_THAT(down.err, HasSubstr("is vmmd running"));
}

TEST_F(VmmctlTest, ListJsonParses) {
  Result list = Ctl({"list", "--json"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  EXPECT_EQ(ParseJson<v1::ListVmsResponse>(list.out).vms_size(), 0);
  Result human = Ctl({"--json", "list"});  // global flag before the command
  EXPECT_EQ(human.exit_code, 0);
}

TEST_F(VmmctlTest, AVmsLifeThroughVmmctl) {
  std::string why_not;
  if (!vmm::KvmUsable(&why_not)) {
    GTEST_SKIP() << "/dev/kvm is not usable here: " << why_not;
  }
  Result r = Ctl({"create", "demo", "--kernel", tiny_, "--memory", "16M"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("created VM demo"));
  EXPECT_EQ(Ctl({"create", "--name", "demo", "--kernel", tiny_}).exit_code, 5);
  r = Ctl({"add-device", "demo", "--type", "rng", "--transport", "pci-legacy"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("rng0"));
  EXPECT_EQ(Ctl({"add-device", "demo", "--type", "blk", "--image",
                 "/nonexistent.img"})
                .exit_code,
            3);
  EXPECT_EQ(
      Ctl({"add-device", "demo", "--type", "net", "--mac", "xx"}).exit_code, 3);
  EXPECT_EQ(Ctl({"pause", "demo"}).exit_code, 6);  // not running

  r = Ctl({"start", "demo"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("running"));
  EXPECT_EQ(Ctl({"add-device", "demo", "--type", "rng"}).exit_code, 6);
  EXPECT_EQ(Ctl({"wait", "demo", "--timeout", "100ms"}).exit_code, 8);
  EXPECT_EQ(Ctl({"delete", "demo"}).exit_code, 6);

  r = Ctl({"get", "demo", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  v1::VmInfo info = ParseJson<v1::VmInfo>(r.out);
  EXPECT_EQ(info.vm_id(), "demo");
  EXPECT_EQ(info.state(), v1::VM_STATE_RUNNING);
  EXPECT_EQ(info.config().memory_mib(), 16u);
  ASSERT_EQ(info.devices_size(), 1);
  EXPECT_EQ(info.devices(0).spec().transport(), v1::TRANSPORT_PCI_LEGACY);
  r = Ctl({"get", "demo"});
  EXPECT_THAT(r.out, HasSubstr("pci-legacy"));

  r = Ctl({"metrics", "demo", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  v1::VmMetrics metrics = ParseJson<v1::VmMetrics>(r.out);
  EXPECT_GT(metrics.exits_io(), 0u);
  EXPECT_EQ(metrics.devices_size(), 1);

  r = Ctl({"list"});
  EXPECT_THAT(r.out, HasSubstr("demo"));
  EXPECT_THAT(r.out, HasSubstr("running"));

  r = Ctl({"stop", "demo", "--timeout", "10s", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  info = ParseJson<v1::VmInfo>(r.out);
  EXPECT_EQ(info.state(), v1::VM_STATE_STOPPED);
  EXPECT_TRUE(info.has_exit_code());
  EXPECT_EQ(info.exit_code(), 0);

  // The console of a stopped VM: its whole output, then vmmctl returns.
  r = Ctl({"console", "demo", "--no-input"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, testing::kTinyGuestBanner);
  EXPECT_EQ(Ctl({"wait", "demo"}).exit_code, 0);
  r = Ctl({"delete", "demo"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Ctl({"get", "demo"}).exit_code, 4);
}

TEST_F(VmmctlTest, ConsoleForwardsStdinToTheGuest) {
  std::string why_not;
  if (!vmm::KvmUsable(&why_not)) {
    GTEST_SKIP() << "/dev/kvm is not usable here: " << why_not;
  }
  ASSERT_EQ(
      Ctl({"create", "echo", "--kernel", tiny_, "--memory", "16"}).exit_code,
      0);
  ASSERT_EQ(Ctl({"start", "echo"}).exit_code, 0);
  // The tiny guest echoes "abc" and exits with 7 on 'q'; vmmctl console
  // returns once the VM stopped.
  Result r = Ctl({"console", "echo"}, "abcq");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, absl::StrCat(testing::kTinyGuestBanner, "abc"));
  r = Ctl({"wait", "echo", "--timeout", "10s"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("exit code 7"));
}

// --transport pci-legacy-via-admin: the device is added with the
// admin-command legacy shim, and reported with that transport.
TEST_F(VmmctlTest, AddsADeviceThroughTheAdminLegacyShim) {
  Result add_help = Ctl({"help", "add-device"});
  EXPECT_THAT(add_help.out, HasSubstr("pci-legacy-via-admin"));
  Result bad = Ctl({"add-device", "x", "--type", "rng", "--transport", "shim"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_THAT(bad.err, HasSubstr("pci-legacy-via-admin"));
  std::string why_not;
  if (!vmm::KvmUsable(&why_not)) {
    GTEST_SKIP() << "/dev/kvm is not usable here: " << why_not;
  }
  Result r = Ctl({"create", "shim", "--kernel", tiny_, "--memory", "16M"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string image = ::testing::TempDir() + "/shim_disk.img";
  { std::ofstream(image, std::ios::binary) << std::string(4096, '\0'); }
  r = Ctl({"add-device", "shim", "--type", "blk", "--transport",
           "pci-legacy-via-admin", "--image", image});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("pci-legacy-via-admin"));
  r = Ctl({"get", "shim", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  v1::VmInfo info = ParseJson<v1::VmInfo>(r.out);
  ASSERT_EQ(info.devices_size(), 1);
  EXPECT_EQ(info.devices(0).spec().transport(),
            v1::TRANSPORT_PCI_LEGACY_VIA_ADMIN);
  r = Ctl({"get", "shim"});
  EXPECT_THAT(r.out, HasSubstr("pci-legacy-via-admin"));
}

}  // namespace
}  // namespace vmmkit::api
