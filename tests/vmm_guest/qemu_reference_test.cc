// The same guest image under QEMU (TCG, PVH boot) with QEMU's own virtio-pci
// devices: a reference that separates guest bugs from VMM bugs. Modern,
// transitional and legacy-only devices; modern and force_legacy drivers;
// MSI-X and INTx; blk, rng, console and net (a UDP socket netdev that sends
// every frame back to itself). Skipped, with the reason, without
// qemu-system-x86_64.
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "tests/vmm_guest/report.h"

namespace vmmkit::tests::vmm_guest {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)),
                     std::istreambuf_iterator<char>());
}

// A UDP port nobody holds now (the kernel's pick for port 0), for QEMU's
// echo socket. Not the pid: every test in Bazel's sandbox has the same pid.
int FreeUdpPort() {
  const int fd = socket(AF_INET, SOCK_DGRAM, 0);
  if (fd < 0) return -1;
  sockaddr_in a = {};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  int port = -1;
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    port = ntohs(a.sin_port);
  }
  close(fd);
  return port;
}

bool HaveQemu() {
  return std::system("qemu-system-x86_64 --version >/dev/null 2>&1") == 0;
}

struct QemuCase {
  const char* name;
  const char* cmdline;
  const char* blk_props;  // -device virtio-blk-pci,<props>
  const char* rng_props;
  const char* expect_blk_interface;
  const char* expect_rng_interface;
  const char* expect_msix;
  const char* expect_other_interface;  // console and net (transitional)
  int cpus = 1;
};

void PrintTo(const QemuCase& c, std::ostream* os) { *os << c.name; }

class QemuReferenceTest : public ::testing::TestWithParam<QemuCase> {
 protected:
  void SetUp() override {
    if (!HaveQemu()) GTEST_SKIP() << "qemu-system-x86_64 is not installed";
  }
};

TEST_P(QemuReferenceTest, AllDevices) {
  const QemuCase& c = GetParam();
  const std::string image =
      MakeImage(absl::StrCat("q_", c.name, ".img"), 64 * 1024);
  const std::string serial =
      absl::StrCat(::testing::TempDir(), "/q_", c.name, ".serial");
  const std::string console =
      absl::StrCat(::testing::TempDir(), "/q_", c.name, ".console");
  std::remove(serial.c_str());
  std::remove(console.c_str());
  const int port = FreeUdpPort();
  ASSERT_GT(port, 0);
  const std::string cmd = absl::StrFormat(
      "timeout 120 qemu-system-x86_64 -machine pc -accel tcg%s -m 64 -smp %d "
      "-display none -no-reboot -nodefaults -net none "
      "-kernel %s -append '%s' "
      "-device isa-debug-exit,iobase=0x501,iosize=4 "
      "-chardev file,id=s0,path=%s -serial chardev:s0 "
      "-drive file=%s,format=raw,if=none,id=d0 "
      "-device virtio-blk-pci,drive=d0%s "
      "-device virtio-rng-pci%s "
      "-device virtio-serial-pci,id=vs "
      "-chardev file,id=c0,path=%s "
      "-device virtconsole,chardev=c0,bus=vs.0,nr=0 "
      "-netdev dgram,id=n0,local.type=inet,local.host=127.0.0.1,"
      "local.port=%d,remote.type=inet,remote.host=127.0.0.1,remote.port=%d "
      "-device virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56 "
      "</dev/null >/dev/null 2>&1",
      // QEMU 7.2's multi-threaded TCG segfaulted about once in 8 parallel
      // runs of the 2-vCPU case (right after INIT/SIPI); one TCG thread
      // still interleaves the two vCPUs.
      c.cpus > 1 ? ",thread=single" : "", c.cpus, GuestImagePath(), c.cmdline,
      serial, image, c.blk_props, c.rng_props, console, port, port);
  const absl::Time t0 = absl::Now();
  const int status = std::system(cmd.c_str());
  const absl::Duration took = absl::Now() - t0;
  std::cout << "[ timing ] qemu " << c.name << ": "
            << absl::FormatDuration(took) << "\n";
  const std::string out = ReadFile(serial);
  ASSERT_TRUE(WIFEXITED(status)) << out;
  // isa-debug-exit: QEMU exits with (value << 1) | 1.
  ASSERT_EQ(WEXITSTATUS(status), 1) << cmd << "\n" << out;
  const std::vector<ReportLine> lines = ParseReport(out);
  EXPECT_NE(FindLine(lines, {{"done", ""}, {"failures", "0"}}), nullptr) << out;
  const struct {
    const char* type;
    const char* check;
    const char* interface;
  } expected[] = {{"2", "blk", c.expect_blk_interface},
                  {"4", "rng", c.expect_rng_interface},
                  {"3", "console", c.expect_other_interface},
                  {"1", "net", c.expect_other_interface}};
  for (const auto& e : expected) {
    SCOPED_TRACE(e.check);
    const ReportLine* d =
        FindLine(lines, {{"type", e.type}, {"interface", e.interface}});
    ASSERT_NE(d, nullptr) << out;
    if (e.type == std::string("2") || e.type == std::string("4")) {
      EXPECT_EQ(d->Get("msix"), c.expect_msix) << d->text;
    }
    const bool legacy = e.interface == std::string("legacy");
    EXPECT_EQ((d->Number("features") >> 32) & 1, legacy ? 0u : 1u) << d->text;
    const ReportLine* check =
        FindLine(lines, {{"check", e.check}, {"result", "ok"}});
    EXPECT_NE(check, nullptr) << out;
  }
  if (c.cpus > 1) {
    EXPECT_NE(
        FindLine(lines, {{"smp", ""}, {"started", std::to_string(c.cpus)}}),
        nullptr)
        << out;
    EXPECT_NE(FindLine(lines, {{"smp_io", ""}, {"result", "ok"}}), nullptr)
        << out;
    EXPECT_NE(FindLine(lines, {{"devices", ""}, {"cpu", "1"}}), nullptr) << out;
  }
  const std::string img = ReadFile(image);
  ASSERT_EQ(img.size(), 64u * 1024);
  for (uint32_t i = 0; i < 4096; ++i) {
    ASSERT_EQ(static_cast<uint8_t>(img[4096 + i]), BlkPattern(i)) << i;
  }
  EXPECT_NE(ReadFile(console).find("hello from the vmmkit test guest\n"),
            std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(
    Modes, QemuReferenceTest,
    ::testing::Values(
        // Transitional blk and rng (QEMU's default), modern driver, MSI-X.
        QemuCase{"transitional_modern_msix", "mode=modern msix=1", "", "",
                 "modern", "modern", "1", "modern"},
        // force_legacy on transitional devices, INTx through the IOAPIC.
        QemuCase{"transitional_legacy_intx", "mode=legacy msix=0", "", "",
                 "legacy", "legacy", "0", "legacy"},
        // A modern-only blk and a legacy-only rng: the modern probe, and
        // its fallback to legacy.
        QemuCase{"modern_only_and_legacy_only", "mode=modern msix=0",
                 ",disable-legacy=on", ",disable-modern=on", "modern", "legacy",
                 "0", "modern"},
        // Two vCPUs driving two devices each at the same time (MSI-X: each
        // vCPU takes its own devices' messages).
        QemuCase{"two_vcpus_concurrent_msix",
                 "mode=modern msix=1 cpus=2 smp_io=1", "", "", "modern",
                 "modern", "1", "modern", 2}),
    [](const ::testing::TestParamInfo<QemuCase>& info) {
      return std::string(info.param.name);
    });

}  // namespace
}  // namespace vmmkit::tests::vmm_guest
