// tests/vmm_guest/runtime.h: the freestanding runtime of the x86-64 test
// guest: port and MMIO access, the serial console, exit, the IDT with the
// xAPIC and IOAPIC, bounded waits for interrupts, and rdtsc.
//
//   Printf("VMMKIT check=%s result=%s\n", "rng", "ok");
//   InterruptsInit();                 // IDT, LAPIC enabled, timer vector
//   IoapicRoute(gsi, IntxVector(gsi)); // level, active high, to LAPIC 0
//   WaitForInterrupt();               // sti; hlt with a 1 ms timer bound
//   Exit(0);                          // port 0x501
//
// Interrupt bookkeeping (counters per vector, INTx lines masked until their
// driver read the ISR) lives here; platform.h builds PlatformAccess on it.
// Thread-compatibility: the BSP runs everything; interrupt handlers only
// touch the counters, and the BSP takes interrupts only inside
// WaitForInterrupt (IF is clear everywhere else).
#ifndef VMMKIT_TESTS_VMM_GUEST_RUNTIME_H_
#define VMMKIT_TESTS_VMM_GUEST_RUNTIME_H_

#include <cstddef>
#include <cstdint>

namespace vmmkit::tests::vmm_guest {

// ---- Ports and MMIO (single instructions of the given width).
inline uint8_t Inb(uint16_t port) {
  uint8_t v;
  asm volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
  return v;
}
inline uint16_t Inw(uint16_t port) {
  uint16_t v;
  asm volatile("inw %1, %0" : "=a"(v) : "Nd"(port));
  return v;
}
inline uint32_t Inl(uint16_t port) {
  uint32_t v;
  asm volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
  return v;
}
inline void Outb(uint16_t port, uint8_t v) {
  asm volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}
inline void Outw(uint16_t port, uint16_t v) {
  asm volatile("outw %0, %1" : : "a"(v), "Nd"(port));
}
inline void Outl(uint16_t port, uint32_t v) {
  asm volatile("outl %0, %1" : : "a"(v), "Nd"(port));
}
uint64_t MmioRead(uint64_t address, int width);
// The boot page tables map the first 4 GiB only; 64-bit BARs may sit far
// above (vmmkit and QEMU's q35 put them at 512 GiB, as firmware does). Maps
// the 2 MiB page holding `address` (uncached) if it is not mapped yet, with
// tables from a small static pool; false when the pool is exhausted.
bool EnsureMapped(uint64_t address);
void MmioWrite(uint64_t address, uint64_t value, int width);
inline uint64_t Rdtsc() {
  uint32_t lo, hi;
  asm volatile("lfence; rdtsc" : "=a"(lo), "=d"(hi));
  return uint64_t{hi} << 32 | lo;
}
inline void Mfence() { asm volatile("mfence" ::: "memory"); }
inline void CpuRelax() { asm volatile("pause" ::: "memory"); }

// ---- Platform ports (vmm contract A).
constexpr uint16_t kSerialPort = 0x3f8;
constexpr uint16_t kExitPort = 0x501;
constexpr uint16_t kStopPort = 0x502;
[[noreturn]] void Exit(uint32_t code);
// Port 0x502: a graceful stop was requested.
inline bool StopRequested() { return (Inb(kStopPort) & 1) != 0; }

// ---- Serial console. %s %c %d %u %x %lx %lu %ld %llx %llu, widths like %02x
// and %08lx. Output is buffered per vCPU and written to 0x3f8 a line at a
// time (so vCPUs never interleave within a line); Exit flushes.
constexpr int kMaxCpus = 4;
constexpr uint64_t kStackSize = 131072;  // start.S's STACK_SIZE
// Which vCPU (stack) this code runs on: 0 for the BSP.
int CpuIndex();
void FlushSerial();
void Putc(char c);
void Puts(const char* s);
void Printf(const char* format, ...) __attribute__((format(printf, 1, 2)));

// ---- Interrupts.
constexpr uint64_t kLapicBase = 0xfee00000;
constexpr uint64_t kIoapicBase = 0xfec00000;
constexpr uint8_t kTimerVector = 0x20;
constexpr uint8_t kIntxVectorBase = 0x30;  // + GSI (0..23)
constexpr uint8_t kMsiVectorBase = 0x50;   // + 8 * device slot in the guest
constexpr uint8_t kSpuriousVector = 0xff;
constexpr int kIoapicPins = 24;
inline uint8_t IntxVector(int gsi) {
  return static_cast<uint8_t>(kIntxVectorBase + gsi);
}

// Fills and loads the IDT, masks the 8259s, enables the xAPIC (SVR), masks
// LINT0/LINT1, sets up the timer vector; interrupts stay off (IF = 0).
void InterruptsInit();
// On an AP, after the BSP's InterruptsInit: the same IDT, its own LAPIC.
void InterruptsInitAp();
uint32_t LapicId();
// IOAPIC redirection entry `gsi` -> `vector` on LAPIC `lapic_id`, fixed
// delivery, level triggered, active high, unmasked. False for gsi >= 24.
bool IoapicRoute(int gsi, uint8_t vector, uint32_t lapic_id = 0);
void IoapicSetMask(int gsi, bool masked);
uint32_t IoapicReadEntryLow(int gsi);

// sti; hlt; cli, woken by any interrupt or a one-shot LAPIC timer of about
// `timeout_us` microseconds (KVM's APIC timer counts nanoseconds). First
// unmasks INTx line `gsi` if its interrupt has been taken (IntxTake).
void WaitForInterrupt(uint32_t timeout_us = 1000, int gsi = -1);

// Interrupts counted per vector, not yet taken.
bool MsiTake(uint8_t vector);
uint32_t MsiPending(uint8_t vector);
// An INTx interrupt on `gsi` happened (its entry is masked until the next
// WaitForInterrupt/IntxTake, when the driver has read the ISR).
bool IntxTake(int gsi);
struct InterruptStats {
  uint64_t total = 0;
  uint64_t timer = 0;
  uint64_t intx = 0;
  uint64_t msi = 0;
  uint64_t spurious = 0;
  uint64_t unexpected = 0;
};
const InterruptStats& Interrupts();

// Configuration mechanism #1 is two accesses (address to 0xcf8, data at
// 0xcfc): with several vCPUs a pair must not interleave with another's.
// Taken at the 0xcf8 write, released after the data access (platform.h);
// the holder taking it again keeps it.
void PciConfigLock();
void PciConfigUnlock();

// Set by the AP entry (any LAPIC id but 0) when it runs.
extern volatile uint32_t g_aps_started;

// Wakes the other vCPUs the way firmware and Linux do (INIT, then two
// SIPIs to a real-mode trampoline at 0x10000, vmm contract: APs wait for
// INIT/SIPI) and waits up to ~2 s for `expected` of them to check in.
// Returns how many did.
uint32_t StartAps(uint32_t expected);

}  // namespace vmmkit::tests::vmm_guest

extern "C" {
void* memcpy(void* dst, const void* src, size_t n);
void* memset(void* dst, int c, size_t n);
void* memmove(void* dst, const void* src, size_t n);
int memcmp(const void* a, const void* b, size_t n);
size_t strlen(const char* s);
}

#endif  // VMMKIT_TESTS_VMM_GUEST_RUNTIME_H_
