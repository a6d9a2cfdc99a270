#include "ccw/subchannel.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"

namespace vmmkit::ccw {
namespace {

constexpr uint8_t kChannelEndDeviceEnd = kDevStatChannelEnd | kDevStatDeviceEnd;

// One CCW of a command's data chain and where its data area starts in the
// command's logical buffer.
struct Segment {
  uint32_t ccw_address;
  Ccw ccw;
  size_t start;

  size_t end() const { return start + ccw.count; }
};

struct FetchedCcw {
  uint32_t address;
  Ccw ccw;
};

}  // namespace

// The state of one channel program, from START SUBCHANNEL to its status.
class ProgramRun {
 public:
  ProgramRun(Subchannel& sch, const Orb& orb)
      : sch_(sch),
        orb_(orb),
        format_(orb.format()),
        limit_(AddressLimit(orb.format())),
        format2_idaws_(orb.control & kOrbFormat2Idaw),
        idaw_block_(format2_idaws_ && !(orb.control & kOrbIdaw2K) ? 4096
                                                                  : 2048) {}

  Irb Run();

  // For DataStream: the CCW that continues the data chain after the one at
  // `previous`, with its TIC (if any) followed and its rules checked.
  absl::StatusOr<FetchedCcw> FetchDataChained(uint32_t previous) {
    return Fetch(uint64_t{previous} + 8, /*first=*/false,
                 /*data_chaining=*/true);
  }

  // How many of the `len` bytes at `address` a data transfer may touch: the
  // prefix below `limit` and inside guest memory.
  size_t ValidDataBytes(uint64_t address, size_t len, uint64_t limit) const;

  // Indirect data addressing: where byte `offset` of the data area of `ccw`
  // (at `ccw_address`, with the IDA flag) is, and how many bytes from there
  // are contiguous (to the end of its IDAW block).
  struct IdaPiece {
    uint64_t address;
    size_t length;
  };
  absl::StatusOr<IdaPiece> TranslateIndirect(uint32_t ccw_address,
                                             const Ccw& ccw, size_t offset);

  // Data addresses below this, directly in a CCW...
  uint64_t address_limit() const { return limit_; }
  // ... or in an IDAW: 31 bits for format-1 IDAWs, 64 for format-2 ones.
  uint64_t idaw_address_limit() const {
    return format2_idaws_ ? ~uint64_t{0} : uint64_t{1} << 31;
  }

  // Records a program check found at the CCW at `ccw_address` and returns the
  // status the caller hands on.
  absl::Status ProgramCheck(uint64_t ccw_address, absl::StatusCode code,
                            std::string why) {
    if (!program_check_) {
      program_check_ = true;
      program_check_address_ = static_cast<uint32_t>(ccw_address + 8);
    }
    return absl::Status(code, why);
  }

  const GuestMemory& memory() const { return sch_.memory_; }
  CcwFormat format() const { return format_; }

 private:
  absl::StatusOr<FetchedCcw> Fetch(uint64_t address, bool first,
                                   bool data_chaining);
  CommandResult Dispatch(const Command& command, CcwData& data);
  Irb Finish(Scsw scsw);

  Subchannel& sch_;
  const Orb orb_;
  const CcwFormat format_;
  const uint64_t limit_;

  absl::StatusOr<uint64_t> ReadIdaw(uint32_t ccw_address, uint64_t address);

  // IDAW format (ORB H bit) and block size (ORB T bit for format 2).
  const bool format2_idaws_;
  const uint64_t idaw_block_;

  uint32_t ccws_fetched_ = 0;
  uint32_t ccws_without_data_ = 0;
  bool pci_ = false;
  bool program_check_ = false;
  uint32_t program_check_address_ = 0;
};

namespace {

// The data area of one command (see CcwData in command_handler.h).
class DataStream final : public CcwData {
 public:
  DataStream(ProgramRun& run, uint32_t ccw_address, const Ccw& ccw)
      : run_(run) {
    segments_.push_back(Segment{ccw_address, ccw, 0});
  }

  absl::StatusOr<size_t> CopyToGuest(absl::Span<const uint8_t> bytes) override {
    return Transfer(Op::kStore, bytes.data(), nullptr, bytes.size());
  }
  absl::StatusOr<size_t> CopyFromGuest(absl::Span<uint8_t> out) override {
    return Transfer(Op::kLoad, nullptr, out.data(), out.size());
  }
  absl::StatusOr<size_t> Skip(size_t n) override {
    return Transfer(Op::kSkip, nullptr, nullptr, n);
  }
  void Rewind() override {
    pos_ = 0;
    index_ = 0;
  }
  size_t position() const override { return pos_; }
  size_t known_count() const override { return segments_.back().end(); }
  absl::Status status() const override { return status_; }

  const std::vector<Segment>& segments() const { return segments_; }
  // The furthest position reached: the command's byte count.
  size_t high_water() const { return high_; }
  // The device asked for more than the program's count.
  bool overrun() const { return overrun_; }

 private:
  enum class Op { kStore, kLoad, kSkip };

  absl::StatusOr<size_t> Transfer(Op op, const uint8_t* in, uint8_t* out,
                                  size_t n);

  ProgramRun& run_;
  std::vector<Segment> segments_;
  size_t index_ = 0;  // the segment holding pos_ (or the last one)
  size_t pos_ = 0;
  size_t high_ = 0;
  bool overrun_ = false;
  absl::Status status_;
};

absl::StatusOr<size_t> DataStream::Transfer(Op op, const uint8_t* in,
                                            uint8_t* out, size_t n) {
  if (!status_.ok()) return status_;
  size_t done = 0;
  while (done < n) {
    // Find the segment holding pos_, data chaining into the next CCW when the
    // position reaches the end of the last one fetched. Each iteration either
    // moves to a segment already fetched or fetches one (bounded by the
    // program's CCW limit), so this ends.
    while (pos_ >= segments_[index_].end()) {
      if (index_ + 1 < segments_.size()) {
        ++index_;
        continue;
      }
      const Segment& last = segments_.back();
      if (!last.ccw.chain_data()) {
        overrun_ = true;
        return done;
      }
      absl::StatusOr<FetchedCcw> next = run_.FetchDataChained(last.ccw_address);
      if (!next.ok()) {
        status_ = next.status();
        return status_;
      }
      segments_.push_back(Segment{next->address, next->ccw, last.end()});
      ++index_;
    }
    const Segment& seg = segments_[index_];
    const size_t offset = pos_ - seg.start;
    size_t chunk = std::min(n - done, seg.ccw.count - offset);
    // PoP "Skip": on input, the skip flag suppresses the transfer of data to
    // storage (and storage is not accessed). Output is unaffected.
    const bool moves_data =
        op == Op::kLoad || (op == Op::kStore && !seg.ccw.skip());
    if (moves_data) {
      uint64_t address = uint64_t{seg.ccw.data_address} + offset;
      uint64_t limit = run_.address_limit();
      if (seg.ccw.indirect()) {
        absl::StatusOr<ProgramRun::IdaPiece> piece =
            run_.TranslateIndirect(seg.ccw_address, seg.ccw, offset);
        if (!piece.ok()) {
          status_ = piece.status();
          return status_;
        }
        address = piece->address;
        chunk = std::min(chunk, piece->length);
        limit = run_.idaw_address_limit();
      }
      const size_t valid = run_.ValidDataBytes(address, chunk, limit);
      absl::Status s;
      if (valid > 0) {
        s = op == Op::kStore
                ? run_.memory().Write(address,
                                      absl::MakeConstSpan(in + done, valid))
                : run_.memory().Read(address,
                                     absl::MakeSpan(out + done, valid));
      }
      if (!s.ok() || valid < chunk) {
        const size_t moved = s.ok() ? valid : 0;
        pos_ += moved;
        done += moved;
        high_ = std::max(high_, pos_);
        // PoP "Program Check": "Invalid Data Address: The channel subsystem
        // has attempted to transfer data to or from a storage location which
        // is not available".
        status_ = run_.ProgramCheck(
            seg.ccw_address, absl::StatusCode::kOutOfRange,
            absl::StrFormat("invalid data address 0x%x (CCW at 0x%x)",
                            address + moved, seg.ccw_address));
        return status_;
      }
    }
    pos_ += chunk;
    done += chunk;
    high_ = std::max(high_, pos_);
  }
  return done;
}

}  // namespace

size_t ProgramRun::ValidDataBytes(uint64_t address, size_t len,
                                  uint64_t limit) const {
  if (address >= limit) return 0;
  len = static_cast<size_t>(std::min<uint64_t>(len, limit - address));
  const GuestMemory& mem = memory();
  if (mem.Contains(address, len)) return len;
  // The prefix that is guest memory, across adjacent regions.
  size_t valid = 0;
  for (const virtqueue::MemoryRegion& r : mem.regions()) {
    const uint64_t at = address + valid;
    if (valid == len) break;
    if (at < r.guest_base || at - r.guest_base >= r.size) {
      if (r.guest_base > at) break;  // a hole (regions are sorted)
      continue;
    }
    valid += static_cast<size_t>(
        std::min<uint64_t>(len - valid, r.guest_base + r.size - at));
  }
  return valid;
}

absl::StatusOr<uint64_t> ProgramRun::ReadIdaw(uint32_t ccw_address,
                                              uint64_t address) {
  const size_t size = format2_idaws_ ? 8 : 4;
  uint8_t raw[8];
  if (address >= limit_ || limit_ - address < size ||
      !memory().Read(address, absl::MakeSpan(raw, size)).ok()) {
    // "Invalid IDAW Address: The channel subsystem has attempted to fetch an
    // IDAW from a storage location which is not available".
    return ProgramCheck(ccw_address, absl::StatusCode::kOutOfRange,
                        absl::StrFormat("invalid IDAW address 0x%x", address));
  }
  if (format2_idaws_) {
    return (uint64_t{LoadBe32(raw)} << 32) | LoadBe32(raw + 4);
  }
  const uint32_t idaw = LoadBe32(raw);
  // "Invalid IDAW Specification: ... bit 0 of a format-1 IDAW is not zero".
  if (idaw & 0x80000000u) {
    return ProgramCheck(ccw_address, absl::StatusCode::kInvalidArgument,
                        "format-1 IDAW with bit 0 set");
  }
  return idaw;
}

absl::StatusOr<ProgramRun::IdaPiece> ProgramRun::TranslateIndirect(
    uint32_t ccw_address, const Ccw& ccw, size_t offset) {
  const uint64_t list = ccw.data_address;
  const size_t idaw_size = format2_idaws_ ? 8 : 4;
  // "Invalid IDAW Address Specification: ... the data address does not
  // designate the first IDAW on an integral word (format-1 IDAWs) or
  // doubleword (format-2 IDAWs) boundary."
  if (list % idaw_size) {
    return ProgramCheck(ccw_address, absl::StatusCode::kInvalidArgument,
                        "IDAW list not aligned");
  }
  absl::StatusOr<uint64_t> first = ReadIdaw(ccw_address, list);
  if (!first.ok()) return first.status();
  // The first IDAW may designate any byte; its block ends at the next block
  // boundary. Every later IDAW designates the start of a block.
  const uint64_t first_len = idaw_block_ - (*first % idaw_block_);
  const size_t left = ccw.count - offset;
  if (offset < first_len) {
    return IdaPiece{*first + offset, static_cast<size_t>(std::min<uint64_t>(
                                         first_len - offset, left))};
  }
  const uint64_t index = 1 + (offset - first_len) / idaw_block_;
  const uint64_t within = (offset - first_len) % idaw_block_;
  absl::StatusOr<uint64_t> idaw =
      ReadIdaw(ccw_address, list + index * idaw_size);
  if (!idaw.ok()) return idaw.status();
  // "... the second or subsequent IDAW does not designate the first byte of
  // a block."
  if (*idaw % idaw_block_) {
    return ProgramCheck(
        ccw_address, absl::StatusCode::kInvalidArgument,
        absl::StrFormat("IDAW %d (0x%x) not on a block boundary", index,
                        *idaw));
  }
  return IdaPiece{*idaw + within, static_cast<size_t>(std::min<uint64_t>(
                                      idaw_block_ - within, left))};
}

absl::StatusOr<FetchedCcw> ProgramRun::Fetch(uint64_t address, bool first,
                                             bool data_chaining) {
  const Subchannel::Options& opt = sch_.options_;
  bool after_tic = false;
  uint64_t tic_address = 0;
  // At most two rounds: a CCW, or a TIC and the CCW it designates (a TIC
  // designating a TIC is a program check).
  for (int round = 0; round < 2; ++round) {
    if (ccws_fetched_ >= opt.max_ccws) {
      return ProgramCheck(address, absl::StatusCode::kResourceExhausted,
                          absl::StrFormat("more than %u CCWs", opt.max_ccws));
    }
    if (!data_chaining && ccws_without_data_ >= opt.max_ccws_without_data) {
      return ProgramCheck(
          address, absl::StatusCode::kResourceExhausted,
          absl::StrFormat("more than %u CCWs without data transfer",
                          opt.max_ccws_without_data));
    }
    ++ccws_fetched_;
    absl::StatusOr<Ccw> read = ReadCcw(memory(), address, format_);
    if (!read.ok()) {
      // PoP: an invalid CCW address reached through a TIC is reported at the
      // TIC.
      return ProgramCheck(after_tic ? tic_address : address,
                          read.status().code(),
                          std::string(read.status().message()));
    }
    const Ccw ccw = *read;
    if (ccw.is_tic()) {
      // PoP "Transfer in Channel": "The CCW designated by the ORB may not
      // specify transfer in channel", and "a CCW specifying transfer in
      // channel may not be fetched from a location designated by an
      // immediately preceding transfer in channel".
      if (first && !after_tic) {
        return ProgramCheck(address, absl::StatusCode::kInvalidArgument,
                            "the first CCW is a TIC");
      }
      if (after_tic) {
        return ProgramCheck(address, absl::StatusCode::kInvalidArgument,
                            "TIC to TIC");
      }
      // Format 1: bits 0-3 and 8-32 of a TIC must be zeros.
      if (format_ == CcwFormat::kFormat1 &&
          (ccw.cmd != kCmdTic || ccw.flags != 0 || ccw.count != 0 ||
           (ccw.data_address & 0x80000000u))) {
        return ProgramCheck(address, absl::StatusCode::kInvalidArgument,
                            "format-1 TIC with nonzero reserved bits");
      }
      // "To address a CCW on integral boundaries for doublewords, a CCW
      // specifying transfer in channel must contain zeros in bit positions
      // 29-31" of its address.
      if (ccw.data_address & 7) {
        return ProgramCheck(address, absl::StatusCode::kInvalidArgument,
                            "TIC address not doubleword aligned");
      }
      tic_address = address;
      address = ccw.data_address;
      after_tic = true;
      continue;
    }
    if (!data_chaining && ClassifyCommand(ccw.cmd) == CommandType::kInvalid) {
      return ProgramCheck(
          address, absl::StatusCode::kInvalidArgument,
          absl::StrFormat("invalid command code 0x%02x", ccw.cmd));
    }
    if (ccw.modified_indirect()) {
      return ProgramCheck(address, absl::StatusCode::kUnimplemented,
                          "modified indirect data addressing (MIDA) is not "
                          "supported");
    }
    if (ccw.suspend()) {
      return ProgramCheck(address, absl::StatusCode::kUnimplemented,
                          "suspend is not supported");
    }
    if (format_ == CcwFormat::kFormat1 && (ccw.data_address & 0x80000000u)) {
      return ProgramCheck(address, absl::StatusCode::kInvalidArgument,
                          "format-1 data address with bit 0 set");
    }
    if (ccw.count == 0 &&
        (format_ == CcwFormat::kFormat0 || data_chaining || ccw.chain_data())) {
      return ProgramCheck(address, absl::StatusCode::kInvalidArgument,
                          "invalid count 0");
    }
    return FetchedCcw{static_cast<uint32_t>(address), ccw};
  }
  // Not reached: the second round either returns a CCW or a TIC-to-TIC check.
  return ProgramCheck(address, absl::StatusCode::kInternal, "fetch");
}

CommandResult ProgramRun::Dispatch(const Command& command, CcwData& data) {
  switch (command.code) {
    case kCmdNoop:
      // An immediate operation: no data.
      return CommandResult::Accepted();
    case kCmdBasicSense: {
      absl::Status s = data.CopyToGuest(sch_.sense_).status();
      if (s.ok()) sch_.sense_.fill(0);
      return CommandResult::Accepted();
    }
    case kCmdSenseId: {
      const SenseIdData id = sch_.handler_.sense_id();
      const size_t ciws = std::min(id.num_ciws, kMaxCiws);
      std::array<uint8_t, kSenseIdHeaderBytes + 4 * kMaxCiws> bytes{};
      bytes[0] = 0xff;
      StoreBe16(&bytes[1], id.cu_type);
      bytes[3] = id.cu_model;
      StoreBe16(&bytes[4], id.dev_type);
      bytes[6] = id.dev_model;
      for (size_t i = 0; i < ciws; ++i) {
        uint8_t* p = &bytes[kSenseIdHeaderBytes + 4 * i];
        p[0] = static_cast<uint8_t>(kCiwEntryTypeCiw | (id.ciws[i].type & 0xf));
        p[1] = id.ciws[i].command;
        StoreBe16(p + 2, id.ciws[i].count);
      }
      (void)data.CopyToGuest(
          absl::MakeConstSpan(bytes.data(), kSenseIdHeaderBytes + 4 * ciws));
      return CommandResult::Accepted();
    }
    default:
      return sch_.handler_.Execute(command, data);
  }
}

Irb ProgramRun::Run() {
  Scsw scsw;
  scsw.control = kScswFcStart;
  if (format_ == CcwFormat::kFormat1) scsw.control |= kScswFormat1;
  if (orb_.control & kOrbPrefetch) scsw.control |= kScswPrefetch;
  if (orb_.control & kOrbInitialStatus) scsw.control |= kScswInitialStatus;
  if (orb_.control & kOrbAddressLimit) scsw.control |= kScswAddressLimit;

  uint64_t address = orb_.cpa;
  bool first = true;
  // Each round fetches at least one CCW, and Fetch refuses more than
  // max_ccws: this loop is bounded by the program's CCW limit.
  for (;;) {
    absl::StatusOr<FetchedCcw> fetched =
        Fetch(address, first, /*data_chaining=*/false);
    if (!fetched.ok()) {
      // The new command was never started: no device status, and the
      // residual count is meaningless.
      scsw.device_status = 0;
      scsw.count = 0;
      scsw.subchannel_status |= kSchStatProgramCheck;
      scsw.ccw_address = program_check_address_;
      return Finish(scsw);
    }
    const Ccw& ccw = fetched->ccw;
    Command command{.code = ccw.cmd,
                    .flags = ccw.flags,
                    .count = ccw.count,
                    .ccw_address = fetched->address,
                    .format = format_,
                    .first_in_program = first};
    first = false;
    // Sense data describes the last unit check until the next command other
    // than BASIC SENSE.
    if (ccw.cmd != kCmdBasicSense) sch_.sense_.fill(0);

    DataStream data(*this, fetched->address, ccw);
    const CommandResult result = Dispatch(command, data);

    for (const Segment& seg : data.segments()) pci_ |= seg.ccw.pci();
    const Segment& last = data.segments().back();
    const size_t used = std::min(data.high_water(), last.end());
    const uint16_t residual =
        static_cast<uint16_t>(last.end() - std::max(used, last.start));
    scsw.ccw_address = last.ccw_address + 8;
    scsw.count = residual;

    if (!data.status().ok()) {
      // Data chaining or a data address failed while the device was
      // transferring: the device is told to stop and ends normally.
      scsw.device_status = kChannelEndDeviceEnd;
      scsw.subchannel_status |= kSchStatProgramCheck;
      scsw.ccw_address = program_check_address_;
      return Finish(scsw);
    }
    switch (result.kind()) {
      case CommandResult::Kind::kProgramCheck:
        scsw.device_status = 0;
        scsw.subchannel_status |= kSchStatProgramCheck;
        return Finish(scsw);
      case CommandResult::Kind::kUnitCheck:
        sch_.sense_ = result.sense();
        if (result.is_command_reject()) {
          scsw.device_status = kDevStatUnitCheck;
          scsw.count = ccw.count;
        } else {
          scsw.device_status = kChannelEndDeviceEnd | kDevStatUnitCheck;
        }
        return Finish(scsw);
      case CommandResult::Kind::kUnitException:
        scsw.device_status = kChannelEndDeviceEnd | kDevStatUnitException;
        return Finish(scsw);
      case CommandResult::Kind::kAccepted:
        break;
    }
    scsw.device_status = kChannelEndDeviceEnd;

    // PoP "Incorrect Length": the number of bytes the device moved differs
    // from the program's count, i.e. the device wanted more (overrun), it
    // stopped with a residual count, or it stopped while the last CCW reached
    // still asked for data chaining. The SLI flag suppresses the indication
    // unless CD is also one (check_len = !(SLI && !CD)).
    const bool moved_data = data.high_water() > 0 || data.overrun();
    const bool length_differs =
        data.overrun() || residual != 0 || last.ccw.chain_data();
    bool incorrect_length = length_differs && last.ccw.check_length();
    // Immediate operations: format-0 CCWs never indicate incorrect length
    // for them (the System/370 rule); format-1 CCWs do unless the ORB's L bit
    // (incorrect-length-suppression mode) is one.
    if (!moved_data && (format_ == CcwFormat::kFormat0 ||
                        orb_.incorrect_length_suppression())) {
      incorrect_length = false;
    }
    if (incorrect_length) {
      // Command chaining is suppressed.
      scsw.subchannel_status |= kSchStatIncorrectLength;
      return Finish(scsw);
    }
    if (!moved_data) ++ccws_without_data_;
    if (!last.ccw.chain_command()) return Finish(scsw);
    address = uint64_t{last.ccw_address} + 8;
  }
}

Irb ProgramRun::Finish(Scsw scsw) {
  if (pci_) scsw.subchannel_status |= kSchStatPci;
  scsw.control |= kScswScPrimary | kScswScSecondary | kScswScStatusPending;
  if ((scsw.device_status & ~kChannelEndDeviceEnd) ||
      (scsw.subchannel_status & ~kSchStatPci)) {
    scsw.control |= kScswScAlert;
  }
  Irb irb;
  irb.scsw = scsw;
  if ((scsw.device_status & kDevStatUnitCheck) && sch_.concurrent_sense_) {
    // Concurrent sense: the sense bytes travel with the unit check, and the
    // subchannel's copy is consumed.
    irb.scsw.control |= kScswExtendedControl;
    irb.erw = kErwConcurrentSense |
              (uint32_t{kSenseBytes & 0x3f} << kErwSenseCountShift);
    irb.ecw = sch_.sense_;
    sch_.sense_.fill(0);
  }
  return irb;
}

Subchannel::Subchannel(const GuestMemory& memory, CcwCommandHandler& handler,
                       InterruptSink& sink, Options options)
    : memory_(memory), handler_(handler), sink_(sink), options_(options) {}

absl::Status Subchannel::Start(const Orb& orb) {
  if (pending_.has_value()) {
    return absl::FailedPreconditionError("status pending");
  }
  if (orb.control & kOrbReserved) {
    return absl::InvalidArgumentError(
        absl::StrFormat("ORB reserved bits set: 0x%08x", orb.control));
  }
  if (orb.cpa & 0x80000000u) {
    return absl::InvalidArgumentError("ORB channel program address bit 0 set");
  }
  if (orb.control & kOrbTransportMode) {
    return absl::UnimplementedError("transport-mode channel programs");
  }
  ProgramRun run(*this, orb);
  pending_ = run.Run();
  sink_.StatusPending(*this, orb.intparm);
  return absl::OkStatus();
}

absl::Status Subchannel::StartAt(uint64_t orb_address) {
  if (orb_address & 3) {
    return absl::InvalidArgumentError("ORB address not word aligned");
  }
  OrbWire wire{};
  // Words 0-2; the extension (words 3-7) is ignored.
  absl::Status s = memory_.Read(
      orb_address, absl::MakeSpan(reinterpret_cast<uint8_t*>(&wire), 12));
  if (!s.ok()) return s;
  return Start(DecodeOrb(wire));
}

std::optional<Irb> Subchannel::Test() {
  std::optional<Irb> irb = std::move(pending_);
  pending_.reset();
  return irb;
}

void Subchannel::Reset() {
  sense_.fill(0);
  pending_.reset();
}

}  // namespace vmmkit::ccw
