#include "ccw/ccw.h"

#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"

namespace vmmkit::ccw {

Ccw DecodeCcw(const Ccw0Wire& wire) {
  return Ccw{.cmd = wire.cmd,
             .flags = wire.flags,
             .count = LoadBe16(wire.count),
             .data_address = LoadBe24(wire.data_address)};
}

Ccw DecodeCcw(const Ccw1Wire& wire) {
  return Ccw{.cmd = wire.cmd,
             .flags = wire.flags,
             .count = LoadBe16(wire.count),
             .data_address = LoadBe32(wire.data_address)};
}

Ccw0Wire EncodeCcw0(const Ccw& ccw) {
  Ccw0Wire wire{};
  wire.cmd = ccw.cmd;
  StoreBe24(wire.data_address, ccw.data_address & 0xffffff);
  wire.flags = ccw.flags;
  StoreBe16(wire.count, ccw.count);
  return wire;
}

Ccw1Wire EncodeCcw1(const Ccw& ccw) {
  Ccw1Wire wire{};
  wire.cmd = ccw.cmd;
  wire.flags = ccw.flags;
  StoreBe16(wire.count, ccw.count);
  StoreBe32(wire.data_address, ccw.data_address);
  return wire;
}

std::array<uint8_t, 8> EncodeCcw(const Ccw& ccw, CcwFormat format) {
  std::array<uint8_t, 8> bytes;
  if (format == CcwFormat::kFormat0) {
    Ccw0Wire wire = EncodeCcw0(ccw);
    std::memcpy(bytes.data(), &wire, sizeof(wire));
  } else {
    Ccw1Wire wire = EncodeCcw1(ccw);
    std::memcpy(bytes.data(), &wire, sizeof(wire));
  }
  return bytes;
}

absl::StatusOr<Ccw> ReadCcw(const GuestMemory& memory, uint64_t address,
                            CcwFormat format) {
  // PoP "Program Check": "Invalid CCW-Address Specification: ... the three
  // rightmost bits of the CCW address are not zeros."
  if (address & 7) {
    return absl::InvalidArgumentError(
        absl::StrFormat("CCW address 0x%x is not doubleword aligned", address));
  }
  if (address >= AddressLimit(format) ||
      AddressLimit(format) - address < sizeof(Ccw0Wire)) {
    return absl::OutOfRangeError(
        absl::StrFormat("CCW address 0x%x beyond the format-%d limit", address,
                        static_cast<int>(format)));
  }
  std::array<uint8_t, 8> raw;
  absl::Status s = memory.Read(address, absl::MakeSpan(raw));
  if (!s.ok()) {
    return absl::OutOfRangeError(
        absl::StrFormat("CCW address 0x%x outside guest memory", address));
  }
  if (format == CcwFormat::kFormat0) {
    Ccw0Wire wire;
    std::memcpy(&wire, raw.data(), sizeof(wire));
    return DecodeCcw(wire);
  }
  Ccw1Wire wire;
  std::memcpy(&wire, raw.data(), sizeof(wire));
  return DecodeCcw(wire);
}

Orb DecodeOrb(const OrbWire& wire) {
  return Orb{.intparm = LoadBe32(wire.intparm),
             .control = LoadBe32(wire.control),
             .cpa = LoadBe32(wire.cpa)};
}

OrbWire EncodeOrb(const Orb& orb) {
  OrbWire wire{};
  StoreBe32(wire.intparm, orb.intparm);
  StoreBe32(wire.control, orb.control);
  StoreBe32(wire.cpa, orb.cpa);
  return wire;
}

ScswWire EncodeScsw(const Scsw& scsw) {
  ScswWire wire{};
  StoreBe32(wire.control, scsw.control);
  StoreBe32(wire.ccw_address, scsw.ccw_address);
  wire.device_status = scsw.device_status;
  wire.subchannel_status = scsw.subchannel_status;
  StoreBe16(wire.count, scsw.count);
  return wire;
}

Scsw DecodeScsw(const ScswWire& wire) {
  return Scsw{.control = LoadBe32(wire.control),
              .ccw_address = LoadBe32(wire.ccw_address),
              .device_status = wire.device_status,
              .subchannel_status = wire.subchannel_status,
              .count = LoadBe16(wire.count)};
}

IrbWire EncodeIrb(const Irb& irb) {
  IrbWire wire{};
  wire.scsw = EncodeScsw(irb.scsw);
  StoreBe32(wire.esw + 4, irb.erw);
  std::memcpy(wire.ecw, irb.ecw.data(), sizeof(wire.ecw));
  return wire;
}

}  // namespace vmmkit::ccw
