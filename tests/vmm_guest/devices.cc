// The device checks: blk write/flush/read-back/compare, rng bytes, console
// output (and input on request), net frame echo.
#include <cstdint>

#include "tests/virtio_pci/driver.h"
#include "tests/vmm_guest/platform.h"
#include "tests/vmm_guest/runtime.h"
#include "tests/vmm_guest/scenarios.h"

namespace vmmkit::tests::vmm_guest {
namespace {

using virtio_pci::DriverError;
using virtio_pci::DriverErrorName;
using virtio_pci::DriverMode;
using virtio_pci::DriverOptions;
using virtio_pci::VirtioPciDriver;
using Buffer = VirtioPciDriver::Buffer;

constexpr uint64_t Bit(unsigned n) { return uint64_t{1} << n; }
constexpr unsigned kFVersion1 = 32;
constexpr unsigned kFEventIdx = 29;

// virtio-blk (§5.2).
constexpr unsigned kBlkFSegMax = 2, kBlkFGeometry = 4, kBlkFRo = 5,
                   kBlkFBlkSize = 6, kBlkFFlush = 9, kBlkFTopology = 10;
constexpr uint32_t kBlkTIn = 0, kBlkTOut = 1, kBlkTFlush = 4;
constexpr uint8_t kBlkSOk = 0, kBlkSIoErr = 1;
// Where the pattern goes: sectors 8..15 (bytes 4096..8191 of the image).
constexpr uint64_t kBlkPatternSector = 8;
constexpr uint32_t kBlkPatternBytes = 4096;
// virtio-net (§5.1).
constexpr unsigned kNetFMac = 5, kNetFMrgRxbuf = 15;
// virtio-console (§5.3).
constexpr unsigned kConsoleFSize = 0;

int Fail(const char* check, const char* reason, DriverError e) {
  Printf("VMMKIT check=%s result=fail reason=%s error=\"%s\"\n", check, reason,
         DriverErrorName(e));
  return 1;
}

void PrintStats(const VirtioPciDriver& d, const GuestPlatform& p) {
  Puts("VMMKIT stats device=");
  PrintLocation(d);
  Printf(
      " pio_reads=%lu pio_writes=%lu mmio_reads=%lu mmio_writes=%lu "
      "waits=%lu msis=%lu isr_reads=%u queue0_interrupts=%u "
      "spurious=%u\n",
      p.port_reads, p.port_writes, p.mmio_reads, p.mmio_writes, p.waits,
      p.msis_taken, d.isr_reads(), d.queue_interrupts(0),
      d.spurious_interrupts());
}

// The byte at offset i of the blk pattern (the host test computes the same).
uint8_t BlkPattern(uint32_t i) {
  return static_cast<uint8_t>((i * 31u + (i >> 9)) ^ 0xa5u);
}

int CheckBlk(VirtioPciDriver& d, GuestPlatform& p) {
  const uint64_t capacity = d.ReadConfig(0, 8);
  const bool ro = (d.driver_features() & Bit(kBlkFRo)) != 0;
  const bool flush = (d.driver_features() & Bit(kBlkFFlush)) != 0;
  if (capacity < kBlkPatternSector + kBlkPatternBytes / 512) {
    Printf("VMMKIT check=blk result=fail reason=small capacity=%lu\n",
           capacity);
    return 1;
  }
  const uint64_t hdr = p.AllocDma(16, 16);
  const uint64_t wbuf = p.AllocDma(kBlkPatternBytes, 4096);
  const uint64_t rbuf = p.AllocDma(kBlkPatternBytes, 4096);
  const uint64_t status = p.AllocDma(1, 1);
  if (hdr == 0 || wbuf == 0 || rbuf == 0 || status == 0) {
    return Fail("blk", "dma", DriverError::kNoMemory);
  }
  auto* w = reinterpret_cast<uint8_t*>(wbuf);
  auto* r = reinterpret_cast<uint8_t*>(rbuf);
  for (uint32_t i = 0; i < kBlkPatternBytes; ++i) w[i] = BlkPattern(i);
  // {le32 type, le32 reserved (ioprio), le64 sector}, data, u8 status.
  auto request = [&](uint32_t type, uint64_t sector, uint64_t data,
                     uint32_t bytes, bool in, uint8_t* st,
                     uint32_t* len) -> DriverError {
    uint8_t h[16] = {};
    for (int i = 0; i < 4; ++i) h[i] = static_cast<uint8_t>(type >> (8 * i));
    for (int i = 0; i < 8; ++i)
      h[8 + i] = static_cast<uint8_t>(sector >> (8 * i));
    p.MemWrite(hdr, h, 16);
    *reinterpret_cast<volatile uint8_t*>(status) = 0xee;
    Buffer b[3];
    int n = 0;
    b[n++] = {hdr, 16, false};
    if (bytes != 0) b[n++] = {data, bytes, in};
    b[n++] = {status, 1, true};
    const DriverError e = Roundtrip(d, 0, b, n, len);
    *st = *reinterpret_cast<volatile uint8_t*>(status);
    return e;
  };
  uint8_t st = 0;
  uint32_t len = 0;
  DriverError e = request(kBlkTOut, kBlkPatternSector, wbuf, kBlkPatternBytes,
                          false, &st, &len);
  if (e != DriverError::kOk) return Fail("blk", "write", e);
  if (st != (ro ? kBlkSIoErr : kBlkSOk)) {
    Printf("VMMKIT check=blk result=fail reason=write_status status=%u ro=%d\n",
           st, ro);
    return 1;
  }
  if (flush) {
    e = request(kBlkTFlush, 0, 0, 0, false, &st, &len);
    if (e != DriverError::kOk) return Fail("blk", "flush", e);
    if (st != kBlkSOk) {
      Printf("VMMKIT check=blk result=fail reason=flush_status status=%u\n",
             st);
      return 1;
    }
  }
  e = request(kBlkTIn, kBlkPatternSector, rbuf, kBlkPatternBytes, true, &st,
              &len);
  if (e != DriverError::kOk) return Fail("blk", "read", e);
  if (st != kBlkSOk || len != kBlkPatternBytes + 1) {
    Printf("VMMKIT check=blk result=fail reason=read_status status=%u len=%u\n",
           st, len);
    return 1;
  }
  if (!ro) {
    for (uint32_t i = 0; i < kBlkPatternBytes; ++i) {
      if (r[i] != w[i]) {
        Printf(
            "VMMKIT check=blk result=fail reason=compare offset=%u got=0x%x "
            "want=0x%x\n",
            i, r[i], w[i]);
        return 1;
      }
    }
  }
  // Past the end: an I/O error for this request only.
  e = request(kBlkTIn, capacity, rbuf, 512, true, &st, &len);
  if (e != DriverError::kOk) return Fail("blk", "read_past_end", e);
  if (st != kBlkSIoErr) {
    Printf("VMMKIT check=blk result=fail reason=past_end_status status=%u\n",
           st);
    return 1;
  }
  Printf("VMMKIT check=blk result=ok bytes=%u capacity=%lu flush=%d ro=%d\n",
         kBlkPatternBytes, capacity, flush, ro);
  return 0;
}

int CheckRng(VirtioPciDriver& d, GuestPlatform& p) {
  constexpr uint32_t kBytes = 64;
  const uint64_t buf = p.AllocDma(kBytes, 64);
  if (buf == 0) return Fail("rng", "dma", DriverError::kNoMemory);
  const Buffer b = {buf, kBytes, true};
  uint32_t len = 0;
  const DriverError e = Roundtrip(d, 0, &b, 1, &len);
  if (e != DriverError::kOk) return Fail("rng", "read", e);
  const auto* bytes = reinterpret_cast<const uint8_t*>(buf);
  int nonzero = 0;
  for (uint32_t i = 0; i < len && i < kBytes; ++i) nonzero += bytes[i] != 0;
  if (len == 0 || len > kBytes || nonzero == 0) {
    Printf("VMMKIT check=rng result=fail reason=bytes len=%u nonzero=%d\n", len,
           nonzero);
    return 1;
  }
  Printf(
      "VMMKIT check=rng result=ok bytes=%u nonzero=%d first=%02x%02x%02x%02x\n",
      len, nonzero, bytes[0], bytes[1], bytes[2], bytes[3]);
  return 0;
}

int CheckConsole(VirtioPciDriver& d, GuestPlatform& p, const Options& o) {
  static const char kLine[] = "hello from the vmmkit test guest\n";
  constexpr uint32_t kInput = 64;
  const bool want_input = CmdlineNumber(o.cmdline, "console_input", 0) != 0;
  const uint64_t rx = p.AllocDma(kInput, 64);
  const uint64_t tx = p.AllocDma(sizeof(kLine), 64);
  if (rx == 0 || tx == 0) return Fail("console", "dma", DriverError::kNoMemory);
  // A receive buffer first, as virtio_console fills the receiveq at probe.
  const Buffer in = {rx, kInput, true};
  DriverError e = d.Post(0, &in, 1, nullptr);
  if (e != DriverError::kOk) return Fail("console", "post_rx", e);
  d.Kick(0);
  p.MemWrite(tx, kLine, sizeof(kLine) - 1);
  const Buffer out = {tx, sizeof(kLine) - 1, false};
  uint32_t len = 0;
  e = Roundtrip(d, 1, &out, 1, &len);
  if (e != DriverError::kOk) return Fail("console", "write", e);
  if (want_input) {
    Printf("VMMKIT console waiting for input\n");
    e = DriverError::kTimeout;
    for (int i = 0; i < 10 && e == DriverError::kTimeout; ++i) {
      e = d.WaitUsed(0, nullptr, &len);
    }
    if (e != DriverError::kOk) return Fail("console", "read", e);
    char text[kInput + 1];
    if (len > kInput) len = kInput;
    p.MemRead(rx, text, len);
    for (uint32_t i = 0; i < len; ++i) {
      if (text[i] == '\n' || text[i] == '"') text[i] = '_';
    }
    text[len] = 0;
    Printf("VMMKIT console input=\"%s\" bytes=%u\n", text, len);
  }
  Printf("VMMKIT check=console result=ok bytes=%u input=%d\n",
         static_cast<unsigned>(sizeof(kLine) - 1), want_input);
  return 0;
}

int CheckNet(VirtioPciDriver& d, GuestPlatform& p) {
  const uint64_t f = d.driver_features();
  const uint32_t hdr_len =
      (f & (Bit(kFVersion1) | Bit(kNetFMrgRxbuf))) != 0 ? 12 : 10;
  uint8_t mac[6] = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
  if ((f & Bit(kNetFMac)) != 0) {
    for (int i = 0; i < 6; ++i) {
      mac[i] = static_cast<uint8_t>(d.ReadConfig(i, 1));
    }
  }
  constexpr uint32_t kFrame = 64;
  constexpr uint32_t kRxBytes = 12 + 1514;
  const uint64_t rx = p.AllocDma(kRxBytes, 64);
  const uint64_t txh = p.AllocDma(12, 16);
  const uint64_t txf = p.AllocDma(kFrame, 64);
  if (rx == 0 || txh == 0 || txf == 0) {
    return Fail("net", "dma", DriverError::kNoMemory);
  }
  const Buffer in = {rx, kRxBytes, true};
  DriverError e = d.Post(0, &in, 1, nullptr);
  if (e != DriverError::kOk) return Fail("net", "post_rx", e);
  d.Kick(0);
  auto* frame = reinterpret_cast<uint8_t*>(txf);
  for (int i = 0; i < 6; ++i) frame[i] = 0xff;  // broadcast
  for (int i = 0; i < 6; ++i) frame[6 + i] = mac[i];
  frame[12] = 0x88;  // 0x88b5: IEEE local experimental ethertype
  frame[13] = 0xb5;
  for (uint32_t i = 14; i < kFrame; ++i) frame[i] = static_cast<uint8_t>(i * 7);
  const Buffer out[2] = {{txh, hdr_len, false}, {txf, kFrame, false}};
  uint32_t len = 0;
  // Like a ping: send, wait up to ~1 s for the echo, send again (at most 3
  // times), as a socket backend (QEMU's) may drop a datagram; vmmkit's
  // in-process echo must answer the first (the host test checks attempts=1).
  int attempts = 0;
  e = DriverError::kTimeout;
  while (attempts < 3 && e == DriverError::kTimeout) {
    ++attempts;
    DriverError s = Roundtrip(d, 1, out, 2, &len);
    if (s != DriverError::kOk) return Fail("net", "send", s);
    e = d.WaitUsed(0, nullptr, &len);
  }
  if (e != DriverError::kOk) return Fail("net", "receive", e);
  const auto* got = reinterpret_cast<const uint8_t*>(rx);
  if (len != hdr_len + kFrame || memcmp(got + hdr_len, frame, kFrame) != 0) {
    Printf("VMMKIT check=net result=fail reason=echo len=%u want=%u\n", len,
           hdr_len + kFrame);
    return 1;
  }
  Printf(
      "VMMKIT check=net result=ok bytes=%u hdr=%u attempts=%d "
      "mac=%02x:%02x:%02x:%02x:%02x:%02x\n",
      kFrame, hdr_len, attempts, mac[0], mac[1], mac[2], mac[3], mac[4],
      mac[5]);
  return 0;
}

}  // namespace

void PrintLocation(const VirtioPciDriver& d) {
  Printf("00:%02x.0", d.device_number());
}

DriverError ProbeLikeLinux(VirtioPciDriver& d, GuestPlatform& p,
                           const Options& o, uint64_t features,
                           uint16_t num_queues) {
  const uint8_t line = static_cast<uint8_t>(d.Cfg(0x3c, 1));
  const uint8_t pin = static_cast<uint8_t>(d.Cfg(0x3d, 1));
  if (pin != 0 && line < kIoapicPins) {
    p.set_gsi(line);
    IoapicRoute(line, IntxVector(line), p.lapic_id());
  }
  DriverOptions opts;
  opts.mode = o.legacy ? DriverMode::kLegacy : DriverMode::kModern;
  opts.use_msix = o.msix;
  opts.features = features;
  opts.max_queue_size = o.qsize;
  opts.num_queues = num_queues;
  // MSI address: 0xfee00000 | destination APIC id << 12.
  opts.msi_address = kLapicBase | uint64_t{p.lapic_id()} << 12;
  opts.msi_data_base = p.msi_data_base();
  DriverError e = d.Probe(opts);
  if (e == DriverError::kUnsupported || e == DriverError::kNoCapability) {
    // virtio_pci_probe: the other interface when the first says -ENODEV.
    opts.mode = o.legacy ? DriverMode::kModern : DriverMode::kLegacy;
    e = d.Probe(opts);
  }
  if (e != DriverError::kOk) return e;
  Puts("VMMKIT device=");
  PrintLocation(d);
  Printf(
      " type=%u id=%04x:%04x rev=%u interface=%s msix=%d features=0x%lx "
      "queues=%u qsize=%u irq=%u pin=%u cpu=%d\n",
      d.virtio_type(), d.vendor_id(), d.device_id(), d.revision(),
      opts.mode == DriverMode::kLegacy ? "legacy" : "modern", d.msix_enabled(),
      d.driver_features(), d.num_queues(), d.queue_size(0), line, pin,
      CpuIndex());
  return DriverError::kOk;
}

DriverError Roundtrip(VirtioPciDriver& d, uint16_t queue, const Buffer* b,
                      int count, uint32_t* length) {
  uint16_t head = 0;
  DriverError e = d.Post(queue, b, count, &head);
  if (e != DriverError::kOk) return e;
  d.Kick(queue);
  uint32_t id = 0;
  e = d.WaitUsed(queue, &id, length);
  if (e != DriverError::kOk) return e;
  return id == head ? DriverError::kOk : DriverError::kBadState;
}

int RunDeviceChecks(const Options& o, DmaArena& dma, int cpu, int ncpus,
                    uint32_t lapic_id) {
  int failures = 0;
  int found = 0;
  for (int index = 0; index < 8; ++index) {
    GuestPlatform p(
        dma, static_cast<uint8_t>(kMsiVectorBase +
                                  GuestPlatform::kVectorsPerDevice * index));
    VirtioPciDriver d(p);
    if (d.FindDevice(0, index) != DriverError::kOk) break;
    ++found;
    if (ncpus > 1 && index % ncpus != cpu) continue;
    p.set_lapic_id(lapic_id);
    const uint16_t type = d.virtio_type();
    const char* name = TypeName(type);
    if (o.devices[0] != 0 && !ListHas(o.devices, name)) continue;
    uint64_t features = 0;
    uint16_t queues = 1;
    switch (type) {
      case 1:
        features = Bit(kNetFMac);
        queues = 2;
        break;
      case 2:
        features = Bit(kBlkFSegMax) | Bit(kBlkFGeometry) | Bit(kBlkFRo) |
                   Bit(kBlkFBlkSize) | Bit(kBlkFFlush) | Bit(kBlkFTopology) |
                   Bit(kFEventIdx);
        break;
      case 3:
        features = Bit(kConsoleFSize);
        queues = 2;
        break;
      case 4:
        break;
      default:
        Printf("VMMKIT device type=%u skipped\n", type);
        continue;
    }
    const DriverError e = ProbeLikeLinux(d, p, o, features, queues);
    if (e != DriverError::kOk) {
      Printf("VMMKIT check=%s result=fail reason=probe error=\"%s\" device=",
             name, DriverErrorName(e));
      PrintLocation(d);
      Puts("\n");
      ++failures;
      continue;
    }
    switch (type) {
      case 1:
        failures += CheckNet(d, p);
        break;
      case 2:
        failures += CheckBlk(d, p);
        break;
      case 3:
        failures += CheckConsole(d, p, o);
        break;
      case 4:
        failures += CheckRng(d, p);
        break;
    }
    PrintStats(d, p);
  }
  Printf("VMMKIT devices found=%d cpu=%d\n", found, cpu);
  if (found == 0) ++failures;
  return failures;
}

}  // namespace vmmkit::tests::vmm_guest
