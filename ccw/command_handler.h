// ccw/command_handler.h: what a device behind a virtual subchannel
// implements, and what it sees of one channel command.
//
// The channel program interpreter (subchannel.h) fetches and checks CCWs,
// follows TICs and data chaining, executes NOOP, BASIC SENSE and SENSE ID
// itself, and hands every other command to the device's CcwCommandHandler
// together with a CcwData: the command's data area as one contiguous logical
// buffer, even when data chaining spreads it over several CCWs.
//
//   class MyDevice final : public CcwCommandHandler {
//    public:
//     SenseIdData sense_id() const override { return {.cu_model = 4}; }
//     CommandResult Execute(const Command& cmd, CcwData& data) override {
//       switch (cmd.code) {
//         case 0x12: {  // READ_FEAT: {le32 features, u8 index}
//           uint8_t index;
//           VMMKIT_... data.Skip(4), data.CopyFromGuest({&index, 1}) ...
//           data.Rewind();
//           uint32_t features_le = ...;
//           if (!data.CopyToGuest(AsBytes(features_le)).ok())
//             return CommandResult::Accepted();  // the program check wins
//           return CommandResult::Accepted();
//         }
//         default:
//           return CommandResult::CommandReject();
//       }
//     }
//   };
//
// Lengths: the device moves what it means to move and the interpreter judges
// the length. The command's byte count is the furthest position the device
// reached in the data area (so READ_FEAT reading the index at offset 4 and
// writing the features at offset 0 "transferred" 5 bytes); a device that asks
// for more than the program's count gets a short copy and the interpreter
// remembers that it wanted more. From both the interpreter derives the
// residual count and incorrect length (PoP "Incorrect Length"), with the
// suppress-length rule check_len = !(SLI && !CD) of the last CCW reached.
// A device therefore never needs to look at SLI itself; it may look at
// Command::count to decide what to do (WRITE_CONF writes `count` bytes).
//
// Thread-compatibility: a handler is called on the thread that calls
// Subchannel::Start; CcwData lives only for the duration of Execute.
#ifndef VMMKIT_CCW_COMMAND_HANDLER_H_
#define VMMKIT_CCW_COMMAND_HANDLER_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "ccw/ccw.h"

namespace vmmkit::ccw {

// One command as the device sees it: the first CCW of the command (data
// chaining may add more; CcwData follows them).
struct Command {
  uint8_t code = 0;
  uint8_t flags = 0;   // of the first CCW
  uint16_t count = 0;  // of the first CCW
  uint32_t ccw_address = 0;
  CcwFormat format = CcwFormat::kFormat1;
  // True for the first command of the channel program.
  bool first_in_program = false;

  CommandType type() const { return ClassifyCommand(code); }
  bool data_chained() const { return flags & kCcwFlagCd; }
};

// The data area of one command. Positions are logical offsets in the
// concatenation of the data areas of the command's data-chained CCWs; the
// next data-chained CCW is fetched (and checked) only when the device's
// position reaches it, as a channel would.
//
// Errors: an invalid data address, an invalid IDAW, a data-chained CCW that
// is invalid, or a loop bound hit while chaining is a program check. The call
// that ran into it moves the bytes before the fault and returns kOutOfRange
// (an address outside memory or the format's limit), kInvalidArgument (an
// invalid CCW or IDAW), kUnimplemented (MIDA or suspend in a data-chained
// CCW) or kResourceExhausted (the CCW bound); every later call returns the
// same status, and the interpreter reports the program check whatever
// Execute returns. A device should stop and return when a call fails.
class CcwData {
 public:
  virtual ~CcwData() = default;

  // Input (device to guest memory, read and sense commands): stores `bytes`
  // at the current position and advances. Returns how many bytes the
  // program's count let through: fewer than bytes.size() when the count ran
  // out. A data area whose CCW has the SKP flag advances without storing.
  virtual absl::StatusOr<size_t> CopyToGuest(
      absl::Span<const uint8_t> bytes) = 0;
  // Output (guest memory to device, write and control commands; also usable
  // by an input command that reads a selector first, like READ_FEAT's index):
  // copies from the current position into `out` and advances. Returns the
  // number of bytes copied, fewer than out.size() when the count ran out.
  virtual absl::StatusOr<size_t> CopyFromGuest(absl::Span<uint8_t> out) = 0;
  // Advances by up to `n` bytes without moving data; returns how far.
  virtual absl::StatusOr<size_t> Skip(size_t n) = 0;
  // Back to position 0 (the data-chained CCWs already fetched are kept).
  virtual void Rewind() = 0;

  // The current position.
  virtual size_t position() const = 0;
  // The program's count for the data area: exact once the last CCW of a
  // data chain has been reached, else the counts of the CCWs fetched so far.
  virtual size_t known_count() const = 0;
  // False once a program check was recognized.
  virtual absl::Status status() const = 0;
};

// What a device says about a command.
class CommandResult {
 public:
  enum class Kind : uint8_t {
    // Executed: channel end and device end. Count, residual and incorrect
    // length follow from the device's use of CcwData.
    kAccepted,
    // Unit check with the sense bytes below (sense byte 0 0x80 for a command
    // reject). Command chaining stops.
    kUnitCheck,
    // Unit exception (device-specific meaning, e.g. end of file). Command
    // chaining stops.
    kUnitException,
    // A channel-level error the device found in what the program gave it
    // (reported as a program check). Devices rarely need it: bad data
    // addresses are already caught by CcwData.
    kProgramCheck,
  };

  static CommandResult Accepted() { return CommandResult(Kind::kAccepted); }
  // Command reject: unit check with sense byte 0 = kSense0CommandReject. The
  // device must not have moved data (a reject is decided at initial
  // selection): the status is unit check alone and the residual count is the
  // full count.
  static CommandResult CommandReject() {
    SenseData sense{};
    sense[0] = kSense0CommandReject;
    CommandResult r(Kind::kUnitCheck);
    r.sense_ = sense;
    r.rejected_ = true;
    return r;
  }
  // Any other unit check (intervention required, equipment check, ...), with
  // channel end and device end: the command ran and failed.
  static CommandResult UnitCheck(const SenseData& sense) {
    CommandResult r(Kind::kUnitCheck);
    r.sense_ = sense;
    return r;
  }
  static CommandResult UnitException() {
    return CommandResult(Kind::kUnitException);
  }
  static CommandResult ProgramCheck() {
    return CommandResult(Kind::kProgramCheck);
  }

  Kind kind() const { return kind_; }
  bool is_command_reject() const { return rejected_; }
  const SenseData& sense() const { return sense_; }

 private:
  explicit CommandResult(Kind kind) : kind_(kind) {}
  Kind kind_;
  bool rejected_ = false;
  SenseData sense_{};
};

// The identification SENSE ID stores (see ccw.h for the byte layout). For a
// virtio-ccw device: control unit type 0x3832, control unit model = the
// virtio device type.
struct SenseIdData {
  uint16_t cu_type = 0x3832;
  uint8_t cu_model = 0;
  uint16_t dev_type = 0;
  uint8_t dev_model = 0;
  // Extended SENSE ID: command-information words, at most kMaxCiws.
  std::array<Ciw, kMaxCiws> ciws{};
  size_t num_ciws = 0;
};

// Implemented by a device (a virtio-ccw transport, a test fake).
class CcwCommandHandler {
 public:
  virtual ~CcwCommandHandler() = default;

  // The SENSE ID data of the device.
  virtual SenseIdData sense_id() const = 0;

  // Executes one device-specific command: anything but NOOP, BASIC SENSE,
  // SENSE ID and TIC, which the interpreter executes itself. Codes with the
  // four low bits zero never arrive (invalid command: program check). Must
  // not keep `data` past the call.
  virtual CommandResult Execute(const Command& command, CcwData& data) = 0;
};

}  // namespace vmmkit::ccw

#endif  // VMMKIT_CCW_COMMAND_HANDLER_H_
