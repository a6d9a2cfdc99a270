// vmm/acpi.cc: see acpi.h.
#include "vmm/acpi.h"

#include <cstring>
#include <string>

#include "vmm/mptable.h"

namespace vmmkit::vmm {
namespace {

using Bytes = std::vector<uint8_t>;

template <typename T>
void Append(Bytes& out, const T& value) {
  const auto* p = reinterpret_cast<const uint8_t*>(&value);
  out.insert(out.end(), p, p + sizeof(T));
}
void Append(Bytes& out, const Bytes& more) {
  out.insert(out.end(), more.begin(), more.end());
}
void Le(Bytes& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i)
    out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

AcpiHeader Header(const char* signature, uint32_t length, uint8_t revision) {
  AcpiHeader h = {};
  std::memcpy(h.signature, signature, 4);
  h.length = length;
  h.revision = revision;
  std::memcpy(h.oem_id, "VMMKIT", 6);
  std::memcpy(h.oem_table_id, "VMMKITVM", 8);
  h.oem_revision = 1;
  std::memcpy(h.creator_id, "VMMK", 4);
  h.creator_revision = 1;
  return h;
}

// Sets the length (default: up to the end of `out`) and checksum of the
// table at out[start..].
void Seal(Bytes& out, size_t start, size_t length_or_zero = 0) {
  const uint32_t length = static_cast<uint32_t>(
      length_or_zero != 0 ? length_or_zero : out.size() - start);
  std::memcpy(&out[start + offsetof(AcpiHeader, length)], &length, 4);
  out[start + offsetof(AcpiHeader, checksum)] = 0;
  out[start + offsetof(AcpiHeader, checksum)] =
      static_cast<uint8_t>(-AcpiChecksum(&out[start], length));
}

void AlignTo(Bytes& out, size_t alignment) {
  while (out.size() % alignment != 0) out.push_back(0);
}

AcpiGas IoGas(uint16_t port, uint8_t bits, uint8_t access_size) {
  return AcpiGas{1, bits, 0, access_size, port};
}

// ---- AML (ACPI 6.4 chapter 20) ----------------------------------------------
constexpr uint8_t kZeroOp = 0x00, kOneOp = 0x01, kNameOp = 0x08,
                  kBytePrefix = 0x0a, kWordPrefix = 0x0b, kDWordPrefix = 0x0c,
                  kQWordPrefix = 0x0e, kScopeOp = 0x10, kBufferOp = 0x11,
                  kPackageOp = 0x12, kExtOpPrefix = 0x5b, kDeviceOp = 0x82;

Bytes AmlInteger(uint64_t v) {
  Bytes b;
  if (v == 0) {
    b.push_back(kZeroOp);
  } else if (v == 1) {
    b.push_back(kOneOp);
  } else if (v <= 0xff) {
    b.push_back(kBytePrefix);
    Le(b, v, 1);
  } else if (v <= 0xffff) {
    b.push_back(kWordPrefix);
    Le(b, v, 2);
  } else if (v <= 0xffffffff) {
    b.push_back(kDWordPrefix);
    Le(b, v, 4);
  } else {
    b.push_back(kQWordPrefix);
    Le(b, v, 8);
  }
  return b;
}

// A NameSeg of exactly four characters ("_HID", "PCI0"), or "\\" + one.
Bytes AmlName(const std::string& name) {
  return Bytes(name.begin(), name.end());
}

// Op PkgLength contents.
Bytes AmlPackaged(std::initializer_list<uint8_t> op, const Bytes& contents) {
  Bytes b(op);
  Append(b, AmlPkgLength(contents.size()));
  Append(b, contents);
  return b;
}

Bytes AmlNameObject(const std::string& name, const Bytes& value) {
  Bytes b = {kNameOp};
  Append(b, AmlName(name));
  Append(b, value);
  return b;
}

Bytes AmlPackage(const std::vector<Bytes>& elements) {
  Bytes contents = {static_cast<uint8_t>(elements.size())};
  for (const Bytes& e : elements) Append(contents, e);
  return AmlPackaged({kPackageOp}, contents);
}

Bytes AmlBuffer(const Bytes& data) {
  Bytes contents = AmlInteger(data.size());
  Append(contents, data);
  return AmlPackaged({kBufferOp}, contents);
}

// EISA id ("PNP0A03") as its 32-bit compressed form.
Bytes AmlEisaId(const char id[8]) {
  const uint16_t mfg = static_cast<uint16_t>(((id[0] - 0x40) & 0x1f) << 10 |
                                             ((id[1] - 0x40) & 0x1f) << 5 |
                                             ((id[2] - 0x40) & 0x1f));
  auto hex = [](char c) {
    return static_cast<uint8_t>(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
  };
  const uint8_t b2 = static_cast<uint8_t>(hex(id[3]) << 4 | hex(id[4]));
  const uint8_t b3 = static_cast<uint8_t>(hex(id[5]) << 4 | hex(id[6]));
  const uint32_t v =
      static_cast<uint32_t>(mfg >> 8) | static_cast<uint32_t>(mfg & 0xff) << 8 |
      static_cast<uint32_t>(b2) << 16 | static_cast<uint32_t>(b3) << 24;
  Bytes b = {kDWordPrefix};
  Le(b, v, 4);
  return b;
}

// Resource descriptors (ACPI 6.4 §6.4). Address space descriptors are
// producers (bridge windows) with fixed minimum and maximum.
constexpr uint8_t kResourceMemory = 0, kResourceIo = 1, kResourceBus = 2;
constexpr uint8_t kWindowFlags =
    0x0c;  // _MAF | _MIF, positive decode, producer

void WordAddress(Bytes& r, uint8_t type, uint8_t type_flags, uint16_t min,
                 uint16_t max) {
  r.push_back(0x88);
  Le(r, 13, 2);
  r.push_back(type);
  r.push_back(kWindowFlags);
  r.push_back(type_flags);
  Le(r, 0, 2);  // granularity
  Le(r, min, 2);
  Le(r, max, 2);
  Le(r, 0, 2);  // translation
  Le(r, static_cast<uint32_t>(max) - min + 1, 2);
}
void DWordMemory(Bytes& r, uint32_t min, uint32_t max) {
  r.push_back(0x87);
  Le(r, 23, 2);
  r.push_back(kResourceMemory);
  r.push_back(kWindowFlags);
  r.push_back(0x01);  // read-write, non-cacheable
  Le(r, 0, 4);
  Le(r, min, 4);
  Le(r, max, 4);
  Le(r, 0, 4);
  Le(r, uint64_t{max} - min + 1, 4);
}
void QWordMemory(Bytes& r, uint64_t min, uint64_t max) {
  r.push_back(0x8a);
  Le(r, 43, 2);
  r.push_back(kResourceMemory);
  r.push_back(kWindowFlags);
  r.push_back(0x01);
  Le(r, 0, 8);
  Le(r, min, 8);
  Le(r, max, 8);
  Le(r, 0, 8);
  Le(r, max - min + 1, 8);
}
void IoPorts(Bytes& r, uint16_t base, uint8_t length) {
  r.push_back(0x47);
  r.push_back(0x01);  // 16-bit decode
  Le(r, base, 2);
  Le(r, base, 2);
  r.push_back(1);
  r.push_back(length);
}

Bytes HostBridgeResources(const AcpiOptions& o) {
  Bytes r;
  WordAddress(r, kResourceBus, 0, 0, 0);
  IoPorts(r, 0xcf8, 8);
  WordAddress(r, kResourceIo, 0x03, 0x0000, 0x0cf7);
  WordAddress(r, kResourceIo, 0x03, 0x0d00, 0xffff);
  if (o.mmio32_size != 0) {
    DWordMemory(r, static_cast<uint32_t>(o.mmio32_base),
                static_cast<uint32_t>(o.mmio32_base + o.mmio32_size - 1));
  }
  if (o.mmio64_size != 0) {
    QWordMemory(r, o.mmio64_base, o.mmio64_base + o.mmio64_size - 1);
  }
  r.push_back(0x79);  // end tag
  r.push_back(0x00);  // checksum: 0 means "treat as correct"
  return r;
}

}  // namespace

uint8_t AcpiChecksum(const uint8_t* bytes, size_t size) {
  uint8_t sum = 0;
  for (size_t i = 0; i < size; ++i) sum = static_cast<uint8_t>(sum + bytes[i]);
  return sum;
}

std::vector<uint8_t> AmlPkgLength(size_t content_size) {
  // The length counts the PkgLength bytes themselves. One byte holds 6 bits;
  // with N following bytes the lead byte holds 4 bits and N in bits 7:6.
  if (content_size + 1 < 0x40) {
    return {static_cast<uint8_t>(content_size + 1)};
  }
  for (size_t extra = 1; extra <= 3; ++extra) {
    const size_t total = content_size + 1 + extra;
    if (total < (size_t{1} << (4 + 8 * extra))) {
      Bytes b = {static_cast<uint8_t>(extra << 6 | (total & 0x0f))};
      for (size_t i = 0; i < extra; ++i) {
        b.push_back(static_cast<uint8_t>(total >> (4 + 8 * i)));
      }
      return b;
    }
  }
  return {};  // beyond 2^28: never produced here
}

std::vector<uint8_t> BuildDsdt(const AcpiOptions& o) {
  std::vector<Bytes> routes;
  for (uint8_t slot : o.pci_slots) {
    routes.push_back(AmlPackage({AmlInteger(uint64_t{slot} << 16 | 0xffff),
                                 AmlInteger(0),  // INTA#
                                 AmlInteger(0),  // no link device: a GSI
                                 AmlInteger(PciSlotGsi(slot))}));
  }
  Bytes pci0;
  Append(pci0, AmlName("PCI0"));
  Append(pci0, AmlNameObject("_HID", AmlEisaId("PNP0A03")));
  Append(pci0, AmlNameObject("_ADR", AmlInteger(0)));
  Append(pci0, AmlNameObject("_UID", AmlInteger(0)));
  Append(pci0, AmlNameObject("_BBN", AmlInteger(0)));
  Append(pci0, AmlNameObject("_CRS", AmlBuffer(HostBridgeResources(o))));
  Append(pci0, AmlNameObject("_PRT", AmlPackage(routes)));
  Bytes sb = AmlName("\\_SB_");
  Append(sb, AmlPackaged({kExtOpPrefix, kDeviceOp}, pci0));

  Bytes out;
  Append(out, Header("DSDT", 0, 2));
  Append(out, AmlPackaged({kScopeOp}, sb));
  Append(out, AmlNameObject(
                  "\\_S5_",
                  AmlPackage({AmlInteger(kAcpiS5Type), AmlInteger(kAcpiS5Type),
                              AmlInteger(0), AmlInteger(0)})));
  Seal(out, 0);
  return out;
}

std::vector<uint8_t> BuildAcpiTables(const AcpiOptions& o) {
  Bytes out(sizeof(AcpiRsdp), 0);  // filled in last
  AlignTo(out, 16);

  // XSDT with two entries, patched below.
  const size_t xsdt = out.size();
  Append(out, Header("XSDT", 0, 1));
  const size_t xsdt_entries = out.size();
  Le(out, 0, 8);
  Le(out, 0, 8);
  const size_t xsdt_length = out.size() - xsdt;
  AlignTo(out, 16);

  const size_t dsdt = out.size();
  Append(out, BuildDsdt(o));
  AlignTo(out, 64);
  const size_t facs = out.size();
  AcpiFacs f = {};
  std::memcpy(f.signature, "FACS", 4);
  f.length = sizeof(AcpiFacs);
  f.version = 2;
  Append(out, f);

  const size_t fadt = out.size();
  AcpiFadt t = {};
  t.header = Header("FACP", sizeof(AcpiFadt), 6);
  t.firmware_ctrl = static_cast<uint32_t>(o.base + facs);
  t.dsdt = static_cast<uint32_t>(o.base + dsdt);
  t.sci_int = kAcpiSciIrq;
  t.pm1a_evt_blk = kAcpiPmBase;
  t.pm1a_cnt_blk = kAcpiPm1aControl;
  t.pm_tmr_blk = kAcpiPmTimer;
  t.pm1_evt_len = kAcpiPm1EventLen;
  t.pm1_cnt_len = kAcpiPm1ControlLen;
  t.pm_tmr_len = kAcpiPmTimerLen;
  t.p_lvl2_lat = 101;   // > 100: C2 not supported
  t.p_lvl3_lat = 1001;  // > 1000: C3 not supported
  t.iapc_boot_arch = kIapcVgaNotPresent;
  t.flags = kFadtWbinvd | kFadtProcC1 | kFadtPwrButton | kFadtSlpButton |
            kFadtTmrValExt | kFadtResetRegSup;
  t.reset_reg = IoGas(0xcf9, 8, 1);
  t.reset_value = 0x06;
  t.fadt_minor_version = 4;
  t.x_firmware_ctrl = 0;  // the 32-bit pointer is used (both set is an error)
  t.x_dsdt = o.base + dsdt;
  t.x_pm1a_evt_blk = IoGas(kAcpiPmBase, 8 * kAcpiPm1EventLen, 0);
  t.x_pm1a_cnt_blk = IoGas(kAcpiPm1aControl, 8 * kAcpiPm1ControlLen, 0);
  t.x_pm_tmr_blk = IoGas(kAcpiPmTimer, 8 * kAcpiPmTimerLen, 0);
  std::memcpy(&t.hypervisor_vendor_id, "VMMKIT\0\0", 8);
  Append(out, t);
  Seal(out, fadt);
  AlignTo(out, 16);

  const size_t madt = out.size();
  Append(out, Header("APIC", 0, 5));
  Le(out, kLapicAddr, 4);
  Le(out, 1, 4);  // PCAT_COMPAT: dual 8259s present
  for (int cpu = 0; cpu < o.num_cpus; ++cpu) {
    Append(out, AcpiMadtLapic{0, 8, static_cast<uint8_t>(cpu),
                              static_cast<uint8_t>(cpu), 1});
  }
  Append(out, AcpiMadtIoapic{1, 12, static_cast<uint8_t>(o.num_cpus), 0,
                             kIoapicAddr, 0});
  Append(out, AcpiMadtOverride{2, 10, 0, kAcpiSciIrq, kAcpiSciIrq,
                               0x1 | 0x3 << 2});    // level, active high
  Append(out, AcpiMadtLapicNmi{4, 6, 0xff, 0, 1});  // conforming flags
  Seal(out, madt);

  const uint64_t fadt_addr = o.base + fadt, madt_addr = o.base + madt;
  std::memcpy(&out[xsdt_entries], &fadt_addr, 8);
  std::memcpy(&out[xsdt_entries + 8], &madt_addr, 8);
  Seal(out, xsdt, xsdt_length);

  AcpiRsdp r = {};
  std::memcpy(r.signature, "RSD PTR ", 8);
  std::memcpy(r.oem_id, "VMMKIT", 6);
  r.revision = 2;
  r.length = sizeof(AcpiRsdp);
  r.xsdt_address = o.base + xsdt;
  r.checksum = static_cast<uint8_t>(
      -AcpiChecksum(reinterpret_cast<const uint8_t*>(&r), 20));
  r.extended_checksum = static_cast<uint8_t>(
      -AcpiChecksum(reinterpret_cast<const uint8_t*>(&r), sizeof(r)));
  std::memcpy(out.data(), &r, sizeof(r));
  return out;
}

}  // namespace vmmkit::vmm
