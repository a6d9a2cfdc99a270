// Runs //vmm:vmm-run on a tiny ELF guest: serial output on stdout, the
// guest's exit code as the process's, device reports on stderr, 125 for a
// bad command line. Skipped without usable /dev/kvm.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "vmm/testing_elf.h"
#include "vmm/vm.h"

namespace vmmkit::vmm {
namespace {

using namespace ::vmmkit::vmm::testing;

struct Result {
  int status = -1;
  std::string out, err;
};

std::string Slurp(const std::string& path) {
  std::ifstream f(path);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

Result RunVmmRun(const std::vector<std::string>& args) {
  const std::string dir = ::testing::TempDir();
  const std::string out = dir + "/run.out", err = dir + "/run.err";
  std::string cmd = "vmm/vmm-run";
  for (const std::string& a : args) cmd += " '" + a + "'";
  cmd += " >" + out + " 2>" + err;
  Result r;
  int s = std::system(cmd.c_str());
  r.status = WIFEXITED(s) ? WEXITSTATUS(s) : -1;
  r.out = Slurp(out);
  r.err = Slurp(err);
  return r;
}

class VmmRunTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!KvmUsable(&why)) GTEST_SKIP() << "KVM unusable: " << why;
  }
};

TEST_F(VmmRunTest, RunsAGuestWithDevices) {
  std::vector<uint8_t> c;
  Print(c, "hello from the guest\n");
  Exit(c, 7);
  const std::string guest = ::testing::TempDir() + "/run_guest.elf";
  std::vector<uint8_t> elf = MakeElf(c);
  std::ofstream(guest, std::ios::binary)
      .write(reinterpret_cast<const char*>(elf.data()), elf.size());
  const std::string disk = ::testing::TempDir() + "/run_disk.img";
  {
    std::ofstream f(disk, std::ios::binary);
    f.seekp((1 << 20) - 1);
    f.put(0);
  }
  Result r = RunVmmRun({"--kernel=" + guest, "--vcpus=2", "--memory_mib=32",
                        "--blk=" + disk + ",ro,modern", "--net=,legacy",
                        "--console=", "--rng=transitional"});
  EXPECT_EQ(r.status, 7) << r.err;
  EXPECT_EQ(r.out, "hello from the guest\n");
  EXPECT_TRUE(absl::StrContains(r.err, "blk0 blk pci-modern slot 1")) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "net1 net pci-legacy slot 2")) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "console2 console pci-transitional"))
      << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "rng3 rng pci-transitional slot 4"))
      << r.err;
}

TEST_F(VmmRunTest, LegacyViaAdminMode) {
  std::vector<uint8_t> c;
  Exit(c, 3);
  const std::string guest = ::testing::TempDir() + "/run_guest_shim.elf";
  std::vector<uint8_t> elf = MakeElf(c);
  std::ofstream(guest, std::ios::binary)
      .write(reinterpret_cast<const char*>(elf.data()), elf.size());
  Result r = RunVmmRun(
      {"--kernel=" + guest, "--memory_mib=16", "--rng=legacy-via-admin"});
  EXPECT_EQ(r.status, 3) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "rng0 rng pci-legacy-via-admin slot 1"))
      << r.err;
}

TEST_F(VmmRunTest, BadArguments) {
  Result r = RunVmmRun({"--kernel=/nonexistent"});
  EXPECT_EQ(r.status, 125);
  EXPECT_TRUE(absl::StrContains(r.err, "NOT_FOUND")) << r.err;
  r = RunVmmRun({"--kernel=/nonexistent", "--rng=sideways"});
  EXPECT_EQ(r.status, 125);
  EXPECT_TRUE(absl::StrContains(r.err, "bad option 'sideways'")) << r.err;
}

// Needs no KVM: --help describes the flags and the device syntax.
TEST(VmmRunHelpTest, HelpListsFlagsAndDevices) {
  Result r = RunVmmRun({"--help"});
  const std::string all = r.out + r.err;
  for (const char* want :
       {"--kernel", "--initrd", "--cmdline", "--vcpus", "--memory_mib",
        "--timeout_s", "--blk=PATH", "legacy-via-admin"}) {
    EXPECT_TRUE(absl::StrContains(all, want)) << want << " in\n" << all;
  }
  EXPECT_FALSE(absl::StrContains(all, "No flags matched")) << all;
}

}  // namespace
}  // namespace vmmkit::vmm
