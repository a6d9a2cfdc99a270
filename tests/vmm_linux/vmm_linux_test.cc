// Boots the Debian guest image under vmmkit's VMM and checks what its init
// reports: the blk check (pattern written, flushed, read back O_DIRECT), rng
// (/dev/hwrng is virtio) and console (a line through /dev/hvc0), with every
// device in one transport mode, on 1 and 2 vCPUs. The init ends with
// "VMMKIT done" and reboot -f, which the VMM sees as the i8042 reset.
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <tuple>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/status_matchers.h"
#include "gtest/gtest.h"
#include "vmm/vm.h"

namespace vmmkit::vmm {
namespace {

bool Exists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

class VmmLinuxTest
    : public ::testing::TestWithParam<std::tuple<int, Transport>> {
 protected:
  void SetUp() override {
    std::string why;
    if (!KvmUsable(&why)) GTEST_SKIP() << "KVM unusable: " << why;
    if (IsPvm()) {
      GTEST_SKIP() << "PVM detected (/sys/module/kvm_pvm): stock Linux cannot "
                      "boot here";
    }
    const char* dir = std::getenv("VMMKIT_GUEST_DIR");
    if (dir == nullptr || *dir == '\0') {
      GTEST_SKIP() << "VMMKIT_GUEST_DIR is not set (run tools/guest-image and "
                      "pass --test_env=VMMKIT_GUEST_DIR=<its last line>)";
    }
    kernel_ = absl::StrCat(dir, "/vmlinuz");
    initrd_ = absl::StrCat(dir, "/initramfs.cpio.gz");
    if (!Exists(kernel_) || !Exists(initrd_)) {
      GTEST_SKIP() << "no vmlinuz/initramfs.cpio.gz in " << dir;
    }
  }
  std::string kernel_, initrd_;
};

// Boots the guest with every device in `transport`; `extra_cmdline` is
// appended; `legacy`: the driver must end up on the legacy interface.
void BootAndCheck(const std::string& kernel, const std::string& initrd,
                  int vcpus, Transport transport,
                  const std::string& extra_cmdline, bool legacy) {
  const std::string disk = absl::StrCat(::testing::TempDir(), "/linux.img");
  {
    std::ofstream f(disk, std::ios::binary | std::ios::trunc);
    f.seekp((16 << 20) - 1);
    f.put(0);
  }
  const std::string cmdline = absl::StrCat(
      "console=ttyS0 acpi=off reboot=k panic=-1 vmmkit.poweroff=reboot "
      "vmmkit.checks=blk,rng,console vmmkit.blk_dev=vda vmmkit.blk_offset=0 "
      "vmmkit.blk_len=1048576 vmmkit.blk_seed=vmmlinux "
      "vmmkit.console_seed=hvc",
      extra_cmdline);
  absl::StatusOr<std::unique_ptr<Vm>> vm = Vm::Create({.vcpus = vcpus,
                                                       .memory_mib = 512,
                                                       .kernel = kernel,
                                                       .initrd = initrd,
                                                       .cmdline = cmdline});
  ASSERT_OK(vm.status());
  ASSERT_OK((*vm)->AddDevice({.id = "vda",
                              .type = virtio::DeviceType::kBlock,
                              .transport = transport,
                              .params = BlkParams{.path = disk}}));
  ASSERT_OK((*vm)->AddDevice({.id = "rng",
                              .type = virtio::DeviceType::kRng,
                              .transport = transport,
                              .params = RngParams{}}));
  ASSERT_OK((*vm)->AddDevice({.id = "hvc",
                              .type = virtio::DeviceType::kConsole,
                              .transport = transport,
                              .params = ConsoleParams{}}));
  ASSERT_OK((*vm)->Start());
  absl::Status s = (*vm)->WaitStopped(absl::Seconds(120));
  const std::string out = (*vm)->ConsoleOutput();
  if (!s.ok()) (void)(*vm)->Stop(absl::ZeroDuration());
  ASSERT_OK(s) << out;
  EXPECT_OK((*vm)->stop_reason());
  EXPECT_EQ((*vm)->exit_code(), 0) << "reboot -f ends the run";
  EXPECT_TRUE(absl::StrContains(out, "VMMKIT check=blk result=ok")) << out;
  EXPECT_TRUE(absl::StrContains(out, "VMMKIT check=rng result=ok")) << out;
  EXPECT_TRUE(absl::StrContains(out, "VMMKIT check=console result=ok")) << out;
  EXPECT_TRUE(absl::StrContains(out, "VMMKIT done")) << out;
  const char* want_interface = legacy ? "interface=legacy" : "interface=modern";
  EXPECT_TRUE(absl::StrContains(out, want_interface)) << out;
  EXPECT_TRUE(absl::StrContains((*vm)->VirtioConsoleOutput("hvc"),
                                "VMMKIT-CONSOLE hvc"));
  for (const DeviceReport& r : (*vm)->Devices()) {
    EXPECT_EQ(r.transport, transport) << r.id;
    EXPECT_EQ(r.driver_legacy, legacy) << r.id;
    EXPECT_GT(r.requests, 0u) << r.id;
  }
}

TEST_P(VmmLinuxTest, BootsAndDrivesDevices) {
  const auto [vcpus, transport] = GetParam();
  BootAndCheck(kernel_, initrd_, vcpus, transport, "",
               transport == Transport::kPciLegacy);
}

// Linux's legacy driver (virtio_pci.force_legacy=1) on transitional
// functions that are admin-command legacy shims in front of modern-only
// members (Transport::kPciLegacyViaAdmin).
// (BootsAndDrivesDevices/..._via_admin: Linux's default modern driver on
// the same shims, through the member's modern capabilities.)
class VmmLinuxShimTest : public VmmLinuxTest {};

TEST_P(VmmLinuxShimTest, ForceLegacyThroughAdminShim) {
  BootAndCheck(kernel_, initrd_, std::get<0>(GetParam()),
               Transport::kPciLegacyViaAdmin, " virtio_pci.force_legacy=1",
               /*legacy=*/true);
}

INSTANTIATE_TEST_SUITE_P(
    Vcpus, VmmLinuxShimTest,
    ::testing::Combine(::testing::Values(1, 2),
                       ::testing::Values(Transport::kPciLegacyViaAdmin)),
    [](const ::testing::TestParamInfo<VmmLinuxShimTest::ParamType>& info) {
      return absl::StrCat(std::get<0>(info.param), "vcpu");
    });

INSTANTIATE_TEST_SUITE_P(
    VcpusAndModes, VmmLinuxTest,
    ::testing::Combine(::testing::Values(1, 2),
                       ::testing::Values(Transport::kPciModern,
                                         Transport::kPciTransitional,
                                         Transport::kPciLegacy,
                                         Transport::kPciLegacyViaAdmin)),
    [](const ::testing::TestParamInfo<VmmLinuxTest::ParamType>& info) {
      const Transport t = std::get<1>(info.param);
      return absl::StrCat(std::get<0>(info.param), "vcpu_",
                          t == Transport::kPciModern         ? "modern"
                          : t == Transport::kPciTransitional ? "transitional"
                          : t == Transport::kPciLegacy       ? "legacy"
                                                             : "via_admin");
    });

}  // namespace
}  // namespace vmmkit::vmm
