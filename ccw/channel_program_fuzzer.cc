// Fuzzes the channel program interpreter: the input is a small header (ORB
// control bits, channel program address, subchannel options, the replies of
// a fake device) followed by the bytes of guest memory, which holds the
// channel program, its data areas, TICs into itself and whatever else.
// Properties: no crash, no hang (bounded by Subchannel::Options), no access
// outside guest memory (ASan), exactly one status per accepted start, and a
// status that is internally consistent.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>

#include "ccw/ccw.h"
#include "ccw/command_handler.h"
#include "ccw/subchannel.h"
#include "virtqueue/guest_memory.h"

namespace {

using namespace vmmkit::ccw;  // NOLINT: a fuzz driver
using vmmkit::virtqueue::GuestMemoryMmap;

constexpr uint64_t kMemSize = 64 * 1024;

// A device whose behaviour comes from the input: per command it reads or
// writes some bytes, skips, rewinds, and accepts or rejects.
class FuzzDevice final : public CcwCommandHandler {
 public:
  FuzzDevice(const uint8_t* script, size_t len) : script_(script), len_(len) {}

  SenseIdData sense_id() const override {
    SenseIdData id;
    id.cu_model = 4;
    id.num_ciws = len_ ? script_[0] % 12 : 0;  // > kMaxCiws is clamped
    return id;
  }

  CommandResult Execute(const Command& command, CcwData& data) override {
    uint8_t op = Next();
    uint8_t buf[300];
    std::memset(buf, 0xA5, sizeof(buf));
    size_t n = Next() + (op & 0x40 ? 40 : 0);
    switch (op & 7) {
      case 0:
        (void)data.CopyToGuest(absl::MakeConstSpan(buf, n));
        break;
      case 1:
        (void)data.CopyFromGuest(absl::MakeSpan(buf, n));
        break;
      case 2:
        (void)data.Skip(n * 17);
        (void)data.CopyFromGuest(absl::MakeSpan(buf, 1));
        data.Rewind();
        (void)data.CopyToGuest(absl::MakeConstSpan(buf, 4));
        break;
      case 3:
        return CommandResult::CommandReject();
      case 4: {
        SenseData sense{};
        sense[0] = kSense0EquipmentCheck;
        return CommandResult::UnitCheck(sense);
      }
      case 5:
        return CommandResult::UnitException();
      case 6:
        return CommandResult::ProgramCheck();
      default:
        break;
    }
    if (data.position() > data.known_count()) std::abort();
    (void)command;
    return CommandResult::Accepted();
  }

 private:
  uint8_t Next() {
    if (len_ == 0) return 0;
    uint8_t b = script_[pos_ % len_];
    ++pos_;
    return b;
  }
  const uint8_t* script_;
  size_t len_;
  size_t pos_ = 0;
};

class Sink final : public InterruptSink {
 public:
  void StatusPending(Subchannel&, uint32_t) override { ++count; }
  int count = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  constexpr size_t kHeader = 16;
  if (size < kHeader) return 0;
  static GuestMemoryMmap* mem = [] {
    auto m = GuestMemoryMmap::Create({{.guest_base = 0, .size = kMemSize}});
    if (!m.ok()) std::abort();
    return m->release();
  }();
  // Fresh memory contents for every input: zeros, then the input's bytes.
  if (!mem->Fill(0, kMemSize, 0).ok()) std::abort();
  const size_t body = std::min<size_t>(size - kHeader, kMemSize);
  if (!mem->Write(0, absl::MakeConstSpan(data + kHeader, body)).ok()) {
    std::abort();
  }

  Orb orb;
  orb.intparm = 0x1234;
  orb.control = LoadBe32(data) & ~kOrbReserved & ~kOrbTransportMode;
  // Mostly in-memory program addresses, sometimes anything.
  orb.cpa = LoadBe32(data + 4);
  if (!(data[8] & 0x80)) orb.cpa %= kMemSize;
  orb.cpa &= 0x7fffffff;

  FuzzDevice device(data + 9, 7);
  Sink sink;
  Subchannel::Options options;
  options.max_ccws = 1 + (data[9] % 2 ? 1024 : data[10]);
  options.max_ccws_without_data = data[11];
  Subchannel sch(*mem, device, sink, options);
  sch.set_concurrent_sense(data[12] & 1);
  if (!sch.Start(orb).ok()) std::abort();
  if (sink.count != 1) std::abort();
  std::optional<Irb> irb = sch.Test();
  if (!irb.has_value()) std::abort();
  const Scsw& s = irb->scsw;
  if (!(s.control & kScswScStatusPending)) std::abort();
  // Exactly one kind of ending.
  const bool pc = s.subchannel_status & kSchStatProgramCheck;
  const bool uc = s.device_status & kDevStatUnitCheck;
  if (pc && uc) std::abort();
  if (irb->has_concurrent_sense() && !uc) std::abort();
  // A second program after a BASIC SENSE, in the same memory: the subchannel
  // must still work.
  orb.cpa = (orb.cpa + 8) & 0x7ffffff8;
  if (!sch.Start(orb).ok() || !sch.Test().has_value()) std::abort();
  return 0;
}
