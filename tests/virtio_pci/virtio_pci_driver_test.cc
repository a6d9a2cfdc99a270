// The Linux-like driver simulator against the real virtio-pci transport on a
// root bus, in every mode (modern, transitional driven as modern or as
// legacy, legacy) with MSI-X on and off.
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "base/status.h"
#include "base/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "pci/root_bus.h"
#include "pci/virtio_pci.h"
#include "tests/virtio_pci/driver.h"
#include "tests/virtio_pci/test_platform.h"
#include "virtio-device/blk.h"
#include "virtio-device/console.h"
#include "virtio-device/rng.h"
#include "virtqueue/guest_memory.h"

namespace vmmkit::tests::virtio_pci {
namespace {

using ::vmmkit::pci::VirtioPciFunction;
using ::vmmkit::pci::VirtioPciMode;
using ::vmmkit::virtqueue::GuestMemoryMmap;
using NotifyLayout = VirtioPciFunction::NotifyLayout;

struct Case {
  const char* name;
  VirtioPciMode mode;
  DriverMode driver;
  bool msix;
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << c.name << (c.msix ? " with MSI-X" : " with INTx");
}

std::string CaseName(const ::testing::TestParamInfo<Case>& info) {
  return std::string(info.param.name) + (info.param.msix ? "Msix" : "Intx");
}

std::vector<Case> AllCases() {
  std::vector<Case> out;
  for (bool msix : {true, false}) {
    out.push_back(
        {"Modern", VirtioPciMode::kModern, DriverMode::kModern, msix});
    out.push_back({"TransitionalAsModern", VirtioPciMode::kTransitional,
                   DriverMode::kModern, msix});
    out.push_back({"TransitionalAsLegacy", VirtioPciMode::kTransitional,
                   DriverMode::kLegacy, msix});
    out.push_back(
        {"Legacy", VirtioPciMode::kLegacy, DriverMode::kLegacy, msix});
  }
  return out;
}

// One machine: guest memory, a root bus, a platform, a function.
class Machine {
 public:
  Machine() {
    auto mem = GuestMemoryMmap::Create({{.guest_base = 0, .size = 4 << 20}});
    EXPECT_OK(mem.status());
    memory_ = *std::move(mem);
    platform_ = std::make_unique<TestPlatform>(bus_, *memory_);
  }

  absl::Status Add(virtio::VirtioDevice& device,
                   const VirtioPciFunction::Options& options) {
    VMMKIT_ASSIGN_OR_RETURN(
        fn_, VirtioPciFunction::Create(device, *memory_, options));
    fn_->set_msi_sink(platform_.get());
    fn_->set_intx_sink(platform_.get());
    VMMKIT_RETURN_IF_ERROR(bus_.AddDevice(fn_.get()).status());
    return bus_.AssignBars();
  }

  pci::RootBus& bus() { return bus_; }
  TestPlatform& platform() { return *platform_; }
  VirtioPciFunction& fn() { return *fn_; }
  const virtqueue::GuestMemory& memory() { return *memory_; }

 private:
  std::unique_ptr<GuestMemoryMmap> memory_;
  pci::RootBus bus_;
  std::unique_ptr<TestPlatform> platform_;
  std::unique_ptr<VirtioPciFunction> fn_;
};

class DriverTest : public ::testing::TestWithParam<Case> {
 protected:
  DriverOptions Options() const {
    DriverOptions o;
    o.mode = GetParam().driver;
    o.use_msix = GetParam().msix;
    return o;
  }
  bool driver_legacy() const {
    return GetParam().driver == DriverMode::kLegacy;
  }

  // Checks that the interrupt the driver just handled came the right way.
  void ExpectInterruptPath(Machine& m, const VirtioPciDriver& d) {
    if (GetParam().msix) {
      EXPECT_TRUE(d.msix_enabled());
      EXPECT_EQ(d.isr_reads(), 0u);
    } else {
      EXPECT_FALSE(d.msix_enabled());
      EXPECT_GE(d.isr_reads(), 1u);
      EXPECT_TRUE(m.platform().msi_log.empty());
    }
  }
};

TEST_P(DriverTest, RngProbeAndIo) {
  virtio::RngDevice rng;  // outlives the function
  Machine m;
  ASSERT_OK(m.Add(rng, {.mode = GetParam().mode}));
  VirtioPciDriver d(m.platform());
  ASSERT_EQ(d.FindDevice(4, 0), DriverError::kOk);

  // Identity (the table in pci/virtio_pci.h).
  EXPECT_EQ(d.vendor_id(), 0x1af4);
  EXPECT_EQ(d.subsystem_vendor_id(), 0x1af4);
  EXPECT_EQ(d.virtio_type(), 4);
  if (GetParam().mode == VirtioPciMode::kModern) {
    EXPECT_EQ(d.device_id(), 0x1044);
    EXPECT_EQ(d.revision(), 1);
    EXPECT_EQ(d.subsystem_id(), 0x44);
  } else {
    EXPECT_EQ(d.device_id(), 0x1005);
    EXPECT_EQ(d.revision(), 0);
    EXPECT_EQ(d.subsystem_id(), 4);
  }

  DriverOptions o = Options();
  o.features = 1ull << virtio::kFEventIdx;
  ASSERT_EQ(d.Probe(o), DriverError::kOk) << DriverErrorName(d.Probe(o));
  EXPECT_TRUE(m.fn().state().active());
  EXPECT_EQ(m.fn().state().legacy(), driver_legacy());
  EXPECT_EQ(d.num_queues(), 1);
  EXPECT_EQ(d.queue_size(0), virtio::RngDevice::kQueueSize);
  EXPECT_TRUE(m.fn().config_space().bus_master_enabled());
  if (driver_legacy()) {
    EXPECT_TRUE(m.fn().used_legacy_interface());
    EXPECT_FALSE(m.fn().used_modern_interface());
    EXPECT_EQ(d.driver_features() >> 32, 0u);
  } else {
    EXPECT_FALSE(m.fn().used_legacy_interface());
    EXPECT_TRUE(m.fn().used_modern_interface());
    EXPECT_TRUE(d.driver_features() >> virtio::kFVersion1 & 1);
    EXPECT_EQ(d.common_cap().bar, pci::kModernBar);
    EXPECT_EQ(d.notify_multiplier(), 4u);
  }
  EXPECT_TRUE(d.driver_features() >> virtio::kFEventIdx & 1);

  // Three requests, each completed with an interrupt.
  for (int i = 0; i < 3; ++i) {
    const uint64_t buf = m.platform().AllocDma(256, 16);
    ASSERT_NE(buf, 0u);
    const VirtioPciDriver::Buffer b = {buf, 256, true};
    uint16_t head;
    ASSERT_EQ(d.Post(0, &b, 1, &head), DriverError::kOk);
    d.Kick(0);
    uint32_t id = 0, len = 0;
    ASSERT_EQ(d.WaitUsed(0, &id, &len), DriverError::kOk);
    EXPECT_EQ(id, head);
    EXPECT_EQ(len, 256u);
    EXPECT_EQ(d.queue_interrupts(0), static_cast<uint32_t>(i + 1));
    std::vector<uint8_t> data(256);
    ASSERT_OK(m.memory().Read(buf, absl::MakeSpan(data)));
    int nonzero = 0;
    for (uint8_t x : data) nonzero += x != 0;
    EXPECT_GT(nonzero, 200);
  }
  EXPECT_EQ(rng.stats().requests, 3u);
  ExpectInterruptPath(m, d);
  if (GetParam().msix) {
    // Queue 0 uses vector 1: data = base + 1, at the programmed address.
    ASSERT_EQ(m.platform().msi_log.size(), 3u);
    EXPECT_EQ(m.platform().msi_log[0].first, 0xfee00000u);
    EXPECT_EQ(m.platform().msi_log[0].second, 0x41u);
  } else {
    EXPECT_EQ(m.platform().intx_edges, 3);
    EXPECT_FALSE(m.platform().intx);  // the ISR read lowered it
    EXPECT_EQ(m.fn().isr(), 0);
  }
  EXPECT_EQ(d.spurious_interrupts(), 0u);

  // A reset stops the device; a second probe works again.
  ASSERT_EQ(d.Reset(), DriverError::kOk);
  EXPECT_FALSE(m.fn().state().active());
  ASSERT_EQ(d.Probe(o), DriverError::kOk);
  const uint64_t buf = m.platform().AllocDma(32, 16);
  const VirtioPciDriver::Buffer b = {buf, 32, true};
  ASSERT_EQ(d.Post(0, &b, 1, nullptr), DriverError::kOk);
  d.Kick(0);
  uint32_t len = 0;
  ASSERT_EQ(d.WaitUsed(0, nullptr, &len), DriverError::kOk);
  EXPECT_EQ(len, 32u);
}

TEST_P(DriverTest, ChainsAndManyRequestsBeforeOneKick) {
  virtio::RngDevice rng;  // outlives the function
  Machine m;
  ASSERT_OK(m.Add(rng, {.mode = GetParam().mode}));
  VirtioPciDriver d(m.platform());
  ASSERT_EQ(d.FindDevice(4, 0), DriverError::kOk);
  ASSERT_EQ(d.Probe(Options()), DriverError::kOk);
  // Eight two-buffer chains, one kick, eight used entries: the driver drains
  // what one interrupt announced. Then the ring wraps a few times.
  for (int round = 0; round < 70; ++round) {
    uint16_t heads[8];
    for (int i = 0; i < 8; ++i) {
      const uint64_t buf = m.platform().AllocDma(64, 8);
      ASSERT_NE(buf, 0u);
      const VirtioPciDriver::Buffer b[2] = {{buf, 16, true},
                                            {buf + 16, 48, true}};
      ASSERT_EQ(d.Post(0, b, 2, &heads[i]), DriverError::kOk);
    }
    d.Kick(0);
    for (int i = 0; i < 8; ++i) {
      uint32_t id, len;
      ASSERT_EQ(d.WaitUsed(0, &id, &len), DriverError::kOk);
      EXPECT_EQ(id, heads[i]);
      EXPECT_EQ(len, 64u);
    }
    uint32_t id;
    EXPECT_EQ(d.WaitUsed(0, &id, nullptr), DriverError::kTimeout);
  }
  EXPECT_EQ(rng.stats().requests, 560u);
}

TEST_P(DriverTest, DeviceConfigAndConfigInterrupt) {
  FakeConfigDevice dev;  // outlives the function
  Machine m;
  ASSERT_OK(m.Add(dev, {.mode = GetParam().mode}));
  VirtioPciDriver d(m.platform());
  ASSERT_EQ(d.FindDevice(3, 0), DriverError::kOk);
  ASSERT_EQ(d.Probe(Options()), DriverError::kOk);
  EXPECT_EQ(d.num_queues(), 2);
  EXPECT_EQ(d.ReadConfig(0, 2), 80u);
  EXPECT_EQ(d.ReadConfig(2, 2), 25u);
  EXPECT_EQ(d.ReadConfig(4, 4), 0x01020304u);
  EXPECT_EQ(d.ReadConfig(0, 4), 80u | 25u << 16);
  EXPECT_EQ(d.ReadConfig(0, 8), 80u | 25u << 16 | uint64_t{0x01020304} << 32);
  d.WriteConfig(8, 0x41424344, 4);
  EXPECT_EQ(dev.emerg_wr(), 0x41424344u);
  d.WriteConfig(0, 0xffff, 2);  // read-only field
  EXPECT_EQ(d.ReadConfig(0, 2), 80u);

  // The device changes its config: a config interrupt (vector 0, or ISR
  // bit 1), and the new values.
  dev.Resize(132, 43);
  EXPECT_EQ(d.ServiceInterrupts(), 1);
  EXPECT_EQ(d.config_interrupts(), 1u);
  EXPECT_EQ(d.queue_interrupts(0), 0u);
  EXPECT_EQ(d.ReadConfig(0, 2), 132u);
  EXPECT_EQ(d.ReadConfig(2, 2), 43u);
  if (GetParam().msix) {
    ASSERT_EQ(m.platform().msi_log.size(), 1u);
    EXPECT_EQ(m.platform().msi_log[0].second, 0x40u);
  }
  ExpectInterruptPath(m, d);

  // I/O on the second queue (vector 2 with MSI-X).
  const uint64_t buf = m.platform().AllocDma(8, 8);
  const VirtioPciDriver::Buffer b = {buf, 8, true};
  ASSERT_EQ(d.Post(1, &b, 1, nullptr), DriverError::kOk);
  d.Kick(1);
  uint32_t len;
  ASSERT_EQ(d.WaitUsed(1, nullptr, &len), DriverError::kOk);
  EXPECT_EQ(len, 8u);
  uint8_t got[8];
  ASSERT_OK(m.memory().Read(buf, absl::MakeSpan(got)));
  EXPECT_EQ(got[7], 0xa5);
  if (GetParam().msix) EXPECT_EQ(m.platform().msi_log.back().second, 0x42u);
}

// virtio-blk over a raw image: capacity from the config, a write, a read
// back, and the image file holds the data.
TEST_P(DriverTest, BlkReadWrite) {
  const std::string path = ::testing::TempDir() + "/vpci_blk_" +
                           std::string(GetParam().name) +
                           (GetParam().msix ? "_msix" : "_intx") + ".img";
  {
    std::vector<uint8_t> image(64 * 512);
    for (size_t i = 0; i < image.size(); ++i) image[i] = uint8_t(i / 512);
    std::FILE* f = std::fopen(path.c_str(), "wb");
    ASSERT_NE(f, nullptr);
    ASSERT_EQ(std::fwrite(image.data(), 1, image.size(), f), image.size());
    std::fclose(f);
  }
  auto blk = virtio::BlockDevice::Create({.path = path});
  ASSERT_OK(blk.status());
  Machine m;
  ASSERT_OK(m.Add(**blk, {.mode = GetParam().mode}));
  VirtioPciDriver d(m.platform());
  ASSERT_EQ(d.FindDevice(2, 0), DriverError::kOk);
  EXPECT_EQ(d.device_id(),
            GetParam().mode == VirtioPciMode::kModern ? 0x1042 : 0x1001);
  ASSERT_EQ(d.Probe(Options()), DriverError::kOk);
  EXPECT_EQ(d.ReadConfig(0, 8), 64u);  // capacity in sectors

  // {le32 type, le32 reserved, le64 sector}, data, status byte.
  const uint64_t hdr = m.platform().AllocDma(16, 16);
  const uint64_t data = m.platform().AllocDma(1024, 512);
  const uint64_t status = m.platform().AllocDma(1, 1);
  auto request = [&](uint32_t type, uint64_t sector, bool data_writable) {
    uint8_t h[16] = {};
    h[0] = static_cast<uint8_t>(type);
    for (int i = 0; i < 8; ++i)
      h[8 + i] = static_cast<uint8_t>(sector >> (8 * i));
    m.platform().MemWrite(hdr, h, 16);
    const uint8_t junk = 0xee;
    m.platform().MemWrite(status, &junk, 1);
    const VirtioPciDriver::Buffer b[3] = {
        {hdr, 16, false}, {data, 1024, data_writable}, {status, 1, true}};
    uint16_t head;
    EXPECT_EQ(d.Post(0, b, 3, &head), DriverError::kOk);
    d.Kick(0);
    uint32_t id = 0, len = 0;
    EXPECT_EQ(d.WaitUsed(0, &id, &len), DriverError::kOk);
    EXPECT_EQ(id, head);
    uint8_t st = 0xff;
    m.platform().MemRead(status, &st, 1);
    return std::make_pair(st, len);
  };
  // Write sectors 10..11 with 0x5a, read 9..10 back.
  std::vector<uint8_t> out(1024, 0x5a);
  m.platform().MemWrite(data, out.data(), out.size());
  auto [wst, wlen] = request(/*VIRTIO_BLK_T_OUT=*/1, 10, false);
  EXPECT_EQ(wst, 0);  // VIRTIO_BLK_S_OK
  EXPECT_EQ(wlen, 1u);
  auto [rst, rlen] = request(/*VIRTIO_BLK_T_IN=*/0, 9, true);
  EXPECT_EQ(rst, 0);
  EXPECT_EQ(rlen, 1025u);
  std::vector<uint8_t> in(1024);
  m.platform().MemRead(data, in.data(), in.size());
  EXPECT_EQ(in[0], 9);
  EXPECT_EQ(in[511], 9);
  EXPECT_EQ(in[512], 0x5a);
  EXPECT_EQ(in[1023], 0x5a);
  // Past the end: an I/O error for this request, the device goes on.
  auto [est, elen] = request(/*VIRTIO_BLK_T_IN=*/0, 63, true);
  EXPECT_EQ(est, 1);  // VIRTIO_BLK_S_IOERR
  EXPECT_EQ(m.fn().state().status() & virtio::kStatusNeedsReset, 0);
  ExpectInterruptPath(m, d);
  ASSERT_EQ(d.Reset(), DriverError::kOk);
  std::remove(path.c_str());
}

// virtio-console over two pipes: output through the transmit queue, input
// through the receive queue, and a resize as a config interrupt.
TEST_P(DriverTest, ConsoleInputOutputAndResize) {
  int in_pipe[2], out_pipe[2];
  ASSERT_EQ(pipe(in_pipe), 0);
  ASSERT_EQ(pipe(out_pipe), 0);
  auto console = virtio::ConsoleDevice::Create(
      {.input_fd = in_pipe[0], .output_fd = out_pipe[1]});
  ASSERT_OK(console.status());
  {
    Machine m;
    ASSERT_OK(m.Add(**console, {.mode = GetParam().mode}));
    VirtioPciDriver d(m.platform());
    ASSERT_EQ(d.FindDevice(3, 0), DriverError::kOk);
    DriverOptions o = Options();
    o.features = 1ull << virtio::kConsoleFSize;
    ASSERT_EQ(d.Probe(o), DriverError::kOk);
    EXPECT_EQ(d.ReadConfig(0, 2), 80u);
    EXPECT_EQ(d.ReadConfig(2, 2), 24u);

    // Output.
    const uint64_t tx = m.platform().AllocDma(5, 1);
    m.platform().MemWrite(tx, "hello", 5);
    const VirtioPciDriver::Buffer t = {tx, 5, false};
    ASSERT_EQ(d.Post(1, &t, 1, nullptr), DriverError::kOk);
    d.Kick(1);
    uint32_t len;
    ASSERT_EQ(d.WaitUsed(1, nullptr, &len), DriverError::kOk);
    char got[8] = {};
    ASSERT_EQ(read(out_pipe[0], got, sizeof(got)), 5);
    EXPECT_STREQ(got, "hello");

    // Input: a receive buffer, then bytes in the pipe, then the VMM's poll.
    const uint64_t rx = m.platform().AllocDma(16, 1);
    const VirtioPciDriver::Buffer r = {rx, 16, true};
    ASSERT_EQ(d.Post(0, &r, 1, nullptr), DriverError::kOk);
    d.Kick(0);
    ASSERT_EQ(write(in_pipe[1], "ls\n", 3), 3);
    (*console)->ProcessBackend();
    ASSERT_EQ(d.WaitUsed(0, nullptr, &len), DriverError::kOk);
    EXPECT_EQ(len, 3u);
    char in[4] = {};
    m.platform().MemRead(rx, in, 3);
    EXPECT_STREQ(in, "ls\n");

    // Resize: a config interrupt and the new size.
    (*console)->SetSize(132, 43);
    d.ServiceInterrupts();
    EXPECT_EQ(d.config_interrupts(), 1u);
    EXPECT_EQ(d.ReadConfig(0, 2), 132u);
    EXPECT_EQ(d.ReadConfig(2, 2), 43u);
    ExpectInterruptPath(m, d);
  }
  console->reset();
  for (int fd : {in_pipe[0], in_pipe[1], out_pipe[0], out_pipe[1]}) close(fd);
}

INSTANTIATE_TEST_SUITE_P(Modes, DriverTest, ::testing::ValuesIn(AllCases()),
                         CaseName);

// ---- Legacy specifics.

TEST(LegacyDriverTest, DeviceConfigMovesWhenMsixToggles) {
  for (VirtioPciMode mode :
       {VirtioPciMode::kLegacy, VirtioPciMode::kTransitional}) {
    FakeConfigDevice dev;  // outlives the function
    Machine m;
    ASSERT_OK(m.Add(dev, {.mode = mode}));
    VirtioPciDriver d(m.platform());
    ASSERT_EQ(d.FindDevice(3, 0), DriverError::kOk);
    DriverOptions o;
    o.mode = DriverMode::kLegacy;
    o.use_msix = false;
    ASSERT_EQ(d.Probe(o), DriverError::kOk);
    // Without MSI-X the config starts at 20 (cols = 80 there).
    EXPECT_EQ(d.legacy_config_offset(), 20u);
    EXPECT_EQ(d.LegacyRead(20, 2), 80u);
    EXPECT_EQ(d.LegacyRead(22, 2), 25u);
    EXPECT_EQ(d.LegacyRead(24, 4), 0x01020304u);
    // With MSI-X on, 20 and 22 are the vectors and the config is at 24.
    ASSERT_EQ(d.EnableMsix(), DriverError::kOk);
    EXPECT_EQ(d.legacy_config_offset(), 24u);
    EXPECT_EQ(d.LegacyRead(20, 2), VirtioPciDriver::kNoVector);
    EXPECT_EQ(d.LegacyRead(24, 2), 80u);
    EXPECT_EQ(d.LegacyRead(26, 2), 25u);
    EXPECT_EQ(d.ReadConfig(0, 2), 80u);
    d.LegacyWrite(20, 0, 2);
    EXPECT_EQ(d.LegacyRead(20, 2), 0u);
    EXPECT_EQ(d.LegacyRead(24, 2), 80u);  // the vector write did not touch it
    // And back.
    d.DisableMsix();
    EXPECT_EQ(d.LegacyRead(20, 2), 80u);
    EXPECT_EQ(d.ReadConfig(0, 2), 80u);
  }
}

TEST(LegacyDriverTest, ModernOnlyDeviceIsNotForLegacyDriver) {
  virtio::RngDevice rng;  // outlives the function
  Machine m;
  ASSERT_OK(m.Add(rng, {.mode = VirtioPciMode::kModern}));
  VirtioPciDriver d(m.platform());
  ASSERT_EQ(d.FindDevice(4, 0), DriverError::kOk);
  DriverOptions o;
  o.mode = DriverMode::kLegacy;
  EXPECT_EQ(d.Probe(o), DriverError::kUnsupported);
}

TEST(LegacyDriverTest, LegacyOnlyDeviceHasNoModernCapabilities) {
  virtio::RngDevice rng;  // outlives the function
  Machine m;
  ASSERT_OK(m.Add(rng, {.mode = VirtioPciMode::kLegacy}));
  VirtioPciDriver d(m.platform());
  ASSERT_EQ(d.FindDevice(4, 0), DriverError::kOk);
  EXPECT_EQ(d.Probe({.mode = DriverMode::kModern}), DriverError::kNoCapability);
  EXPECT_EQ(d.common_cap().offset, 0);
  EXPECT_NE(d.msix_cap(), 0);
  EXPECT_TRUE(d.bar(0).io);
  EXPECT_EQ(d.bar(4).size, 0u);
}

TEST(LegacyDriverTest, BadFeatureIsOfferedAndNeverTaken) {
  virtio::RngDevice rng;  // outlives the function
  Machine m;
  ASSERT_OK(m.Add(rng, {.mode = VirtioPciMode::kTransitional}));
  VirtioPciDriver d(m.platform());
  ASSERT_EQ(d.FindDevice(4, 0), DriverError::kOk);
  DriverOptions o;
  o.mode = DriverMode::kLegacy;
  o.features = ~0ull;
  ASSERT_EQ(d.Probe(o), DriverError::kOk);
  EXPECT_TRUE(d.device_features() >> 30 & 1);
  EXPECT_FALSE(d.driver_features() >> 30 & 1);
  EXPECT_EQ(m.fn().state().DriverFeatures(0),
            static_cast<uint32_t>(d.driver_features()));
}

// ---- Modern specifics: notify layouts and notification data.

struct LayoutCase {
  const char* name;
  NotifyLayout layout;
  uint32_t multiplier;
  bool notification_data;
};

void PrintTo(const LayoutCase& c, std::ostream* os) { *os << c.name; }

class NotifyLayoutTest : public ::testing::TestWithParam<LayoutCase> {};

TEST_P(NotifyLayoutTest, KicksReachTheirQueue) {
  for (VirtioPciMode mode :
       {VirtioPciMode::kModern, VirtioPciMode::kTransitional}) {
    FakeConfigDevice dev;  // outlives the function
    Machine m;
    ASSERT_OK(m.Add(dev, {.mode = mode,
                          .notify_layout = GetParam().layout,
                          .notification_data = GetParam().notification_data}));
    VirtioPciDriver d(m.platform());
    ASSERT_EQ(d.FindDevice(3, 0), DriverError::kOk);
    DriverOptions o;
    o.features = 1ull << virtio::kFNotificationData;
    ASSERT_EQ(d.Probe(o), DriverError::kOk);
    EXPECT_EQ(d.notify_multiplier(), GetParam().multiplier);
    EXPECT_EQ(d.driver_features() >> virtio::kFNotificationData & 1,
              GetParam().notification_data ? 1u : 0u);
    const uint64_t base =
        d.bar(pci::kModernBar).address + pci::kModernNotifyOffset;
    EXPECT_EQ(d.notify_address(0), base);
    EXPECT_EQ(d.notify_address(1), base + GetParam().multiplier);
    // The transport's doorbell list agrees with what the driver computed.
    for (const pci::Doorbell& bell : m.fn().doorbells()) {
      if (bell.bar != pci::kModernBar) continue;
      EXPECT_EQ(d.bar(pci::kModernBar).address + bell.offset,
                d.notify_address(bell.queue));
    }
    for (uint16_t q : {1, 0, 1}) {
      const uint64_t buf = m.platform().AllocDma(16, 8);
      const VirtioPciDriver::Buffer b = {buf, 16, true};
      ASSERT_EQ(d.Post(q, &b, 1, nullptr), DriverError::kOk);
      const int before = dev.requests;
      d.Kick(q);
      EXPECT_EQ(dev.requests, before + 1);
      uint32_t len;
      ASSERT_EQ(d.WaitUsed(q, nullptr, &len), DriverError::kOk);
      EXPECT_EQ(len, 16u);
    }
    EXPECT_EQ(m.fn().state().stats().spurious_notifications, 0u);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Layouts, NotifyLayoutTest,
    ::testing::Values(
        LayoutCase{"Multiplier4", NotifyLayout::kMultiplier4, 4, false},
        LayoutCase{"Shared", NotifyLayout::kShared, 0, false},
        LayoutCase{"PagePerQueue", NotifyLayout::kPagePerQueue, 4096, false},
        LayoutCase{"Multiplier4Data", NotifyLayout::kMultiplier4, 4, true},
        LayoutCase{"SharedData", NotifyLayout::kShared, 0, true},
        LayoutCase{"PagePerQueueData", NotifyLayout::kPagePerQueue, 4096,
                   true}),
    [](const ::testing::TestParamInfo<LayoutCase>& i) {
      return std::string(i.param.name);
    });

// ---- PCI-level behaviour of the probe.

TEST(ProbeTest, DriverAssignedBarsAndPciCfgWindow) {
  FakeConfigDevice dev;  // outlives the function
  Machine m;
  ASSERT_OK(m.Add(dev, {.mode = VirtioPciMode::kTransitional}));
  VirtioPciDriver d(m.platform());
  ASSERT_EQ(d.FindDevice(3, 0), DriverError::kOk);
  DriverOptions o;
  o.assign_bars = true;
  o.io_base = 0xd000;
  o.mmio_base = 0xd0000000;
  ASSERT_EQ(d.Probe(o), DriverError::kOk);
  EXPECT_EQ(d.bar(0).address, 0xd000u);
  EXPECT_TRUE(d.bar(0).io);
  EXPECT_EQ(d.bar(0).size, 64u);  // 24 + 12 rounded up to a power of two
  EXPECT_FALSE(d.bar(1).io);
  EXPECT_TRUE(d.bar(4).is64);
  EXPECT_EQ(d.bar(4).address % d.bar(4).size, 0u);
  EXPECT_GE(d.bar(4).address, 0xd0000000u);
  EXPECT_EQ(m.fn().config_space().BarAddress(4), d.bar(4).address);
  EXPECT_EQ(d.ReadConfig(0, 2), 80u);

  // The PCI configuration access window reaches every region.
  ASSERT_NE(d.pci_cfg_cap().offset, 0);
  EXPECT_EQ(d.PciCfgRead(4, pci::kModernDeviceOffset, 2), 80u);
  EXPECT_EQ(d.PciCfgRead(4, pci::kCommonNumQueues, 2), 2u);
  EXPECT_EQ(d.PciCfgRead(4, pci::kCommonStatus, 1), d.ReadStatus());
  EXPECT_EQ(d.PciCfgRead(0, pci::kLegacyConfigMsix, 2), 80u);
  d.PciCfgWrite(4, pci::kModernDeviceOffset + 8, 4, 0x11223344);
  EXPECT_EQ(dev.emerg_wr(), 0x11223344u);
  // Strict: a misaligned or odd-length window reads all-ones.
  EXPECT_EQ(d.PciCfgRead(4, pci::kModernDeviceOffset + 1, 2), 0xffffu);
  EXPECT_EQ(d.PciCfgRead(4, pci::kModernDeviceOffset, 3), 0xffffffu);
  EXPECT_EQ(d.PciCfgRead(2, 0, 4), 0xffffffffu);  // no BAR 2
}

TEST(ProbeTest, FeaturesRefusedWhenVersion1Missing) {
  FakeConfigDevice dev;  // outlives the function
  Machine m;
  dev.offered = virtio::Features::Of({virtio::kFEventIdx});
  ASSERT_OK(m.Add(dev, {.mode = VirtioPciMode::kTransitional}));
  VirtioPciDriver d(m.platform());
  ASSERT_EQ(d.FindDevice(3, 0), DriverError::kOk);
  EXPECT_EQ(d.Probe({}), DriverError::kNoVersion1);
  // The legacy driver still works with it.
  DriverOptions o;
  o.mode = DriverMode::kLegacy;
  EXPECT_EQ(d.Probe(o), DriverError::kOk);
}

TEST(ProbeTest, LoweredQueueSize) {
  virtio::RngDevice rng;  // outlives the function
  Machine m;
  ASSERT_OK(m.Add(rng, {.mode = VirtioPciMode::kModern}));
  VirtioPciDriver d(m.platform());
  ASSERT_EQ(d.FindDevice(4, 0), DriverError::kOk);
  DriverOptions o;
  o.max_queue_size = 16;
  ASSERT_EQ(d.Probe(o), DriverError::kOk);
  EXPECT_EQ(d.queue_size(0), 16);
  EXPECT_EQ(m.fn().state().queue_config(0).size(), 16);
  for (int i = 0; i < 40; ++i) {  // wraps the 16-entry ring
    const uint64_t buf = m.platform().AllocDma(8, 8);
    const VirtioPciDriver::Buffer b = {buf, 8, true};
    ASSERT_EQ(d.Post(0, &b, 1, nullptr), DriverError::kOk);
    d.Kick(0);
    uint32_t len;
    ASSERT_EQ(d.WaitUsed(0, nullptr, &len), DriverError::kOk);
  }
}

TEST(ProbeTest, QueueAddressesFrozenOnceEnabled) {
  virtio::RngDevice rng;  // outlives the function
  Machine m;
  ASSERT_OK(m.Add(rng, {.mode = VirtioPciMode::kModern}));
  VirtioPciDriver d(m.platform());
  ASSERT_EQ(d.FindDevice(4, 0), DriverError::kOk);
  DriverOptions o;
  o.skip_driver_ok = true;
  ASSERT_EQ(d.Probe(o), DriverError::kOk);
  // Try to move the used ring past the end of guest memory.
  d.ModernWrite(d.common_cap(), pci::kCommonQueueSelect, 0, 2);
  // Queue already enabled: the address is frozen, so DRIVER_OK succeeds.
  d.ModernWrite(d.common_cap(), pci::kCommonQueueDevice + 4, 0x10, 4);
  d.WriteStatus(d.ReadStatus() | virtio::kStatusDriverOk);
  EXPECT_EQ(d.ReadStatus() & virtio::kStatusNeedsReset, 0);
  EXPECT_TRUE(m.fn().state().active());
}

TEST(ProbeTest, TwoDevicesOnOneBus) {
  virtio::RngDevice rng;  // outlives the function
  Machine m;
  ASSERT_OK(m.Add(rng, {.mode = VirtioPciMode::kTransitional}));
  FakeConfigDevice dev;
  auto fn2 = VirtioPciFunction::Create(dev, m.memory(),
                                       {.mode = VirtioPciMode::kModern});
  ASSERT_OK(fn2.status());
  (*fn2)->set_msi_sink(&m.platform());
  ASSERT_OK(m.bus().AddDevice(fn2->get()).status());
  ASSERT_OK(m.bus().AssignBars());
  VirtioPciDriver d1(m.platform()), d2(m.platform());
  ASSERT_EQ(d1.FindDevice(0, 0), DriverError::kOk);
  ASSERT_EQ(d2.FindDevice(0, 1), DriverError::kOk);
  EXPECT_EQ(d1.virtio_type(), 4);
  EXPECT_EQ(d2.virtio_type(), 3);
  EXPECT_EQ(d2.device_id(), 0x1043);
  EXPECT_EQ(d2.subsystem_id(), 0x43);
  EXPECT_EQ(d1.FindDevice(0, 2), DriverError::kNoDevice);
  ASSERT_EQ(d1.FindDevice(0, 0), DriverError::kOk);
  ASSERT_EQ(d1.Probe({.mode = DriverMode::kLegacy, .use_msix = false}),
            DriverError::kOk);
  DriverOptions o2;
  o2.msi_data_base = 0x80;
  ASSERT_EQ(d2.Probe(o2), DriverError::kOk);
  EXPECT_EQ(d2.ReadConfig(2, 2), 25u);
}

}  // namespace
}  // namespace vmmkit::tests::virtio_pci
