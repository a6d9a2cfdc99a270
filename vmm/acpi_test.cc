// The ACPI tables: structure, checksums and pointers walked from the RSDP as a
// guest does; the AML encodings against hand-checked bytes; and the DSDT
// disassembled by ACPICA's iasl (Debian's acpica-tools), which must find the
// host bridge, its resources, the INTx routes and \_S5 without an error.
#include "vmm/acpi.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include "gtest/gtest.h"
#include "vmm/boot.h"
#include "vmm/mptable.h"

namespace vmmkit::vmm {
namespace {

constexpr uint64_t kBase = 0xe0000;

template <typename T>
T At(const std::vector<uint8_t>& t, uint64_t guest_address) {
  T v;
  const uint64_t off = guest_address - kBase;
  EXPECT_LE(off + sizeof(T), t.size());
  std::memcpy(&v, t.data() + off, sizeof(T));
  return v;
}

// The table at `guest_address`, checked: signature, length inside the blob,
// checksum 0.
AcpiHeader Table(const std::vector<uint8_t>& t, uint64_t guest_address,
                 const char* signature) {
  AcpiHeader h = At<AcpiHeader>(t, guest_address);
  EXPECT_EQ(std::string(h.signature, 4), signature);
  EXPECT_LE(guest_address - kBase + h.length, t.size()) << signature;
  EXPECT_EQ(AcpiChecksum(t.data() + (guest_address - kBase), h.length), 0)
      << signature;
  return h;
}

AcpiOptions Options() {
  return {.num_cpus = 2,
          .pci_slots = {1, 2, 9},
          .base = kBase,
          .mmio32_base = 0xc0000000,
          .mmio32_size = 0x20000000};
}

TEST(AcpiTest, TablesWalkFromTheRsdp) {
  std::vector<uint8_t> t = BuildAcpiTables(Options());
  ASSERT_LE(t.size(), kAcpiTablesMax);
  AcpiRsdp r = At<AcpiRsdp>(t, kBase);
  EXPECT_EQ(std::string(r.signature, 8), "RSD PTR ");
  EXPECT_EQ(AcpiChecksum(t.data(), 20), 0);
  EXPECT_EQ(AcpiChecksum(t.data(), 36), 0);
  EXPECT_EQ(+r.revision, 2);
  EXPECT_EQ(+r.length, 36u);
  EXPECT_EQ(+r.rsdt_address, 0u);

  AcpiHeader x = Table(t, r.xsdt_address, "XSDT");
  ASSERT_EQ(+x.length, sizeof(AcpiHeader) + 16);
  const uint64_t fadt_addr = At<uint64_t>(t, r.xsdt_address + 36);
  const uint64_t madt_addr = At<uint64_t>(t, r.xsdt_address + 44);

  Table(t, fadt_addr, "FACP");
  AcpiFadt f = At<AcpiFadt>(t, fadt_addr);
  EXPECT_EQ(+f.header.length, sizeof(AcpiFadt));
  EXPECT_EQ(+f.header.revision, 6);
  EXPECT_EQ(+f.sci_int, kAcpiSciIrq);
  EXPECT_EQ(+f.smi_cmd, 0u);
  EXPECT_EQ(+f.pm1a_evt_blk, kAcpiPmBase);
  EXPECT_EQ(+f.pm1a_cnt_blk, kAcpiPm1aControl);
  EXPECT_EQ(+f.pm_tmr_blk, kAcpiPmTimer);
  EXPECT_EQ(+f.pm1_evt_len, 4);
  EXPECT_EQ(+f.pm1_cnt_len, 2);
  EXPECT_EQ(+f.pm_tmr_len, 4);
  EXPECT_EQ(+f.x_pm1a_cnt_blk.address, kAcpiPm1aControl);
  EXPECT_EQ(+f.x_pm1a_cnt_blk.space_id, 1);
  EXPECT_EQ(+f.x_pm1a_cnt_blk.bit_width, 16);
  EXPECT_TRUE(f.flags & kFadtResetRegSup);
  EXPECT_TRUE(f.flags & kFadtTmrValExt);
  EXPECT_FALSE(f.flags & (1u << 20)) << "not hardware-reduced";
  EXPECT_EQ(+f.reset_reg.address, 0xcf9u);
  EXPECT_EQ(+f.reset_reg.access_size, 1);
  EXPECT_EQ(+f.reset_value, 0x06);
  EXPECT_FALSE(f.iapc_boot_arch & 0x2) << "no i8042";
  EXPECT_FALSE(f.iapc_boot_arch & 0x8) << "MSI must not be disabled";
  EXPECT_EQ(+f.x_dsdt, +f.dsdt);
  Table(t, f.dsdt, "DSDT");
  AcpiFacs facs = At<AcpiFacs>(t, f.firmware_ctrl);
  EXPECT_EQ(std::string(facs.signature, 4), "FACS");
  EXPECT_EQ(+facs.length, 64u);
  EXPECT_EQ(+f.firmware_ctrl % 64, 0u);

  AcpiHeader m = Table(t, madt_addr, "APIC");
  EXPECT_EQ(At<uint32_t>(t, madt_addr + 36), kLapicAddr);
  EXPECT_EQ(At<uint32_t>(t, madt_addr + 40), 1u);  // PCAT_COMPAT
  int lapics = 0, ioapics = 0, overrides = 0, nmis = 0;
  for (uint64_t a = madt_addr + 44; a < madt_addr + m.length;) {
    const uint8_t type = At<uint8_t>(t, a), len = At<uint8_t>(t, a + 1);
    ASSERT_GE(len, 2);
    if (type == 0) {
      AcpiMadtLapic l = At<AcpiMadtLapic>(t, a);
      EXPECT_EQ(+l.apic_id, lapics);
      EXPECT_EQ(+l.processor_uid, lapics);
      EXPECT_EQ(+l.flags, 1u);
      ++lapics;
    } else if (type == 1) {
      AcpiMadtIoapic io = At<AcpiMadtIoapic>(t, a);
      EXPECT_EQ(+io.address, kIoapicAddr);
      EXPECT_EQ(+io.gsi_base, 0u);
      EXPECT_EQ(+io.ioapic_id, 2);  // as in the MP table: num_cpus
      ++ioapics;
    } else if (type == 2) {
      AcpiMadtOverride o = At<AcpiMadtOverride>(t, a);
      EXPECT_EQ(+o.source, kAcpiSciIrq);
      EXPECT_EQ(+o.gsi, kAcpiSciIrq);
      EXPECT_EQ(+o.flags >> 2 & 3, 3) << "level";
      ++overrides;
    } else if (type == 4) {
      AcpiMadtLapicNmi n = At<AcpiMadtLapicNmi>(t, a);
      EXPECT_EQ(+n.processor_uid, 0xff);
      EXPECT_EQ(+n.lint, 1);
      ++nmis;
    }
    a += len;
  }
  EXPECT_EQ(lapics, 2);
  EXPECT_EQ(ioapics, 1);
  EXPECT_EQ(overrides, 1);
  EXPECT_EQ(nmis, 1);
}

TEST(AcpiTest, FitsBelowTheMpTableWithEverySlot) {
  AcpiOptions o = Options();
  o.num_cpus = 254;
  o.pci_slots.clear();
  for (uint8_t s = 1; s < 32; ++s) o.pci_slots.push_back(s);
  o.mmio64_base = uint64_t{1} << 39;
  o.mmio64_size = uint64_t{1} << 38;
  std::vector<uint8_t> t = BuildAcpiTables(o);
  EXPECT_LE(kBase + t.size(), kMpTableAddr);
}

TEST(AcpiTest, PkgLengthEncodings) {
  // ACPI 6.4 §20.2.4: the count includes the PkgLength bytes.
  EXPECT_EQ(AmlPkgLength(0), std::vector<uint8_t>({0x01}));
  EXPECT_EQ(AmlPkgLength(62), std::vector<uint8_t>({0x3f}));
  // 63 content bytes + 2 = 65 = 0x41: lead 0x40 | 0x1, then 0x41 >> 4.
  EXPECT_EQ(AmlPkgLength(63), std::vector<uint8_t>({0x41, 0x04}));
  // 4093 + 2 = 4095 = 0xfff: the largest two-byte length.
  EXPECT_EQ(AmlPkgLength(4093), std::vector<uint8_t>({0x4f, 0xff}));
  // 4094 + 3 = 4097 = 0x1001 needs three bytes: 0x80 | 0x1, 0x00, 0x01.
  EXPECT_EQ(AmlPkgLength(4094), std::vector<uint8_t>({0x81, 0x00, 0x01}));
}

TEST(AcpiTest, DsdtHasTheHostBridgeAndS5) {
  std::vector<uint8_t> d = BuildDsdt(Options());
  const std::string s(d.begin(), d.end());
  // _HID EisaId("PNP0A03") = DWordPrefix 0x030AD041.
  EXPECT_NE(s.find(std::string("_HID\x0c\x41\xd0\x0a\x03", 9)),
            std::string::npos);
  EXPECT_NE(s.find("\\_SB_"), std::string::npos);
  EXPECT_NE(s.find("PCI0"), std::string::npos);
  EXPECT_NE(s.find("_PRT"), std::string::npos);
  EXPECT_NE(s.find("_CRS"), std::string::npos);
  // Name(\_S5_, Package(4){5, 5, 0, 0}): PkgLength 8, 4 elements.
  EXPECT_NE(
      s.find(std::string("\\_S5_\x12\x08\x04\x0a\x05\x0a\x05\x00\x00", 14)),
      std::string::npos);
}

std::string Slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

TEST(AcpiTest, IaslDisassemblesTheDsdt) {
  const char* iasl = "/usr/bin/iasl";
  ASSERT_EQ(access(iasl, X_OK), 0)
      << "iasl (Debian acpica-tools, in tools/lib/common.sh) is needed";
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string dir = tmp != nullptr ? tmp : "/tmp";
  const std::string aml = dir + "/dsdt.aml", dsl = dir + "/dsdt.dsl";
  std::vector<uint8_t> d = BuildDsdt(Options());
  {
    std::ofstream f(aml, std::ios::binary);
    f.write(reinterpret_cast<const char*>(d.data()),
            static_cast<std::streamsize>(d.size()));
  }
  const std::string cmd = std::string(iasl) + " -d -p " + dir + "/dsdt " + aml +
                          " >" + dir + "/iasl.log 2>&1";
  const int rc = std::system(cmd.c_str());
  ASSERT_TRUE(WIFEXITED(rc) && WEXITSTATUS(rc) == 0)
      << Slurp(dir + "/iasl.log");
  const std::string text = Slurp(dsl);
  EXPECT_NE(text.find("Device (PCI0)"), std::string::npos) << text;
  EXPECT_NE(text.find("EisaId (\"PNP0A03\")"), std::string::npos) << text;
  EXPECT_NE(text.find("WordBusNumber (ResourceProducer, MinFixed, MaxFixed"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("0x0CF8,             // Range Minimum"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("0xC0000000,         // Range Minimum"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("0xDFFFFFFF,         // Range Maximum"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("0x0009FFFF"), std::string::npos) << "slot 9's INTA#\n"
                                                        << text;
  EXPECT_NE(text.find("Name (\\_S5, Package (0x04)"), std::string::npos)
      << text;
  EXPECT_EQ(text.find("Error"), std::string::npos) << text;
}

}  // namespace
}  // namespace vmmkit::vmm
