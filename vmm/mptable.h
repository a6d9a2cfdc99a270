// vmm/mptable.h: an Intel MultiProcessor Specification 1.4 table, so that a
// guest without ACPI (Linux here) finds its processors, the IOAPIC and how
// ISA and PCI interrupts reach it.
//
//   std::vector<uint8_t> t = BuildMpTable({.num_cpus = 2,
//                                          .pci_slots = {1, 2}});
//   VMMKIT_RETURN_IF_ERROR(memory.Write(kMpTableAddr, t));
//
// Layout (MP spec 1.4 chapter 4), all little-endian, at `base`:
//   floating pointer (16 bytes, "_MP_", 16-byte aligned, in the BIOS area
//   0xF0000..0xFFFFF that Linux scans), then the configuration table
//   ("PCMP" header, 44 bytes) with its entries:
//   - one processor entry per vCPU (LAPIC id = vCPU index, 0 is the BSP),
//   - buses: 0 = PCI, 1 = ISA,
//   - the IOAPIC (id = num_cpus, version 0x11, at 0xFEC00000, 24 pins),
//   - I/O interrupt entries: ISA IRQs 0..15 except 2 to IOAPIC pins of the
//     same number (edge, active high, as KVM's default routing has them),
//     and for each PCI slot its INTA# (source irq = slot << 2) to
//     GSI 16 + slot % 8 (level, active low),
//   - local interrupt entries: ExtINT on LINT0, NMI on LINT1 of every LAPIC.
// Both structures carry a checksum byte that makes their bytes sum to 0.
//
// Thread-compatible: plain functions.
#ifndef VMMKIT_VMM_MPTABLE_H_
#define VMMKIT_VMM_MPTABLE_H_

#include <cstddef>
#include <cstdint>
#include <vector>

namespace vmmkit::vmm {

inline constexpr uint32_t kIoapicAddr = 0xfec00000;
inline constexpr uint32_t kLapicAddr = 0xfee00000;
inline constexpr uint32_t kIoapicPins = 24;
inline constexpr uint32_t kPciIntxGsiBase = 16;

// The IOAPIC input a PCI slot's INTA# is wired to.
inline uint32_t PciSlotGsi(uint8_t slot) {
  return kPciIntxGsiBase + (slot % 8);
}

#pragma pack(push, 1)
struct MpFloatingPointer {
  char signature[4];  // "_MP_"
  uint32_t config_table;
  uint8_t length;    // in 16-byte units: 1
  uint8_t spec_rev;  // 4 (version 1.4)
  uint8_t checksum;
  uint8_t feature1;  // 0: a configuration table is present
  uint8_t feature2;  // bit 7 IMCR present: 0 (virtual wire mode)
  uint8_t feature3_5[3];
};
struct MpConfigHeader {
  char signature[4];  // "PCMP"
  uint16_t base_table_length;
  uint8_t spec_rev;
  uint8_t checksum;
  char oem_id[8];
  char product_id[12];
  uint32_t oem_table_pointer;
  uint16_t oem_table_size;
  uint16_t entry_count;
  uint32_t lapic_address;
  uint16_t extended_table_length;
  uint8_t extended_table_checksum;
  uint8_t reserved;
};
struct MpProcessorEntry {
  uint8_t type;  // 0
  uint8_t lapic_id;
  uint8_t lapic_version;
  uint8_t cpu_flags;  // bit 0 enabled, bit 1 bootstrap processor
  uint32_t cpu_signature;
  uint32_t feature_flags;
  uint32_t reserved[2];
};
struct MpBusEntry {
  uint8_t type;  // 1
  uint8_t bus_id;
  char bus_type[6];  // "PCI   ", "ISA   "
};
struct MpIoapicEntry {
  uint8_t type;  // 2
  uint8_t ioapic_id;
  uint8_t ioapic_version;
  uint8_t flags;  // bit 0 enabled
  uint32_t address;
};
struct MpInterruptEntry {  // type 3 (I/O) and 4 (local)
  uint8_t type;
  uint8_t interrupt_type;  // 0 INT, 1 NMI, 2 SMI, 3 ExtINT
  uint16_t flags;          // polarity bits 1:0, trigger mode bits 3:2
  uint8_t source_bus_id;
  uint8_t source_bus_irq;
  uint8_t dest_apic_id;  // 0xff: all LAPICs (local entries)
  uint8_t dest_apic_intin;
};
#pragma pack(pop)
static_assert(sizeof(MpFloatingPointer) == 16);
static_assert(offsetof(MpFloatingPointer, config_table) == 4);
static_assert(offsetof(MpFloatingPointer, checksum) == 10);
static_assert(sizeof(MpConfigHeader) == 44);
static_assert(offsetof(MpConfigHeader, entry_count) == 34);
static_assert(offsetof(MpConfigHeader, lapic_address) == 36);
static_assert(sizeof(MpProcessorEntry) == 20);
static_assert(sizeof(MpBusEntry) == 8);
static_assert(sizeof(MpIoapicEntry) == 8);
static_assert(sizeof(MpInterruptEntry) == 8);

inline constexpr uint8_t kMpEntryProcessor = 0;
inline constexpr uint8_t kMpEntryBus = 1;
inline constexpr uint8_t kMpEntryIoapic = 2;
inline constexpr uint8_t kMpEntryIoInterrupt = 3;
inline constexpr uint8_t kMpEntryLocalInterrupt = 4;
inline constexpr uint8_t kMpBusPci = 0;
inline constexpr uint8_t kMpBusIsa = 1;
// flags: polarity 1 = active high, 3 = active low; trigger 1 = edge, 3 = level.
inline constexpr uint16_t kMpIrqEdgeHigh = 1 | (1 << 2);
inline constexpr uint16_t kMpIrqLevelLow = 3 | (3 << 2);

struct MpTableOptions {
  int num_cpus = 1;                // 1..254
  std::vector<uint8_t> pci_slots;  // device numbers on bus 0 with INTA#
  uint32_t base = 0xf0000;         // guest address of the floating pointer
};

// The floating pointer followed by the configuration table, for `base`.
std::vector<uint8_t> BuildMpTable(const MpTableOptions& options);

// Sum of the bytes (mod 256): 0 for a valid structure.
uint8_t MpChecksum(const uint8_t* bytes, size_t size);

}  // namespace vmmkit::vmm

#endif  // VMMKIT_VMM_MPTABLE_H_
