#include "pci/root_bus.h"

#include <cstdint>
#include <utility>
#include <vector>

#include "base/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vmmkit::pci {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::UnorderedElementsAre;
using ::vmmkit::testing::StatusIs;
using Code = absl::StatusCode;

class RamRegion : public RegionHandler {
 public:
  explicit RamRegion(size_t size) : bytes(size) {}
  void Read(uint64_t offset, absl::Span<uint8_t> data) override {
    for (size_t i = 0; i < data.size(); ++i) data[i] = bytes.at(offset + i);
  }
  void Write(uint64_t offset, absl::Span<const uint8_t> data) override {
    for (size_t i = 0; i < data.size(); ++i) bytes.at(offset + i) = data[i];
  }
  std::vector<uint8_t> bytes;
};

uint32_t Le(absl::Span<const uint8_t> b) {
  uint32_t v = 0;
  for (size_t i = 0; i < b.size() && i < 4; ++i) v |= uint32_t{b[i]} << (8 * i);
  return v;
}

// A device with an I/O BAR, a 32-bit BAR and a 64-bit prefetchable BAR, each
// served by RAM.
class TestDevice : public GenericPciFunction {
 public:
  explicit TestDevice(uint16_t device_id = 0x0001, bool extended = false)
      : GenericPciFunction({.vendor_id = 0x1234,
                            .device_id = device_id,
                            .class_code = 0xff0000,
                            .interrupt_pin = 1,
                            .extended = extended}) {
    EXPECT_OK(AddBar(0, {.type = BarType::kIo, .size = 0x20}));
    EXPECT_OK(AddBar(1, {.type = BarType::kMemory32, .size = 0x1000}));
    EXPECT_OK(AddBar(
        2,
        {.type = BarType::kMemory64, .size = 0x100000, .prefetchable = true}));
    EXPECT_OK(AddRegion(0, 0, 0x20, &io));
    EXPECT_OK(AddRegion(1, 0, 0x1000, &mem32));
    EXPECT_OK(AddRegion(2, 0, 0x1000, &mem64));
  }
  RamRegion io{0x20};
  RamRegion mem32{0x1000};
  RamRegion mem64{0x1000};
};

class RootBusTest : public ::testing::Test {
 protected:
  // Configuration mechanism #1, as a guest does it.
  void SelectConfig(uint8_t dev, uint8_t fn, uint8_t reg, bool enable = true) {
    const uint32_t a =
        (enable ? kConfigAddressEnable : 0) | (dev << 11) | (fn << 8) | reg;
    Out(kConfigAddressPort, a, 4);
  }
  void Out(uint16_t port, uint32_t v, size_t width) {
    uint8_t b[4];
    for (int i = 0; i < 4; ++i) b[i] = (v >> (8 * i)) & 0xff;
    bus_.PioWrite(port, absl::MakeConstSpan(b, width));
  }
  uint32_t In(uint16_t port, size_t width, bool* claimed = nullptr) {
    uint8_t b[4] = {};
    const bool c = bus_.PioRead(port, absl::MakeSpan(b, width));
    if (claimed) *claimed = c;
    return Le(absl::MakeConstSpan(b, width));
  }
  uint32_t Cf8Read(uint8_t dev, uint8_t fn, uint8_t reg, size_t width) {
    SelectConfig(dev, fn, reg & 0xfc);
    return In(kConfigDataPort + (reg & 3), width);
  }
  void Cf8Write(uint8_t dev, uint8_t fn, uint8_t reg, uint32_t v,
                size_t width) {
    SelectConfig(dev, fn, reg & 0xfc);
    Out(kConfigDataPort + (reg & 3), v, width);
  }
  uint64_t Ecam(uint8_t dev, uint8_t fn, uint32_t reg) {
    return bus_.options().ecam_base | (dev << 15) | (fn << 12) | reg;
  }
  uint32_t MmioRead(uint64_t addr, size_t width, bool* claimed = nullptr) {
    uint8_t b[8] = {};
    const bool c = bus_.MmioRead(addr, absl::MakeSpan(b, width));
    if (claimed) *claimed = c;
    return Le(absl::MakeConstSpan(b, width));
  }
  bool MmioWrite(uint64_t addr, uint32_t v, size_t width) {
    uint8_t b[4];
    for (int i = 0; i < 4; ++i) b[i] = (v >> (8 * i)) & 0xff;
    return bus_.MmioWrite(addr, absl::MakeConstSpan(b, width));
  }

  RootBus bus_;
};

TEST_F(RootBusTest, HostBridgeAtZero) {
  EXPECT_EQ(Cf8Read(0, 0, kRegVendorId, 4),
            (uint32_t{kHostBridgeDeviceId} << 16) | kHostBridgeVendorId);
  EXPECT_EQ(Cf8Read(0, 0, kRegRevisionId, 4) >> 8, kClassHostBridge);
  EXPECT_EQ(Cf8Read(0, 0, kRegHeaderType, 1), 0u);
  EXPECT_EQ(MmioRead(Ecam(0, 0, 0), 2), kHostBridgeVendorId);
  EXPECT_NE(bus_.function({0, 0, 0}), nullptr);
}

TEST_F(RootBusTest, AddressRegister) {
  Out(kConfigAddressPort, 0xffffffff, 4);
  EXPECT_EQ(In(kConfigAddressPort, 4), kConfigAddressMask);
  Out(kConfigAddressPort, 0x80000000, 4);  // Linux's pci_check_type1
  EXPECT_EQ(In(kConfigAddressPort, 4), 0x80000000u);
  // Byte and word accesses to 0xCF8..0xCFB are not the address register,
  // and not claimed (0xCF9 is the chipset's reset register).
  bool claimed = true;
  Out(0xcfb, 0x01, 1);
  Out(kConfigAddressPort, 0x1234, 2);
  EXPECT_EQ(In(kConfigAddressPort, 4), 0x80000000u);
  EXPECT_EQ(In(0xcf9, 1, &claimed), 0xffu);
  EXPECT_FALSE(claimed);
  EXPECT_EQ(In(kConfigAddressPort, 2, &claimed), 0xffffu);
  EXPECT_FALSE(claimed);
  uint8_t b[4] = {};
  EXPECT_FALSE(bus_.PioWrite(0xcf9, absl::MakeConstSpan(b, 1)));
}

TEST_F(RootBusTest, DataPortByteAndWordAccessesHitTheRightBytes) {
  SelectConfig(0, 0, 0);
  EXPECT_EQ(In(0xcfc, 4), 0x00081b36u);
  EXPECT_EQ(In(0xcfc, 1), 0x36u);
  EXPECT_EQ(In(0xcfd, 1), 0x1bu);
  EXPECT_EQ(In(0xcfe, 1), 0x08u);
  EXPECT_EQ(In(0xcff, 1), 0x00u);
  EXPECT_EQ(In(0xcfc, 2), 0x1b36u);
  EXPECT_EQ(In(0xcfd, 2), 0x081bu);
  EXPECT_EQ(In(0xcfe, 2), 0x0008u);
  // Crossing 0xCFF, or an odd width: all-ones, still ours.
  bool claimed = false;
  EXPECT_EQ(In(0xcff, 2, &claimed), 0xffffu);
  EXPECT_TRUE(claimed);
  EXPECT_EQ(In(0xcfe, 4), 0xffffffffu);
  uint8_t b3[3] = {};
  EXPECT_TRUE(bus_.PioRead(0xcfc, absl::MakeSpan(b3)));
  EXPECT_THAT(b3, ElementsAre(0xff, 0xff, 0xff));
  // Writes land on the bytes under the port.
  TestDevice dev;
  ASSERT_OK(bus_.AddFunction({0, 3, 0}, &dev));
  SelectConfig(3, 0, kRegCacheLineSize);  // 0x0c: cache line, latency
  Out(0xcfd, 0x40, 1);                    // latency timer
  Out(0xcfc, 0x10, 1);                    // cache line size
  EXPECT_EQ(Cf8Read(3, 0, kRegCacheLineSize, 2), 0x4010u);
  Cf8Write(3, 0, kRegCommand, kCommandMemory, 2);
  Cf8Write(3, 0, kRegCommand + 1, kCommandIntxDisable >> 8, 1);
  EXPECT_EQ(dev.config_space().command(), kCommandMemory | kCommandIntxDisable);
  // A write crossing 0xCFF is dropped.
  SelectConfig(3, 0, kRegInterruptLine);
  Out(0xcff, 0xffff, 2);
  EXPECT_EQ(Cf8Read(3, 0, kRegInterruptLine, 1), 0u);
}

TEST_F(RootBusTest, EnableBitClearReadsAllOnesAndIgnoresWrites) {
  TestDevice dev;
  ASSERT_OK(bus_.AddFunction({0, 1, 0}, &dev));
  SelectConfig(1, 0, kRegVendorId, /*enable=*/false);
  bool claimed = false;
  EXPECT_EQ(In(0xcfc, 4, &claimed), 0xffffffffu);
  EXPECT_TRUE(claimed);
  SelectConfig(1, 0, kRegInterruptLine, /*enable=*/false);
  Out(0xcfc, 5, 1);
  EXPECT_EQ(dev.config_space().Get8(kRegInterruptLine), 0);
}

TEST_F(RootBusTest, AbsentDevicesFunctionsAndBusesReadAllOnes) {
  TestDevice dev;
  ASSERT_OK(bus_.AddFunction({0, 2, 0}, &dev));
  EXPECT_EQ(Cf8Read(2, 0, kRegVendorId, 4), 0x00011234u);
  EXPECT_EQ(Cf8Read(5, 0, kRegVendorId, 4), 0xffffffffu);
  EXPECT_EQ(Cf8Read(2, 1, kRegVendorId, 2), 0xffffu);
  EXPECT_EQ(Cf8Read(0, 7, kRegVendorId, 1), 0xffu);
  EXPECT_EQ(Cf8Read(31, 0, kRegVendorId, 4), 0xffffffffu);
  // Bus 1 through mechanism #1.
  Out(kConfigAddressPort, kConfigAddressEnable | (1 << 16) | (2 << 11), 4);
  EXPECT_EQ(In(0xcfc, 4), 0xffffffffu);
  Out(0xcfc, 0, 4);  // dropped, no crash
  EXPECT_EQ(MmioRead(Ecam(5, 0, 0), 4), 0xffffffffu);
  EXPECT_TRUE(MmioWrite(Ecam(5, 0, 4), 7, 2));
  EXPECT_EQ(bus_.function({1, 2, 0}), nullptr);
  EXPECT_EQ(bus_.function({0, 32, 0}), nullptr);
  EXPECT_EQ(bus_.function({0, 2, 8}), nullptr);
}

TEST_F(RootBusTest, Ecam) {
  TestDevice dev(0x0002);
  TestDevice ext(0x0003, /*extended=*/true);
  ASSERT_OK(bus_.AddFunction({0, 4, 0}, &dev));
  ASSERT_OK(bus_.AddFunction({0, 4, 1}, &ext));
  EXPECT_EQ(MmioRead(Ecam(4, 0, 0), 4), 0x00021234u);
  EXPECT_EQ(MmioRead(Ecam(4, 1, 2), 2), 0x0003u);
  EXPECT_EQ(MmioRead(Ecam(4, 0, 3), 1), 0x00u);
  // Multi-function bit set on function 0 when function 1 appeared.
  EXPECT_EQ(MmioRead(Ecam(4, 0, kRegHeaderType), 1), kHeaderTypeMultiFunction);
  EXPECT_TRUE(MmioWrite(Ecam(4, 0, kRegInterruptLine), 9, 1));
  EXPECT_EQ(Cf8Read(4, 0, kRegInterruptLine, 1), 9u);
  // Past 256 bytes: all-ones for a conventional function, zero (nothing
  // there) for a PCIe one; crossing the 4 KiB function boundary: all-ones.
  EXPECT_EQ(MmioRead(Ecam(4, 0, 0x100), 4), 0xffffffffu);
  EXPECT_EQ(MmioRead(Ecam(4, 1, 0x100), 4), 0u);
  EXPECT_EQ(MmioRead(Ecam(4, 1, 0xffe), 4), 0xffffffffu);
  EXPECT_EQ(MmioRead(Ecam(4, 1, 0xffc), 8), 0xffffffffu);
  bool claimed = false;
  MmioRead(bus_.options().ecam_base + kEcamBytesPerBus - 1, 1, &claimed);
  EXPECT_TRUE(claimed);
  MmioRead(bus_.options().ecam_base + kEcamBytesPerBus, 1, &claimed);
  EXPECT_FALSE(claimed);
}

TEST_F(RootBusTest, EcamDisabled) {
  RootBus bus({.ecam_base = 0});
  uint8_t b[4];
  EXPECT_FALSE(bus.MmioRead(0, absl::MakeSpan(b)));
  EXPECT_FALSE(bus.MmioRead(0xb0000000, absl::MakeSpan(b)));
}

TEST_F(RootBusTest, AddFunctionErrorsAndAddDevice) {
  TestDevice a, b;
  EXPECT_THAT(bus_.AddFunction({0, 0, 0}, &a),
              StatusIs(Code::kInvalidArgument));
  EXPECT_THAT(bus_.AddFunction({1, 1, 0}, &a),
              StatusIs(Code::kInvalidArgument));
  EXPECT_THAT(bus_.AddFunction({0, 32, 0}, &a),
              StatusIs(Code::kInvalidArgument));
  EXPECT_THAT(bus_.AddFunction({0, 1, 8}, &a),
              StatusIs(Code::kInvalidArgument));
  EXPECT_THAT(bus_.AddFunction({0, 1, 0}, nullptr),
              StatusIs(Code::kInvalidArgument));
  ASSERT_OK(bus_.AddFunction({0, 1, 0}, &a));
  EXPECT_THAT(bus_.AddFunction({0, 1, 0}, &b), StatusIs(Code::kAlreadyExists));
  ASSERT_OK_AND_ASSIGN(PciAddress at, bus_.AddDevice(&b));
  EXPECT_EQ(at, (PciAddress{0, 2, 0}));
  std::vector<std::unique_ptr<TestDevice>> more;
  for (int d = 3; d < 32; ++d) {
    more.push_back(std::make_unique<TestDevice>());
    ASSERT_OK(bus_.AddDevice(more.back().get()));
  }
  TestDevice extra;
  EXPECT_THAT(bus_.AddDevice(&extra), StatusIs(Code::kResourceExhausted));
}

TEST_F(RootBusTest, AssignBarsNaturallyAlignedInTheirWindows) {
  TestDevice a, b;
  ASSERT_OK(bus_.AddDevice(&a));
  ASSERT_OK(bus_.AddDevice(&b));
  ASSERT_OK(bus_.AssignBars());
  const RootBus::Options& o = bus_.options();
  std::vector<uint64_t> io, m32, m64;
  for (TestDevice* d : {&a, &b}) {
    ConfigSpace& c = d->config_space();
    io.push_back(c.BarAddress(0));
    m32.push_back(c.BarAddress(1));
    m64.push_back(c.BarAddress(2));
    EXPECT_TRUE(c.io_enabled());
    EXPECT_TRUE(c.memory_enabled());
    EXPECT_FALSE(c.bus_master_enabled());
    for (int bar : {0, 1, 2}) {
      EXPECT_EQ(c.BarAddress(bar) % c.bar(bar).size, 0u);
    }
  }
  EXPECT_THAT(io, UnorderedElementsAre(o.io.base, o.io.base + 0x20));
  EXPECT_THAT(m32, UnorderedElementsAre(o.mmio32.base, o.mmio32.base + 0x1000));
  EXPECT_THAT(m64,
              UnorderedElementsAre(o.mmio64.base, o.mmio64.base + 0x100000));
  // The host bridge has no BARs, so nothing to enable.
  EXPECT_EQ(bus_.function({0, 0, 0})->config_space().command(), 0);
}

TEST_F(RootBusTest, AssignBarsWithoutA64BitWindowAndOutOfRoom) {
  RootBus bus({.io = {0x1000, 0x40},
               .mmio32 = {0xe0000000, 0x200000},
               .mmio64 = {0, 0}});
  TestDevice a, b, c;
  ASSERT_OK(bus.AddDevice(&a));
  ASSERT_OK(bus.AssignBars(/*enable_decoding=*/false));
  EXPECT_EQ(a.config_space().BarAddress(2), 0xe0000000u);  // largest first
  EXPECT_EQ(a.config_space().BarAddress(1), 0xe0100000u);
  EXPECT_EQ(a.config_space().command(), 0);
  ASSERT_OK(bus.AddDevice(&b));
  ASSERT_OK(bus.AddDevice(&c));
  EXPECT_THAT(bus.AssignBars(), StatusIs(Code::kResourceExhausted));
}

TEST_F(RootBusTest, RoutesBarAccessesToRegions) {
  TestDevice dev;
  ASSERT_OK_AND_ASSIGN(PciAddress at, bus_.AddDevice(&dev));
  ASSERT_OK(bus_.AssignBars());
  ConfigSpace& c = dev.config_space();
  const uint64_t io = c.BarAddress(0), m32 = c.BarAddress(1),
                 m64 = c.BarAddress(2);
  Out(io + 4, 0xabcd, 2);
  EXPECT_EQ(dev.io.bytes[4], 0xcd);
  EXPECT_EQ(In(io + 4, 2), 0xabcdu);
  EXPECT_TRUE(MmioWrite(m32 + 0x10, 0x11223344, 4));
  EXPECT_EQ(dev.mem32.bytes[0x10], 0x44);
  EXPECT_TRUE(MmioWrite(m64 + 0xffc, 0x55667788, 4));
  EXPECT_EQ(MmioRead(m64 + 0xffc, 4), 0x55667788u);
  // Inside the 64-bit BAR but outside its region: the function's hole.
  bool claimed = false;
  EXPECT_EQ(MmioRead(m64 + 0x2000, 4, &claimed), 0xffffffffu);
  EXPECT_TRUE(claimed);
  // Straddling the BAR's end: not this BAR's.
  EXPECT_EQ(MmioRead(m32 + 0xffe, 4, &claimed), 0xffffffffu);
  EXPECT_FALSE(claimed);
  // Nobody's: all-ones, unclaimed, writes dropped.
  EXPECT_EQ(MmioRead(0x1000, 4, &claimed), 0xffffffffu);
  EXPECT_FALSE(claimed);
  EXPECT_FALSE(MmioWrite(0x1000, 0, 4));
  EXPECT_EQ(In(0x80, 1, &claimed), 0xffu);
  EXPECT_FALSE(claimed);
  std::optional<RootBus::BarTarget> t = bus_.FindBar(false, m32 + 8, 4);
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->address, at);
  EXPECT_EQ(t->function, &dev);
  EXPECT_EQ(t->bar, 1);
  EXPECT_EQ(t->offset, 8u);
  EXPECT_FALSE(bus_.FindBar(true, m32 + 8, 4).has_value());
}

TEST_F(RootBusTest, DecodingGatedByCommandRegister) {
  TestDevice dev;
  ASSERT_OK_AND_ASSIGN(PciAddress at, bus_.AddDevice(&dev));
  ASSERT_OK(bus_.AssignBars(/*enable_decoding=*/false));
  const uint64_t io = dev.config_space().BarAddress(0);
  const uint64_t m32 = dev.config_space().BarAddress(1);
  dev.io.bytes[0] = 0x5a;
  dev.mem32.bytes[0] = 0xa5;
  bool claimed = true;
  EXPECT_EQ(In(io, 1, &claimed), 0xffu);
  EXPECT_FALSE(claimed);
  EXPECT_EQ(MmioRead(m32, 1, &claimed), 0xffu);
  EXPECT_FALSE(claimed);
  Cf8Write(at.device, 0, kRegCommand, kCommandIo, 2);
  EXPECT_EQ(In(io, 1), 0x5au);
  EXPECT_EQ(MmioRead(m32, 1, &claimed), 0xffu);
  EXPECT_FALSE(claimed);
  Cf8Write(at.device, 0, kRegCommand, kCommandMemory, 2);
  EXPECT_EQ(In(io, 1, &claimed), 0xffu);
  EXPECT_FALSE(claimed);
  EXPECT_EQ(MmioRead(m32, 1), 0xa5u);
  Out(io, 0x77, 1);  // dropped while I/O is off
  EXPECT_EQ(dev.io.bytes[0], 0x5a);
  // The owner changing the command register or a BAR is seen too.
  dev.config_space().Set16(kRegCommand, kCommandIo);
  EXPECT_EQ(In(io, 1), 0x5au);
  MmioRead(m32, 1, &claimed);
  EXPECT_FALSE(claimed);
  ASSERT_OK(dev.config_space().SetBarAddress(0, 0x2000));
  In(io, 1, &claimed);
  EXPECT_FALSE(claimed);
  EXPECT_EQ(In(0x2000, 1), 0x5au);
}

TEST_F(RootBusTest, GuestReprogrammedBarsMoveAndAreReported) {
  TestDevice dev;
  ASSERT_OK_AND_ASSIGN(PciAddress at, bus_.AddDevice(&dev));
  ASSERT_OK(bus_.AssignBars());
  std::vector<std::pair<PciAddress, int>> changes;
  bus_.set_bar_changed([&](PciAddress a, int bar) {
    changes.push_back({a, bar});
  });
  const uint64_t old_m32 = dev.config_space().BarAddress(1);
  dev.mem32.bytes[0] = 0x42;
  // Linux sizes with decoding off, then programs the new address.
  Cf8Write(at.device, 0, kRegCommand, 0, 2);
  EXPECT_THAT(changes, ElementsAre(std::pair{at, 0}, std::pair{at, 1},
                                   std::pair{at, 2}));
  changes.clear();
  const uint8_t bar1 = kRegBar0 + 4;
  const uint32_t orig = Cf8Read(at.device, 0, bar1, 4);
  Cf8Write(at.device, 0, bar1, 0xffffffff, 4);
  EXPECT_EQ(Cf8Read(at.device, 0, bar1, 4), 0xfffff000u);
  Cf8Write(at.device, 0, bar1, orig, 4);
  EXPECT_THAT(changes, IsEmpty());  // nothing decoded while disabled
  Cf8Write(at.device, 0, bar1, 0xd0000000, 4);
  Cf8Write(at.device, 0, kRegCommand, kCommandMemory, 2);
  EXPECT_THAT(changes, ElementsAre(std::pair{at, 1}, std::pair{at, 2}));
  bool claimed = true;
  MmioRead(old_m32, 1, &claimed);
  EXPECT_FALSE(claimed);
  EXPECT_EQ(MmioRead(0xd0000000, 1), 0x42u);
  // A 64-bit BAR moved with a byte write to its upper half, through ECAM.
  changes.clear();
  EXPECT_TRUE(MmioWrite(Ecam(at.device, 0, kRegBar0 + 12), 0x01, 1));
  EXPECT_THAT(changes, ElementsAre(std::pair{at, 2}));
  EXPECT_EQ(dev.config_space().BarAddress(2) >> 32, 0x1u);  // was 0x80
}

TEST_F(RootBusTest, BarAtAddressZeroDoesNotDecode) {
  TestDevice dev;
  ASSERT_OK_AND_ASSIGN(PciAddress at, bus_.AddDevice(&dev));
  Cf8Write(at.device, 0, kRegCommand, kCommandIo | kCommandMemory, 2);
  bool claimed = true;
  In(0, 1, &claimed);
  EXPECT_FALSE(claimed);
  MmioRead(0, 4, &claimed);
  EXPECT_FALSE(claimed);
}

TEST_F(RootBusTest, SizingThroughConfigMechanismAtEveryWidth) {
  TestDevice dev;
  ASSERT_OK_AND_ASSIGN(PciAddress at, bus_.AddDevice(&dev));
  for (size_t width : {1, 2, 4}) {
    SCOPED_TRACE(width);
    for (uint8_t reg = kRegBar0; reg < kRegBar0 + 24; reg += width) {
      Cf8Write(at.device, 0, reg, 0xffffffff, width);
    }
    EXPECT_EQ(Cf8Read(at.device, 0, kRegBar0, 4), 0xffffffe1u);
    EXPECT_EQ(Cf8Read(at.device, 0, kRegBar0 + 4, 4), 0xfffff000u);
    EXPECT_EQ(Cf8Read(at.device, 0, kRegBar0 + 8, 4), 0xfff0000cu);
    EXPECT_EQ(Cf8Read(at.device, 0, kRegBar0 + 12, 4), 0xffffffffu);
    EXPECT_EQ(Cf8Read(at.device, 0, kRegBar0 + 16, 4), 0u);
    for (uint8_t reg = kRegBar0; reg < kRegBar0 + 24; reg += width) {
      Cf8Write(at.device, 0, reg, 0, width);
    }
    EXPECT_EQ(Cf8Read(at.device, 0, kRegBar0 + 8, 4), 0x0000000cu);
  }
}

}  // namespace
}  // namespace vmmkit::pci
