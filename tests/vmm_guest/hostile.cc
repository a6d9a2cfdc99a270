// The hostile scenario: a driver that breaks the rules, register by register
// and ring by ring, and checks that the device answers as the virtio spec
// (and vmmkit's documented choices, pci/virtio_pci.h) say: DEVICE_NEEDS_RESET
// for rings it cannot use, NO_VECTOR (0xffff) for MSI-X vectors it refuses,
// all-ones for reads nothing decodes, and a working device again after a
// reset. Every check prints
//   VMMKIT hostile=<name> device=00:0s.0 result=ok|fail ...
// The VMM must survive all of it: the run ends with "VMMKIT done".
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

constexpr uint8_t kAck = 1, kDriver = 2, kDriverOk = 4, kFeaturesOk = 8,
                  kNeedsReset = 64;
// Modern common configuration offsets (§4.1.4.3).
constexpr uint32_t kGfSelect = 0x08, kGf = 0x0c, kMsixConfig = 0x10,
                   kQSelect = 0x16, kQSize = 0x18, kQVector = 0x1a,
                   kQEnable = 0x1c, kQDesc = 0x20, kQDriver = 0x28,
                   kQDevice = 0x30;
// Legacy registers (§4.1.4.10).
constexpr uint32_t kLPfn = 8, kLSelect = 14, kLQueueVector = 22;
// Guest-physical addresses far outside any VM's RAM (and off every BAR).
constexpr uint64_t kFarAddress = 0x7f0000000ull;  // 31.75 GiB
constexpr uint32_t kFarPfn = 0xfffff;             // 4 GiB - 4 KiB

class Hostile {
 public:
  Hostile(VirtioPciDriver& d, GuestPlatform& p, const Options& o)
      : d_(d), p_(p), o_(o) {}

  int failures() const { return failures_; }

  // ok: passed; detail printed after it.
  void Report(const char* name, bool ok, const char* detail_format = "",
              uint64_t a = 0, uint64_t b = 0) {
    Printf("VMMKIT hostile=%s device=", name);
    PrintLocation(d_);
    Printf(" result=%s ", ok ? "ok" : "fail");
    Printf(detail_format, a, b);
    Puts("\n");
    if (!ok) ++failures_;
  }

  // A proper probe (what the Linux-like driver does), for the checks that
  // need a running device.
  DriverError Good(DriverMode mode, bool skip_driver_ok = false) {
    DriverOptions opts;
    opts.mode = mode;
    opts.use_msix = o_.msix;
    opts.num_queues = 1;
    opts.msi_address = kLapicBase;
    opts.msi_data_base = p_.msi_data_base();
    opts.skip_driver_ok = skip_driver_ok;
    return d_.Probe(opts);
  }

  // Waits (bounded, ~2 s) for the device to set DEVICE_NEEDS_RESET.
  bool WaitNeedsReset() {
    for (int i = 0; i < 2000; ++i) {
      d_.ServiceInterrupts();
      if (d_.ReadStatus() & kNeedsReset) return true;
      p_.WaitForInterrupt();
    }
    return false;
  }

  // Modern, by hand: reset, ACKNOWLEDGE, DRIVER, VERSION_1, FEATURES_OK.
  bool ModernUpToFeaturesOk() {
    if (d_.Reset() != DriverError::kOk) return false;
    d_.WriteStatus(kAck);
    d_.WriteStatus(kAck | kDriver);
    d_.ModernWrite(d_.common_cap(), kGfSelect, 0, 4);
    d_.ModernWrite(d_.common_cap(), kGf, 0, 4);
    d_.ModernWrite(d_.common_cap(), kGfSelect, 1, 4);
    d_.ModernWrite(d_.common_cap(), kGf, 1, 4);  // VERSION_1
    d_.WriteStatus(kAck | kDriver | kFeaturesOk);
    return (d_.ReadStatus() & kFeaturesOk) != 0;
  }

  // Modern queue 0 with `size` and rings at desc/avail/used, enabled, then
  // DRIVER_OK; true if the device answered with DEVICE_NEEDS_RESET.
  bool ModernQueueThenDriverOk(uint16_t size, uint64_t desc, uint64_t avail,
                               uint64_t used, uint8_t* status) {
    if (!ModernUpToFeaturesOk()) {
      *status = d_.ReadStatus();
      return false;
    }
    const auto& c = d_.common_cap();
    d_.ModernWrite(c, kQSelect, 0, 2);
    d_.ModernWrite(c, kQSize, size, 2);
    d_.ModernWrite(c, kQDesc, desc & 0xffffffffu, 4);
    d_.ModernWrite(c, kQDesc + 4, desc >> 32, 4);
    d_.ModernWrite(c, kQDriver, avail & 0xffffffffu, 4);
    d_.ModernWrite(c, kQDriver + 4, avail >> 32, 4);
    d_.ModernWrite(c, kQDevice, used & 0xffffffffu, 4);
    d_.ModernWrite(c, kQDevice + 4, used >> 32, 4);
    d_.ModernWrite(c, kQEnable, 1, 2);
    d_.WriteStatus(kAck | kDriver | kFeaturesOk | kDriverOk);
    *status = d_.ReadStatus();
    return (*status & kNeedsReset) != 0;
  }

  void ModernRegisterChecks() {
    const uint64_t ring = p_.AllocDma(16384, 4096);
    uint8_t st = 0;
    bool nr = ModernQueueThenDriverOk(3, ring, ring + 4096, ring + 8192, &st);
    Report("queue_size_not_pow2", nr && (st & kDriverOk), "status=0x%lx", st);
    nr = ModernQueueThenDriverOk(0x8000, ring, ring + 4096, ring + 8192, &st);
    Report("queue_size_above_max", nr, "status=0x%lx", st);
    nr = ModernQueueThenDriverOk(8, kFarAddress, ring + 4096, ring + 8192, &st);
    Report("desc_table_outside_ram", nr, "status=0x%lx", st);
    nr = ModernQueueThenDriverOk(8, ring + 2, ring + 4096, ring + 8192, &st);
    Report("desc_table_misaligned", nr, "status=0x%lx", st);

    // DRIVER_OK without FEATURES_OK from a modern driver (§3.1.1).
    d_.Reset();
    d_.WriteStatus(kAck);
    d_.WriteStatus(kAck | kDriver);
    d_.ModernWrite(d_.common_cap(), kGfSelect, 1, 4);
    d_.ModernWrite(d_.common_cap(), kGf, 1, 4);
    d_.WriteStatus(kAck | kDriver | kDriverOk);
    st = d_.ReadStatus();
    Report("driver_ok_without_features_ok", (st & kNeedsReset) != 0,
           "status=0x%lx", st);

    // A feature the device never offered: FEATURES_OK must not stick.
    d_.Reset();
    d_.WriteStatus(kAck);
    d_.WriteStatus(kAck | kDriver);
    d_.ModernWrite(d_.common_cap(), kGfSelect, 1, 4);
    d_.ModernWrite(d_.common_cap(), kGf, 1u | 1u << 30, 4);  // bit 62
    d_.WriteStatus(kAck | kDriver | kFeaturesOk);
    st = d_.ReadStatus();
    Report("unoffered_feature_refused", (st & kFeaturesOk) == 0, "status=0x%lx",
           st);

    // Reads past the device-specific configuration: nothing decodes them.
    if (d_.device_cap().offset != 0) {
      const uint64_t v =
          d_.ModernRead(d_.device_cap(), d_.device_cap().length + 64, 4);
      Report("device_config_past_end", v == 0xffffffffu, "value=0x%lx", v);
    }
    // The PCI configuration access window with a length it does not take.
    if (d_.pci_cfg_cap().offset != 0) {
      const uint32_t v = d_.PciCfgRead(d_.common_cap().bar, 0, 3);
      Report("pci_cfg_window_bad_length", v == 0xffffffu, "value=0x%lx", v);
    }

    // MSI-X vectors beyond the table read back as NO_VECTOR.
    if (d_.msix_cap() != 0 && d_.EnableMsix() == DriverError::kOk) {
      if (ModernUpToFeaturesOk()) {
        const auto& c = d_.common_cap();
        const uint16_t bad = static_cast<uint16_t>(d_.msix_table_size() + 3);
        d_.ModernWrite(c, kMsixConfig, bad, 2);
        const uint64_t cfg_vec = d_.ModernRead(c, kMsixConfig, 2);
        d_.ModernWrite(c, kQSelect, 0, 2);
        d_.ModernWrite(c, kQVector, bad, 2);
        const uint64_t q_vec = d_.ModernRead(c, kQVector, 2);
        Report("msix_vector_beyond_table", cfg_vec == 0xffff && q_vec == 0xffff,
               "config_vector=0x%lx queue_vector=0x%lx", cfg_vec, q_vec);
        d_.ModernWrite(c, kQVector, 0, 2);
        const uint64_t good = d_.ModernRead(c, kQVector, 2);
        Report("msix_vector_in_table", good == 0, "queue_vector=0x%lx", good);
      }
      d_.DisableMsix();
    }
  }

  void LegacyRegisterChecks() {
    // PFN far outside RAM: taken as written, refused at DRIVER_OK.
    d_.Reset();
    d_.WriteStatus(kAck);
    d_.WriteStatus(kAck | kDriver);
    d_.LegacyWrite(kLSelect, 0, 2);
    d_.LegacyWrite(kLPfn, kFarPfn, 4);
    d_.WriteStatus(kAck | kDriver | kDriverOk);
    uint8_t st = d_.ReadStatus();
    Report("legacy_pfn_outside_ram", (st & kNeedsReset) != 0, "status=0x%lx",
           st);
    // QEMU's rule, kept: writing PFN 0 resets the device.
    d_.LegacyWrite(kLPfn, 0, 4);
    st = d_.ReadStatus();
    Report("legacy_pfn_zero_resets", st == 0, "status=0x%lx", st);
    if (d_.msix_cap() != 0 && o_.msix) {
      if (Good(DriverMode::kLegacy, /*skip_driver_ok=*/true) ==
          DriverError::kOk) {
        d_.LegacyWrite(kLSelect, 0, 2);
        const uint16_t bad = static_cast<uint16_t>(d_.msix_table_size() + 3);
        d_.LegacyWrite(kLQueueVector, bad, 2);
        const uint32_t v = d_.LegacyRead(kLQueueVector, 2);
        Report("legacy_msix_vector_beyond_table", v == 0xffff, "vector=0x%lx",
               v);
      }
    }
  }

  // Queue 0's rings as the device sees them (read back from the device).
  bool QueueAddresses(bool legacy, uint64_t* desc, uint64_t* avail,
                      uint16_t* size) {
    *size = d_.queue_size(0);
    if (legacy) {
      d_.LegacyWrite(kLSelect, 0, 2);
      *desc = uint64_t{d_.LegacyRead(kLPfn, 4)} << 12;
      *avail = *desc + 16ull * *size;
    } else {
      const auto& c = d_.common_cap();
      d_.ModernWrite(c, kQSelect, 0, 2);
      *desc = d_.ModernRead(c, kQDesc, 4) | d_.ModernRead(c, kQDesc + 4, 4)
                                                << 32;
      *avail = d_.ModernRead(c, kQDriver, 4) | d_.ModernRead(c, kQDriver + 4, 4)
                                                   << 32;
    }
    return *desc != 0 && *size != 0;
  }

  // Posts a chain of `count` buffers on queue 0 without kicking; `bad`
  // replaces buffer `bad_index`'s address with `bad`.
  bool PostChain(uint16_t type, uint64_t bad_address, uint32_t bad_length,
                 uint16_t* head) {
    const uint64_t buf = p_.AllocDma(4096, 4096);
    if (buf == 0) return false;
    Buffer b[3];
    int n = 0;
    if (type == 2) {  // blk: header (IN), data, status
      b[n++] = {buf, 16, false};
      b[n++] = {bad_address != 0 ? bad_address : buf + 512,
                bad_length != 0 ? bad_length : 512, true};
      b[n++] = {buf + 2048, 1, true};
    } else {  // rng, console rx, net rx: one writable buffer
      b[n++] = {bad_address != 0 ? bad_address : buf + 512,
                bad_length != 0 ? bad_length : 64, true};
      b[n++] = {buf + 1024, 64, true};
    }
    return d_.Post(0, b, n, head) == DriverError::kOk;
  }

  // One broken-ring check on a freshly probed device: `breaker` damages the
  // ring after the post, then the kick, then DEVICE_NEEDS_RESET is expected.
  template <typename Breaker>
  void RingCheck(const char* name, bool legacy, uint64_t bad_address,
                 uint32_t bad_length, Breaker breaker) {
    const DriverError e =
        Good(legacy ? DriverMode::kLegacy : DriverMode::kModern);
    if (e != DriverError::kOk) {
      Printf("VMMKIT hostile=%s result=fail probe=\"%s\"\n", name,
             DriverErrorName(e));
      ++failures_;
      return;
    }
    uint64_t desc = 0, avail = 0;
    uint16_t size = 0, head = 0;
    if (!QueueAddresses(legacy, &desc, &avail, &size) ||
        !PostChain(d_.virtio_type(), bad_address, bad_length, &head)) {
      Report(name, false, "setup");
      return;
    }
    breaker(desc, avail, size, head);
    Mfence();
    const uint32_t config_before = d_.config_interrupts();
    d_.Kick(0);
    const bool nr = WaitNeedsReset();
    // §2.1.2: "the device MUST send a device configuration change
    // notification to the driver" when it sets DEVICE_NEEDS_RESET.
    for (int i = 0; i < 500 && d_.config_interrupts() == config_before; ++i) {
      p_.WaitForInterrupt();
      d_.ServiceInterrupts();
    }
    const bool config_irq = d_.config_interrupts() != config_before;
    Report(name, nr && config_irq, "needs_reset=%lu config_interrupt=%lu", nr,
           config_irq);
  }

  void RingChecks(bool legacy) {
    const auto none = [](uint64_t, uint64_t, uint16_t, uint16_t) {};
    RingCheck(legacy ? "legacy_buffer_outside_ram" : "buffer_outside_ram",
              legacy, kFarAddress, 0, none);
    RingCheck("buffer_huge_length", legacy, 0, 0xfffff000u, none);
    RingCheck("chain_loop", legacy, 0, 0,
              [&](uint64_t desc, uint64_t, uint16_t size, uint16_t head) {
                // The last descriptor of the chain points back at the head.
                uint16_t last = head;
                for (int i = 0; i < size; ++i) {
                  volatile uint8_t* dsc =
                      reinterpret_cast<volatile uint8_t*>(desc + 16ull * last);
                  const uint16_t flags =
                      static_cast<uint16_t>(dsc[12] | dsc[13] << 8);
                  if ((flags & 1) == 0) {
                    dsc[12] = static_cast<uint8_t>(flags | 1);
                    dsc[14] = static_cast<uint8_t>(head);
                    dsc[15] = static_cast<uint8_t>(head >> 8);
                    break;
                  }
                  last = static_cast<uint16_t>(dsc[14] | dsc[15] << 8);
                }
              });
    RingCheck("avail_index_jump", legacy, 0, 0,
              [&](uint64_t, uint64_t avail, uint16_t size, uint16_t) {
                volatile uint16_t* idx =
                    reinterpret_cast<volatile uint16_t*>(avail + 2);
                *idx = static_cast<uint16_t>(*idx + 2 * size + 1);
              });
    RingCheck("avail_head_out_of_range", legacy, 0, 0,
              [&](uint64_t, uint64_t avail, uint16_t size, uint16_t) {
                volatile uint16_t* idx =
                    reinterpret_cast<volatile uint16_t*>(avail + 2);
                const uint16_t slot = static_cast<uint16_t>((*idx - 1) % size);
                volatile uint16_t* entry = reinterpret_cast<volatile uint16_t*>(
                    avail + 4 + 2ull * slot);
                *entry = static_cast<uint16_t>(size + 5);
              });
  }

  // Kicks for queues the device does not have (legacy QUEUE_NOTIFY with a
  // bad index, or the modern notify region past the last queue): ignored,
  // and the device goes on serving its real queue.
  void NotifyAbsentQueue(bool legacy) {
    if (Good(legacy ? DriverMode::kLegacy : DriverMode::kModern) !=
        DriverError::kOk) {
      Report("notify_absent_queue", false, "probe");
      return;
    }
    if (legacy) {
      p_.OutPort(static_cast<uint16_t>(d_.bar(0).address + 16), 7, 2);
      p_.OutPort(static_cast<uint16_t>(d_.bar(0).address + 16), 0xffff, 2);
    } else {
      const uint64_t mult = d_.notify_multiplier();
      p_.MmioWrite(d_.notify_address(0) + 7 * (mult != 0 ? mult : 4), 7, 2);
      p_.MmioWrite(d_.notify_address(0), 0xffff, 2);
    }
    uint16_t head = 0;
    uint32_t id = 0, len = 0;
    DriverError w = DriverError::kNoSpace;
    if (PostChain(d_.virtio_type(), 0, 0, &head)) {
      d_.Kick(0);
      w = d_.WaitUsed(0, &id, &len);
    }
    const uint8_t st = d_.ReadStatus();
    Report(legacy ? "legacy_notify_absent_queue" : "notify_absent_queue",
           w == DriverError::kOk && id == head && (st & kNeedsReset) == 0,
           "status=0x%lx used_len=%lu", st, len);
  }

  // After all of it: a reset and a normal probe give a working device.
  void Recovery(bool legacy) {
    const DriverError e =
        Good(legacy ? DriverMode::kLegacy : DriverMode::kModern);
    if (e != DriverError::kOk) {
      Report("recovery", false, "probe");
      return;
    }
    uint16_t head = 0;
    if (!PostChain(d_.virtio_type(), 0, 0, &head)) {
      Report("recovery", false, "post");
      return;
    }
    d_.Kick(0);
    uint32_t id = 0, len = 0;
    const DriverError w = d_.WaitUsed(0, &id, &len);
    const uint8_t st = d_.ReadStatus();
    Report("recovery",
           w == DriverError::kOk && id == head && (st & kNeedsReset) == 0,
           "status=0x%lx used_len=%lu", st, len);
  }

 private:
  VirtioPciDriver& d_;
  GuestPlatform& p_;
  const Options& o_;
  int failures_ = 0;
};

}  // namespace

int RunHostile(const Options& o, DmaArena& dma) {
  int failures = 0;
  // PCI: a function that is not there reads all-ones.
  {
    GuestPlatform p(dma, kMsiVectorBase);
    VirtioPciDriver d(p);
    const uint32_t v = d.ConfigRead(31, 0, 0, 4);
    Printf("VMMKIT hostile=absent_function result=%s value=0x%x\n",
           v == 0xffffffffu ? "ok" : "fail", v);
    if (v != 0xffffffffu) ++failures;
  }
  int tested = 0;
  for (int index = 0; index < 8; ++index) {
    GuestPlatform p(
        dma, static_cast<uint8_t>(kMsiVectorBase +
                                  GuestPlatform::kVectorsPerDevice * index));
    VirtioPciDriver d(p);
    if (d.FindDevice(0, index) != DriverError::kOk) break;
    const uint16_t type = d.virtio_type();
    if (type != 2 && type != 4) continue;  // blk and rng
    if (o.devices[0] != 0 && !ListHas(o.devices, TypeName(type))) continue;
    const uint8_t line = static_cast<uint8_t>(d.Cfg(0x3c, 1));
    if (line < kIoapicPins) {
      p.set_gsi(line);
      IoapicRoute(line, IntxVector(line));
    }
    Hostile h(d, p, o);
    // Modern interface present? (a modern probe up to FEATURES_OK works)
    const bool modern = h.Good(DriverMode::kModern, true) == DriverError::kOk;
    const bool legacy_iface = d.device_id() < 0x1040;
    Puts("VMMKIT hostile device=");
    PrintLocation(d);
    Printf(" type=%u id=%04x:%04x modern=%d legacy=%d\n", type, d.vendor_id(),
           d.device_id(), modern, legacy_iface);
    if (modern) {
      h.ModernRegisterChecks();
      h.RingChecks(false);
      h.NotifyAbsentQueue(false);
    }
    if (legacy_iface) {
      h.Good(DriverMode::kLegacy, true);  // BARs and capabilities
      h.LegacyRegisterChecks();
      h.RingChecks(true);
      h.NotifyAbsentQueue(true);
    }
    h.Recovery(!modern);
    // The last word: a rng is left with DEVICE_NEEDS_RESET set, for the host
    // to see in its DeviceReport; a blk stays healthy.
    if (type == 4) {
      h.RingCheck("left_needing_reset", !modern, kFarAddress, 0,
                  [](uint64_t, uint64_t, uint16_t, uint16_t) {});
    }
    failures += h.failures();
    ++tested;
  }
  Printf("VMMKIT hostile tested=%d\n", tested);
  if (tested == 0) ++failures;
  return failures;
}

}  // namespace vmmkit::tests::vmm_guest
