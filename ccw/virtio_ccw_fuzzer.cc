// Fuzzes the virtio-ccw transport through the channel program interpreter: a
// VirtioCcwDevice with virtio-rng behind a Subchannel, and channel programs of
// virtio-ccw commands built in guest memory from the input.
//
// The input is a stream (zeros past its end):
//   header: device [min, max] revision, concurrent sense;
//   then operations, each an opcode byte and its arguments:
//     0 raw bytes into guest memory (offset, length, bytes);
//     1 a channel program of up to 8 CCWs (command from the virtio-ccw set,
//       the generic commands or a raw byte; flags; count; data address from a
//       few useful places or raw), started with a format-1 or format-0 ORB;
//     2 a well-formed block written at a data area: SET_VIRTIO_REV, a legacy
//       or revision-1 SET_VQ block with rings in memory, a thinint area, an
//       indicator address, a feature block, a status byte;
//     3 the guest's notification of a queue; 4 a subchannel reset;
//     5 START SUBCHANNEL with an ORB read from guest memory;
//     6 publish a buffer on queue 0 (ring contents are the fuzzer's).
// Guest memory is 256 KiB at 0 with guard pages around it: any access
// outside crashes. Properties: no crash or hang; every accepted start makes
// exactly one status pending; a unit check leaves command-reject sense; the
// revision stays unset or within [min, max]; the SCSW is consistent.
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <memory>
#include <optional>
#include <vector>

#include "ccw/ccw.h"
#include "ccw/subchannel.h"
#include "ccw/virtio_ccw.h"
#include "virtio-device/rng.h"
#include "virtqueue/guest_memory.h"

namespace {

using namespace vmmkit::ccw;  // NOLINT: a fuzz driver
using vmmkit::virtqueue::GuestMemoryMmap;

constexpr uint64_t kMemSize = 256 * 1024;

class Stream {
 public:
  Stream(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool done() const { return pos_ >= size_; }
  uint8_t U8() { return pos_ < size_ ? data_[pos_++] : 0; }
  uint16_t U16() { return static_cast<uint16_t>(U8() << 8 | U8()); }
  uint32_t U32() { return uint32_t{U16()} << 16 | U16(); }
  uint64_t U64() { return uint64_t{U32()} << 32 | U32(); }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

class Sink final : public InterruptSink, public VirtioCcwInterrupts {
 public:
  void StatusPending(Subchannel&, uint32_t) override { ++pending; }
  void ClassicInterrupt() override { ++classic; }
  void AdapterInterrupt(uint8_t isc) override {
    if (isc > 7) std::abort();
    ++adapter;
  }
  uint64_t pending = 0, classic = 0, adapter = 0;
};

void PutBe(std::vector<uint8_t>& out, uint64_t v, size_t n) {
  for (size_t i = 0; i < n; ++i)
    out.push_back(static_cast<uint8_t>(v >> (8 * (n - 1 - i))));
}

constexpr uint8_t kCommands[] = {
    kVirtioCcwSetVq,
    kVirtioCcwVdevReset,
    kVirtioCcwSetInd,
    kVirtioCcwSetConfInd,
    kVirtioCcwReadFeat,
    kVirtioCcwWriteFeat,
    kVirtioCcwReadConf,
    kVirtioCcwWriteConf,
    kVirtioCcwWriteStatus,
    kVirtioCcwReadVqConf,
    kVirtioCcwReadStatus,
    kVirtioCcwSetIndAdapter,
    kVirtioCcwSetVirtioRev,
    kCmdNoop,
    kCmdBasicSense,
    kCmdTic,
    kCmdSenseId,
};

// Data areas the generator prefers (and the fuzzer can overwrite).
constexpr uint32_t kAreas[] = {0x1000,  0x1100,
                               0x2000,  0x3ff8,
                               0x3fff8, static_cast<uint32_t>(kMemSize) - 3};

void CheckIrb(const Irb& irb) {
  const Scsw& s = irb.scsw;
  if (!(s.control & kScswScStatusPending) || !(s.control & kScswFcStart)) {
    std::abort();
  }
  const bool alert = s.control & kScswScAlert;
  const bool unusual =
      (s.device_status & ~(kDevStatChannelEnd | kDevStatDeviceEnd)) ||
      (s.subchannel_status & ~kSchStatPci);
  if (alert != unusual) std::abort();
  // virtio-ccw's only unit check is a command reject: unit check alone,
  // with the sense byte when it is presented concurrently.
  if (s.device_status & kDevStatUnitCheck) {
    if (s.device_status != kDevStatUnitCheck) std::abort();
    if (irb.has_concurrent_sense() && irb.ecw[0] != kSense0CommandReject) {
      std::abort();
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Stream in(data, size);
  static GuestMemoryMmap* memory = [] {
    auto m = GuestMemoryMmap::Create({{.guest_base = 0, .size = kMemSize}});
    if (!m.ok()) std::abort();
    return m->release();
  }();
  (void)memory->Fill(0, kMemSize, 0);

  const uint8_t hdr = in.U8();
  VirtioCcwDevice::Options options;
  options.min_revision = hdr & 3;
  options.max_revision = (hdr >> 2) & 3;
  vmmkit::virtio::RngDevice rng;
  Sink sink;
  VirtioCcwDevice dev(rng, *memory, options, &sink);
  Subchannel sch(*memory, dev, sink);
  sch.set_concurrent_sense(hdr & 0x10);

  auto check_revision = [&]() {
    const int r = dev.revision();
    if (r != VirtioCcwDevice::kRevisionUnset &&
        (r < options.min_revision || r > options.max_revision)) {
      std::abort();
    }
  };
  auto start = [&](const Orb& orb, bool from_memory, uint64_t orb_addr) {
    const uint64_t before = sink.pending;
    absl::Status s = from_memory ? sch.StartAt(orb_addr) : sch.Start(orb);
    if (s.ok()) {
      if (sink.pending != before + 1) std::abort();
      std::optional<Irb> irb = sch.Test();
      if (!irb.has_value()) std::abort();
      CheckIrb(*irb);
      if ((irb->scsw.device_status & kDevStatUnitCheck) &&
          !irb->has_concurrent_sense() &&
          sch.sense()[0] != kSense0CommandReject) {
        std::abort();  // a unit check without its sense data
      }
    } else if (sink.pending != before) {
      std::abort();
    }
    check_revision();
  };

  for (int ops = 0; ops < 64 && !in.done(); ++ops) {
    switch (in.U8() % 7) {
      case 0: {
        const uint64_t at = uint64_t{in.U16()} * 4 % kMemSize;
        size_t n = in.U8() % 64;
        for (size_t i = 0; i < n && at + i < kMemSize; ++i) {
          const uint8_t b = in.U8();
          (void)memory->Write(at + i, absl::MakeConstSpan(&b, 1));
        }
        break;
      }
      case 1: {
        const uint8_t n = in.U8() % 8 + 1;
        const uint8_t mode = in.U8();
        const uint32_t cpa = (mode & 0x80) ? (in.U16() & ~7u) : 0x800;
        const CcwFormat format =
            (mode & 0x40) ? CcwFormat::kFormat0 : CcwFormat::kFormat1;
        for (uint8_t i = 0; i < n; ++i) {
          Ccw ccw;
          const uint8_t sel = in.U8();
          ccw.cmd = sel < 0xe0 ? kCommands[sel % sizeof(kCommands)] : in.U8();
          const uint8_t f = in.U8();
          // Mostly the flags virtio drivers use; sometimes anything.
          ccw.flags = (f & 0x80) ? in.U8()
                                 : (f & (kCcwFlagCc | kCcwFlagSli | kCcwFlagCd |
                                         kCcwFlagSkip | kCcwFlagPci));
          ccw.count = (f & 0x01) ? in.U16() : in.U8() % 40;
          const uint8_t a = in.U8();
          ccw.data_address = (a & 0x80)
                                 ? in.U32()
                                 : kAreas[a % std::size(kAreas)] + (a >> 4 & 7);
          if (ccw.cmd == kCmdTic) ccw.data_address = cpa + 8 * (a % 10);
          const std::array<uint8_t, 8> bytes = EncodeCcw(ccw, format);
          (void)memory->Write(uint64_t{cpa} + 8 * i, bytes);
        }
        Orb orb;
        orb.intparm = 1;
        orb.control = (format == CcwFormat::kFormat1 ? kOrbFormat1 : 0) |
                      ((mode & 0x20) ? kOrbIncorrectLengthSuppression : 0) |
                      kOrbPrefetch;
        orb.cpa = cpa;
        start(orb, false, 0);
        break;
      }
      case 2: {
        std::vector<uint8_t> b;
        const uint8_t kind = in.U8();
        const uint32_t at = kAreas[kind >> 4 & 3];
        const uint64_t ring = 0x10000 + (in.U8() % 8u) * 0x4000ull;
        const uint16_t num = static_cast<uint16_t>(1u << (in.U8() % 10));
        switch (kind % 7) {
          case 0:
            PutBe(b, in.U8() % 4, 2);
            PutBe(b, 0, 2);
            break;
          case 1:
            PutBe(b, ring, 8);
            PutBe(b, 4096, 4);
            PutBe(b, in.U8() % 2, 2);
            PutBe(b, num, 2);
            break;
          case 2:
            PutBe(b, ring, 8);
            PutBe(b, 0, 4);
            PutBe(b, in.U8() % 2, 2);
            PutBe(b, num, 2);
            PutBe(b, ring + 0x1000, 8);
            PutBe(b, ring + 0x2000, 8);
            break;
          case 3:
            PutBe(b, 0x3000 + in.U8(), 8);
            PutBe(b, 0x3100 + in.U8(), 8);
            PutBe(b, in.U8() % 80, 8);
            b.push_back(in.U8() % 9);
            break;
          case 4:
            PutBe(b, 0x3200 + 8 * (in.U8() % 4), 8);
            break;
          case 5:
            for (int i = 0; i < 4; ++i) b.push_back(in.U8());
            b.push_back(in.U8() % 5);
            break;
          case 6:
            b.push_back(in.U8());
            break;
        }
        (void)memory->Write(at, b);
        break;
      }
      case 3:
        dev.Notify(in.U16() % 4);
        break;
      case 4:
        dev.Reset();
        sch.Reset();
        check_revision();
        break;
      case 5:
        start(Orb{}, true, in.U32() % (kMemSize + 64));
        break;
      case 6: {
        // A device-writable buffer published on a ring the fuzzer may have
        // configured at 0x10000 + k * 0x4000 (little-endian, avail at +0x1000).
        const uint64_t ring = 0x10000 + (in.U8() % 8u) * 0x4000ull;
        const uint16_t idx = in.U16();
        const uint16_t head = in.U8();
        std::vector<uint8_t> desc;
        const uint64_t buf = 0x30000 + uint64_t{in.U8()} * 16;
        for (int i = 0; i < 8; ++i)
          desc.push_back(static_cast<uint8_t>(buf >> (8 * i)));
        const uint32_t len = in.U8();
        for (int i = 0; i < 4; ++i)
          desc.push_back(static_cast<uint8_t>(len >> (8 * i)));
        desc.push_back(2);  // VIRTQ_DESC_F_WRITE
        desc.push_back(0);
        desc.push_back(0);
        desc.push_back(0);
        (void)memory->Write(ring + 16 * (head % 16), desc);
        const uint8_t avail[2] = {static_cast<uint8_t>(head),
                                  static_cast<uint8_t>(head >> 8)};
        (void)memory->Write(ring + 0x1000 + 4 + 2 * (idx % 16), avail);
        const uint8_t idx_le[2] = {static_cast<uint8_t>(idx + 1),
                                   static_cast<uint8_t>((idx + 1) >> 8)};
        (void)memory->Write(ring + 0x1000 + 2, idx_le);
        dev.Notify(0);
        break;
      }
    }
  }
  return 0;
}
