// tests/vmm_guest/scenarios.h: what the test guest does with the devices it
// finds (devices.cc, hostile.cc, bench.cc) and the helpers they share.
//
//   Options o = ...;                  // from the command line (main.cc)
//   DmaArena dma(4 << 20, 12 << 20);
//   int failures = RunDeviceChecks(o, dma);
//
// Every scenario prints "VMMKIT ..." lines on the serial port and returns
// the number of failed checks. Thread-compatibility: BSP only.
#ifndef VMMKIT_TESTS_VMM_GUEST_SCENARIOS_H_
#define VMMKIT_TESTS_VMM_GUEST_SCENARIOS_H_

#include <cstdint>

#include "tests/virtio_pci/driver.h"
#include "tests/vmm_guest/platform.h"

namespace vmmkit::tests::vmm_guest {

struct Options {
  bool legacy = false;  // force_legacy: legacy probe first
  bool msix = true;
  uint16_t qsize = 0;     // modern: lower queues to this size
  char devices[64] = {};  // "blk,rng"; empty: every device found
  const char* cmdline = nullptr;
};

// The devices whose enumeration index % ncpus == cpu, with their interrupts
// sent to LAPIC `lapic_id` (the vCPU running this).
int RunDeviceChecks(const Options& o, DmaArena& dma, int cpu = 0, int ncpus = 1,
                    uint32_t lapic_id = 0);
int RunHostile(const Options& o, DmaArena& dma);
int RunBench(const Options& o, DmaArena& dma);

// Command line helpers (main.cc).
bool CmdlineGet(const char* cmdline, const char* key, char* out, int size);
uint64_t CmdlineNumber(const char* cmdline, const char* key, uint64_t dflt);
bool ListHas(const char* list, const char* word);
const char* TypeName(uint16_t virtio_type);

// Probes the device `d` found (FindDevice) as Linux virtio_pci would in the
// mode `o` asks, falling back to the other interface where Linux does
// (modern probe: no modern capabilities -> legacy; force_legacy: a modern-only
// device -> modern). Routes the INTx GSI from the Interrupt Line register to
// its IOAPIC vector first. Prints the "VMMKIT device=..." line on success.
virtio_pci::DriverError ProbeLikeLinux(virtio_pci::VirtioPciDriver& d,
                                       GuestPlatform& p, const Options& o,
                                       uint64_t features, uint16_t num_queues);
// "00:01.0"-style location for reports.
void PrintLocation(const virtio_pci::VirtioPciDriver& d);
// One request: post `count` buffers on `queue`, kick, wait for its used
// entry. kOk and *length on success.
virtio_pci::DriverError Roundtrip(virtio_pci::VirtioPciDriver& d,
                                  uint16_t queue,
                                  const virtio_pci::VirtioPciDriver::Buffer* b,
                                  int count, uint32_t* length);

}  // namespace vmmkit::tests::vmm_guest

#endif  // VMMKIT_TESTS_VMM_GUEST_SCENARIOS_H_
