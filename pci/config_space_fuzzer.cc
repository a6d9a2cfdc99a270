// pci/config_space_fuzzer.cc: libFuzzer target for the PCI model, driven the
// way a guest drives it: through a RootBus.
//
// The bus holds the host bridge and three functions: 00:01.0 with an I/O BAR,
// a 32-bit BAR holding registers, the MSI-X table and PBA (5 vectors), a
// 64-bit prefetchable BAR, and a vendor capability with read/write hooks;
// 00:02.0 and 00:02.1, a multi-function PCIe device with 4 KiB configuration
// spaces, one of them with 2048 MSI-X vectors in a 64-bit BAR.
//
// The input is a stream of operations (opcode byte, then arguments, zeros
// past the end): config mechanism #1 address writes and data-port accesses
// at 0xCF8..0xCFF, ECAM reads and writes, accesses relative to a BAR's
// current (guest-programmed) address in I/O or memory space, accesses at
// arbitrary addresses, widths 0..8, MSI-X raises (in and out of range),
// pending-bit clears and resets, INTx level changes, and firmware BAR
// assignment.
//
// Invariants checked at every step: read-only ids never change, absent
// functions read all-ones, region handlers only see accesses inside their
// region, capability hooks only their capability's bytes, an MSI is only sent
// while MSI-X is enabled and the function unmasked, Raise() answers
// kOutOfRange exactly for vectors past the table, and an INTx pin is only
// asserted with the level set and INTx Disable clear.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "base/fuzz_input.h"
#include "pci/config_space.h"
#include "pci/function.h"
#include "pci/msix.h"
#include "pci/root_bus.h"

namespace vmmkit::pci {
namespace {

constexpr int kMaxSteps = 4096;

using Input = ::vmmkit::FuzzInput;

class RamRegion : public RegionHandler {
 public:
  explicit RamRegion(size_t size) : bytes_(size) {}
  void Read(uint64_t offset, absl::Span<uint8_t> data) override {
    VMMKIT_FUZZ_CHECK(offset < bytes_.size() &&
                      data.size() <= bytes_.size() - offset);
    std::memcpy(data.data(), &bytes_[offset], data.size());
  }
  void Write(uint64_t offset, absl::Span<const uint8_t> data) override {
    VMMKIT_FUZZ_CHECK(offset < bytes_.size() &&
                      data.size() <= bytes_.size() - offset);
    std::memcpy(&bytes_[offset], data.data(), data.size());
  }

 private:
  std::vector<uint8_t> bytes_;
};

class CheckingSink : public MsiSink {
 public:
  void SendMsi(uint64_t, uint32_t) override {
    VMMKIT_FUZZ_CHECK(msix != nullptr && msix->enabled() &&
                      !msix->function_masked());
    ++sent;
  }
  const MsixController* msix = nullptr;
  int sent = 0;
};

class CheckingIntx : public IntxSink {
 public:
  void SetIntx(bool asserted) override {
    VMMKIT_FUZZ_CHECK(
        !asserted || (fn->intx_level() && !fn->config_space().intx_disabled()));
  }
  const GenericPciFunction* fn = nullptr;
};

struct Device {
  Device(uint16_t device_id, bool extended)
      : fn({.vendor_id = 0x1234,
            .device_id = device_id,
            .class_code = 0xff0000,
            .interrupt_pin = 1,
            .extended = extended}) {
    intx.fn = &fn;
    fn.set_intx_sink(&intx);
  }
  GenericPciFunction fn;
  CheckingSink sink;
  CheckingIntx intx;
  RamRegion io{0x40};
  RamRegion regs{0x100};
  RamRegion big{0x1000};
};

void Ok(const absl::Status& s) { VMMKIT_FUZZ_CHECK(s.ok()); }

std::unique_ptr<Device> MakeDeviceA() {
  auto d = std::make_unique<Device>(0x0001, false);
  Ok(d->fn.AddBar(0, {.type = BarType::kIo, .size = 0x40}));
  Ok(d->fn.AddBar(1, {.type = BarType::kMemory32, .size = 0x4000}));
  Ok(d->fn.AddBar(
      2, {.type = BarType::kMemory64, .size = 0x10000, .prefetchable = true}));
  Ok(d->fn.AddRegion(0, 0, 0x40, &d->io));
  Ok(d->fn.AddRegion(1, 0x100, 0x100, &d->regs));
  Ok(d->fn.AddRegion(2, 0x8000, 0x1000, &d->big));
  absl::StatusOr<MsixController*> m = d->fn.AddMsix({.num_vectors = 5,
                                                     .table_bar = 1,
                                                     .table_offset = 0x2000,
                                                     .pba_bar = 1,
                                                     .pba_offset = 0x3000},
                                                    &d->sink);
  Ok(m.status());
  d->sink.msix = *m;
  // A vendor capability with a writable body and hooks that check what
  // they are given and refresh a byte on read.
  const uint8_t body[14] = {14};
  ConfigSpace::CapabilityOptions cap;
  cap.writable.assign(sizeof(body), 0xff);
  cap.writable[0] = 0;
  cap.write_1_to_clear.assign(sizeof(body), 0);
  cap.write_1_to_clear[13] = 0xf0;
  cap.writable[13] = 0x0f;
  ConfigSpace* config = &d->fn.config_space();
  cap.on_read = [config](uint32_t offset, uint32_t length) {
    VMMKIT_FUZZ_CHECK(length >= 1 && length <= 4 && offset + length <= 16);
    config->Set8(0x80 + 15, config->Get8(0x80 + 15) + 1);
  };
  cap.on_write = [](uint32_t offset, absl::Span<const uint8_t> data) {
    VMMKIT_FUZZ_CHECK(!data.empty() && data.size() <= 4 &&
                      offset + data.size() <= 16);
  };
  cap.offset = 0x80;
  Ok(d->fn.config_space().AddCapability(kCapIdVendor, body, cap).status());
  return d;
}

std::unique_ptr<Device> MakeDeviceB(uint16_t device_id, bool msix) {
  auto d = std::make_unique<Device>(device_id, true);
  Ok(d->fn.AddBar(0, {.type = BarType::kMemory64, .size = 0x10000}));
  Ok(d->fn.AddBar(3, {.type = BarType::kIo, .size = 4}));
  Ok(d->fn.AddRegion(3, 0, 4, &d->io));
  if (msix) {
    absl::StatusOr<MsixController*> m = d->fn.AddMsix({.num_vectors = 2048,
                                                       .table_bar = 0,
                                                       .table_offset = 0,
                                                       .pba_bar = 0,
                                                       .pba_offset = 0x8000},
                                                      &d->sink);
    Ok(m.status());
    d->sink.msix = *m;
  } else {
    Ok(d->fn.AddRegion(0, 0, 0x1000, &d->big));
  }
  return d;
}

// What RootBus::FindBar must answer, computed from scratch.
std::optional<std::pair<const PciFunction*, int>> ExpectedBar(
    std::unique_ptr<Device> (&devs)[3], bool io, uint64_t addr, size_t len) {
  for (auto& d : devs) {
    ConfigSpace& c = d->fn.config_space();
    for (int b = 0; b < kNumBars; ++b) {
      const BarSpec& spec = c.bar(b);
      if (spec.type == BarType::kNone || (spec.type == BarType::kIo) != io ||
          !c.BarDecodingEnabled(b)) {
        continue;
      }
      const uint64_t base = c.BarAddress(b);
      if (base == 0 || base + spec.size < base) continue;
      if (addr >= base && addr - base < spec.size &&
          len <= spec.size - (addr - base)) {
        return std::make_pair(&d->fn, b);
      }
    }
  }
  return std::nullopt;
}

void CheckRouting(const RootBus& bus, std::unique_ptr<Device> (&devs)[3],
                  bool io, uint64_t addr, size_t len) {
  const auto want = ExpectedBar(devs, io, addr, len);
  const auto got = bus.FindBar(io, addr, len);
  VMMKIT_FUZZ_CHECK(want.has_value() == got.has_value());
  if (got) {
    VMMKIT_FUZZ_CHECK(got->function == want->first && got->bar == want->second);
  }
}

size_t Width(uint8_t b) {
  static constexpr size_t kWidths[] = {1, 2, 4, 4, 1, 2, 4, 8, 0, 3};
  return kWidths[b % std::size(kWidths)];
}

void Run(Input& in) {
  RootBus::Options options;
  options.io = {0x1000, 0x1000};
  options.mmio32 = {0xc0000000, 0x100000};
  options.mmio64 = {0x100000000, 0x100000};
  options.ecam_base = 0xe0000000;
  RootBus bus(options);
  std::unique_ptr<Device> devs[3] = {MakeDeviceA(), MakeDeviceB(0x0002, true),
                                     MakeDeviceB(0x0003, false)};
  Ok(bus.AddFunction({0, 1, 0}, &devs[0]->fn));
  Ok(bus.AddFunction({0, 2, 1}, &devs[2]->fn));
  Ok(bus.AddFunction({0, 2, 0}, &devs[1]->fn));
  const uint16_t ids[3] = {1, 2, 3};
  const PciAddress addrs[3] = {{0, 1, 0}, {0, 2, 0}, {0, 2, 1}};
  int changes = 0;
  bus.set_bar_changed([&changes](PciAddress a, int bar) {
    VMMKIT_FUZZ_CHECK(a.bus == 0 && a.device >= 1 && a.device <= 2 &&
                      bar >= 0 && bar < kNumBars);
    ++changes;
  });
  if (in.U8() & 1) Ok(bus.AssignBars());

  uint8_t buf[8];
  for (int step = 0; step < kMaxSteps && !in.done(); ++step) {
    const uint8_t op = in.U8();
    const size_t w = Width(in.U8());
    const absl::Span<uint8_t> data(buf, w);
    const bool write = op & 0x80;
    if (write) {
      const uint64_t v = in.U64();
      std::memcpy(buf, &v, 8);
    }
    switch (op & 0x7f) {
      case 0: {  // address register: a plausible BDF, or raw
        const uint8_t sel = in.U8();
        uint32_t a = in.U32();
        if (sel & 1) {
          a = (a & 0x800000fc) | (static_cast<uint32_t>(sel >> 1 & 0x3) << 11) |
              (static_cast<uint32_t>(sel >> 3 & 0x7) << 8);
        }
        uint8_t b[4];
        std::memcpy(b, &a, 4);
        bus.PioWrite(kConfigAddressPort, b);
        VMMKIT_FUZZ_CHECK(bus.config_address() == (a & kConfigAddressMask));
        break;
      }
      case 1: {  // 0xCF8..0xCFF
        const uint16_t port = kConfigAddressPort + (in.U8() % 8);
        if (write) {
          bus.PioWrite(port, data);
        } else {
          bus.PioRead(port, data);
        }
        break;
      }
      case 2: {  // ECAM
        const uint32_t off = in.U32() & (kEcamBytesPerBus - 1);
        const uint64_t addr = options.ecam_base + off;
        const bool claimed =
            write ? bus.MmioWrite(addr, data) : bus.MmioRead(addr, data);
        VMMKIT_FUZZ_CHECK(claimed);
        break;
      }
      case 3: {  // relative to a BAR's current address
        const uint8_t sel = in.U8();
        Device& d = *devs[sel % 3];
        const int bar = (sel >> 2) % kNumBars;
        const uint64_t off = in.U16();
        const uint64_t base = d.fn.config_space().BarAddress(bar);
        const bool io = sel & 0x80;
        const uint64_t addr = base + off;
        CheckRouting(bus, devs, io, addr, w);
        if (io) {
          write ? bus.PioWrite(addr, data) : bus.PioRead(addr, data);
        } else {
          write ? bus.MmioWrite(addr, data) : bus.MmioRead(addr, data);
        }
        break;
      }
      case 4: {  // anywhere
        const uint64_t addr = in.U64();
        const bool io = in.U8() & 1;
        CheckRouting(bus, devs, io, addr, w);
        bool claimed;
        if (io) {
          claimed = write ? bus.PioWrite(addr, data) : bus.PioRead(addr, data);
        } else {
          claimed =
              write ? bus.MmioWrite(addr, data) : bus.MmioRead(addr, data);
        }
        if (!claimed && !write) {
          for (uint8_t b : data) VMMKIT_FUZZ_CHECK(b == 0xff);
        }
        break;
      }
      case 5: {  // MSI-X raise
        Device& d = *devs[in.U8() % 2];
        MsixController* m = d.fn.msix();
        const uint16_t v = in.U16() % (m->num_vectors() + 8);
        const bool was_enabled = m->enabled();
        const absl::Status s = m->Raise(v);
        if (v >= m->num_vectors()) {
          VMMKIT_FUZZ_CHECK(s.code() == absl::StatusCode::kOutOfRange);
        } else if (!was_enabled) {
          VMMKIT_FUZZ_CHECK(s.code() == absl::StatusCode::kFailedPrecondition);
        } else {
          VMMKIT_FUZZ_CHECK(s.ok());
        }
        break;
      }
      case 6: {  // MSI-X clear pending / reset
        Device& d = *devs[in.U8() % 2];
        const uint16_t v = in.U16();
        if (v == 0xffff) {
          d.fn.msix()->Reset();
        } else {
          const absl::Status s = d.fn.msix()->ClearPending(v);
          VMMKIT_FUZZ_CHECK(s.ok() == (v < d.fn.msix()->num_vectors()));
          if (s.ok()) VMMKIT_FUZZ_CHECK(!d.fn.msix()->pending(v));
        }
        break;
      }
      case 7:  // INTx
        devs[in.U8() % 3]->fn.SetIntxLevel(in.U8() & 1);
        break;
      case 8:
        Ok(bus.AssignBars(in.U8() & 1));
        break;
      default:
        break;
    }
    // Ids are read-only whatever the guest wrote; absent functions read
    // all-ones; the config address port reads back what was written.
    for (int i = 0; i < 3; ++i) {
      uint8_t id[4];
      bus.ConfigRead(addrs[i], kRegVendorId, absl::MakeSpan(id));
      VMMKIT_FUZZ_CHECK(id[0] == 0x34 && id[1] == 0x12 && id[2] == ids[i] &&
                        id[3] == 0);
      VMMKIT_FUZZ_CHECK(devs[i]->fn.intx_asserted() ==
                        (devs[i]->fn.intx_level() &&
                         !devs[i]->fn.config_space().intx_disabled()));
    }
    uint8_t absent[4];
    bus.ConfigRead({0, 7, 0}, 0, absl::MakeSpan(absent));
    VMMKIT_FUZZ_CHECK(absent[0] == 0xff && absent[3] == 0xff);
    bus.ConfigRead({0, 0, 0}, kRegClassCode, absl::MakeSpan(absent, 1));
    VMMKIT_FUZZ_CHECK(absent[0] == 0x00);
  }
}

}  // namespace
}  // namespace vmmkit::pci

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  vmmkit::pci::Input in(data, size);
  vmmkit::pci::Run(in);
  return 0;
}
