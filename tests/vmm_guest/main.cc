// tests/vmm_guest/main.cc: the test guest's scenarios. The command line
// (vmm contract: a NUL-terminated string at RDI) chooses them:
//
//   mode=modern|legacy  driver: Linux virtio_pci's modern probe (falling back
//                       to legacy like Linux does for a legacy-only device),
//                       or force_legacy=1 (legacy probe first)
//   msix=1|0            MSI-X through the LAPIC, or INTx through the IOAPIC
//   devices=blk,rng,... which device types to drive (default: all found)
//   qsize=N             lower modern queues to N (0: keep the device's)
//   cpus=N              start the other N-1 vCPUs (INIT/SIPI) and report
//                       how many came up; smp=0 leaves them waiting
//   hostile=1           the hostile scenario instead of the device checks
//   bench=1             the exit / round-trip measurements instead
//   wait_stop=1         after the checks, wait for port 0x502 before exiting
//   uart_input=N        read N bytes from the 8250's receive side (polled,
//                       ~10 s at most) and print them
//   end=reset           end with the i8042 CPU reset (0xfe to port 0x64)
//                       instead of port 0x501
//   smp_io=1            with cpus=N: device i is driven by vCPU i % N, all
//                       at once, each taking its devices' interrupts
//
// Output: machine-readable lines on the serial port, e.g.
//   VMMKIT device=00:01.0 type=2 id=1af4:1001 rev=0 interface=legacy msix=1
//          features=0x... queues=1 qsize=128 irq=17
//   VMMKIT check=blk result=ok bytes=4096
//   VMMKIT done failures=0
// then the exit code on port 0x501: 0 when every check passed, else 1.
#include <cstddef>
#include <cstdint>

#include "tests/virtio_pci/driver.h"
#include "tests/vmm_guest/platform.h"
#include "tests/vmm_guest/runtime.h"
#include "tests/vmm_guest/scenarios.h"

namespace vmmkit::tests::vmm_guest {
namespace {

using virtio_pci::DriverError;
using virtio_pci::DriverMode;
using virtio_pci::VirtioPciDriver;

// Guest RAM handed to devices: 4 MiB .. 12 MiB (the image, its bss and the
// stacks stay below 4 MiB; VMs have at least 16 MiB).
constexpr uint64_t kDmaBase = 4ull << 20;
constexpr uint64_t kDmaLimit = 12ull << 20;
// The APs' own DMA areas with smp_io=1: 1 MiB each from 12 MiB.
constexpr uint64_t kApDmaBase = 12ull << 20;
constexpr uint64_t kApDmaSize = 1ull << 20;

// What the BSP hands the APs with smp_io=1 (set before INIT/SIPI).
struct ApJob {
  const Options* options = nullptr;
  uint32_t ncpus = 1;
  volatile uint32_t done = 0;
  volatile int failures = 0;
};
ApJob g_ap_job;

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n'; }

}  // namespace

// Copies the value of `key=` from the command line into out (NUL-terminated);
// false when absent.
bool CmdlineGet(const char* cmdline, const char* key, char* out, int size) {
  if (cmdline == nullptr || size <= 0) return false;
  const size_t klen = strlen(key);
  const char* p = cmdline;
  for (int guard = 0; *p != 0 && guard < 4096; ++guard) {
    while (IsSpace(*p)) ++p;
    const char* word = p;
    while (*p != 0 && !IsSpace(*p)) ++p;
    if (static_cast<size_t>(p - word) > klen && memcmp(word, key, klen) == 0 &&
        word[klen] == '=') {
      int n = 0;
      for (const char* v = word + klen + 1; v < p && n < size - 1; ++v) {
        out[n++] = *v;
      }
      out[n] = 0;
      return true;
    }
  }
  return false;
}

uint64_t CmdlineNumber(const char* cmdline, const char* key, uint64_t dflt) {
  char buf[24];
  if (!CmdlineGet(cmdline, key, buf, sizeof(buf))) return dflt;
  uint64_t v = 0;
  int base = 10;
  const char* s = buf;
  if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
    base = 16;
    s += 2;
  }
  for (; *s != 0; ++s) {
    int d;
    if (*s >= '0' && *s <= '9') {
      d = *s - '0';
    } else if (base == 16 && *s >= 'a' && *s <= 'f') {
      d = *s - 'a' + 10;
    } else if (base == 16 && *s >= 'A' && *s <= 'F') {
      d = *s - 'A' + 10;
    } else {
      return dflt;
    }
    v = v * base + d;
  }
  return v;
}

// "blk" in "blk,rng" (whole words).
bool ListHas(const char* list, const char* word) {
  const size_t n = strlen(word);
  const char* p = list;
  while (*p != 0) {
    const char* start = p;
    while (*p != 0 && *p != ',') ++p;
    if (static_cast<size_t>(p - start) == n && memcmp(start, word, n) == 0) {
      return true;
    }
    if (*p == ',') ++p;
  }
  return false;
}

const char* TypeName(uint16_t type) {
  switch (type) {
    case 1:
      return "net";
    case 2:
      return "blk";
    case 3:
      return "console";
    case 4:
      return "rng";
    default:
      return "other";
  }
}

// Polls the 8250 (LSR bit 0, data ready) for `count` bytes, ~10 s at most.
int ReadUart(uint32_t count) {
  constexpr uint16_t kLsr = kSerialPort + 5;
  char text[65];
  uint32_t n = 0;
  Printf("VMMKIT uart waiting for input bytes=%u\n", count);
  for (int polls = 0; polls < 10000 && n < count && n < 64; ++polls) {
    if ((Inb(kLsr) & 1) == 0) {
      WaitForInterrupt(1000);
      continue;
    }
    const char c = static_cast<char>(Inb(kSerialPort));
    text[n++] = c == '\n' || c == '"' || c == ' ' ? '_' : c;
  }
  text[n] = 0;
  Printf("VMMKIT uart input=\"%s\" bytes=%u result=%s\n", text, n,
         n == count ? "ok" : "fail");
  return n == count ? 0 : 1;
}

}  // namespace vmmkit::tests::vmm_guest

using namespace vmmkit::tests::vmm_guest;  // NOLINT: the entry points

extern "C" [[noreturn]] void GuestMain(const char* cmdline) {
  // Global constructors (none expected, but keep the ABI honest).
  extern void (*__init_array_start[])();
  extern void (*__init_array_end[])();
  for (void (**f)() = __init_array_start; f < __init_array_end; ++f) (*f)();

  Printf("VMMKIT guest start cmdline=\"%s\"\n",
         cmdline != nullptr ? cmdline : "");
  InterruptsInit();

  Options o;
  char mode[16] = "modern";
  CmdlineGet(cmdline, "mode", mode, sizeof(mode));
  o.legacy = memcmp(mode, "legacy", 7) == 0;
  o.msix = CmdlineNumber(cmdline, "msix", 1) != 0;
  o.qsize = static_cast<uint16_t>(CmdlineNumber(cmdline, "qsize", 0));
  o.devices[0] = 0;
  CmdlineGet(cmdline, "devices", o.devices, sizeof(o.devices));
  o.cmdline = cmdline;

  DmaArena dma(kDmaBase, kDmaLimit);
  int failures = 0;
  const uint32_t cpus =
      static_cast<uint32_t>(CmdlineNumber(cmdline, "cpus", 1));
  const bool bench = CmdlineNumber(cmdline, "bench", 0) != 0;
  const bool hostile = CmdlineNumber(cmdline, "hostile", 0) != 0;
  const bool smp_io = cpus > 1 && cpus <= kMaxCpus && !bench && !hostile &&
                      CmdlineNumber(cmdline, "smp_io", 0) != 0;
  if (smp_io) {
    g_ap_job.options = &o;
    g_ap_job.ncpus = cpus;
  }
  uint32_t aps = 0;
  if (cpus > 1) {
    // The APs wait for INIT/SIPI; each checks in from GuestApMain.
    aps = CmdlineNumber(cmdline, "smp", 1) != 0 ? StartAps(cpus - 1) : 0;
    Printf("VMMKIT smp expected=%u started=%u\n", cpus, aps + 1);
  }
  if (bench) {
    failures += RunBench(o, dma);
  } else if (hostile) {
    failures += RunHostile(o, dma);
  } else {
    failures +=
        RunDeviceChecks(o, dma, 0, smp_io ? static_cast<int>(cpus) : 1, 0);
  }
  if (smp_io) {
    // Up to ~60 s for the APs' share.
    for (int i = 0; i < 6000 && g_ap_job.done < aps; ++i) {
      WaitForInterrupt(10000);
    }
    const bool all = g_ap_job.done == cpus - 1;
    Printf("VMMKIT smp_io result=%s aps_done=%u ap_failures=%d\n",
           all ? "ok" : "fail", g_ap_job.done, g_ap_job.failures);
    failures += g_ap_job.failures + (all ? 0 : 1);
  }
  const InterruptStats& s = Interrupts();
  Printf(
      "VMMKIT interrupts total=%lu msi=%lu intx=%lu timer=%lu spurious=%lu "
      "unexpected=%lu\n",
      s.total, s.msi, s.intx, s.timer, s.spurious, s.unexpected);
  if (CmdlineNumber(cmdline, "wait_stop", 0) != 0) {
    Printf("VMMKIT waiting for stop\n");
    while (!StopRequested()) WaitForInterrupt(10000);
    Printf("VMMKIT stop requested\n");
  }
  const uint32_t uart_bytes =
      static_cast<uint32_t>(CmdlineNumber(cmdline, "uart_input", 0));
  if (uart_bytes > 0) failures += ReadUart(uart_bytes);
  Printf("VMMKIT done failures=%d\n", failures);
  char end[16] = "exit";
  CmdlineGet(cmdline, "end", end, sizeof(end));
  if (memcmp(end, "reset", 6) == 0 && failures == 0) {
    FlushSerial();
    Outb(0x64, 0xfe);  // i8042 pulse reset: the VMM powers off (code 0)
    for (;;) asm volatile("cli; hlt");
  }
  Exit(failures == 0 ? 0 : 1);
}

extern "C" [[noreturn]] void GuestApMain(uint32_t apic_id) {
  __atomic_fetch_add(&g_aps_started, 1, __ATOMIC_SEQ_CST);
  if (g_ap_job.options != nullptr && apic_id < g_ap_job.ncpus) {
    InterruptsInitAp();
    DmaArena dma(kApDmaBase + (apic_id - 1) * kApDmaSize,
                 kApDmaBase + apic_id * kApDmaSize);
    const int f =
        RunDeviceChecks(*g_ap_job.options, dma, static_cast<int>(apic_id),
                        static_cast<int>(g_ap_job.ncpus), apic_id);
    __atomic_fetch_add(&g_ap_job.failures, f, __ATOMIC_SEQ_CST);
    __atomic_fetch_add(&g_ap_job.done, 1, __ATOMIC_SEQ_CST);
  }
  for (;;) asm volatile("cli; hlt");
}
