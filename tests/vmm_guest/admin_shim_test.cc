// The test guest's legacy driver (mode=legacy: a transitional device driven
// as virtio_pci.force_legacy=1 does) through vmmkit's admin-command legacy
// shim (Transport::kPciLegacyViaAdmin: a modern-only member, its group
// owner's LEGACY_* commands, pci/legacy_shim.h): blk writes and reads the
// image, rng fills a buffer, net passes a frame through the echo backend,
// with MSI-X and with INTx. Each run is compared with the same run against
// native transitional functions: what the guest sees (ids, revision,
// features, queue sizes, interface) must be the same.
#include <cstdint>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "base/status_matchers.h"
#include "gtest/gtest.h"
#include "tests/vmm_guest/guest_run.h"
#include "vmm/vm.h"

namespace vmmkit::tests::vmm_guest {
namespace {

using virtio::DeviceType;
using vmm::BlkParams;
using vmm::NetParams;
using vmm::RngParams;
using vmm::Transport;

constexpr uint64_t kVersion1 = uint64_t{1} << 32;
// SEG_MAX, BLK_SIZE, FLUSH, EVENT_IDX (as vmm_guest_test.cc).
constexpr uint64_t kBlkFeatures =
    (1u << 2) | (1u << 6) | (1u << 9) | (1u << 29);
constexpr uint8_t kStatusRunningLegacy = 0x07;  // ACK|DRIVER|DRIVER_OK
constexpr uint8_t kStatusRunning = 0x0f;
constexpr absl::Duration kRunTimeout = absl::Seconds(120);

std::string Describe(const GuestRun& run) {
  return absl::StrCat("serial output:\n", run.serial);
}

// What the guest reports of a device that must not depend on the
// transport's implementation.
const char* const kGuestVisible[] = {"device", "id",        "rev",  "queues",
                                     "pin",    "interface", "msix", "features",
                                     "qsize",  "irq"};

void ExpectSameGuestView(const GuestRun& shim, const GuestRun& native,
                         const char* type) {
  const ReportLine* a = shim.Find({{"type", type}});
  const ReportLine* b = native.Find({{"type", type}});
  ASSERT_NE(a, nullptr) << Describe(shim);
  ASSERT_NE(b, nullptr) << Describe(native);
  for (const char* key : kGuestVisible) {
    EXPECT_EQ(a->Has(key), b->Has(key)) << key << "\n"
                                        << a->text << "\n"
                                        << b->text;
    if (a->Has(key)) {
      EXPECT_EQ(a->Get(key), b->Get(key)) << key << "\n"
                                          << a->text << "\n"
                                          << b->text;
    }
  }
}

struct ShimCase {
  const char* name;
  const char* mode;  // the guest driver's
  bool msix;
};

class AdminShimTest : public ::testing::TestWithParam<ShimCase> {
 protected:
  void SetUp() override {
    if (auto why = CannotRunGuests()) GTEST_SKIP() << *why;
  }
};

absl::Status BootBlkRng(GuestRun& run, const ShimCase& c, Transport t,
                        const std::string& image) {
  return run.Boot({.vcpus = 1,
                   .memory_mib = 64,
                   .cmdline = absl::StrFormat("mode=%s msix=%d devices=blk,rng",
                                              c.mode, c.msix)},
                  {{.id = "blk0",
                    .type = DeviceType::kBlock,
                    .transport = t,
                    .queue_size = 16,
                    .params = BlkParams{.path = image}},
                   {.id = "rng0",
                    .type = DeviceType::kRng,
                    .transport = t,
                    .params = RngParams{}}},
                  kRunTimeout);
}

TEST_P(AdminShimTest, BlkAndRngThroughShim) {
  const ShimCase& c = GetParam();
  const bool legacy = std::string(c.mode) == "legacy";
  const std::string image =
      MakeImage(absl::StrCat("shim_blk_", c.name, ".img"), 64 * 1024);
  GuestRun run;
  ASSERT_OK(BootBlkRng(run, c, Transport::kPciLegacyViaAdmin, image))
      << Describe(run);
  ASSERT_EQ(run.exit_code, 0) << Describe(run);
  ASSERT_NE(run.Find({{"done", ""}, {"failures", "0"}}), nullptr)
      << Describe(run);

  const struct {
    const char* id;
    const char* type;
    const char* check;
    uint16_t legacy_id;
    uint64_t features;  // without VERSION_1
  } expected[] = {{"blk0", "2", "blk", 0x1001, kBlkFeatures},
                  {"rng0", "4", "rng", 0x1005, 0}};
  uint8_t slot = 1;
  for (const auto& e : expected) {
    SCOPED_TRACE(e.id);
    const ReportLine* dev = run.Find({{"type", e.type}});
    ASSERT_NE(dev, nullptr) << Describe(run);
    // A transitional function to the guest.
    EXPECT_EQ(dev->Get("device"), absl::StrFormat("00:%02x.0", slot));
    EXPECT_EQ(dev->Get("id"), absl::StrFormat("1af4:%04x", e.legacy_id));
    EXPECT_EQ(dev->Get("rev"), "0");
    EXPECT_EQ(dev->Get("interface"), legacy ? "legacy" : "modern");
    EXPECT_EQ(dev->Get("msix"), c.msix ? "1" : "0");
    const uint64_t features = dev->Number("features");
    EXPECT_EQ(features, e.features | (legacy ? 0 : kVersion1)) << dev->text;
    if (!c.msix) EXPECT_EQ(dev->Number("irq"), 16u + slot % 8) << dev->text;
    const ReportLine* check = run.Find({{"check", e.check}});
    ASSERT_NE(check, nullptr) << Describe(run);
    EXPECT_EQ(check->Get("result"), "ok") << check->text;

    // The host's view, read through the member's state.
    const vmm::DeviceReport* rep = run.Device(e.id);
    ASSERT_NE(rep, nullptr);
    EXPECT_EQ(rep->pci_slot, slot);
    EXPECT_EQ(rep->transport, Transport::kPciLegacyViaAdmin);
    EXPECT_STREQ(vmm::TransportName(rep->transport), "pci-legacy-via-admin");
    EXPECT_EQ(rep->driver_legacy, legacy);
    EXPECT_EQ(rep->negotiated_features, features);
    EXPECT_EQ(rep->status, legacy ? kStatusRunningLegacy : kStatusRunning);
    ASSERT_FALSE(rep->queue_sizes.empty());
    EXPECT_EQ(rep->queue_sizes[0], dev->Number("qsize"));
    EXPECT_GE(rep->notifications, 1u);
    EXPECT_GE(rep->interrupts, 1u);
    ++slot;
  }
  const vmm::DeviceReport* blk = run.Device("blk0");
  ASSERT_NE(blk, nullptr);
  EXPECT_GE(blk->requests, 4u);  // write, flush, read, read past the end
  EXPECT_GE(blk->bytes, 8192u);
  EXPECT_GE(run.Device("rng0")->requests, 1u);

  // The pattern is in the image, sectors 8..15, nothing around it.
  {
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
  }

  // The same guest against native transitional functions sees the same.
  const std::string native_image =
      MakeImage(absl::StrCat("native_blk_", c.name, ".img"), 64 * 1024);
  GuestRun native;
  ASSERT_OK(BootBlkRng(native, c, Transport::kPciTransitional, native_image))
      << Describe(native);
  ASSERT_EQ(native.exit_code, 0) << Describe(native);
  ExpectSameGuestView(run, native, "2");
  ExpectSameGuestView(run, native, "4");
  for (const char* id : {"blk0", "rng0"}) {
    const vmm::DeviceReport* a = run.Device(id);
    const vmm::DeviceReport* b = native.Device(id);
    ASSERT_NE(b, nullptr) << id;
    EXPECT_EQ(a->driver_legacy, b->driver_legacy) << id;
    EXPECT_EQ(a->negotiated_features, b->negotiated_features) << id;
    EXPECT_EQ(a->status, b->status) << id;
    EXPECT_EQ(a->queue_sizes, b->queue_sizes) << id;
    EXPECT_EQ(a->requests, b->requests) << id;
    EXPECT_EQ(a->bytes, b->bytes) << id;
  }
}

absl::Status BootNet(GuestRun& run, const ShimCase& c, Transport t) {
  return run.Boot(
      {.vcpus = 1,
       .memory_mib = 64,
       .cmdline =
           absl::StrFormat("mode=%s msix=%d devices=net", c.mode, c.msix)},
      {{.id = "net0",
        .type = DeviceType::kNet,
        .transport = t,
        .queue_size = 16,
        .params = NetParams{.mac = std::array<uint8_t, 6>{0x52, 0x54, 0x00,
                                                          0xab, 0xcd, 0xef}}}},
      kRunTimeout);
}

TEST_P(AdminShimTest, NetEchoThroughShim) {
  const ShimCase& c = GetParam();
  const bool legacy = std::string(c.mode) == "legacy";
  GuestRun run;
  ASSERT_OK(BootNet(run, c, Transport::kPciLegacyViaAdmin)) << Describe(run);
  ASSERT_EQ(run.exit_code, 0) << Describe(run);
  const ReportLine* dev = run.Find({{"type", "1"}});
  ASSERT_NE(dev, nullptr) << Describe(run);
  EXPECT_EQ(dev->Get("id"), "1af4:1000");
  EXPECT_EQ(dev->Get("rev"), "0");
  EXPECT_EQ(dev->Get("interface"), legacy ? "legacy" : "modern");
  EXPECT_EQ(dev->Get("msix"), c.msix ? "1" : "0");
  const ReportLine* net = run.Find({{"check", "net"}});
  ASSERT_NE(net, nullptr) << Describe(run);
  EXPECT_EQ(net->Get("result"), "ok") << net->text;
  EXPECT_EQ(net->Get("mac"), "52:54:00:ab:cd:ef");  // device config via shim
  EXPECT_EQ(net->Get("hdr"), legacy ? "10" : "12");
  EXPECT_EQ(net->Get("attempts"), "1");
  const vmm::DeviceReport* rep = run.Device("net0");
  ASSERT_NE(rep, nullptr);
  EXPECT_EQ(rep->transport, Transport::kPciLegacyViaAdmin);
  EXPECT_EQ(rep->driver_legacy, legacy);
  EXPECT_EQ(rep->status, legacy ? kStatusRunningLegacy : kStatusRunning);
  EXPECT_EQ((rep->negotiated_features & kVersion1) == 0, legacy);
  EXPECT_GE(rep->requests, 2u);  // the frame out, the echo in
  EXPECT_GE(rep->interrupts, 1u);

  GuestRun native;
  ASSERT_OK(BootNet(native, c, Transport::kPciTransitional))
      << Describe(native);
  ASSERT_EQ(native.exit_code, 0) << Describe(native);
  ExpectSameGuestView(run, native, "1");
  const ReportLine* native_net = native.Find({{"check", "net"}});
  ASSERT_NE(native_net, nullptr) << Describe(native);
  EXPECT_EQ(net->Get("hdr"), native_net->Get("hdr"));
  EXPECT_EQ(net->Get("mac"), native_net->Get("mac"));
  const vmm::DeviceReport* nrep = native.Device("net0");
  ASSERT_NE(nrep, nullptr);
  EXPECT_EQ(rep->negotiated_features, nrep->negotiated_features);
  EXPECT_EQ(rep->status, nrep->status);
  EXPECT_EQ(rep->queue_sizes, nrep->queue_sizes);
  EXPECT_EQ(rep->requests, nrep->requests);
}

INSTANTIATE_TEST_SUITE_P(
    Modes, AdminShimTest,
    ::testing::Values(ShimCase{"legacy_driver_msix", "legacy", true},
                      ShimCase{"legacy_driver_intx", "legacy", false},
                      // The shim passes the member's modern capabilities on:
                      // a modern driver uses those, no admin command.
                      ShimCase{"modern_driver_msix", "modern", true}),
    [](const ::testing::TestParamInfo<ShimCase>& info) {
      return std::string(info.param.name);
    });

// The hostile guest against shims: every check passes, both through the
// legacy BAR (admin commands) and the member's modern capabilities, and the
// VMM is still there to report.
TEST(AdminShimHostileTest, HostileDriverThroughShims) {
  if (auto why = CannotRunGuests()) GTEST_SKIP() << *why;
  const std::string image = MakeImage("shim_hostile.img", 64 * 1024);
  GuestRun run;
  ASSERT_OK(run.Boot({.vcpus = 1, .memory_mib = 64, .cmdline = "hostile=1"},
                     {{.id = "blk0",
                       .type = DeviceType::kBlock,
                       .transport = Transport::kPciLegacyViaAdmin,
                       .queue_size = 8,
                       .params = BlkParams{.path = image}},
                      {.id = "rng0",
                       .type = DeviceType::kRng,
                       .transport = Transport::kPciLegacyViaAdmin,
                       .params = RngParams{}}},
                     kRunTimeout))
      << Describe(run);
  EXPECT_EQ(run.exit_code, 0) << Describe(run);
  size_t checks = 0;
  for (const ReportLine& l : run.lines) {
    if (l.Has("hostile") && l.Has("result")) {
      ++checks;
      EXPECT_EQ(l.Get("result"), "ok") << l.text;
    }
  }
  const char* blk_checks[] = {"queue_size_not_pow2",
                              "queue_size_above_max",
                              "desc_table_outside_ram",
                              "driver_ok_without_features_ok",
                              "unoffered_feature_refused",
                              "device_config_past_end",
                              "msix_vector_beyond_table",
                              "buffer_outside_ram",
                              "chain_loop",
                              "legacy_pfn_outside_ram",
                              "legacy_pfn_zero_resets",
                              "legacy_msix_vector_beyond_table",
                              "legacy_buffer_outside_ram",
                              "legacy_notify_absent_queue",
                              "recovery"};
  for (const char* name : blk_checks) {
    EXPECT_NE(
        run.Find({{"hostile", name}, {"device", "00:01.0"}, {"result", "ok"}}),
        nullptr)
        << "blk: " << name << "\n"
        << Describe(run);
  }
  EXPECT_GE(checks, std::size(blk_checks));
  EXPECT_NE(run.Find({{"done", ""}, {"failures", "0"}}), nullptr)
      << Describe(run);
  const vmm::DeviceReport* blk = run.Device("blk0");
  ASSERT_NE(blk, nullptr);
  EXPECT_EQ(blk->status, kStatusRunning);
  EXPECT_EQ(run.vm->state(), vmm::VmState::kStopped);
}

}  // namespace
}  // namespace vmmkit::tests::vmm_guest
