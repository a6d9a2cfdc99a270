// pci/virtio_pci_fuzzer.cc: libFuzzer target for the virtio-pci transport.
//
// A transitional VirtioPciFunction wrapping virtio-rng, over 4 MiB of guest
// memory, receives a stream of operations (opcode byte, then arguments;
// zeros past the end of the input):
//   raw configuration-space reads and writes (any offset, widths 0..8),
//   raw BAR reads and writes (any BAR, offsets near every region, widths
//   0..8), well-formed register writes (a legacy or common-config register
//   at its own width, so the state machine gets far), guest-memory pokes,
//   a ring the driver lays out properly (legacy PFN or modern addresses) with
//   chains published on it and kicks through either doorbell, notifications
//   from outside the decoder (ioeventfd path), MSI-X enable/program/mask,
//   the PCI_CFG window, and configuration change notifications.
// Invariants checked at every step: the ids never change, the ISR holds
// only bits 0 and 1, the INTx pin is only asserted with the level set, MSI
// messages are only sent while MSI-X is enabled, and status never shows
// DRIVER_OK on an inactive device unless NEEDS_RESET or FAILED is set too.
#include <sys/mman.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <vector>

#include "absl/types/span.h"
#include "base/fuzz_input.h"
#include "pci/virtio_pci.h"
#include "virtio-device/rng.h"
#include "virtqueue/guest_memory.h"
#include "virtqueue/testing/driver_queue.h"

namespace vmmkit::pci {
namespace {

constexpr int kMaxSteps = 2048;
constexpr uint64_t kMemSize = 4 << 20;

using Input = ::vmmkit::FuzzInput;

// An access width, mostly valid ones.
size_t Width(Input& in) {
  static constexpr size_t kWidths[] = {1, 2, 4, 8, 0, 3, 1, 2,
                                       4, 4, 2, 1, 5, 4, 2, 1};
  return kWidths[in.U8() % 16];
}

struct Sinks : MsiSink, IntxSink {
  void SendMsi(uint64_t, uint32_t) override { ++msis; }
  void SetIntx(bool asserted) override { intx = asserted; }
  int msis = 0;
  bool intx = false;
};

void Store(uint8_t* b, uint64_t v, size_t w) {
  for (size_t i = 0; i < w; ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
}

class Harness {
 public:
  explicit Harness(const virtqueue::GuestMemory& memory) : memory_(memory) {
    auto fn = VirtioPciFunction::Create(
        rng_, memory_,
        {.mode = VirtioPciMode::kTransitional, .notification_data = true});
    VMMKIT_FUZZ_CHECK(fn.ok());
    fn_ = *std::move(fn);
    fn_->set_msi_sink(&sinks_);
    fn_->set_intx_sink(&sinks_);
    pci_cfg_ = FindCap(kVirtioPciCapPciCfg);
    VMMKIT_FUZZ_CHECK(pci_cfg_ != 0);
  }

  // For checking that seeds get where they should (VMMKIT_FUZZ_VERBOSE=1).
  void Report() const {
    std::fprintf(stderr, "status=0x%02x active=%d rng_requests=%llu msis=%d\n",
                 fn_->state().status(), fn_->state().active(),
                 static_cast<unsigned long long>(rng_.stats().requests),
                 sinks_.msis);
  }

  void Step(Input& in) {
    const uint8_t op = in.U8();
    switch (op % 14) {
      case 0: {  // raw config read
        const uint32_t off = in.U16() % 0x110;
        uint8_t b[8];
        fn_->ConfigRead(off, absl::MakeSpan(b, Width(in)));
        break;
      }
      case 1: {  // raw config write
        const uint32_t off = in.U16() % 0x110;
        const size_t w = Width(in);
        uint8_t b[8];
        Store(b, in.U64(), 8);
        fn_->ConfigWrite(off, absl::MakeConstSpan(b, w));
        break;
      }
      case 2:
      case 3: {  // raw BAR access near a region
        static constexpr uint64_t kBases[] = {0,      0x800,  0x1000, 0x2000,
                                              0x3000, 0x4000, 0xfff0, 0};
        const int bar = in.U8() % 7;
        uint64_t off = kBases[in.U8() % 8] + in.U8();
        if (in.U8() == 0xff) off = in.U64();
        const size_t w = Width(in);
        uint8_t b[8];
        if (op % 14 == 2) {
          fn_->BarRead(bar, off, absl::MakeSpan(b, w));
        } else {
          Store(b, in.U64(), 8);
          fn_->BarWrite(bar, off, absl::MakeConstSpan(b, w));
        }
        break;
      }
      case 4: {  // a legacy register at its own width
        static constexpr struct {
          uint8_t off, width;
        } kRegs[] = {{0, 4},  {4, 4},  {8, 4},  {12, 2}, {14, 2}, {16, 2},
                     {18, 1}, {19, 1}, {20, 2}, {22, 2}, {24, 4}, {20, 4}};
        const auto& r = kRegs[in.U8() % 12];
        uint64_t v = in.U32();
        if (r.off == 18) v = StatusValue(in);
        Reg(kLegacyBar, r.off, v, r.width, in.U8() & 1);
        break;
      }
      case 5: {  // a common-config field at its own width
        static constexpr struct {
          uint8_t off, width;
        } kFields[] = {{0x00, 4}, {0x04, 4}, {0x08, 4}, {0x0c, 4}, {0x10, 2},
                       {0x12, 2}, {0x14, 1}, {0x15, 1}, {0x16, 2}, {0x18, 2},
                       {0x1a, 2}, {0x1c, 2}, {0x1e, 2}, {0x20, 4}, {0x24, 4},
                       {0x28, 8}, {0x30, 8}, {0x38, 2}, {0x3a, 2}};
        const auto& f = kFields[in.U8() % 19];
        uint64_t v = in.U64();
        if (f.off == 0x14) v = StatusValue(in);
        if (f.off == 0x1c) v = in.U8() & 1 ? 1 : v;
        Reg(kModernBar, kModernCommonOffset + f.off, v, f.width, in.U8() & 1);
        break;
      }
      case 6: {  // poke guest memory
        const uint64_t addr = in.U32() % kMemSize;
        uint8_t b[8];
        Store(b, in.U64(), 8);
        const size_t n = std::min<uint64_t>(8, kMemSize - addr);
        (void)memory_.Write(addr, absl::MakeConstSpan(b, n));
        break;
      }
      case 7:  // lay out queue 0 properly
        SetupQueue(in);
        break;
      case 8: {  // publish a chain and kick
        if (!queue_.has_value()) break;
        const int n = 1 + in.U8() % 4;
        std::vector<virtqueue::testing::DriverQueue::Buffer> bufs;
        for (int i = 0; i < n; ++i) {
          bufs.push_back({.addr = 0x200000 + (in.U16() % 0x1000) * 16ull,
                          .len = in.U16() % 8192u,
                          .writable = (in.U8() & 3) != 0});
        }
        (void)queue_->AddChain(bufs);
        Kick(in);
        break;
      }
      case 9:
        if (queue_.has_value()) (void)queue_->PopUsed();
        break;
      case 10:  // a doorbell from an ioeventfd
        fn_->NotifyQueue(in.U8() % 3);
        break;
      case 11: {  // MSI-X: enable/disable, mask, program a vector
        const uint32_t cap = fn_->msix()->capability_offset();
        uint8_t b[2];
        Store(b, in.U16() & 0xc000, 2);
        fn_->ConfigWrite(cap + 2, absl::MakeConstSpan(b, 2));
        const uint16_t v = in.U8() % 3;
        uint8_t e[4];
        Store(e, 0xfee00000, 4);
        fn_->BarWrite(kMsixBar, 16 * v, absl::MakeConstSpan(e, 4));
        Store(e, in.U8() & 1, 4);
        fn_->BarWrite(kMsixBar, 16 * v + 12, absl::MakeConstSpan(e, 4));
        break;
      }
      case 12: {  // the PCI_CFG window
        uint8_t b[4];
        b[0] = in.U8() % 8;
        fn_->ConfigWrite(pci_cfg_ + 4, absl::MakeConstSpan(b, 1));
        Store(b, in.U8() & 1 ? in.U32() : in.U16() % 0x3010, 4);
        fn_->ConfigWrite(pci_cfg_ + 8, absl::MakeConstSpan(b, 4));
        Store(b, in.U8() % 9, 4);
        fn_->ConfigWrite(pci_cfg_ + 12, absl::MakeConstSpan(b, 4));
        const size_t w = Width(in);
        if (in.U8() & 1) {
          uint8_t d[8];
          fn_->ConfigRead(pci_cfg_ + 16, absl::MakeSpan(d, w > 4 ? 4 : w));
        } else {
          uint8_t d[4];
          Store(d, in.U32(), 4);
          fn_->ConfigWrite(pci_cfg_ + 16,
                           absl::MakeConstSpan(d, w > 4 ? 4 : w));
        }
        break;
      }
      case 13:
        fn_->state().NotifyConfigChange();
        break;
    }
    CheckInvariants();
  }

 private:
  // Mostly plausible status values: the next bit of the probe, 0, or noise.
  uint8_t StatusValue(Input& in) {
    static constexpr uint8_t kSeq[] = {0,    1,    3,    11,   15, 7,
                                       0x80, 0x40, 0x83, 0x8f, 2,  4};
    const uint8_t s = in.U8();
    return s < 0xf0 ? kSeq[s % 12] : in.U8();
  }

  void Reg(int bar, uint64_t off, uint64_t v, size_t w, bool via_window) {
    uint8_t b[8];
    Store(b, v, 8);
    if (via_window && w <= 4 && w != 3) {
      // The same write through VIRTIO_PCI_CAP_PCI_CFG.
      uint8_t c[4];
      c[0] = static_cast<uint8_t>(bar);
      fn_->ConfigWrite(pci_cfg_ + 4, absl::MakeConstSpan(c, 1));
      Store(c, off, 4);
      fn_->ConfigWrite(pci_cfg_ + 8, absl::MakeConstSpan(c, 4));
      Store(c, w, 4);
      fn_->ConfigWrite(pci_cfg_ + 12, absl::MakeConstSpan(c, 4));
      fn_->ConfigWrite(pci_cfg_ + 16, absl::MakeConstSpan(b, w));
      return;
    }
    fn_->BarWrite(bar, off, absl::MakeConstSpan(b, w));
  }

  void SetupQueue(Input& in) {
    using virtqueue::testing::DriverQueue;
    const bool legacy = in.U8() & 1;
    const uint16_t size = static_cast<uint16_t>(1u << (in.U8() % 9));  // 1..256
    if (legacy) {
      const uint64_t base = 0x10000 + (in.U8() % 16) * 0x1000ull;
      queue_.emplace(memory_, DriverQueue::LegacyLayout(256, base, 4096));
      Reg(kLegacyBar, kLegacyQueueSelect, 0, 2, false);
      Reg(kLegacyBar, kLegacyQueuePfn, base >> 12, 4, false);
    } else {
      DriverQueue::Layout l{
          .size = size, .desc = 0x100000, .avail = 0x110000, .used = 0x120000};
      queue_.emplace(memory_, l);
      Reg(kModernBar, kModernCommonOffset + kCommonQueueSelect, 0, 2, false);
      Reg(kModernBar, kModernCommonOffset + kCommonQueueSize, size, 2, false);
      Reg(kModernBar, kModernCommonOffset + kCommonQueueDesc, l.desc, 8, false);
      Reg(kModernBar, kModernCommonOffset + kCommonQueueDriver, l.avail, 4,
          false);
      Reg(kModernBar, kModernCommonOffset + kCommonQueueDriver + 4, 0, 4,
          false);
      Reg(kModernBar, kModernCommonOffset + kCommonQueueDevice, l.used, 8,
          false);
      Reg(kModernBar, kModernCommonOffset + kCommonQueueEnable, 1, 2, false);
    }
    queue_->set_event_idx(in.U8() & 1);
  }

  void Kick(Input& in) {
    switch (in.U8() % 3) {
      case 0:
        Reg(kLegacyBar, kLegacyQueueNotify, 0, 2, false);
        break;
      case 1:
        Reg(kModernBar, kModernNotifyOffset, queue_->avail_idx() << 16, 4,
            false);
        break;
      default:
        Reg(kModernBar, kModernNotifyOffset, 0, 2, false);
        break;
    }
  }

  uint32_t FindCap(uint8_t type) {
    const ConfigSpace& cs = fn_->config_space();
    uint32_t pos = cs.Get8(0x34);
    for (int i = 0; i < 48 && pos != 0; ++i) {
      if (cs.Get8(pos) == kCapIdVendor && cs.Get8(pos + 3) == type) return pos;
      pos = cs.Get8(pos + 1);
    }
    return 0;
  }

  void CheckInvariants() {
    const ConfigSpace& cs = fn_->config_space();
    VMMKIT_FUZZ_CHECK(cs.Get16(0x00) == 0x1af4);
    VMMKIT_FUZZ_CHECK(cs.Get16(0x02) == 0x1005);
    VMMKIT_FUZZ_CHECK(cs.Get16(0x2e) == 4);
    VMMKIT_FUZZ_CHECK((fn_->isr() & ~3) == 0);
    VMMKIT_FUZZ_CHECK(!sinks_.intx || fn_->intx_level());
    VMMKIT_FUZZ_CHECK(sinks_.intx == fn_->intx_asserted());
    if (!fn_->msix()->enabled()) VMMKIT_FUZZ_CHECK(sinks_.msis == last_msis_);
    last_msis_ = sinks_.msis;
    const uint8_t st = fn_->state().status();
    if ((st & virtio::kStatusDriverOk) && !fn_->state().active()) {
      VMMKIT_FUZZ_CHECK(st &
                        (virtio::kStatusNeedsReset | virtio::kStatusFailed));
    }
  }

  const virtqueue::GuestMemory& memory_;
  virtio::RngDevice rng_;
  std::unique_ptr<VirtioPciFunction> fn_;
  Sinks sinks_;
  int last_msis_ = 0;
  uint32_t pci_cfg_ = 0;
  std::optional<virtqueue::testing::DriverQueue> queue_;
};

}  // namespace
}  // namespace vmmkit::pci

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using vmmkit::virtqueue::GuestMemoryMmap;
  // One mapping for the process, cleared before every input so that runs
  // are reproducible.
  static GuestMemoryMmap* memory = [] {
    auto m = GuestMemoryMmap::Create(
        {{.guest_base = 0, .size = vmmkit::pci::kMemSize}});
    if (!m.ok()) std::abort();
    return m->release();
  }();
  // Private anonymous pages read as zero again after MADV_DONTNEED, which
  // costs only for the pages the last input touched (a 4 MiB memset per
  // input halved the execution rate).
  uint8_t* host = memory->HostPointer(0, vmmkit::pci::kMemSize);
  if (madvise(host, vmmkit::pci::kMemSize, MADV_DONTNEED) != 0) {
    std::memset(host, 0, vmmkit::pci::kMemSize);
  }
  vmmkit::pci::Input in(data, size);
  vmmkit::pci::Harness h(*memory);
  for (int i = 0; i < vmmkit::pci::kMaxSteps && !in.done(); ++i) h.Step(in);
  if (std::getenv("VMMKIT_FUZZ_VERBOSE") != nullptr) h.Report();
  return 0;
}
