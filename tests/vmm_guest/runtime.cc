#include "tests/vmm_guest/runtime.h"

#include <stdarg.h>

namespace vmmkit::tests::vmm_guest {

volatile uint32_t g_aps_started = 0;

namespace {

// LAPIC registers (xAPIC MMIO offsets).
constexpr uint32_t kLapicId = 0x20;
constexpr uint32_t kLapicTpr = 0x80;
constexpr uint32_t kLapicEoi = 0xb0;
constexpr uint32_t kLapicSvr = 0xf0;
constexpr uint32_t kLapicLvtTimer = 0x320;
constexpr uint32_t kLapicLvtLint0 = 0x350;
constexpr uint32_t kLapicLvtLint1 = 0x360;
constexpr uint32_t kLapicTimerInitial = 0x380;
constexpr uint32_t kLapicTimerDivide = 0x3e0;
constexpr uint32_t kLvtMasked = 1u << 16;

struct IdtEntry {
  uint16_t offset_low;
  uint16_t selector;
  uint8_t ist;
  uint8_t type_attr;
  uint16_t offset_mid;
  uint32_t offset_high;
  uint32_t reserved;
};
static_assert(sizeof(IdtEntry) == 16);

struct __attribute__((packed)) IdtDescriptor {
  uint16_t limit;
  uint64_t base;
};
static_assert(sizeof(IdtDescriptor) == 10);

// A spinlock; taken with interrupts off only (IF is clear outside
// WaitForInterrupt's hlt), so a handler never spins on its own CPU's lock.
class SpinLock {
 public:
  void Lock() {
    while (__atomic_exchange_n(&held_, 1, __ATOMIC_ACQUIRE) != 0) CpuRelax();
  }
  void Unlock() { __atomic_store_n(&held_, 0, __ATOMIC_RELEASE); }

 private:
  volatile uint32_t held_ = 0;
};

SpinLock g_serial_lock;
SpinLock g_pci_lock;
volatile int g_pci_owner = -1;
SpinLock g_ioapic_lock;

// Serial output is collected per vCPU and written a line at a time (one
// `rep outsb`, which KVM hands to the VMM as one exit), so lines from two
// vCPUs never interleave.
constexpr int kLineMax = 256;
struct LineBuffer {
  char data[kLineMax];
  int length = 0;
};
LineBuffer g_lines[kMaxCpus];

void FlushLine(LineBuffer& b) {
  if (b.length == 0) return;
  g_serial_lock.Lock();
  const char* p = b.data;
  uint64_t n = static_cast<uint64_t>(b.length);
  asm volatile("rep outsb" : "+S"(p), "+c"(n) : "d"(kSerialPort) : "memory");
  g_serial_lock.Unlock();
  b.length = 0;
}

alignas(16) IdtEntry g_idt[256];
InterruptStats g_stats;
volatile uint32_t g_msi_pending[256];
volatile bool g_intx_pending[kIoapicPins];
bool g_intx_unmask[kIoapicPins];

uint32_t LapicRead(uint32_t reg) {
  return static_cast<uint32_t>(MmioRead(kLapicBase + reg, 4));
}
void LapicWrite(uint32_t reg, uint32_t value) {
  MmioWrite(kLapicBase + reg, value, 4);
}
void Eoi() { LapicWrite(kLapicEoi, 0); }

// IOREGSEL + IOWIN is a two-step access: callers hold g_ioapic_lock.
uint32_t IoapicRead(uint32_t reg) {
  MmioWrite(kIoapicBase, reg, 4);
  return static_cast<uint32_t>(MmioRead(kIoapicBase + 0x10, 4));
}
void IoapicWrite(uint32_t reg, uint32_t value) {
  MmioWrite(kIoapicBase, reg, 4);
  MmioWrite(kIoapicBase + 0x10, value, 4);
}

alignas(4096) uint64_t g_table_pool[16][512];
int g_tables_used = 0;

uint64_t ReadCr2() {
  uint64_t v;
  asm volatile("mov %%cr2, %0" : "=r"(v));
  return v;
}

[[noreturn]] void Fault(uint64_t vector, const uint64_t* frame) {
  // frame: error code, RIP, CS, RFLAGS, RSP, SS.
  Printf("VMMKIT fault vector=%lu error=0x%lx rip=0x%lx rsp=0x%lx cr2=0x%lx\n",
         vector, frame[0], frame[1], frame[4], ReadCr2());
  Exit(static_cast<uint32_t>(100 + vector));
}

void PutUnsigned(uint64_t v, unsigned base, int width, char pad) {
  char buf[24];
  int n = 0;
  do {
    const unsigned d = static_cast<unsigned>(v % base);
    buf[n++] = static_cast<char>(d < 10 ? '0' + d : 'a' + d - 10);
    v /= base;
  } while (v != 0 && n < 24);
  for (int i = n; i < width; ++i) Putc(pad);
  while (n > 0) Putc(buf[--n]);
}

}  // namespace

extern "C" const uint64_t isr_stub_table[256];

extern "C" void InterruptEntry(uint64_t vector, uint64_t* frame) {
  if (vector < 32) Fault(vector, frame);
  __atomic_fetch_add(&g_stats.total, 1, __ATOMIC_RELAXED);
  if (vector == kTimerVector) {
    __atomic_fetch_add(&g_stats.timer, 1, __ATOMIC_RELAXED);
    Eoi();
  } else if (vector >= kIntxVectorBase &&
             vector < uint64_t{kIntxVectorBase} + kIoapicPins) {
    // Level triggered: keep the line masked until the driver has read the
    // ISR (which deasserts it), else it fires again right after the EOI.
    const int gsi = static_cast<int>(vector - kIntxVectorBase);
    IoapicSetMask(gsi, true);
    g_intx_pending[gsi] = true;
    __atomic_fetch_add(&g_stats.intx, 1, __ATOMIC_RELAXED);
    Eoi();
  } else if (vector == kSpuriousVector) {
    // No EOI for the spurious vector.
    __atomic_fetch_add(&g_stats.spurious, 1, __ATOMIC_RELAXED);
  } else if (vector >= kMsiVectorBase) {
    __atomic_fetch_add(&g_msi_pending[vector], 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&g_stats.msi, 1, __ATOMIC_RELAXED);
    Eoi();
  } else {
    __atomic_fetch_add(&g_stats.unexpected, 1, __ATOMIC_RELAXED);
    Eoi();
  }
}

bool EnsureMapped(uint64_t address) {
  if (address < (uint64_t{4} << 30)) return true;
  if (address >> 48 != 0) return false;  // beyond 4-level paging
  constexpr uint64_t kPresent = 1, kWritable = 2, kPwt = 8, kPcd = 16,
                     kLarge = 0x80, kAddr = 0x000ffffffffff000ull;
  uint64_t cr3;
  asm volatile("mov %%cr3, %0" : "=r"(cr3));
  auto* table = reinterpret_cast<uint64_t*>(cr3 & kAddr);
  // PML4 -> PDPT -> PD: create what is missing.
  for (int shift = 39; shift > 21; shift -= 9) {
    uint64_t& e = table[(address >> shift) & 511];
    if ((e & kPresent) == 0) {
      if (g_tables_used >= 16) return false;
      uint64_t* t = g_table_pool[g_tables_used++];
      memset(t, 0, 4096);
      e = reinterpret_cast<uint64_t>(t) | kPresent | kWritable;
    } else if ((e & kLarge) != 0) {
      return true;  // already a large mapping
    }
    table = reinterpret_cast<uint64_t*>(e & kAddr);
  }
  uint64_t& pde = table[(address >> 21) & 511];
  if ((pde & kPresent) == 0) {
    pde = (address & ~uint64_t{0x1fffff}) | kPresent | kWritable | kLarge |
          kPwt | kPcd;
    asm volatile("invlpg (%0)" : : "r"(address) : "memory");
  }
  return true;
}

uint64_t MmioRead(uint64_t address, int width) {
  volatile void* p = reinterpret_cast<volatile void*>(address);
  switch (width) {
    case 1: {
      uint8_t v;
      asm volatile("movb (%1), %0" : "=q"(v) : "r"(p) : "memory");
      return v;
    }
    case 2: {
      uint16_t v;
      asm volatile("movw (%1), %0" : "=r"(v) : "r"(p) : "memory");
      return v;
    }
    case 4: {
      uint32_t v;
      asm volatile("movl (%1), %0" : "=r"(v) : "r"(p) : "memory");
      return v;
    }
    default: {
      uint64_t v;
      asm volatile("movq (%1), %0" : "=r"(v) : "r"(p) : "memory");
      return v;
    }
  }
}

void MmioWrite(uint64_t address, uint64_t value, int width) {
  volatile void* p = reinterpret_cast<volatile void*>(address);
  switch (width) {
    case 1:
      asm volatile("movb %0, (%1)"
                   :
                   : "q"(static_cast<uint8_t>(value)), "r"(p)
                   : "memory");
      break;
    case 2:
      asm volatile("movw %0, (%1)"
                   :
                   : "r"(static_cast<uint16_t>(value)), "r"(p)
                   : "memory");
      break;
    case 4:
      asm volatile("movl %0, (%1)"
                   :
                   : "r"(static_cast<uint32_t>(value)), "r"(p)
                   : "memory");
      break;
    default:
      asm volatile("movq %0, (%1)" : : "r"(value), "r"(p) : "memory");
      break;
  }
}

void Exit(uint32_t code) {
  FlushSerial();
  Outl(kExitPort, code);
  // Not reached under the vmmkit VMM or QEMU's isa-debug-exit.
  for (;;) asm volatile("cli; hlt");
}

extern "C" char stacks[];

int CpuIndex() {
  uint64_t sp;
  asm volatile("mov %%rsp, %0" : "=r"(sp));
  const uint64_t base = reinterpret_cast<uint64_t>(stacks);
  const uint64_t i = (sp - base) / kStackSize;
  return sp >= base && i < kMaxCpus ? static_cast<int>(i) : 0;
}

void Putc(char c) {
  LineBuffer& b = g_lines[CpuIndex()];
  b.data[b.length++] = c;
  if (c == '\n' || b.length == kLineMax) FlushLine(b);
}

void PciConfigLock() {
  const int me = CpuIndex();
  if (g_pci_owner == me) return;
  g_pci_lock.Lock();
  g_pci_owner = me;
}

void PciConfigUnlock() {
  if (g_pci_owner != CpuIndex()) return;
  g_pci_owner = -1;
  g_pci_lock.Unlock();
}

void FlushSerial() { FlushLine(g_lines[CpuIndex()]); }

void Puts(const char* s) {
  while (*s != 0) Putc(*s++);
}

void Printf(const char* f, ...) {
  va_list ap;
  va_start(ap, f);
  while (*f != 0) {
    if (*f != '%') {
      Putc(*f++);
      continue;
    }
    ++f;
    char pad = ' ';
    int width = 0;
    if (*f == '0') {
      pad = '0';
      ++f;
    }
    while (*f >= '0' && *f <= '9') width = width * 10 + (*f++ - '0');
    int longs = 0;
    while (*f == 'l') {
      ++longs;
      ++f;
    }
    const char conv = *f != 0 ? *f++ : 0;
    switch (conv) {
      case 's': {
        const char* s = va_arg(ap, const char*);
        Puts(s != nullptr ? s : "(null)");
        break;
      }
      case 'c':
        Putc(static_cast<char>(va_arg(ap, int)));
        break;
      case 'd': {
        const int64_t v = longs > 0 ? va_arg(ap, int64_t) : va_arg(ap, int);
        if (v < 0) Putc('-');
        PutUnsigned(v < 0 ? 0 - static_cast<uint64_t>(v) : v, 10, width, pad);
        break;
      }
      case 'u':
      case 'x': {
        const uint64_t v =
            longs > 0 ? va_arg(ap, uint64_t) : va_arg(ap, unsigned);
        PutUnsigned(v, conv == 'u' ? 10 : 16, width, pad);
        break;
      }
      case '%':
        Putc('%');
        break;
      default:
        Putc('?');
        break;
    }
  }
  va_end(ap);
}

void InterruptsInit() {
  uint16_t cs;
  asm volatile("mov %%cs, %0" : "=r"(cs));
  for (int v = 0; v < 256; ++v) {
    const uint64_t h = isr_stub_table[v];
    g_idt[v] = IdtEntry{static_cast<uint16_t>(h),
                        cs,
                        0,
                        0x8e,  // present, DPL 0, 64-bit interrupt gate
                        static_cast<uint16_t>(h >> 16),
                        static_cast<uint32_t>(h >> 32),
                        0};
  }
  // The 8259 PICs stay fully masked: interrupts come through the IOAPIC
  // and MSI only (firmware such as SeaBIOS leaves the PICs at vectors 8..15,
  // where an ExtINT would look like an exception).
  Outb(0x21, 0xff);
  Outb(0xa1, 0xff);
  InterruptsInitAp();
}

void InterruptsInitAp() {
  const IdtDescriptor d = {sizeof(g_idt) - 1,
                           reinterpret_cast<uint64_t>(&g_idt[0])};
  asm volatile("lidt %0" : : "m"(d));
  // IA32_APIC_BASE: global enable, xAPIC mode at the default base.
  uint32_t lo, hi;
  asm volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(0x1b));
  if ((lo & (1u << 11)) == 0) {
    lo |= 1u << 11;
    asm volatile("wrmsr" : : "a"(lo), "d"(hi), "c"(0x1b));
  }
  // Software enable first: while the APIC is software-disabled every LVT
  // entry stays masked (SDM vol. 3 §11.4.7.2), whatever is written.
  LapicWrite(kLapicSvr, 0x100 | kSpuriousVector);
  LapicWrite(kLapicTpr, 0);
  LapicWrite(kLapicLvtLint0, kLvtMasked);
  LapicWrite(kLapicLvtLint1, kLvtMasked);
  LapicWrite(kLapicTimerDivide, 0xb);        // divide by 1
  LapicWrite(kLapicLvtTimer, kTimerVector);  // one-shot
}

uint32_t LapicId() { return LapicRead(kLapicId) >> 24; }

bool IoapicRoute(int gsi, uint8_t vector, uint32_t lapic_id) {
  if (gsi < 0 || gsi >= kIoapicPins) return false;
  const uint32_t reg = 0x10 + 2 * static_cast<uint32_t>(gsi);
  g_intx_pending[gsi] = false;
  g_intx_unmask[gsi] = false;
  g_ioapic_lock.Lock();
  IoapicWrite(reg + 1, lapic_id << 24);  // physical destination
  IoapicWrite(reg, vector | 1u << 15);   // fixed, level, active high
  g_ioapic_lock.Unlock();
  return true;
}

void IoapicSetMask(int gsi, bool masked) {
  if (gsi < 0 || gsi >= kIoapicPins) return;
  const uint32_t reg = 0x10 + 2 * static_cast<uint32_t>(gsi);
  g_ioapic_lock.Lock();
  const uint32_t low = IoapicRead(reg);
  IoapicWrite(reg, masked ? low | kLvtMasked : low & ~kLvtMasked);
  g_ioapic_lock.Unlock();
}

uint32_t IoapicReadEntryLow(int gsi) {
  if (gsi < 0 || gsi >= kIoapicPins) return 0;
  g_ioapic_lock.Lock();
  const uint32_t v = IoapicRead(0x10 + 2 * static_cast<uint32_t>(gsi));
  g_ioapic_lock.Unlock();
  return v;
}

void WaitForInterrupt(uint32_t timeout_us, int gsi) {
  if (gsi >= 0 && gsi < kIoapicPins && g_intx_unmask[gsi]) {
    g_intx_unmask[gsi] = false;
    IoapicSetMask(gsi, false);
  }
  LapicWrite(kLapicTimerInitial, timeout_us * 1000u);
  // sti's one-instruction shadow makes "sti; hlt" atomic: an interrupt that
  // is already pending wakes the hlt instead of being lost before it.
  asm volatile("sti; hlt; cli" ::: "memory");
}

bool MsiTake(uint8_t vector) {
  if (g_msi_pending[vector] == 0) return false;
  __atomic_fetch_sub(&g_msi_pending[vector], 1, __ATOMIC_RELAXED);
  return true;
}

uint32_t MsiPending(uint8_t vector) { return g_msi_pending[vector]; }

bool IntxTake(int gsi) {
  if (gsi < 0 || gsi >= kIoapicPins) return false;
  if (g_intx_unmask[gsi]) {
    // The previous interrupt's ISR read is done: the line may come back.
    g_intx_unmask[gsi] = false;
    IoapicSetMask(gsi, false);
  }
  if (!g_intx_pending[gsi]) return false;
  g_intx_pending[gsi] = false;
  g_intx_unmask[gsi] = true;
  return true;
}

const InterruptStats& Interrupts() { return g_stats; }

extern "C" const uint8_t ap_tramp_start[], ap_tramp_end[], ap_tramp_cr3[];

uint32_t StartAps(uint32_t expected) {
  constexpr uint64_t kTrampoline = 0x10000;  // SIPI vector 0x10
  constexpr uint32_t kIcrLow = 0x300, kIcrHigh = 0x310;
  constexpr uint32_t kAllButSelf = 3u << 18, kLevelAssert = 1u << 14,
                     kInit = 5u << 8, kStartup = 6u << 8;
  memcpy(reinterpret_cast<void*>(kTrampoline), ap_tramp_start,
         static_cast<size_t>(ap_tramp_end - ap_tramp_start));
  uint64_t cr3;
  asm volatile("mov %%cr3, %0" : "=r"(cr3));
  const uint32_t cr3_low = static_cast<uint32_t>(cr3);
  memcpy(reinterpret_cast<void*>(kTrampoline + (ap_tramp_cr3 - ap_tramp_start)),
         &cr3_low, 4);
  LapicWrite(kIcrHigh, 0);
  LapicWrite(kIcrLow, kAllButSelf | kLevelAssert | kInit);
  WaitForInterrupt(10000);  // 10 ms
  for (int i = 0; i < 2; ++i) {
    LapicWrite(kIcrHigh, 0);
    LapicWrite(kIcrLow, kAllButSelf | kLevelAssert | kStartup |
                            static_cast<uint32_t>(kTrampoline >> 12));
    WaitForInterrupt(1000);
  }
  for (int i = 0; i < 2000 && g_aps_started < expected; ++i) {
    WaitForInterrupt(1000);
  }
  return g_aps_started;
}

}  // namespace vmmkit::tests::vmm_guest

// ---- What the compiler and the C++ ABI expect from a hosted environment.
extern "C" {

void* memcpy(void* dst, const void* src, size_t n) {
  void* d = dst;
  asm volatile("rep movsb" : "+D"(d), "+S"(src), "+c"(n) : : "memory");
  return dst;
}

void* memmove(void* dst, const void* src, size_t n) {
  auto* d = static_cast<unsigned char*>(dst);
  const auto* s = static_cast<const unsigned char*>(src);
  if (d <= s || d >= s + n) return memcpy(dst, src, n);
  // Overlapping, destination above: copy backwards.
  d += n - 1;
  s += n - 1;
  asm volatile("std; rep movsb; cld" : "+D"(d), "+S"(s), "+c"(n) : : "memory");
  return dst;
}

void* memset(void* dst, int c, size_t n) {
  void* d = dst;
  asm volatile("rep stosb" : "+D"(d), "+c"(n) : "a"(c) : "memory");
  return dst;
}

int memcmp(const void* a, const void* b, size_t n) {
  const auto* x = static_cast<const unsigned char*>(a);
  const auto* y = static_cast<const unsigned char*>(b);
  for (size_t i = 0; i < n; ++i) {
    if (x[i] != y[i]) return x[i] < y[i] ? -1 : 1;
  }
  return 0;
}

size_t strlen(const char* s) {
  size_t n = 0;
  while (s[n] != 0) ++n;
  return n;
}

void __cxa_pure_virtual() {
  vmmkit::tests::vmm_guest::Puts("VMMKIT fault pure virtual call\n");
  vmmkit::tests::vmm_guest::Exit(99);
}

int __cxa_atexit(void (*)(void*), void*, void*) { return 0; }
void* __dso_handle = nullptr;

}  // extern "C"

// Deleting destructors of classes with virtual destructors refer to these;
// nothing is ever allocated with new.
void operator delete(void*) noexcept {}
void operator delete(void*, size_t) noexcept {}
