// The test guest in vmmkit's KVM VMM: virtio-blk and virtio-rng probed and
// driven the way Linux's virtio_pci does it, for every device flavour and
// driver mode, with MSI-X and with INTx; the hostile guest; virtio-console
// and virtio-net; a graceful stop. Each test asserts the guest's serial
// report and what the host sees (the image file, the DeviceReports).
#include <cstdint>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "base/status_matchers.h"
#include "gtest/gtest.h"
#include "tests/vmm_guest/guest_run.h"
#include "vmm/vm.h"

namespace vmmkit::tests::vmm_guest {
namespace {

using virtio::DeviceType;
using vmm::BlkParams;
using vmm::ConsoleParams;
using vmm::DeviceConfig;
using vmm::NetParams;
using vmm::RngParams;
using vmm::Transport;
using vmm::VmConfig;

constexpr uint64_t kVersion1 = uint64_t{1} << 32;
// What the guest asks of a blk device and vmmkit's blk offers: SEG_MAX,
// BLK_SIZE, FLUSH, EVENT_IDX (GEOMETRY, RO, TOPOLOGY are not offered for a
// writable image).
constexpr uint64_t kBlkFeatures =
    (1u << 2) | (1u << 6) | (1u << 9) | (1u << 29);
constexpr uint8_t kStatusRunning = 0x0f;  // ACK|DRIVER|DRIVER_OK|FEATURES_OK
// A legacy driver has no FEATURES_OK step (virtio 0.9.5).
constexpr uint8_t kStatusRunningLegacy = 0x07;
constexpr uint8_t kStatusNeedsReset = 0x40;
constexpr absl::Duration kRunTimeout = absl::Seconds(120);

void PrintTiming(const std::string& name, const GuestRun& run) {
  std::cout << absl::StrFormat(
      "[ timing ] %s: %s from Start() to stopped; exits io=%d mmio=%d "
      "other=%d\n",
      name, absl::FormatDuration(run.elapsed), run.metrics.exits_io,
      run.metrics.exits_mmio, run.metrics.exits_other);
}

std::string Describe(const GuestRun& run) {
  return absl::StrCat("serial output:\n", run.serial);
}

struct Case {
  const char* name;
  Transport transport;
  const char* mode;  // the guest driver's: modern or legacy (force_legacy)
  bool msix;
  int vcpus;
  bool expect_legacy;  // the interface the driver ends up on
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

std::string CaseName(const ::testing::TestParamInfo<Case>& info) {
  return info.param.name;
}

class BlkRngTest : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    if (auto why = CannotRunGuests()) GTEST_SKIP() << *why;
  }
};

TEST_P(BlkRngTest, ProbeAndIo) {
  const Case& c = GetParam();
  const std::string image =
      MakeImage(absl::StrCat("blk_", c.name, ".img"), 64 * 1024);
  GuestRun run;
  ASSERT_OK(run.Boot(
      {.vcpus = c.vcpus,
       .memory_mib = 64,
       .cmdline = absl::StrFormat("mode=%s msix=%d devices=blk,rng cpus=%d",
                                  c.mode, c.msix, c.vcpus)},
      {{.id = "blk0",
        .type = DeviceType::kBlock,
        .transport = c.transport,
        .queue_size = 16,
        .params = BlkParams{.path = image}},
       {.id = "rng0",
        .type = DeviceType::kRng,
        .transport = c.transport,
        .params = RngParams{}}},
      kRunTimeout))
      << Describe(run);
  PrintTiming(c.name, run);
  ASSERT_EQ(run.exit_code, 0) << Describe(run);
  ASSERT_NE(run.Find({{"done", ""}, {"failures", "0"}}), nullptr)
      << Describe(run);

  const bool modern_device = c.transport == Transport::kPciModern;
  const struct {
    const char* id;
    const char* type;
    const char* check;
    uint16_t legacy_id, modern_id;
    uint64_t features;  // without VERSION_1
  } expected[] = {{"blk0", "2", "blk", 0x1001, 0x1042, kBlkFeatures},
                  {"rng0", "4", "rng", 0x1005, 0x1044, 0}};
  uint8_t slot = 1;
  for (const auto& e : expected) {
    SCOPED_TRACE(e.id);
    const ReportLine* dev =
        run.Find({{"type", e.type},
                  {"interface", c.expect_legacy ? "legacy" : "modern"}});
    ASSERT_NE(dev, nullptr) << Describe(run);
    EXPECT_EQ(dev->Get("device"), absl::StrFormat("00:%02x.0", slot));
    EXPECT_EQ(dev->Get("id"),
              absl::StrFormat("1af4:%04x",
                              modern_device ? e.modern_id : e.legacy_id));
    EXPECT_EQ(dev->Get("rev"), modern_device ? "1" : "0");
    EXPECT_EQ(dev->Get("interface"), c.expect_legacy ? "legacy" : "modern");
    EXPECT_EQ(dev->Get("msix"), c.msix ? "1" : "0");
    const uint64_t features = dev->Number("features");
    EXPECT_EQ(features, e.features | (c.expect_legacy ? 0 : kVersion1))
        << dev->text;
    if (!c.msix) {
      // The VMM's Interrupt Line: the IOAPIC GSI of the slot's INTx.
      EXPECT_EQ(dev->Number("irq"), 16u + slot % 8) << dev->text;
    }
    const ReportLine* check = run.Find({{"check", e.check}});
    ASSERT_NE(check, nullptr) << Describe(run);
    EXPECT_EQ(check->Get("result"), "ok") << check->text;

    // The host's view of the same device.
    const vmm::DeviceReport* rep = run.Device(e.id);
    ASSERT_NE(rep, nullptr);
    EXPECT_EQ(rep->pci_slot, slot);
    EXPECT_EQ(rep->transport, c.transport);
    EXPECT_EQ(rep->driver_legacy, c.expect_legacy);
    EXPECT_EQ(rep->negotiated_features, features);
    EXPECT_EQ(rep->status,
              c.expect_legacy ? kStatusRunningLegacy : kStatusRunning);
    ASSERT_FALSE(rep->queue_sizes.empty());
    EXPECT_EQ(rep->queue_sizes[0], dev->Number("qsize"));
    EXPECT_GE(rep->notifications, 1u);
    EXPECT_GE(rep->interrupts, 1u);
    ++slot;
  }
  // blk: write + flush + read + the read past the end: four requests.
  const vmm::DeviceReport* blk = run.Device("blk0");
  ASSERT_NE(blk, nullptr);
  EXPECT_GE(blk->requests, 4u);
  EXPECT_GE(blk->bytes, 8192u);
  const vmm::DeviceReport* rng = run.Device("rng0");
  ASSERT_NE(rng, nullptr);
  EXPECT_GE(rng->requests, 1u);
  EXPECT_GE(rng->bytes, 1u);

  // The pattern is in the image, sectors 8..15.
  std::ifstream f(image, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(f)),
                          std::istreambuf_iterator<char>());
  ASSERT_EQ(bytes.size(), 64u * 1024);
  for (uint32_t i = 0; i < 4096; ++i) {
    ASSERT_EQ(static_cast<uint8_t>(bytes[4096 + i]), BlkPattern(i))
        << "image offset " << 4096 + i;
  }
  EXPECT_EQ(bytes[4095], 0);
  EXPECT_EQ(bytes[8192], 0);

  if (c.vcpus > 1) {
    const ReportLine* smp =
        run.Find({{"smp", ""}, {"expected", std::to_string(c.vcpus)}});
    ASSERT_NE(smp, nullptr) << Describe(run);
    // Every AP answered INIT/SIPI and reached long mode.
    EXPECT_EQ(smp->Number("started"), static_cast<uint64_t>(c.vcpus))
        << smp->text;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Modes, BlkRngTest,
    ::testing::Values(
        Case{"modern_device_modern_driver_msix", Transport::kPciModern,
             "modern", true, 1, false},
        Case{"modern_device_modern_driver_intx", Transport::kPciModern,
             "modern", false, 2, false},
        Case{"transitional_modern_driver_msix", Transport::kPciTransitional,
             "modern", true, 2, false},
        Case{"transitional_modern_driver_intx", Transport::kPciTransitional,
             "modern", false, 1, false},
        Case{"transitional_legacy_driver_msix", Transport::kPciTransitional,
             "legacy", true, 1, true},
        Case{"transitional_legacy_driver_intx", Transport::kPciTransitional,
             "legacy", false, 2, true},
        Case{"legacy_device_legacy_driver_msix", Transport::kPciLegacy,
             "legacy", true, 2, true},
        Case{"legacy_device_legacy_driver_intx", Transport::kPciLegacy,
             "legacy", false, 1, true},
        // Linux's default probe on a legacy-only device: modern finds no
        // capabilities and falls back to the legacy interface.
        Case{"legacy_device_modern_probe_falls_back", Transport::kPciLegacy,
             "modern", true, 1, true}),
    CaseName);

// Two vCPUs driving devices at the same time: device i on vCPU i % 2, each
// vCPU taking its own devices' interrupts (MSI-X destination / IOAPIC
// destination = its LAPIC), so the VMM serves exits, kicks and interrupts
// for both at once.
class SmpIoTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    if (auto why = CannotRunGuests()) GTEST_SKIP() << *why;
  }
};

TEST_P(SmpIoTest, TwoVcpusDriveDevicesConcurrently) {
  const bool msix = GetParam();
  const std::string img0 =
      MakeImage(absl::StrCat("smp0_", msix, ".img"), 64 * 1024);
  const std::string img1 =
      MakeImage(absl::StrCat("smp1_", msix, ".img"), 64 * 1024);
  GuestRun run;
  // Enumeration order = AddDevice order: blk0 (vCPU 0), rng0 (vCPU 1),
  // rng1 (vCPU 0), blk1 (vCPU 1).
  ASSERT_OK(
      run.Boot({.vcpus = 2,
                .memory_mib = 64,
                .cmdline = absl::StrFormat("cpus=2 smp_io=1 msix=%d", msix)},
               {{.id = "blk0",
                 .type = DeviceType::kBlock,
                 .transport = Transport::kPciModern,
                 .queue_size = 16,
                 .params = BlkParams{.path = img0}},
                {.id = "rng0",
                 .type = DeviceType::kRng,
                 .transport = Transport::kPciTransitional,
                 .params = RngParams{}},
                {.id = "rng1",
                 .type = DeviceType::kRng,
                 .transport = Transport::kPciModern,
                 .params = RngParams{}},
                {.id = "blk1",
                 .type = DeviceType::kBlock,
                 .transport = Transport::kPciTransitional,
                 .queue_size = 16,
                 .params = BlkParams{.path = img1}}},
               kRunTimeout))
      << Describe(run);
  PrintTiming(msix ? "smp_io_msix" : "smp_io_intx", run);
  ASSERT_EQ(run.exit_code, 0) << Describe(run);
  EXPECT_NE(run.Find({{"smp", ""}, {"started", "2"}}), nullptr)
      << Describe(run);
  EXPECT_NE(run.Find({{"smp_io", ""}, {"result", "ok"}}), nullptr)
      << Describe(run);
  const struct {
    const char* slot;
    const char* cpu;
  } where[] = {
      {"00:01.0", "0"}, {"00:02.0", "1"}, {"00:03.0", "0"}, {"00:04.0", "1"}};
  for (const auto& w : where) {
    const ReportLine* dev =
        run.Find({{"device", w.slot}, {"interface", "modern"}});
    ASSERT_NE(dev, nullptr) << w.slot << "\n" << Describe(run);
    EXPECT_EQ(dev->Get("cpu"), w.cpu) << dev->text;
    EXPECT_EQ(dev->Get("msix"), msix ? "1" : "0") << dev->text;
  }
  EXPECT_EQ(run.FindAll({{"check", "blk"}, {"result", "ok"}}).size(), 2u)
      << Describe(run);
  EXPECT_EQ(run.FindAll({{"check", "rng"}, {"result", "ok"}}).size(), 2u)
      << Describe(run);
  for (const std::string& image : {img0, img1}) {
    std::ifstream f(image, std::ios::binary);
    std::vector<char> bytes((std::istreambuf_iterator<char>(f)),
                            std::istreambuf_iterator<char>());
    ASSERT_EQ(bytes.size(), 64u * 1024);
    for (uint32_t i = 0; i < 4096; ++i) {
      ASSERT_EQ(static_cast<uint8_t>(bytes[4096 + i]), BlkPattern(i))
          << image << " offset " << 4096 + i;
    }
  }
  for (const char* id : {"blk0", "rng0", "rng1", "blk1"}) {
    const vmm::DeviceReport* rep = run.Device(id);
    ASSERT_NE(rep, nullptr) << id;
    EXPECT_EQ(rep->status, kStatusRunning) << id;
    EXPECT_GE(rep->interrupts, 1u) << id;
  }
}

INSTANTIATE_TEST_SUITE_P(Interrupts, SmpIoTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "msix" : "intx";
                         });

class GuestTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = CannotRunGuests()) GTEST_SKIP() << *why;
  }
};

// The hostile guest against a transitional blk (both interfaces) and a
// legacy-only rng: every check passes, the VMM is still there to report,
// the blk ends healthy and the rng with DEVICE_NEEDS_RESET.
TEST_F(GuestTest, HostileDriver) {
  const std::string image = MakeImage("hostile.img", 64 * 1024);
  GuestRun run;
  ASSERT_OK(run.Boot({.vcpus = 1, .memory_mib = 64, .cmdline = "hostile=1"},
                     {{.id = "blk0",
                       .type = DeviceType::kBlock,
                       .transport = Transport::kPciTransitional,
                       .queue_size = 8,
                       .params = BlkParams{.path = image}},
                      {.id = "rng0",
                       .type = DeviceType::kRng,
                       .transport = Transport::kPciLegacy,
                       .params = RngParams{}}},
                     kRunTimeout))
      << Describe(run);
  PrintTiming("hostile", run);
  EXPECT_EQ(run.exit_code, 0) << Describe(run);
  for (const ReportLine& l : run.lines) {
    if (l.Has("hostile") && l.Has("result")) {
      EXPECT_EQ(l.Get("result"), "ok") << l.text;
    }
  }
  // The checks that must have run on each device.
  const char* blk_checks[] = {"queue_size_not_pow2",
                              "queue_size_above_max",
                              "desc_table_outside_ram",
                              "desc_table_misaligned",
                              "driver_ok_without_features_ok",
                              "unoffered_feature_refused",
                              "device_config_past_end",
                              "pci_cfg_window_bad_length",
                              "msix_vector_beyond_table",
                              "buffer_outside_ram",
                              "buffer_huge_length",
                              "chain_loop",
                              "avail_index_jump",
                              "avail_head_out_of_range",
                              "legacy_pfn_outside_ram",
                              "legacy_pfn_zero_resets",
                              "legacy_msix_vector_beyond_table",
                              "legacy_buffer_outside_ram",
                              "notify_absent_queue",
                              "legacy_notify_absent_queue",
                              "recovery"};
  for (const char* name : blk_checks) {
    EXPECT_NE(
        run.Find({{"hostile", name}, {"device", "00:01.0"}, {"result", "ok"}}),
        nullptr)
        << "blk: " << name << "\n"
        << Describe(run);
  }
  const char* rng_checks[] = {
      "legacy_pfn_outside_ram", "legacy_buffer_outside_ram",  "chain_loop",
      "avail_index_jump",       "legacy_notify_absent_queue", "recovery",
      "left_needing_reset"};
  for (const char* name : rng_checks) {
    EXPECT_NE(
        run.Find({{"hostile", name}, {"device", "00:02.0"}, {"result", "ok"}}),
        nullptr)
        << "rng: " << name << "\n"
        << Describe(run);
  }
  EXPECT_NE(run.Find({{"hostile", "absent_function"}, {"result", "ok"}}),
            nullptr);
  EXPECT_NE(run.Find({{"done", ""}, {"failures", "0"}}), nullptr)
      << Describe(run);
  const vmm::DeviceReport* blk = run.Device("blk0");
  const vmm::DeviceReport* rng = run.Device("rng0");
  ASSERT_NE(blk, nullptr);
  ASSERT_NE(rng, nullptr);
  EXPECT_EQ(blk->status, kStatusRunning);
  EXPECT_TRUE(rng->status & kStatusNeedsReset) << int{rng->status};
  EXPECT_TRUE(rng->driver_legacy);
  EXPECT_EQ(run.vm->state(), vmm::VmState::kStopped);
}

// virtio-console output captured by the VMM, input written by the host;
// virtio-net through the VMM's echo backend (12-byte header for a modern
// driver, 10 bytes for a legacy one without MRG_RXBUF).
struct ConsoleNetCase {
  const char* name;
  const char* cmdline;
  Transport console_transport, net_transport;
  bool expect_legacy;
  const char* hdr;
};

void PrintTo(const ConsoleNetCase& c, std::ostream* os) { *os << c.name; }

class ConsoleNetTest : public ::testing::TestWithParam<ConsoleNetCase> {
 protected:
  void SetUp() override {
    if (auto why = CannotRunGuests()) GTEST_SKIP() << *why;
  }
};

TEST_P(ConsoleNetTest, ConsoleAndNet) {
  const ConsoleNetCase& c = GetParam();
  GuestRun run;
  ASSERT_OK(run.Start(
      {.vcpus = 1, .memory_mib = 64, .cmdline = c.cmdline},
      {{.id = "con0",
        .type = DeviceType::kConsole,
        .transport = c.console_transport,
        .queue_size = 8,
        .params = ConsoleParams{}},
       {.id = "net0",
        .type = DeviceType::kNet,
        .transport = c.net_transport,
        .queue_size = 16,
        .params = NetParams{.mac = std::array<uint8_t, 6>{
                                0x52, 0x54, 0x00, 0xab, 0xcd, 0xef}}}}));
  // The guest asks for input once its receive buffer is posted.
  const absl::Time deadline = absl::Now() + kRunTimeout;
  while (run.vm->ConsoleOutput().find("VMMKIT console waiting for input") ==
             std::string::npos &&
         absl::Now() < deadline && run.vm->state() == vmm::VmState::kRunning) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  ASSERT_OK(run.vm->WriteVirtioConsoleInput("con0", "ping vmmkit\n"));
  ASSERT_OK(run.vm->WaitStopped(kRunTimeout)) << run.vm->ConsoleOutput();
  run.Collect();
  PrintTiming(c.name, run);
  EXPECT_EQ(run.exit_code, 0) << Describe(run);
  const ReportLine* con = run.Find({{"check", "console"}});
  ASSERT_NE(con, nullptr) << Describe(run);
  EXPECT_EQ(con->Get("result"), "ok");
  EXPECT_NE(run.Find({{"console", ""}, {"input", "ping vmmkit_"}}), nullptr)
      << Describe(run);
  EXPECT_NE(run.vm->VirtioConsoleOutput("con0").find(
                "hello from the vmmkit test guest\n"),
            std::string::npos)
      << run.vm->VirtioConsoleOutput("con0");
  const ReportLine* net = run.Find({{"check", "net"}});
  ASSERT_NE(net, nullptr) << Describe(run);
  EXPECT_EQ(net->Get("result"), "ok") << net->text;
  EXPECT_EQ(net->Get("mac"), "52:54:00:ab:cd:ef");
  EXPECT_EQ(net->Get("hdr"), c.hdr);
  EXPECT_EQ(net->Get("attempts"), "1");  // the echo answered the first frame
  const uint8_t running =
      c.expect_legacy ? kStatusRunningLegacy : kStatusRunning;
  for (const char* id : {"con0", "net0"}) {
    const vmm::DeviceReport* r = run.Device(id);
    ASSERT_NE(r, nullptr) << id;
    EXPECT_EQ(r->driver_legacy, c.expect_legacy) << id;
    EXPECT_EQ(r->status, running) << id;
    EXPECT_EQ((r->negotiated_features & kVersion1) == 0, c.expect_legacy) << id;
  }
  EXPECT_GE(run.Device("net0")->requests, 2u);  // the frame out, the echo in
  // The line out (33 bytes) and the input in (12). (requests stays 0 for a
  // console: vmm/devices.cc counts only its bytes, see NOTES.md.)
  EXPECT_GE(run.Device("con0")->bytes, 33u + 12u);
}

INSTANTIATE_TEST_SUITE_P(
    Modes, ConsoleNetTest,
    ::testing::Values(
        ConsoleNetCase{"modern_msix",
                       "mode=modern msix=1 devices=console,net console_input=1",
                       Transport::kPciTransitional, Transport::kPciModern,
                       false, "12"},
        ConsoleNetCase{"legacy_intx",
                       "mode=legacy msix=0 devices=console,net console_input=1",
                       Transport::kPciLegacy, Transport::kPciTransitional, true,
                       "10"},
        // Both through admin-command legacy shims (vmm/admin_legacy.h).
        ConsoleNetCase{"legacy_via_admin_msix",
                       "mode=legacy msix=1 devices=console,net console_input=1",
                       Transport::kPciLegacyViaAdmin,
                       Transport::kPciLegacyViaAdmin, true, "10"}),
    [](const ::testing::TestParamInfo<ConsoleNetCase>& info) {
      return std::string(info.param.name);
    });

// Stop() asks through port 0x502; the guest sees it and ends with 0.
TEST_F(GuestTest, GracefulStop) {
  GuestRun run;
  ASSERT_OK(run.Start(
      {.vcpus = 1, .memory_mib = 32, .cmdline = "devices=rng wait_stop=1"},
      {{.id = "rng0",
        .type = DeviceType::kRng,
        .transport = Transport::kPciModern,
        .params = RngParams{}}}));
  const absl::Time deadline = absl::Now() + kRunTimeout;
  while (run.vm->ConsoleOutput().find("VMMKIT waiting for stop") ==
             std::string::npos &&
         absl::Now() < deadline && run.vm->state() == vmm::VmState::kRunning) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  ASSERT_EQ(run.vm->state(), vmm::VmState::kRunning) << run.vm->ConsoleOutput();
  const absl::Time asked = absl::Now();
  ASSERT_OK(run.vm->Stop(absl::Seconds(30)));
  const absl::Duration took = absl::Now() - asked;
  run.Collect();
  std::cout << "[ timing ] graceful stop took " << absl::FormatDuration(took)
            << "\n";
  EXPECT_EQ(run.vm->state(), vmm::VmState::kStopped);
  EXPECT_EQ(run.exit_code, 0) << Describe(run);
  EXPECT_NE(run.Find({{"stop", ""}, {"requested", ""}}), nullptr)
      << Describe(run);
  EXPECT_NE(run.Find({{"done", ""}, {"failures", "0"}}), nullptr)
      << Describe(run);
}

// Bytes written with WriteConsoleInput reach the 8250's receive side; the
// i8042 CPU reset ends the run as a power-off with exit code 0.
TEST_F(GuestTest, UartInputThenResetPowersOff) {
  GuestRun run;
  ASSERT_OK(run.Start({.vcpus = 1,
                       .memory_mib = 32,
                       .cmdline = "devices=rng uart_input=6 end=reset"},
                      {{.id = "rng0",
                        .type = DeviceType::kRng,
                        .transport = Transport::kPciModern,
                        .params = RngParams{}}}));
  const absl::Time deadline = absl::Now() + kRunTimeout;
  while (run.vm->ConsoleOutput().find("VMMKIT uart waiting for input") ==
             std::string::npos &&
         absl::Now() < deadline && run.vm->state() == vmm::VmState::kRunning) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  ASSERT_OK(run.vm->WriteConsoleInput("vmmkit"));
  ASSERT_OK(run.vm->WaitStopped(kRunTimeout)) << run.vm->ConsoleOutput();
  run.Collect();
  EXPECT_EQ(run.exit_code, 0) << Describe(run);
  EXPECT_OK(run.vm->stop_reason());
  EXPECT_NE(run.Find({{"uart", ""}, {"input", "vmmkit"}, {"result", "ok"}}),
            nullptr)
      << Describe(run);
  EXPECT_NE(run.Find({{"done", ""}, {"failures", "0"}}), nullptr)
      << Describe(run);
}

// A failed check is a non-zero exit code: here the guest finds no device.
TEST_F(GuestTest, FailedCheckIsNonZeroExit) {
  GuestRun run;
  ASSERT_OK(run.Boot({.vcpus = 1, .memory_mib = 32, .cmdline = "msix=1"}, {},
                     kRunTimeout))
      << Describe(run);
  EXPECT_EQ(run.exit_code, 1) << Describe(run);
  EXPECT_NE(run.Find({{"devices", ""}, {"found", "0"}}), nullptr)
      << Describe(run);
  EXPECT_NE(run.Find({{"done", ""}, {"failures", "1"}}), nullptr)
      << Describe(run);
}

}  // namespace
}  // namespace vmmkit::tests::vmm_guest
