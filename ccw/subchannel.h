// ccw/subchannel.h: a virtual subchannel that runs channel programs.
//
// START SUBCHANNEL hands the subchannel an ORB; Start() runs the whole channel
// program at once (synchronously) against the device's CcwCommandHandler,
// makes the subchannel status pending and tells the VMM through an
// InterruptSink, which queues an I/O interruption. TEST SUBCHANNEL then takes
// the interruption response block with Test().
//
//   class Vmm : public InterruptSink {
//     void StatusPending(Subchannel& sch, uint32_t intparm) override {
//       QueueIoInterrupt(isc_, intparm);
//     }
//   };
//   Subchannel sch(memory, device, vmm);
//   absl::Status s = sch.Start(DecodeOrb(orb_wire));  // SSCH
//   if (absl::IsFailedPrecondition(s)) cc = 1;        // status pending
//   else if (!s.ok()) program_interrupt(OPERAND);
//   ...
//   std::optional<Irb> irb = sch.Test();              // TSCH
//
// The architecture (z/Architecture Principles of Operation, SA22-7832, ch. 15
// "Basic I/O Functions" and 16 "I/O Interruptions"), as implemented:
//
// - CCW addresses: "Invalid CCW-Address Specification: ... the three
//   rightmost bits of the CCW address are not zeros" -> program check; a CCW
//   at or beyond 2^24 (format 0) or 2^31 (format 1), or outside guest memory,
//   is an invalid CCW address -> program check.
// - Command codes: "Invalid Command Code: the four rightmost bits of the
//   command code are zeros" -> program check; not checked during data
//   chaining, where the command code is ignored.
// - Counts: "Invalid Count: A format-0 CCW, other than a CCW specifying
//   transfer in channel, contains zeros in bit positions 48-63, or a format-1
//   CCW that specifies data chaining or that is fetched during data chaining
//   contains zeros in bit positions 16-31" -> program check. A format-1 CCW
//   with count 0 and no data chaining is valid (virtio-ccw's VDEV_RESET).
// - Data addresses: every byte the device moves must lie below the format's
//   limit and in guest memory ("Invalid Data Address") -> program check after
//   the bytes before it were moved; format-1 data addresses must have bit 0
//   zero. Addresses are checked when used, not when the CCW is fetched, so a
//   bad address the device never reaches is no error (the architecture's
//   rule for prefetching).
// - TIC: "The CCW designated by the ORB may not specify transfer in channel"
//   -> program check; a TIC may not fetch a TIC ("Invalid Sequence") ->
//   program check (this also makes TIC-only loops impossible); the TIC
//   target must be doubleword aligned and below the limit -> program check.
//   Format 0 ignores bits 0-3 of the command code and bits 32-63 of a TIC;
//   format 1 requires bits 0-3 and 8-32 (command high nibble, flags, count,
//   address bit 0) to be zero -> program check. TIC works in command and in
//   data chaining.
// - Flags: CD (data chaining, see CcwData) and CC (command chaining) are
//   implemented; SLI with the rule check_len = !(SLI && !CD) of the last CCW
//   of the command; SKP suppresses storing on input; PCI is folded into the
//   final status (subchannel status PCI bit) since the program has finished
//   by the time anyone could see an intermediate interruption. S (suspend)
//   is not implemented: a CCW with S is a program check whether or not the
//   ORB allows suspension (without the ORB's S bit that is the
//   architecture's answer; with it, this model's). MIDA (modified IDA) is
//   not implemented either: program check.
// - IDA (indirect data addressing): the CCW's data address designates a list
//   of IDAWs, read only when the device's position reaches them. With the
//   ORB's H bit clear, format-1 IDAWs (4 bytes, 31-bit addresses, 2 KiB
//   blocks; "bit 0 of a format-1 IDAW is not zero" -> program check); with H
//   set (as Linux always sets it), format-2 IDAWs (8 bytes, 64-bit
//   addresses, 4 KiB blocks, 2 KiB with the ORB's T bit). The list must be
//   word (format 1) or doubleword (format 2) aligned and below the CCW
//   format's limit; the first IDAW may designate any byte, every later one
//   must designate the start of a block ("Invalid IDAW Specification");
//   each violation, or an IDAW outside guest memory, is a program check.
// - Incorrect length: when the device moved a number of bytes different from
//   the program's count (it stopped early: residual > 0, or ended with data
//   chaining still indicated; or it wanted more than the count) and
//   check_len, the subchannel status has incorrect length and command
//   chaining stops. For an immediate operation (the device moved nothing,
//   e.g. NOOP) with a nonzero count, the indication is suppressed for
//   format-0 CCWs, and for format-1 CCWs when the ORB's L bit
//   (incorrect-length-suppression mode) is one; format-1 without L follows
//   SLI. (This is the behaviour Hercules' CCW-ILS test checks.)
// - Loops: at most Options::max_ccws CCWs are fetched per program (TICs and
//   data-chained CCWs included; default 1024) and at most
//   Options::max_ccws_without_data commands without data transfer (default
//   255); the next fetch past either bound is a program check. With
//   TIC-to-TIC forbidden and both bounds, every program ends, and takes at
//   most 1024 * 64 KiB of data.
// - ORB: the format bit, the L bit and the IDAW controls H and T are used;
//   the key, prefetch (P), initial-status (I), address-limit checking (A),
//   suppress-suspended (U), streaming/modification/synchronization (C/M/Y),
//   the MIDAW control D (MIDA CCWs are refused above), LPM and the extension
//   are accepted and ignored (there is one path and no storage keys).
//   Start() refuses reserved ORB bits and a channel program address with bit
//   0 set (an operand exception), and transport mode (B), which is not
//   modelled.
//
// Results (SCSW): function control start; status control primary, secondary
// and status pending, plus alert when anything but channel end and device end
// is indicated. The CCW address field is the address of the last CCW used
// plus 8 (for a program check, of the CCW or TIC in error plus 8); the count
// is the residual count of the last CCW reached (0 when a program check is
// recognized before a command was started). Device status: channel end +
// device end for an executed command (also with incorrect length, or when
// data chaining ran into a program check after the device started); unit
// check alone for a command reject; nothing for a program check found while
// fetching CCWs on command chaining.
//
// Sense data: a unit check stores the device's 32 sense bytes (byte 0 0x80
// for a command reject). They stay until BASIC SENSE reads them (it stores
// min(count, 32) bytes and clears them; a count below 32 without SLI is
// incorrect length), or until the next command other than BASIC SENSE starts
// (which clears them), or - with concurrent sense enabled
// (set_concurrent_sense, the PMCW's "concurrent sense" bit set by MODIFY
// SUBCHANNEL) - until they are presented together with the unit check: the
// IRB from Test() then has the SCSW E bit (extended control), the ERW's
// concurrent-sense bit with a sense count of 32, and the sense bytes in its
// ECW, and the subchannel's sense bytes are cleared.
//
// SENSE ID stores 0xFF, the handler's control-unit type/model and device
// type/model, one unused byte, and the handler's CIWs (8 + 4 * num_ciws
// bytes).
//
// Thread-compatibility: one thread at a time (the VMM serializes SSCH/TSCH of
// a subchannel with the device's lock).
#ifndef VMMKIT_CCW_SUBCHANNEL_H_
#define VMMKIT_CCW_SUBCHANNEL_H_

#include <cstdint>
#include <optional>

#include "absl/status/status.h"
#include "ccw/ccw.h"
#include "ccw/command_handler.h"
#include "virtqueue/guest_memory.h"

namespace vmmkit::ccw {

class Subchannel;

// Implemented by the VMM: an I/O interruption is pending for `subchannel`
// with interruption parameter `intparm`; the guest collects the status with
// TEST SUBCHANNEL (Subchannel::Test()).
class InterruptSink {
 public:
  virtual ~InterruptSink() = default;
  virtual void StatusPending(Subchannel& subchannel, uint32_t intparm) = 0;
};

class Subchannel {
 public:
  struct Options {
    // Bound on the CCWs fetched by one channel program, TICs and
    // data-chained CCWs included.
    uint32_t max_ccws = 1024;
    // Bound on commands that transfer no data in one program (TICs are
    // bounded by max_ccws and the TIC-to-TIC rule).
    uint32_t max_ccws_without_data = 255;
  };

  // `memory`, `handler` and `sink` must outlive the subchannel.
  Subchannel(const GuestMemory& memory, CcwCommandHandler& handler,
             InterruptSink& sink, Options options);
  Subchannel(const GuestMemory& memory, CcwCommandHandler& handler,
             InterruptSink& sink)
      : Subchannel(memory, handler, sink, Options()) {}

  Subchannel(const Subchannel&) = delete;
  Subchannel& operator=(const Subchannel&) = delete;

  // START SUBCHANNEL. kFailedPrecondition if status is pending (condition
  // code 1); kInvalidArgument for an ORB the architecture refuses with an
  // operand exception, kUnimplemented for transport mode (see above).
  // Otherwise runs the program, makes status pending and calls the sink;
  // returns OK whatever the program did (its errors are in the SCSW).
  absl::Status Start(const Orb& orb);
  // Reads the ORB from guest memory first (kOutOfRange if it is not there).
  absl::Status StartAt(uint64_t orb_address);

  // TEST SUBCHANNEL: the pending interruption response, which is cleared
  // (nullopt if no status is pending).
  std::optional<Irb> Test();
  bool status_pending() const { return pending_.has_value(); }

  // The PMCW's concurrent-sense bit (MODIFY SUBCHANNEL).
  void set_concurrent_sense(bool on) { concurrent_sense_ = on; }
  bool concurrent_sense() const { return concurrent_sense_; }

  // The sense bytes held for BASIC SENSE (all zero when none).
  const SenseData& sense() const { return sense_; }

  // Clears sense data and any pending status (a subchannel reset, e.g. CLEAR
  // SUBCHANNEL or a system reset).
  void Reset();

  const Options& options() const { return options_; }

 private:
  friend class ProgramRun;

  const GuestMemory& memory_;
  CcwCommandHandler& handler_;
  InterruptSink& sink_;
  Options options_;
  bool concurrent_sense_ = false;
  SenseData sense_{};
  std::optional<Irb> pending_;
};

}  // namespace vmmkit::ccw

#endif  // VMMKIT_CCW_SUBCHANNEL_H_
