// vmm/acpi.h: the ACPI tables a Linux guest needs to find its processors, the
// IOAPIC, the PCI root bus with its INTx routing, and how to power off, on a
// kernel without MP-table support (Debian's cloud kernel has
// CONFIG_X86_MPPARSE off, so with acpi=off it sees no LAPIC, no IOAPIC, no SMP
// and no MSI). ACPI 6.x, fixed-hardware model (not hardware-reduced, so that
// the legacy PIC and the ISA IRQ identity mappings stay, as on a PC):
//
//   std::vector<uint8_t> t = BuildAcpiTables({.num_cpus = 2,
//                                             .pci_slots = {1, 2}});
//   VMMKIT_RETURN_IF_ERROR(memory.Write(kAcpiTablesAddr, t));
//
// Layout at `base` (in the BIOS area 0xE0000..0xFFFFF that Linux scans for the
// RSDP on 16-byte boundaries), all little-endian, each table checksummed:
//   RSDP (revision 2, 36 bytes; no RSDT) -> XSDT -> FADT, MADT
//   FADT (revision 6, 276 bytes) -> FACS, DSDT; PM1a event block at
//     kAcpiPmBase (4 bytes), PM1a control at +4 (2 bytes), 32-bit PM timer at
//     +8; SCI on ISA IRQ 9; SMI_CMD 0 (always in ACPI mode); reset register
//     0xCF9 (I/O, byte) with value 0x06. Flags: WBINVD, PROC_C1, PWR_BUTTON
//     and SLP_BUTTON (none present), TMR_VAL_EXT, RESET_REG_SUP. IAPC boot
//     flags: no VGA; no i8042 (the VMM answers only its reset command).
//   MADT: LAPIC at 0xFEE00000, PCAT_COMPAT; one Processor Local APIC per vCPU
//     (UID = APIC id = index); the IOAPIC (id num_cpus, GSI base 0); an
//     interrupt source override for IRQ 9 (the SCI, level, active high);
//     LINT1 = NMI on every LAPIC. ISA IRQs 0..15 are identity-mapped, as in
//     vmm/mptable.h and KVM's routing.
//   DSDT: \_SB.PCI0 (PNP0A03, bus 0) with _CRS (bus 0, the 0xCF8 config ports,
//     I/O 0-0xCF7 and 0xD00-0xFFFF, the 32-bit and 64-bit memory windows
//     given), _PRT (INTA# of every listed slot to GSI PciSlotGsi(slot), which
//     Linux programs level/active-low), and \_S5 with SLP_TYP kAcpiS5Type.
//
// The guest powers off by writing SLP_EN | SLP_TYP=kAcpiS5Type to PM1a_CNT
// (vmm/platform.h handles the registers); it resets through 0xCF9.
//
// Thread-compatible: plain functions.
#ifndef VMMKIT_VMM_ACPI_H_
#define VMMKIT_VMM_ACPI_H_

#include <cstddef>
#include <cstdint>
#include <vector>

namespace vmmkit::vmm {

inline constexpr uint64_t kAcpiTablesAddr = 0xe0000;
inline constexpr uint64_t kAcpiTablesMax = 0x10000;  // up to the MP table
inline constexpr uint16_t kAcpiPmBase = 0x600;
inline constexpr uint16_t kAcpiPm1EventLen = 4;  // status, enable
inline constexpr uint16_t kAcpiPm1ControlLen = 2;
inline constexpr uint16_t kAcpiPmTimerLen = 4;
inline constexpr uint16_t kAcpiPm1aControl = kAcpiPmBase + 4;
inline constexpr uint16_t kAcpiPmTimer = kAcpiPmBase + 8;
inline constexpr uint8_t kAcpiSciIrq = 9;
inline constexpr uint8_t kAcpiS5Type = 5;
// PM1 control bits (ACPI 6.4 §4.8.3.2.1).
inline constexpr uint16_t kPm1SciEn = 1 << 0;
inline constexpr uint16_t kPm1SlpTypShift = 10;
inline constexpr uint16_t kPm1SlpTypMask = 7 << kPm1SlpTypShift;
inline constexpr uint16_t kPm1SlpEn = 1 << 13;
inline constexpr uint32_t kPmTimerHz = 3579545;

#pragma pack(push, 1)
struct AcpiRsdp {
  char signature[8];  // "RSD PTR "
  uint8_t checksum;   // of the first 20 bytes
  char oem_id[6];
  uint8_t revision;  // 2
  uint32_t rsdt_address;
  uint32_t length;  // 36
  uint64_t xsdt_address;
  uint8_t extended_checksum;  // of all 36 bytes
  uint8_t reserved[3];
};
struct AcpiHeader {
  char signature[4];
  uint32_t length;
  uint8_t revision;
  uint8_t checksum;
  char oem_id[6];
  char oem_table_id[8];
  uint32_t oem_revision;
  char creator_id[4];
  uint32_t creator_revision;
};
// Generic Address Structure.
struct AcpiGas {
  uint8_t space_id;  // 1: system I/O
  uint8_t bit_width;
  uint8_t bit_offset;
  uint8_t access_size;  // 1 byte, 2 word, 3 dword
  uint64_t address;
};
struct AcpiFadt {
  AcpiHeader header;  // "FACP", revision 6
  uint32_t firmware_ctrl;
  uint32_t dsdt;
  uint8_t reserved0;
  uint8_t preferred_pm_profile;
  uint16_t sci_int;
  uint32_t smi_cmd;
  uint8_t acpi_enable;
  uint8_t acpi_disable;
  uint8_t s4bios_req;
  uint8_t pstate_cnt;
  uint32_t pm1a_evt_blk;
  uint32_t pm1b_evt_blk;
  uint32_t pm1a_cnt_blk;
  uint32_t pm1b_cnt_blk;
  uint32_t pm2_cnt_blk;
  uint32_t pm_tmr_blk;
  uint32_t gpe0_blk;
  uint32_t gpe1_blk;
  uint8_t pm1_evt_len;
  uint8_t pm1_cnt_len;
  uint8_t pm2_cnt_len;
  uint8_t pm_tmr_len;
  uint8_t gpe0_blk_len;
  uint8_t gpe1_blk_len;
  uint8_t gpe1_base;
  uint8_t cst_cnt;
  uint16_t p_lvl2_lat;
  uint16_t p_lvl3_lat;
  uint16_t flush_size;
  uint16_t flush_stride;
  uint8_t duty_offset;
  uint8_t duty_width;
  uint8_t day_alrm;
  uint8_t mon_alrm;
  uint8_t century;
  uint16_t iapc_boot_arch;
  uint8_t reserved1;
  uint32_t flags;
  AcpiGas reset_reg;
  uint8_t reset_value;
  uint16_t arm_boot_arch;
  uint8_t fadt_minor_version;
  uint64_t x_firmware_ctrl;
  uint64_t x_dsdt;
  AcpiGas x_pm1a_evt_blk;
  AcpiGas x_pm1b_evt_blk;
  AcpiGas x_pm1a_cnt_blk;
  AcpiGas x_pm1b_cnt_blk;
  AcpiGas x_pm2_cnt_blk;
  AcpiGas x_pm_tmr_blk;
  AcpiGas x_gpe0_blk;
  AcpiGas x_gpe1_blk;
  AcpiGas sleep_control_reg;
  AcpiGas sleep_status_reg;
  uint64_t hypervisor_vendor_id;
};
struct AcpiFacs {
  char signature[4];  // "FACS"
  uint32_t length;    // 64
  uint32_t hardware_signature;
  uint32_t firmware_waking_vector;
  uint32_t global_lock;
  uint32_t flags;
  uint64_t x_firmware_waking_vector;
  uint8_t version;  // 2
  uint8_t reserved0[3];
  uint32_t ospm_flags;
  uint8_t reserved1[24];
};
struct AcpiMadtLapic {  // type 0
  uint8_t type;
  uint8_t length;  // 8
  uint8_t processor_uid;
  uint8_t apic_id;
  uint32_t flags;  // bit 0 enabled
};
struct AcpiMadtIoapic {  // type 1
  uint8_t type;
  uint8_t length;  // 12
  uint8_t ioapic_id;
  uint8_t reserved;
  uint32_t address;
  uint32_t gsi_base;
};
struct AcpiMadtOverride {  // type 2
  uint8_t type;
  uint8_t length;  // 10
  uint8_t bus;     // 0: ISA
  uint8_t source;
  uint32_t gsi;
  uint16_t flags;  // polarity bits 1:0, trigger bits 3:2 (as the MP table)
};
struct AcpiMadtLapicNmi {  // type 4
  uint8_t type;
  uint8_t length;         // 6
  uint8_t processor_uid;  // 0xff: all
  uint16_t flags;
  uint8_t lint;
};
#pragma pack(pop)
static_assert(sizeof(AcpiRsdp) == 36);
static_assert(offsetof(AcpiRsdp, xsdt_address) == 24);
static_assert(sizeof(AcpiHeader) == 36);
static_assert(sizeof(AcpiGas) == 12);
static_assert(offsetof(AcpiFadt, sci_int) == 46);
static_assert(offsetof(AcpiFadt, pm1a_evt_blk) == 56);
static_assert(offsetof(AcpiFadt, pm_tmr_blk) == 76);
static_assert(offsetof(AcpiFadt, pm1_evt_len) == 88);
static_assert(offsetof(AcpiFadt, iapc_boot_arch) == 109);
static_assert(offsetof(AcpiFadt, flags) == 112);
static_assert(offsetof(AcpiFadt, reset_reg) == 116);
static_assert(offsetof(AcpiFadt, reset_value) == 128);
static_assert(offsetof(AcpiFadt, fadt_minor_version) == 131);
static_assert(offsetof(AcpiFadt, x_dsdt) == 140);
static_assert(offsetof(AcpiFadt, x_pm1a_evt_blk) == 148);
static_assert(offsetof(AcpiFadt, x_pm_tmr_blk) == 208);
static_assert(offsetof(AcpiFadt, sleep_control_reg) == 244);
static_assert(offsetof(AcpiFadt, hypervisor_vendor_id) == 268);
static_assert(sizeof(AcpiFadt) == 276);
static_assert(sizeof(AcpiFacs) == 64);
static_assert(sizeof(AcpiMadtLapic) == 8);
static_assert(sizeof(AcpiMadtIoapic) == 12);
static_assert(sizeof(AcpiMadtOverride) == 10);
static_assert(sizeof(AcpiMadtLapicNmi) == 6);

// FADT flags and IAPC boot architecture flags used (ACPI 6.4 §5.2.9).
inline constexpr uint32_t kFadtWbinvd = 1 << 0;
inline constexpr uint32_t kFadtProcC1 = 1 << 2;
inline constexpr uint32_t kFadtPwrButton = 1 << 4;  // 1: no fixed button
inline constexpr uint32_t kFadtSlpButton = 1 << 5;
inline constexpr uint32_t kFadtTmrValExt = 1 << 8;
inline constexpr uint32_t kFadtResetRegSup = 1 << 10;
inline constexpr uint16_t kIapcVgaNotPresent = 1 << 2;

struct AcpiOptions {
  int num_cpus = 1;                // 1..254
  std::vector<uint8_t> pci_slots;  // device numbers on bus 0 with INTA#
  uint64_t base = kAcpiTablesAddr;
  // PCI memory windows for the host bridge's _CRS; size 0: none.
  uint64_t mmio32_base = 0, mmio32_size = 0;
  uint64_t mmio64_base = 0, mmio64_size = 0;
};

// All tables, RSDP first, for `base` (at most kAcpiTablesMax bytes).
std::vector<uint8_t> BuildAcpiTables(const AcpiOptions& options);

// The DSDT alone (header and AML), as BuildAcpiTables puts it.
std::vector<uint8_t> BuildDsdt(const AcpiOptions& options);

// Sum of the bytes (mod 256): 0 for a valid table.
uint8_t AcpiChecksum(const uint8_t* bytes, size_t size);

// AML PkgLength encoding of a package whose contents (after the PkgLength)
// are `content_size` bytes (ACPI 6.4 §20.2.4). Exposed for tests.
std::vector<uint8_t> AmlPkgLength(size_t content_size);

}  // namespace vmmkit::vmm

#endif  // VMMKIT_VMM_ACPI_H_
