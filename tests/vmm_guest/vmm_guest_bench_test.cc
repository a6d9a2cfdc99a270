// The guest's bench mode in vmmkit's VMM: what one exit costs (a port read
// answered by the VMM in user space, a LAPIC read answered by KVM, a virtio
// register read) and the notify-to-interrupt round trip of a virtio-rng
// request (kick -> ioeventfd -> I/O thread -> used ring -> MSI-X via irqfd,
// or INTx via the IOAPIC), timed with rdtsc in the guest. The figures are
// printed, never asserted; the test checks that each was measured.
//
//   bazel test //tests/vmm_guest:vmm_guest_bench_test --test_output=all
#include <iostream>
#include <string>

#include "absl/strings/str_format.h"
#include "base/status_matchers.h"
#include "gtest/gtest.h"
#include "tests/vmm_guest/guest_run.h"
#include "vmm/vm.h"

namespace vmmkit::tests::vmm_guest {
namespace {

using vmm::DeviceConfig;
using vmm::RngParams;
using vmm::Transport;

struct BenchCase {
  const char* name;
  Transport transport;
  const char* cmdline;
};

class BenchTest : public ::testing::TestWithParam<BenchCase> {
 protected:
  void SetUp() override {
    if (auto why = CannotRunGuests()) GTEST_SKIP() << *why;
  }
};

TEST_P(BenchTest, ExitsAndRoundTrip) {
  const BenchCase& c = GetParam();
  GuestRun run;
  ASSERT_OK(run.Boot({.vcpus = 1, .memory_mib = 32, .cmdline = c.cmdline},
                     {{.id = "rng0",
                       .type = virtio::DeviceType::kRng,
                       .transport = c.transport,
                       .params = RngParams{}}},
                     absl::Seconds(120)))
      << run.serial;
  ASSERT_EQ(run.exit_code, 0) << run.serial;
  const ReportLine* tsc = run.Find({{"bench", ""}, {"tsc_khz", ""}});
  const ReportLine* pio = nullptr;
  const ReportLine* pio_out = nullptr;
  const ReportLine* lapic = nullptr;
  const ReportLine* reg = nullptr;
  const ReportLine* rt = nullptr;
  for (const ReportLine& l : run.lines) {
    if (!l.Has("bench")) continue;
    if (l.Has("tsc_khz")) tsc = &l;
    if (l.Has("pio_read_ns")) pio = &l;
    if (l.Has("pio_write_ns")) pio_out = &l;
    if (l.Has("lapic_read_ns")) lapic = &l;
    if (l.Has("device_register_read_ns")) reg = &l;
    if (l.Has("notify_to_interrupt_us_min")) rt = &l;
  }
  ASSERT_NE(tsc, nullptr) << run.serial;
  ASSERT_NE(pio, nullptr) << run.serial;
  ASSERT_NE(pio_out, nullptr) << run.serial;
  ASSERT_NE(lapic, nullptr) << run.serial;
  ASSERT_NE(reg, nullptr) << run.serial;
  ASSERT_NE(rt, nullptr) << run.serial;
  EXPECT_GT(tsc->Number("tsc_khz"), 0u);
  EXPECT_GT(pio->Number("pio_read_ns"), 0u);
  EXPECT_EQ(rt->Number("rounds"), 50u);
  const double seconds = absl::ToDoubleSeconds(run.elapsed);
  std::cout << absl::StrFormat(
      "[ bench ] %s (%s, PVM=%d)\n"
      "[ bench ]   TSC %d kHz (against the LAPIC timer)\n"
      "[ bench ]   port read (VMM user space): %d ns (%d cycles), %d exits/s\n"
      "[ bench ]   port write (VMM user space): %d ns (%d cycles), %d exits/s\n"
      "[ bench ]   LAPIC read (in-kernel):     %d ns (%d cycles)\n"
      "[ bench ]   virtio register read:       %d ns (%s)\n"
      "[ bench ]   notify -> interrupt:        min %d us, avg %d us, max %d "
      "us over %d rounds (msix=%s)\n"
      "[ bench ]   whole run: %.3f s, exits io=%d mmio=%d other=%d (%.0f "
      "exits/s to user space)\n",
      c.name, c.cmdline, vmm::IsPvm(), tsc->Number("tsc_khz"),
      pio->Number("pio_read_ns"), pio->Number("pio_read_cycles"),
      pio->Number("pio_exits_per_s"), pio_out->Number("pio_write_ns"),
      pio_out->Number("pio_write_cycles"),
      pio_out->Number("pio_write_exits_per_s"), lapic->Number("lapic_read_ns"),
      lapic->Number("lapic_read_cycles"),
      reg->Number("device_register_read_ns"), reg->Get("via"),
      rt->Number("notify_to_interrupt_us_min"), rt->Number("avg"),
      rt->Number("max"), rt->Number("rounds"), rt->Get("msix"), seconds,
      run.metrics.exits_io, run.metrics.exits_mmio, run.metrics.exits_other,
      seconds > 0 ? (run.metrics.exits_io + run.metrics.exits_mmio) / seconds
                  : 0.0);
}

INSTANTIATE_TEST_SUITE_P(
    Modes, BenchTest,
    ::testing::Values(BenchCase{"modern_msix", Transport::kPciModern,
                                "bench=1 mode=modern msix=1"},
                      BenchCase{"legacy_intx", Transport::kPciLegacy,
                                "bench=1 mode=legacy msix=0"},
                      // A legacy register read on a native transitional
                      // function vs. through the admin-command legacy shim
                      // (one LEGACY_COMMON_CFG_READ per read).
                      BenchCase{"transitional_legacy_intx",
                                Transport::kPciTransitional,
                                "bench=1 mode=legacy msix=0"},
                      BenchCase{"via_admin_legacy_intx",
                                Transport::kPciLegacyViaAdmin,
                                "bench=1 mode=legacy msix=0"}),
    [](const ::testing::TestParamInfo<BenchCase>& info) {
      return std::string(info.param.name);
    });

}  // namespace
}  // namespace vmmkit::tests::vmm_guest
