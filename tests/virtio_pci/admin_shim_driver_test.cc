// The Linux-like driver simulator, unchanged, against a legacy shim
// (pci/legacy_shim.h) in front of a modern-only member whose legacy
// interface an owner device gives through administration commands
// (pci/virtio_admin.h, driven by pci/admin_driver.h) — and, with the same
// test bodies, against a native transitional function: virtio-blk and
// virtio-net I/O, MSI-X on and off, legacy driver and modern driver.
#include <sys/uio.h>

#include <cstdio>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "base/status.h"
#include "base/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "pci/admin_driver.h"
#include "pci/legacy_shim.h"
#include "pci/root_bus.h"
#include "pci/virtio_admin.h"
#include "pci/virtio_pci.h"
#include "tests/virtio_pci/driver.h"
#include "tests/virtio_pci/test_platform.h"
#include "virtio-device/blk.h"
#include "virtio-device/net.h"
#include "virtio-device/rng.h"
#include "virtqueue/guest_memory.h"

namespace vmmkit::tests::virtio_pci {
namespace {

using ::vmmkit::pci::VirtioPciFunction;
using ::vmmkit::pci::VirtioPciMode;
using ::vmmkit::virtqueue::GuestMemoryMmap;

struct Case {
  bool shim;  // else a native transitional function
  DriverMode driver;
  bool msix;
};

std::string CaseName(const ::testing::TestParamInfo<Case>& info) {
  return std::string(info.param.shim ? "Shim" : "Native") +
         (info.param.driver == DriverMode::kLegacy ? "Legacy" : "Modern") +
         (info.param.msix ? "Msix" : "Intx");
}

void PrintTo(const Case& c, std::ostream* os) { *os << CaseName({c, 0}); }

std::vector<Case> AllCases() {
  std::vector<Case> out;
  for (bool shim : {true, false}) {
    for (DriverMode d : {DriverMode::kLegacy, DriverMode::kModern}) {
      for (bool msix : {true, false}) out.push_back({shim, d, msix});
    }
  }
  return out;
}

// Guest memory, a root bus, a platform; the device either behind a native
// transitional function, or as member 1 of an owner behind a shim.
class Rig {
 public:
  Rig() {
    auto mem = GuestMemoryMmap::Create({{.guest_base = 0, .size = 4 << 20}});
    EXPECT_OK(mem.status());
    memory_ = *std::move(mem);
    auto vmm = GuestMemoryMmap::Create({{.guest_base = 0, .size = 64 << 10}});
    EXPECT_OK(vmm.status());
    vmm_memory_ = *std::move(vmm);
    platform_ = std::make_unique<TestPlatform>(bus_, *memory_);
  }

  absl::Status Add(virtio::VirtioDevice& device, bool shim) {
    if (!shim) {
      VMMKIT_ASSIGN_OR_RETURN(
          fn_, VirtioPciFunction::Create(
                   device, *memory_, {.mode = VirtioPciMode::kTransitional}));
      fn_->set_msi_sink(platform_.get());
      fn_->set_intx_sink(platform_.get());
      VMMKIT_RETURN_IF_ERROR(bus_.AddDevice(fn_.get()).status());
      return bus_.AssignBars();
    }
    VMMKIT_ASSIGN_OR_RETURN(fn_, VirtioPciFunction::Create(
                                     device, *memory_, {.admin_legacy = true}));
    fn_->set_msi_sink(platform_.get());
    fn_->set_intx_sink(platform_.get());
    VMMKIT_ASSIGN_OR_RETURN(owner_dev_,
                            pci::VirtioAdminOwner::Create(owner_inner_, {}));
    VMMKIT_RETURN_IF_ERROR(owner_dev_->AddMember(fn_.get()));
    VMMKIT_ASSIGN_OR_RETURN(owner_,
                            VirtioPciFunction::Create(*owner_dev_, *vmm_memory_,
                                                      {.admin_queues = 1}));
    VMMKIT_RETURN_IF_ERROR(owner_dev_->InstallSriovCapability(
        *owner_, fn_->config_space().Get16(pci::kRegDeviceId)));
    VMMKIT_RETURN_IF_ERROR(owner_dev_->InstallNotifyArea(*owner_, 2));
    VMMKIT_ASSIGN_OR_RETURN(
        admin_, pci::AdminQueueDriver::Create(*owner_, *vmm_memory_, {}));
    VMMKIT_ASSIGN_OR_RETURN(
        shim_, pci::LegacyShimFunction::Create(
                   *fn_, *admin_,
                   {.member_id = 1,
                    .type = device.type(),
                    .device_config_size = fn_->state().config_size()}));
    VMMKIT_RETURN_IF_ERROR(bus_.AddDevice(shim_.get()).status());
    return bus_.AssignBars();
  }

  TestPlatform& platform() { return *platform_; }
  // The function holding the device's state (the member behind a shim).
  VirtioPciFunction& fn() { return *fn_; }
  pci::LegacyShimFunction* shim() { return shim_.get(); }
  pci::VirtioAdminOwner* owner() { return owner_dev_.get(); }
  const virtqueue::GuestMemory& memory() { return *memory_; }

 private:
  std::unique_ptr<GuestMemoryMmap> memory_, vmm_memory_;
  pci::RootBus bus_;
  std::unique_ptr<TestPlatform> platform_;
  virtio::RngDevice owner_inner_;
  std::unique_ptr<VirtioPciFunction> fn_;
  std::unique_ptr<pci::VirtioAdminOwner> owner_dev_;
  std::unique_ptr<VirtioPciFunction> owner_;
  std::unique_ptr<pci::AdminQueueDriver> admin_;
  std::unique_ptr<pci::LegacyShimFunction> shim_;
};

class ShimDriverTest : public ::testing::TestWithParam<Case> {
 protected:
  DriverOptions Options() const {
    DriverOptions o;
    o.mode = GetParam().driver;
    o.use_msix = GetParam().msix;
    return o;
  }
  bool legacy() const { return GetParam().driver == DriverMode::kLegacy; }

  // What the guest sees is a transitional device either way.
  void ExpectIdentity(const VirtioPciDriver& d, uint16_t type,
                      uint16_t device_id) {
    EXPECT_EQ(d.vendor_id(), 0x1af4);
    EXPECT_EQ(d.device_id(), device_id);
    EXPECT_EQ(d.revision(), 0);
    EXPECT_EQ(d.subsystem_vendor_id(), 0x1af4);
    EXPECT_EQ(d.subsystem_id(), type);
    EXPECT_EQ(d.virtio_type(), type);
  }
  // After I/O: the interrupt path, the interface used and the shim's work.
  void ExpectPaths(Rig& r, const VirtioPciDriver& d) {
    EXPECT_EQ(d.msix_enabled(), GetParam().msix);
    if (GetParam().msix) {
      EXPECT_EQ(d.isr_reads(), 0u);
      EXPECT_FALSE(r.platform().msi_log.empty());
    } else {
      EXPECT_GE(d.isr_reads(), 1u);
      EXPECT_TRUE(r.platform().msi_log.empty());
      EXPECT_FALSE(r.platform().intx);  // the ISR read lowered it
    }
    EXPECT_EQ(d.spurious_interrupts(), 0u);
    EXPECT_EQ(r.fn().state().legacy(), legacy());
    EXPECT_EQ(r.fn().used_legacy_interface(), legacy());
    if (r.shim() != nullptr) {
      EXPECT_EQ(r.shim()->stats().failed_commands, 0u);
      if (legacy()) {
        EXPECT_GT(r.shim()->stats().commands, 20u);
        // Kicks went through the owner's notify area (NOTIFY_INFO).
        EXPECT_EQ(r.shim()->notify_flags(), pci::kNotifyInfoOwner);
        EXPECT_GT(r.shim()->stats().notifications, 0u);
        EXPECT_EQ(r.owner()->stats().notifications,
                  r.shim()->stats().notifications);
      } else {
        EXPECT_EQ(r.shim()->stats().commands, 0u);  // NOTIFY_INFO is not one
      }
    }
  }
};

TEST_P(ShimDriverTest, BlkReadWrite) {
  const std::string path =
      ::testing::TempDir() + "/shim_blk_" + CaseName({GetParam(), 0}) + ".img";
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
  Rig r;
  ASSERT_OK(r.Add(**blk, GetParam().shim));
  VirtioPciDriver d(r.platform());
  ASSERT_EQ(d.FindDevice(2, 0), DriverError::kOk);
  ExpectIdentity(d, 2, 0x1001);
  const DriverError probe = d.Probe(Options());
  ASSERT_EQ(probe, DriverError::kOk) << DriverErrorName(probe);
  EXPECT_TRUE(r.fn().state().active());
  // The legacy BAR: 24 bytes plus the config, rounded up, in both.
  uint64_t bar0 = 32;
  while (bar0 < 24 + r.fn().state().config_size()) bar0 *= 2;
  EXPECT_EQ(d.bar(0).size, bar0);
  EXPECT_TRUE(d.bar(0).io);
  EXPECT_EQ(d.ReadConfig(0, 8), 64u);  // capacity in sectors

  const uint64_t hdr = r.platform().AllocDma(16, 16);
  const uint64_t data = r.platform().AllocDma(1024, 512);
  const uint64_t status = r.platform().AllocDma(1, 1);
  auto request = [&](uint32_t type, uint64_t sector, bool data_writable) {
    uint8_t h[16] = {};
    h[0] = static_cast<uint8_t>(type);
    for (int i = 0; i < 8; ++i)
      h[8 + i] = static_cast<uint8_t>(sector >> (8 * i));
    r.platform().MemWrite(hdr, h, 16);
    const uint8_t junk = 0xee;
    r.platform().MemWrite(status, &junk, 1);
    const VirtioPciDriver::Buffer b[3] = {
        {hdr, 16, false}, {data, 1024, data_writable}, {status, 1, true}};
    uint16_t head;
    EXPECT_EQ(d.Post(0, b, 3, &head), DriverError::kOk);
    d.Kick(0);
    uint32_t id = 0, len = 0;
    EXPECT_EQ(d.WaitUsed(0, &id, &len), DriverError::kOk);
    EXPECT_EQ(id, head);
    uint8_t st = 0xff;
    r.platform().MemRead(status, &st, 1);
    return std::make_pair(st, len);
  };
  std::vector<uint8_t> out(1024, 0x5a);
  r.platform().MemWrite(data, out.data(), out.size());
  auto [wst, wlen] = request(/*VIRTIO_BLK_T_OUT=*/1, 10, false);
  EXPECT_EQ(wst, 0);
  EXPECT_EQ(wlen, 1u);
  auto [rst, rlen] = request(/*VIRTIO_BLK_T_IN=*/0, 9, true);
  EXPECT_EQ(rst, 0);
  EXPECT_EQ(rlen, 1025u);
  std::vector<uint8_t> in(1024);
  r.platform().MemRead(data, in.data(), in.size());
  EXPECT_EQ(in[0], 9);
  EXPECT_EQ(in[511], 9);
  EXPECT_EQ(in[512], 0x5a);
  EXPECT_EQ(in[1023], 0x5a);
  auto [est, elen] = request(/*VIRTIO_BLK_T_IN=*/0, 63, true);
  EXPECT_EQ(est, 1);  // VIRTIO_BLK_S_IOERR
  ExpectPaths(r, d);
  ASSERT_EQ(d.Reset(), DriverError::kOk);
  EXPECT_FALSE(r.fn().state().active());
  std::remove(path.c_str());
}

TEST_P(ShimDriverTest, NetTransmitAndReceive) {
  auto pair = virtio::LoopbackNetBackend::CreatePair();
  ASSERT_OK(pair.status());
  virtio::LoopbackNetBackend* peer = pair->second.get();
  const virtio::MacAddress mac = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
  auto net = virtio::NetDevice::Create(std::move(pair->first), {.mac = mac});
  ASSERT_OK(net.status());
  Rig r;
  ASSERT_OK(r.Add(**net, GetParam().shim));
  VirtioPciDriver d(r.platform());
  ASSERT_EQ(d.FindDevice(1, 0), DriverError::kOk);
  ExpectIdentity(d, 1, 0x1000);
  DriverOptions o = Options();
  o.features = (1ull << virtio::kNetFMac) | (1ull << virtio::kNetFStatus);
  const DriverError probe = d.Probe(o);
  ASSERT_EQ(probe, DriverError::kOk) << DriverErrorName(probe);
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(d.ReadConfig(i, 1), mac[i]) << i;
  }
  EXPECT_EQ(d.ReadConfig(6, 2), 1u);  // VIRTIO_NET_S_LINK_UP
  // A legacy driver without MRG_RXBUF uses the 10-byte header.
  const size_t hdr = legacy() ? 10 : 12;

  // Transmit three frames.
  for (int n = 0; n < 3; ++n) {
    std::vector<uint8_t> pkt(hdr + 60, 0);
    for (size_t i = hdr; i < pkt.size(); ++i) pkt[i] = uint8_t(i + n);
    const uint64_t buf = r.platform().AllocDma(pkt.size(), 16);
    r.platform().MemWrite(buf, pkt.data(), pkt.size());
    const VirtioPciDriver::Buffer b = {buf, uint32_t(pkt.size()), false};
    uint16_t head;
    ASSERT_EQ(d.Post(1, &b, 1, &head), DriverError::kOk);
    d.Kick(1);
    uint32_t id = 0, len = 0;
    ASSERT_EQ(d.WaitUsed(1, &id, &len), DriverError::kOk);
    EXPECT_EQ(id, head);
    std::vector<uint8_t> got(2048);
    auto rn = peer->Receive(absl::MakeSpan(got));
    ASSERT_OK(rn.status());
    const size_t peer_hdr = peer->hdr_size();
    ASSERT_EQ(*rn, peer_hdr + 60u);
    EXPECT_TRUE(std::equal(got.begin() + peer_hdr, got.begin() + peer_hdr + 60,
                           pkt.begin() + hdr));
  }
  EXPECT_EQ((*net)->stats().tx_frames, 3u);

  // Receive two frames into posted buffers.
  for (int n = 0; n < 2; ++n) {
    const uint64_t buf = r.platform().AllocDma(hdr + 1514, 16);
    const VirtioPciDriver::Buffer b = {buf, uint32_t(hdr + 1514), true};
    uint16_t head;
    ASSERT_EQ(d.Post(0, &b, 1, &head), DriverError::kOk);
    d.Kick(0);
    std::vector<uint8_t> frame(100);
    for (size_t i = 0; i < frame.size(); ++i) frame[i] = uint8_t(0x80 + i + n);
    uint8_t zero_hdr[12] = {};
    iovec iov[2] = {{zero_hdr, peer->hdr_size()}, {frame.data(), frame.size()}};
    ASSERT_OK(peer->Send(absl::MakeConstSpan(iov, 2)));
    (*net)->ProcessBackend();
    uint32_t id = 0, len = 0;
    ASSERT_EQ(d.WaitUsed(0, &id, &len), DriverError::kOk);
    EXPECT_EQ(id, head);
    EXPECT_EQ(len, hdr + frame.size());
    std::vector<uint8_t> got(len);
    r.platform().MemRead(buf, got.data(), len);
    EXPECT_TRUE(std::equal(frame.begin(), frame.end(), got.begin() + hdr));
  }
  EXPECT_EQ((*net)->stats().rx_frames, 2u);

  // A link change reaches the driver as a configuration interrupt.
  const uint32_t before = d.config_interrupts();
  (*net)->SetLinkUp(false);
  d.ServiceInterrupts();
  EXPECT_EQ(d.config_interrupts(), before + 1);
  EXPECT_EQ(d.ReadConfig(6, 2), 0u);
  ExpectPaths(r, d);
  ASSERT_EQ(d.Reset(), DriverError::kOk);
}

INSTANTIATE_TEST_SUITE_P(AllModes, ShimDriverTest,
                         ::testing::ValuesIn(AllCases()), CaseName);

// The legacy device config moves from 20 to 24 when the driver turns MSI-X
// on, through the shim as natively.
TEST(ShimLegacyTest, DeviceConfigMovesWhenMsixToggles) {
  auto pair = virtio::LoopbackNetBackend::CreatePair();
  ASSERT_OK(pair.status());
  const virtio::MacAddress mac = {0x52, 0x54, 0x00, 0xab, 0xcd, 0xef};
  auto net = virtio::NetDevice::Create(std::move(pair->first), {.mac = mac});
  ASSERT_OK(net.status());
  Rig r;
  ASSERT_OK(r.Add(**net, /*shim=*/true));
  VirtioPciDriver d(r.platform());
  ASSERT_EQ(d.FindDevice(1, 0), DriverError::kOk);
  DriverOptions o;
  o.mode = DriverMode::kLegacy;
  o.use_msix = false;
  ASSERT_EQ(d.Probe(o), DriverError::kOk);
  EXPECT_EQ(d.LegacyRead(20, 1), mac[0]);
  EXPECT_EQ(d.LegacyRead(25, 1), mac[5]);
  ASSERT_EQ(d.EnableMsix(), DriverError::kOk);
  EXPECT_TRUE(r.shim()->msix_enabled());
  EXPECT_EQ(d.legacy_config_offset(), 24u);
  EXPECT_EQ(d.LegacyRead(24, 1), mac[0]);
  d.DisableMsix();
  EXPECT_EQ(d.LegacyRead(20, 1), mac[0]);
  EXPECT_EQ(r.shim()->stats().failed_commands, 0u);
}

}  // namespace
}  // namespace vmmkit::tests::virtio_pci
