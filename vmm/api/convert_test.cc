#include "vmm/api/convert.h"

#include <fstream>
#include <string>
#include <utility>

#include "base/status_matchers.h"
#include "gtest/gtest.h"

namespace vmmkit::api {
namespace {

using ::testing::HasSubstr;
using ::vmmkit::testing::StatusIs;

std::string TempFile(const std::string& name) {
  std::string path = ::testing::TempDir() + "/" + name;
  std::ofstream(path) << "contents";
  return path;
}

TEST(ConvertTest, NamesAreShortAndPlain) {
  EXPECT_OK(ValidateName("vm_id", "demo"));
  EXPECT_OK(ValidateName("vm_id", "vm-1.test_A"));
  EXPECT_OK(ValidateName("vm_id", std::string(64, 'a')));
  EXPECT_THAT(ValidateName("vm_id", ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("vm_id")));
  EXPECT_THAT(ValidateName("vm_id", std::string(65, 'a')),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ValidateName("vm_id", "a/b"),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ValidateName("vm_id", "../x"),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ValidateName("vm_id", "-rf"),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ValidateName("vm_id", std::string("a\0b", 3)),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(ConvertTest, MacAddressesParseAndFormat) {
  ASSERT_OK_AND_ASSIGN(auto mac, ParseMac("52:54:00:AB:cd:0f"));
  EXPECT_EQ(mac, (std::array<uint8_t, 6>{0x52, 0x54, 0x00, 0xab, 0xcd, 0x0f}));
  EXPECT_EQ(FormatMac(mac), "52:54:00:ab:cd:0f");
  ASSERT_OK_AND_ASSIGN(auto dashes, ParseMac("02-00-00-00-00-01"));
  EXPECT_EQ(dashes[5], 1);
  for (const char* bad :
       {"", "52:54:00:12:34", "52:54:00:12:34:5g", "52:54:00:12:34:567",
        "52.54.00.12.34.56", "01:00:5e:00:00:01" /* multicast */}) {
    EXPECT_THAT(ParseMac(bad),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("MAC")))
        << bad;
  }
}

TEST(ConvertTest, VmConfigDefaultsAndFileChecks) {
  v1::VmConfig p;
  p.set_kernel(TempFile("kernel"));
  ASSERT_OK_AND_ASSIGN(vmm::VmConfig c, ToVmConfig(p));
  EXPECT_EQ(c.vcpus, 1);
  EXPECT_EQ(c.memory_mib, 256u);
  EXPECT_EQ(c.kernel, p.kernel());
  EXPECT_TRUE(c.initrd.empty());

  p.set_vcpus(2);
  p.set_memory_mib(64);
  p.set_cmdline("mode=legacy");
  p.set_initrd(TempFile("initrd"));
  ASSERT_OK_AND_ASSIGN(c, ToVmConfig(p));
  EXPECT_EQ(c.vcpus, 2);
  EXPECT_EQ(c.memory_mib, 64u);
  EXPECT_EQ(c.cmdline, "mode=legacy");
  EXPECT_EQ(c.initrd, p.initrd());
  v1::VmConfig round = ToProto(c);
  EXPECT_EQ(round.SerializeAsString(), p.SerializeAsString());

  v1::VmConfig no_kernel;
  EXPECT_THAT(ToVmConfig(no_kernel),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("kernel is required")));
  v1::VmConfig missing = p;
  missing.set_kernel("/nonexistent/bzImage");
  EXPECT_THAT(ToVmConfig(missing), StatusIs(absl::StatusCode::kInvalidArgument,
                                            HasSubstr("/nonexistent/bzImage")));
  v1::VmConfig dir = p;
  dir.set_kernel(::testing::TempDir());
  EXPECT_THAT(ToVmConfig(dir), StatusIs(absl::StatusCode::kInvalidArgument,
                                        HasSubstr("not a regular file")));
  v1::VmConfig bad_initrd = p;
  bad_initrd.set_initrd("/nonexistent/initrd");
  EXPECT_THAT(
      ToVmConfig(bad_initrd),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("initrd")));
  v1::VmConfig many = p;
  many.set_vcpus(1000);
  EXPECT_THAT(ToVmConfig(many),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("vcpus")));
}

TEST(ConvertTest, DeviceSpecsBecomeDeviceConfigs) {
  v1::DeviceSpec blk;
  blk.set_id("disk0");
  blk.set_type(v1::DEVICE_TYPE_BLOCK);
  blk.set_transport(v1::TRANSPORT_PCI_LEGACY);
  blk.set_queue_size(128);
  blk.mutable_block()->set_image_path(TempFile("disk.img"));
  blk.mutable_block()->set_read_only(true);
  ASSERT_OK_AND_ASSIGN(vmm::DeviceConfig c, ToDeviceConfig(blk));
  EXPECT_EQ(c.id, "disk0");
  EXPECT_EQ(c.type, virtio::DeviceType::kBlock);
  EXPECT_EQ(c.transport, vmm::Transport::kPciLegacy);
  EXPECT_EQ(c.queue_size, 128);
  ASSERT_TRUE(std::holds_alternative<vmm::BlkParams>(c.params));
  EXPECT_EQ(std::get<vmm::BlkParams>(c.params).path, blk.block().image_path());
  EXPECT_TRUE(std::get<vmm::BlkParams>(c.params).read_only);
  EXPECT_EQ(ToProto(c).SerializeAsString(), blk.SerializeAsString());

  v1::DeviceSpec net;
  net.set_type(v1::DEVICE_TYPE_NET);
  net.mutable_net()->set_mac("52:54:00:00:00:01");
  ASSERT_OK_AND_ASSIGN(c, ToDeviceConfig(net));
  EXPECT_EQ(c.transport, vmm::Transport::kPciTransitional);  // the default
  EXPECT_TRUE(c.id.empty());
  const auto& np = std::get<vmm::NetParams>(c.params);
  EXPECT_TRUE(np.tap.empty());
  ASSERT_TRUE(np.mac.has_value());
  EXPECT_EQ((*np.mac)[5], 1);
  EXPECT_EQ(ToProto(c).net().mac(), "52:54:00:00:00:01");

  v1::DeviceSpec rng;
  rng.set_type(v1::DEVICE_TYPE_RNG);
  rng.set_transport(v1::TRANSPORT_PCI_MODERN);
  ASSERT_OK_AND_ASSIGN(c, ToDeviceConfig(rng));
  EXPECT_EQ(c.type, virtio::DeviceType::kRng);
  EXPECT_EQ(c.transport, vmm::Transport::kPciModern);

  v1::DeviceSpec console;
  console.set_type(v1::DEVICE_TYPE_CONSOLE);
  console.mutable_console()->set_output_path("/tmp/out");
  ASSERT_OK_AND_ASSIGN(c, ToDeviceConfig(console));
  EXPECT_EQ(std::get<vmm::ConsoleParams>(c.params).output_path, "/tmp/out");
}

TEST(ConvertTest, BadDeviceSpecsAreInvalidArguments) {
  auto expect_invalid = [](const v1::DeviceSpec& spec, const char* what) {
    EXPECT_THAT(ToDeviceConfig(spec),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(what)))
        << spec.ShortDebugString();
  };
  v1::DeviceSpec none;
  expect_invalid(none, "type is required");
  v1::DeviceSpec unknown;
  unknown.set_type(static_cast<v1::DeviceType>(77));
  expect_invalid(unknown, "unknown device type");
  v1::DeviceSpec transport;
  transport.set_type(v1::DEVICE_TYPE_RNG);
  transport.set_transport(static_cast<v1::Transport>(9));
  expect_invalid(transport, "transport");
  v1::DeviceSpec no_image;
  no_image.set_type(v1::DEVICE_TYPE_BLOCK);
  expect_invalid(no_image, "image_path");
  v1::DeviceSpec missing_image = no_image;
  missing_image.mutable_block()->set_image_path("/nonexistent/disk.img");
  expect_invalid(missing_image, "/nonexistent/disk.img");
  v1::DeviceSpec mismatch;
  mismatch.set_type(v1::DEVICE_TYPE_RNG);
  mismatch.mutable_net()->set_tap("tap0");
  expect_invalid(mismatch, "does not match");
  v1::DeviceSpec bad_mac;
  bad_mac.set_type(v1::DEVICE_TYPE_NET);
  bad_mac.mutable_net()->set_mac("zz:54:00:00:00:01");
  expect_invalid(bad_mac, "MAC");
  v1::DeviceSpec big_queue;
  big_queue.set_type(v1::DEVICE_TYPE_RNG);
  big_queue.set_queue_size(65536);
  expect_invalid(big_queue, "queue_size");
  v1::DeviceSpec bad_id;
  bad_id.set_type(v1::DEVICE_TYPE_RNG);
  bad_id.set_id("a b");
  expect_invalid(bad_id, "device id");
}

TEST(ConvertTest, StatusBitsAreNamed) {
  EXPECT_TRUE(StatusBitNames(0).empty());
  EXPECT_EQ(StatusBitNames(0x0f),
            (std::vector<std::string>{"ACKNOWLEDGE", "DRIVER", "FEATURES_OK",
                                      "DRIVER_OK"}));
  EXPECT_EQ(StatusBitNames(0xc0),
            (std::vector<std::string>{"NEEDS_RESET", "FAILED"}));
}

TEST(ConvertTest, SnapshotsBecomeVmInfo) {
  VmSnapshot s;
  s.id = "demo";
  s.state = vmm::VmState::kStopped;
  s.config.kernel = "/k";
  s.exit_code = 3;
  s.created = absl::FromUnixMillis(1000);
  s.started = absl::FromUnixMillis(2000);
  s.stopped = absl::FromUnixMillis(4500);
  s.run_time = absl::Milliseconds(2500);
  DeviceSnapshot d;
  d.config.id = "rng0";
  d.config.type = virtio::DeviceType::kRng;
  d.config.params = vmm::RngParams{};
  vmm::DeviceReport r;
  r.id = "rng0";
  r.type = virtio::DeviceType::kRng;
  r.pci_slot = 1;
  r.driver_legacy = true;
  r.negotiated_features = 0x10000000;
  r.driver_starts = 2;
  r.status = 0x07;
  r.queue_sizes = {256};
  r.requests = 4;
  r.bytes = 64;
  r.notifications = 4;
  r.interrupts = 3;
  d.report = r;
  s.devices.push_back(d);
  s.devices.push_back(DeviceSnapshot{d.config, std::nullopt, "hvc says hi"});
  v1::VmInfo info = ToProto(s);
  EXPECT_EQ(info.vm_id(), "demo");
  EXPECT_EQ(info.state(), v1::VM_STATE_STOPPED);
  EXPECT_TRUE(info.has_exit_code());
  EXPECT_EQ(info.exit_code(), 3);
  EXPECT_EQ(info.created_unix_ms(), 1000);
  EXPECT_EQ(info.started_unix_ms(), 2000);
  EXPECT_EQ(info.stopped_unix_ms(), 4500);
  EXPECT_EQ(info.run_time_ms(), 2500);
  ASSERT_EQ(info.devices_size(), 2);
  const v1::DeviceInfo& di = info.devices(0);
  EXPECT_EQ(di.spec().type(), v1::DEVICE_TYPE_RNG);
  EXPECT_EQ(di.pci_slot(), 1u);
  EXPECT_TRUE(di.driver_legacy());
  EXPECT_EQ(di.negotiated_features(), 0x10000000u);
  EXPECT_EQ(di.driver_starts(), 2u);
  EXPECT_EQ(di.status(), 7u);
  EXPECT_EQ(di.queue_sizes_size(), 1);
  EXPECT_EQ(di.queue_sizes(0), 256u);
  EXPECT_EQ(di.counters().requests(), 4u);
  EXPECT_EQ(di.counters().interrupts(), 3u);
  EXPECT_EQ(di.status_names_size(), 3);
  EXPECT_EQ(info.devices(1).status(), 0u);  // no report: no driver data
  EXPECT_EQ(info.devices(1).console_output(), "hvc says hi");

  VmSnapshot never;
  never.id = "x";
  EXPECT_FALSE(ToProto(never).has_exit_code());
  EXPECT_EQ(ToProto(never).started_unix_ms(), 0);
}

// Every transport maps to its own enum value and back.
TEST(ConvertTest, TransportsRoundTrip) {
  const std::pair<v1::Transport, vmm::Transport> pairs[] = {
      {v1::TRANSPORT_PCI_MODERN, vmm::Transport::kPciModern},
      {v1::TRANSPORT_PCI_TRANSITIONAL, vmm::Transport::kPciTransitional},
      {v1::TRANSPORT_PCI_LEGACY, vmm::Transport::kPciLegacy},
      {v1::TRANSPORT_PCI_LEGACY_VIA_ADMIN, vmm::Transport::kPciLegacyViaAdmin}};
  for (const auto& [proto, vmm_transport] : pairs) {
    v1::DeviceSpec rng;
    rng.set_id("rng0");
    rng.set_type(v1::DEVICE_TYPE_RNG);
    rng.set_transport(proto);
    rng.mutable_rng();
    ASSERT_OK_AND_ASSIGN(vmm::DeviceConfig c, ToDeviceConfig(rng));
    EXPECT_EQ(c.transport, vmm_transport) << proto;
    EXPECT_EQ(ToProto(vmm_transport), proto);
    EXPECT_EQ(ToProto(c).transport(), proto);
  }
  EXPECT_STREQ(vmm::TransportName(vmm::Transport::kPciLegacyViaAdmin),
               "pci-legacy-via-admin");
  v1::DeviceSpec bad;
  bad.set_id("x");
  bad.set_type(v1::DEVICE_TYPE_RNG);
  bad.set_transport(static_cast<v1::Transport>(99));
  EXPECT_THAT(
      ToDeviceConfig(bad).status(),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("transport")));
}

}  // namespace
}  // namespace vmmkit::api
