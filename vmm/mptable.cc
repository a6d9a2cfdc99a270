// vmm/mptable.cc: see mptable.h.
#include "vmm/mptable.h"

#include <cstring>

namespace vmmkit::vmm {
namespace {

template <typename T>
void Append(std::vector<uint8_t>& out, const T& value) {
  const auto* p = reinterpret_cast<const uint8_t*>(&value);
  out.insert(out.end(), p, p + sizeof(T));
}

}  // namespace

uint8_t MpChecksum(const uint8_t* bytes, size_t size) {
  uint8_t sum = 0;
  for (size_t i = 0; i < size; ++i) sum = static_cast<uint8_t>(sum + bytes[i]);
  return sum;
}

std::vector<uint8_t> BuildMpTable(const MpTableOptions& options) {
  const uint8_t ioapic_id = static_cast<uint8_t>(options.num_cpus);
  std::vector<uint8_t> entries;
  uint16_t count = 0;
  for (int cpu = 0; cpu < options.num_cpus; ++cpu) {
    MpProcessorEntry p = {};
    p.type = kMpEntryProcessor;
    p.lapic_id = static_cast<uint8_t>(cpu);
    p.lapic_version = 0x14;
    p.cpu_flags = 1 | (cpu == 0 ? 2 : 0);
    p.cpu_signature = 0x600;  // family 6
    p.feature_flags = 0x201;  // FPU, APIC
    Append(entries, p);
    ++count;
  }
  MpBusEntry pci = {kMpEntryBus, kMpBusPci, {'P', 'C', 'I', ' ', ' ', ' '}};
  MpBusEntry isa = {kMpEntryBus, kMpBusIsa, {'I', 'S', 'A', ' ', ' ', ' '}};
  Append(entries, pci);
  Append(entries, isa);
  count += 2;
  MpIoapicEntry ioapic = {kMpEntryIoapic, ioapic_id, 0x11, 1, kIoapicAddr};
  Append(entries, ioapic);
  ++count;
  for (uint8_t irq = 0; irq < 16; ++irq) {
    if (irq == 2) continue;  // the PIC cascade
    MpInterruptEntry e = {
        kMpEntryIoInterrupt, 0, kMpIrqEdgeHigh, kMpBusIsa, irq, ioapic_id, irq};
    Append(entries, e);
    ++count;
  }
  for (uint8_t slot : options.pci_slots) {
    MpInterruptEntry e = {kMpEntryIoInterrupt,
                          0,
                          kMpIrqLevelLow,
                          kMpBusPci,
                          static_cast<uint8_t>(slot << 2),  // INTA#
                          ioapic_id,
                          static_cast<uint8_t>(PciSlotGsi(slot))};
    Append(entries, e);
    ++count;
  }
  MpInterruptEntry extint = {
      kMpEntryLocalInterrupt, 3, 0, kMpBusIsa, 0, 0xff, 0};
  MpInterruptEntry nmi = {kMpEntryLocalInterrupt, 1, 0, kMpBusIsa, 0, 0xff, 1};
  Append(entries, extint);
  Append(entries, nmi);
  count += 2;

  MpConfigHeader hdr = {};
  std::memcpy(hdr.signature, "PCMP", 4);
  hdr.base_table_length =
      static_cast<uint16_t>(sizeof(MpConfigHeader) + entries.size());
  hdr.spec_rev = 4;
  std::memcpy(hdr.oem_id, "VMMKIT  ", 8);
  std::memcpy(hdr.product_id, "VMMKIT-VM   ", 12);
  hdr.entry_count = count;
  hdr.lapic_address = kLapicAddr;
  std::vector<uint8_t> table;
  Append(table, hdr);
  table.insert(table.end(), entries.begin(), entries.end());
  table[offsetof(MpConfigHeader, checksum)] =
      static_cast<uint8_t>(-MpChecksum(table.data(), table.size()));

  MpFloatingPointer fp = {};
  std::memcpy(fp.signature, "_MP_", 4);
  fp.config_table = options.base + sizeof(MpFloatingPointer);
  fp.length = 1;
  fp.spec_rev = 4;
  fp.checksum = static_cast<uint8_t>(
      -MpChecksum(reinterpret_cast<const uint8_t*>(&fp), sizeof(fp)));
  std::vector<uint8_t> out;
  Append(out, fp);
  out.insert(out.end(), table.begin(), table.end());
  return out;
}

}  // namespace vmmkit::vmm
