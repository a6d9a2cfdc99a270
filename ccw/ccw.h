// ccw/ccw.h: the wire structures of s390 channel I/O, all big-endian: channel
// command words (format 0 and format 1), the operation request block (ORB),
// the subchannel status word (SCSW) and the interruption response block (IRB),
// plus the decoding of a CCW from guest memory.
//
//   absl::StatusOr<Ccw> ccw = ReadCcw(memory, 0x1000, CcwFormat::kFormat1);
//   if (ccw.ok() && ccw->chain_command()) { ... next CCW at 0x1008 ... }
//   Ccw1Wire wire = EncodeCcw1({.cmd = 0x12, .flags = kCcwFlagSli,
//                               .count = 8, .data_address = 0x2000});
//
// Layouts follow the z/Architecture Principles of Operation (SA22-7832),
// chapters 15 ("Basic I/O Functions") and 16 ("I/O Interruptions"). Bit
// numbers in comments are the PoP's: bit 0 is the most significant bit.
//
// Everything here is a value type or a pure function: thread-safe.
#ifndef VMMKIT_CCW_CCW_H_
#define VMMKIT_CCW_CCW_H_

#include <array>
#include <cstddef>
#include <cstdint>

#include "absl/status/statusor.h"
#include "virtqueue/guest_memory.h"

namespace vmmkit::ccw {

using virtqueue::GuestMemory;

// ---------------------------------------------------------------------------
// Big-endian field access. Wire structs store their multi-byte fields as byte
// arrays so that neither the host's byte order nor its alignment leaks in.
inline uint16_t LoadBe16(const uint8_t* p) {
  return static_cast<uint16_t>((p[0] << 8) | p[1]);
}
inline uint32_t LoadBe24(const uint8_t* p) {
  return (uint32_t{p[0]} << 16) | (uint32_t{p[1]} << 8) | p[2];
}
inline uint32_t LoadBe32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) |
         (uint32_t{p[2]} << 8) | p[3];
}
inline void StoreBe16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}
inline void StoreBe24(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v >> 16);
  p[1] = static_cast<uint8_t>(v >> 8);
  p[2] = static_cast<uint8_t>(v);
}
inline void StoreBe32(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v >> 24);
  p[1] = static_cast<uint8_t>(v >> 16);
  p[2] = static_cast<uint8_t>(v >> 8);
  p[3] = static_cast<uint8_t>(v);
}

// ---------------------------------------------------------------------------
// Channel command words.

enum class CcwFormat : uint8_t { kFormat0 = 0, kFormat1 = 1 };

// The first address past what a CCW of `format` can designate: format-0 CCWs
// carry 24-bit addresses, format-1 CCWs 31-bit ones (PoP "Channel-Command
// Word"). Channel programs, TIC targets and data areas must stay below it.
constexpr uint64_t AddressLimit(CcwFormat format) {
  return format == CcwFormat::kFormat0 ? uint64_t{1} << 24 : uint64_t{1} << 31;
}

// CCW flags (byte 4 of a format-0 CCW, byte 1 of a format-1 CCW).
inline constexpr uint8_t kCcwFlagCd = 0x80;    // chain data
inline constexpr uint8_t kCcwFlagCc = 0x40;    // chain command
inline constexpr uint8_t kCcwFlagSli = 0x20;   // suppress length indication
inline constexpr uint8_t kCcwFlagSkip = 0x10;  // skip (no store on input)
inline constexpr uint8_t kCcwFlagPci = 0x08;   // program-controlled interrupt
inline constexpr uint8_t kCcwFlagIda = 0x04;   // indirect data addressing
inline constexpr uint8_t kCcwFlagSuspend = 0x02;  // suspend
inline constexpr uint8_t kCcwFlagMida = 0x01;     // modified IDA (format 1)

// Command codes every device understands (the channel program interpreter
// executes them itself, see subchannel.h).
inline constexpr uint8_t kCmdNoop = 0x03;
inline constexpr uint8_t kCmdBasicSense = 0x04;
inline constexpr uint8_t kCmdTic = 0x08;
inline constexpr uint8_t kCmdSenseId = 0xE4;

// What the low-order bits of a command code say about the operation (PoP
// "Command Code": xxxx0000 invalid, xxxxxx01 write, xxxxxx10 read, xxxxxx11
// control, xxxx0100 sense, xxxx1100 read backward, xxxx1000 TIC).
enum class CommandType : uint8_t {
  kInvalid,
  kWrite,
  kRead,
  kControl,
  kSense,
  kReadBackward,
  kTransferInChannel,
};
constexpr CommandType ClassifyCommand(uint8_t cmd) {
  switch (cmd & 0x0f) {
    case 0x0:
      return CommandType::kInvalid;
    case 0x4:
      return CommandType::kSense;
    case 0x8:
      return CommandType::kTransferInChannel;
    case 0xc:
      return CommandType::kReadBackward;
    default:
      break;
  }
  switch (cmd & 0x3) {
    case 1:
      return CommandType::kWrite;
    case 2:
      return CommandType::kRead;
    default:
      return CommandType::kControl;
  }
}

// A decoded CCW, the same for both formats. Nothing is validated here: the
// interpreter (subchannel.h) applies the architecture's rules.
struct Ccw {
  uint8_t cmd = 0;
  uint8_t flags = 0;
  uint16_t count = 0;
  // 24 significant bits in format 0; all 32 bits as stored in format 1 (bit 0
  // must be zero there, which the interpreter checks).
  uint32_t data_address = 0;

  bool chain_data() const { return flags & kCcwFlagCd; }
  bool chain_command() const { return flags & kCcwFlagCc; }
  bool suppress_length() const { return flags & kCcwFlagSli; }
  bool skip() const { return flags & kCcwFlagSkip; }
  bool pci() const { return flags & kCcwFlagPci; }
  bool indirect() const { return flags & kCcwFlagIda; }
  bool suspend() const { return flags & kCcwFlagSuspend; }
  bool modified_indirect() const { return flags & kCcwFlagMida; }
  // The low four bits of the command code are 1000 (the high four are ignored
  // in format 0 and must be zero in format 1, see subchannel.h).
  bool is_tic() const { return (cmd & 0x0f) == kCmdTic; }
  // PoP "Incorrect Length": the SLI flag suppresses the indication unless the
  // CD flag is also one.
  bool check_length() const { return !(suppress_length() && !chain_data()); }

  friend bool operator==(const Ccw&, const Ccw&) = default;
};

// Format-0 CCW (PoP Figure 15-5): bits 0-7 command code, 8-31 data address,
// 32-39 flags, 40-47 ignored, 48-63 count.
struct Ccw0Wire {
  uint8_t cmd;
  uint8_t data_address[3];
  uint8_t flags;
  uint8_t reserved;
  uint8_t count[2];
};
static_assert(sizeof(Ccw0Wire) == 8);
static_assert(offsetof(Ccw0Wire, data_address) == 1);
static_assert(offsetof(Ccw0Wire, flags) == 4);
static_assert(offsetof(Ccw0Wire, count) == 6);

// Format-1 CCW (PoP Figure 15-5): bits 0-7 command code, 8-15 flags, 16-31
// count, 32 must be zero, 33-63 data address.
struct Ccw1Wire {
  uint8_t cmd;
  uint8_t flags;
  uint8_t count[2];
  uint8_t data_address[4];
};
static_assert(sizeof(Ccw1Wire) == 8);
static_assert(offsetof(Ccw1Wire, flags) == 1);
static_assert(offsetof(Ccw1Wire, count) == 2);
static_assert(offsetof(Ccw1Wire, data_address) == 4);

Ccw DecodeCcw(const Ccw0Wire& wire);
Ccw DecodeCcw(const Ccw1Wire& wire);
// Encoders, for tests, fuzzers and drivers. EncodeCcw0 keeps the low 24 bits
// of the data address.
Ccw0Wire EncodeCcw0(const Ccw& ccw);
Ccw1Wire EncodeCcw1(const Ccw& ccw);
// The 8 bytes of `ccw` in `format`.
std::array<uint8_t, 8> EncodeCcw(const Ccw& ccw, CcwFormat format);

// Reads and decodes the CCW at `address`. kInvalidArgument if `address` is not
// 8-byte aligned, kOutOfRange if the CCW is beyond the format's address limit
// or outside guest memory. (Both are program checks to the interpreter.)
absl::StatusOr<Ccw> ReadCcw(const GuestMemory& memory, uint64_t address,
                            CcwFormat format);

// ---------------------------------------------------------------------------
// Operation request block (PoP Figure 15-2, command-mode ORB). Word 0 is the
// interruption parameter, word 1 the control bits below, word 2 the channel
// program address; words 3-7 are the ORB extension (used only when the X bit
// is one), which this model ignores.
struct OrbWire {
  uint8_t intparm[4];
  uint8_t control[4];
  uint8_t cpa[4];
  uint8_t extension[20];
};
static_assert(sizeof(OrbWire) == 32);
static_assert(offsetof(OrbWire, control) == 4);
static_assert(offsetof(OrbWire, cpa) == 8);

// ORB word 1 bits.
inline constexpr uint32_t kOrbKeyMask = 0xf0000000;               // bits 0-3
inline constexpr uint32_t kOrbSuspendControl = 0x08000000;        // S, bit 4
inline constexpr uint32_t kOrbStreaming = 0x04000000;             // C, bit 5
inline constexpr uint32_t kOrbModification = 0x02000000;          // M, bit 6
inline constexpr uint32_t kOrbSynchronization = 0x01000000;       // Y, bit 7
inline constexpr uint32_t kOrbFormat1 = 0x00800000;               // F, bit 8
inline constexpr uint32_t kOrbPrefetch = 0x00400000;              // P, bit 9
inline constexpr uint32_t kOrbInitialStatus = 0x00200000;         // I, bit 10
inline constexpr uint32_t kOrbAddressLimit = 0x00100000;          // A, bit 11
inline constexpr uint32_t kOrbSuppressSuspendedIrq = 0x00080000;  // U, bit 12
inline constexpr uint32_t kOrbTransportMode = 0x00040000;         // B, bit 13
inline constexpr uint32_t kOrbFormat2Idaw = 0x00020000;           // H, bit 14
inline constexpr uint32_t kOrbIdaw2K = 0x00010000;                // T, bit 15
inline constexpr uint32_t kOrbLpmMask = 0x0000ff00;               // bits 16-23
inline constexpr uint32_t kOrbIncorrectLengthSuppression = 0x00000080;  // L
inline constexpr uint32_t kOrbMidaw = 0x00000040;      // D, bit 25
inline constexpr uint32_t kOrbReserved = 0x0000003e;   // bits 26-30
inline constexpr uint32_t kOrbExtension = 0x00000001;  // X, bit 31

// A decoded ORB.
struct Orb {
  uint32_t intparm = 0;
  uint32_t control = 0;  // word 1, see the kOrb* bits
  uint32_t cpa = 0;      // channel program address

  CcwFormat format() const {
    return control & kOrbFormat1 ? CcwFormat::kFormat1 : CcwFormat::kFormat0;
  }
  bool suspend_control() const { return control & kOrbSuspendControl; }
  bool incorrect_length_suppression() const {
    return control & kOrbIncorrectLengthSuppression;
  }
  uint8_t lpm() const { return static_cast<uint8_t>((control >> 8) & 0xff); }
};
Orb DecodeOrb(const OrbWire& wire);
OrbWire EncodeOrb(const Orb& orb);

// ---------------------------------------------------------------------------
// Subchannel status word (PoP Figure 16-5, command mode).

// SCSW word 0.
inline constexpr uint32_t kScswKeyMask = 0xf0000000;
inline constexpr uint32_t kScswSuspendControl = 0x08000000;      // S
inline constexpr uint32_t kScswEswFormat = 0x04000000;           // L
inline constexpr uint32_t kScswDeferredCcMask = 0x03000000;      // CC
inline constexpr uint32_t kScswFormat1 = 0x00800000;             // F
inline constexpr uint32_t kScswPrefetch = 0x00400000;            // P
inline constexpr uint32_t kScswInitialStatus = 0x00200000;       // I
inline constexpr uint32_t kScswAddressLimit = 0x00100000;        // A
inline constexpr uint32_t kScswSuppressSuspended = 0x00080000;   // U
inline constexpr uint32_t kScswZeroCc = 0x00040000;              // Z
inline constexpr uint32_t kScswExtendedControl = 0x00020000;     // E
inline constexpr uint32_t kScswPathNotOperational = 0x00010000;  // N
// Function control (bits 17-19).
inline constexpr uint32_t kScswFcStart = 0x00004000;
inline constexpr uint32_t kScswFcHalt = 0x00002000;
inline constexpr uint32_t kScswFcClear = 0x00001000;
// Activity control (bits 20-26).
inline constexpr uint32_t kScswAcResumePending = 0x00000800;
inline constexpr uint32_t kScswAcStartPending = 0x00000400;
inline constexpr uint32_t kScswAcHaltPending = 0x00000200;
inline constexpr uint32_t kScswAcClearPending = 0x00000100;
inline constexpr uint32_t kScswAcSubchannelActive = 0x00000080;
inline constexpr uint32_t kScswAcDeviceActive = 0x00000040;
inline constexpr uint32_t kScswAcSuspended = 0x00000020;
// Status control (bits 27-31).
inline constexpr uint32_t kScswScAlert = 0x00000010;
inline constexpr uint32_t kScswScIntermediate = 0x00000008;
inline constexpr uint32_t kScswScPrimary = 0x00000004;
inline constexpr uint32_t kScswScSecondary = 0x00000002;
inline constexpr uint32_t kScswScStatusPending = 0x00000001;

// Device status (SCSW byte 8).
inline constexpr uint8_t kDevStatAttention = 0x80;
inline constexpr uint8_t kDevStatStatusModifier = 0x40;
inline constexpr uint8_t kDevStatControlUnitEnd = 0x20;
inline constexpr uint8_t kDevStatBusy = 0x10;
inline constexpr uint8_t kDevStatChannelEnd = 0x08;
inline constexpr uint8_t kDevStatDeviceEnd = 0x04;
inline constexpr uint8_t kDevStatUnitCheck = 0x02;
inline constexpr uint8_t kDevStatUnitException = 0x01;

// Subchannel status (SCSW byte 9).
inline constexpr uint8_t kSchStatPci = 0x80;
inline constexpr uint8_t kSchStatIncorrectLength = 0x40;
inline constexpr uint8_t kSchStatProgramCheck = 0x20;
inline constexpr uint8_t kSchStatProtectionCheck = 0x10;
inline constexpr uint8_t kSchStatChannelDataCheck = 0x08;
inline constexpr uint8_t kSchStatChannelControlCheck = 0x04;
inline constexpr uint8_t kSchStatInterfaceControlCheck = 0x02;
inline constexpr uint8_t kSchStatChainingCheck = 0x01;

struct Scsw {
  uint32_t control = 0;      // word 0, see the kScsw* bits
  uint32_t ccw_address = 0;  // word 1
  uint8_t device_status = 0;
  uint8_t subchannel_status = 0;
  uint16_t count = 0;  // residual count

  friend bool operator==(const Scsw&, const Scsw&) = default;
};

struct ScswWire {
  uint8_t control[4];
  uint8_t ccw_address[4];
  uint8_t device_status;
  uint8_t subchannel_status;
  uint8_t count[2];
};
static_assert(sizeof(ScswWire) == 12);
static_assert(offsetof(ScswWire, ccw_address) == 4);
static_assert(offsetof(ScswWire, device_status) == 8);
static_assert(offsetof(ScswWire, count) == 10);

ScswWire EncodeScsw(const Scsw& scsw);
Scsw DecodeScsw(const ScswWire& wire);

// ---------------------------------------------------------------------------
// Sense data and the interruption response block.

// Sense byte 0 bits (the common meanings of the basic sense byte).
inline constexpr uint8_t kSense0CommandReject = 0x80;
inline constexpr uint8_t kSense0InterventionRequired = 0x40;
inline constexpr uint8_t kSense0BusOutCheck = 0x20;
inline constexpr uint8_t kSense0EquipmentCheck = 0x10;
inline constexpr uint8_t kSense0DataCheck = 0x08;
inline constexpr uint8_t kSense0Overrun = 0x04;

// The sense bytes a virtual device keeps: 32, the size of the IRB's
// extended-control word area, so concurrent sense can present all of them.
inline constexpr size_t kSenseBytes = 32;
using SenseData = std::array<uint8_t, kSenseBytes>;

// ERW (word 1 of a format-0 extended-status word) bits used for concurrent
// sense: bit 7 "concurrent sense" and bits 10-15 the sense count.
inline constexpr uint32_t kErwConcurrentSense = 0x01000000;
inline constexpr uint32_t kErwSenseCountShift = 16;

// What TEST SUBCHANNEL stores: SCSW, ESW (format 0: subchannel logout, ERW,
// failing-storage address, secondary CCW address), ECW and EMW.
struct Irb {
  Scsw scsw;
  uint32_t erw = 0;
  // Concurrent sense: when scsw.control has kScswExtendedControl and erw has
  // kErwConcurrentSense, the first (erw >> kErwSenseCountShift) & 0x3f bytes
  // of `ecw` are the sense data of the unit check.
  SenseData ecw{};

  bool has_concurrent_sense() const {
    return (scsw.control & kScswExtendedControl) && (erw & kErwConcurrentSense);
  }
};

struct IrbWire {
  ScswWire scsw;
  uint8_t esw[20];
  uint8_t ecw[32];
  uint8_t emw[32];
};
static_assert(sizeof(IrbWire) == 96);
static_assert(offsetof(IrbWire, esw) == 12);
static_assert(offsetof(IrbWire, ecw) == 32);
static_assert(offsetof(IrbWire, emw) == 64);

IrbWire EncodeIrb(const Irb& irb);

// ---------------------------------------------------------------------------
// SENSE ID data (the device identification a SENSE ID command stores):
// byte 0 0xFF, bytes 1-2 control-unit type, byte 3 control-unit model, bytes
// 4-5 device type, byte 6 device model, byte 7 unused, then up to eight
// command-information words (CIWs) of 4 bytes: byte 0 bits 0-1 the entry type
// (00 = CIW) and bits 4-7 the command type, byte 1 the command code, bytes 2-3
// the count.
struct Ciw {
  uint8_t type = 0;  // command type (0 read configuration data, 1 set
                     // interface identifier, 2 read node identifier, ...)
  uint8_t command = 0;
  uint16_t count = 0;
};
inline constexpr size_t kMaxCiws = 8;
inline constexpr size_t kSenseIdHeaderBytes = 8;
inline constexpr uint8_t kCiwEntryTypeCiw = 0x40;  // bits 0-1 = 01

}  // namespace vmmkit::ccw

#endif  // VMMKIT_CCW_CCW_H_
