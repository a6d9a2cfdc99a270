// vmm/platform.cc: see platform.h.
#include "vmm/platform.h"

#include <time.h>

#include <cstring>

namespace vmmkit::vmm {

uint8_t Serial8250::Iir() const {
  const uint8_t fifo = fifo_enabled_ ? kIirFifoEnabled : 0;
  // Priority: line status (never raised: no errors), RX data, THR empty,
  // modem status (never raised: the lines do not change on their own).
  if ((ier_ & kIerRxData) && !rx_.empty()) return fifo | kIirRxData;
  if ((ier_ & kIerThrEmpty) && thr_empty_pending_) return fifo | kIirThrEmpty;
  return fifo | kIirNoInterrupt;
}

void Serial8250::UpdateIrq() {
  const bool level = !(Iir() & kIirNoInterrupt);
  if (level != irq_level_) {
    irq_level_ = level;
    if (irq_) irq_(level);
  }
}

uint8_t Serial8250::Read(uint8_t offset) {
  uint8_t value = 0xff;
  switch (offset) {
    case kUartRbrThr:
      if (lcr_ & kLcrDlab) {
        value = static_cast<uint8_t>(divisor_);
      } else if (!rx_.empty()) {
        value = rx_.front();
        rx_.pop_front();
      } else {
        value = 0;
      }
      break;
    case kUartIer:
      value = (lcr_ & kLcrDlab) ? static_cast<uint8_t>(divisor_ >> 8) : ier_;
      break;
    case kUartIirFcr:
      value = Iir();
      // Reading IIR when it reports THR empty clears that condition.
      if ((value & 0x0f) == kIirThrEmpty) thr_empty_pending_ = false;
      break;
    case kUartLcr:
      value = lcr_;
      break;
    case kUartMcr:
      value = mcr_;
      break;
    case kUartLsr:
      value = kLsrThrEmpty | kLsrTransmitterEmpty |
              (rx_.empty() ? 0 : kLsrDataReady);
      break;
    case kUartMsr:
      if (mcr_ & kMcrLoopback) {
        // DTR -> DSR, RTS -> CTS, OUT1 -> RI, OUT2 -> DCD.
        value = static_cast<uint8_t>(
            ((mcr_ & 1) ? kMsrDsr : 0) | ((mcr_ & 2) ? kMsrCts : 0) |
            ((mcr_ & 4) ? kMsrRi : 0) | ((mcr_ & 8) ? kMsrDcd : 0));
      } else {
        value = kMsrDcd | kMsrDsr | kMsrCts;
      }
      break;
    case kUartScr:
      value = scr_;
      break;
    default:
      return 0xff;
  }
  UpdateIrq();
  return value;
}

void Serial8250::Write(uint8_t offset, uint8_t value) {
  switch (offset) {
    case kUartRbrThr:
      if (lcr_ & kLcrDlab) {
        divisor_ = static_cast<uint16_t>((divisor_ & 0xff00) | value);
        break;
      }
      if (mcr_ & kMcrLoopback) {
        if (rx_.size() < kInputCapacity) rx_.push_back(value);
      } else if (output_) {
        const char c = static_cast<char>(value);
        output_(absl::string_view(&c, 1));
      }
      // Sent at once: THR is empty again.
      thr_empty_pending_ = true;
      break;
    case kUartIer:
      if (lcr_ & kLcrDlab) {
        divisor_ = static_cast<uint16_t>((divisor_ & 0x00ff) | value << 8);
        break;
      }
      {
        const uint8_t old = ier_;
        ier_ = value & 0x0f;
        if ((ier_ & kIerThrEmpty) && !(old & kIerThrEmpty)) {
          thr_empty_pending_ = true;  // THR is always empty
        }
      }
      break;
    case kUartIirFcr:
      fifo_enabled_ = value & 1;
      if (value & 2) rx_.clear();
      break;
    case kUartLcr:
      lcr_ = value;
      break;
    case kUartMcr:
      mcr_ = value & 0x1f;
      break;
    case kUartScr:
      scr_ = value;
      break;
    default:  // LSR, MSR: read-only
      break;
  }
  UpdateIrq();
}

size_t Serial8250::QueueInput(absl::string_view bytes) {
  size_t n = 0;
  for (char c : bytes) {
    if (rx_.size() >= kInputCapacity) break;
    rx_.push_back(static_cast<uint8_t>(c));
    ++n;
  }
  UpdateIrq();
  return n;
}

bool IsAbsentDevicePort(uint16_t port) {
  auto in = [port](uint16_t lo, uint16_t hi) {
    return port >= lo && port <= hi;
  };
  return in(0x2f8, 0x2ff) || in(0x3e8, 0x3ef) || in(0x2e8, 0x2ef) ||
         in(0x278, 0x27f) || in(0x378, 0x37f) || in(0x3bc, 0x3bf) ||
         in(0x3b0, 0x3bb) || in(0x3c0, 0x3df) || in(0x1f0, 0x1f7) ||
         in(0x170, 0x177) || in(0x3f0, 0x3f7) || in(0x87, 0x8f) ||
         port == 0x279 || port == 0xa79 || port == 0x201;
}

namespace {
constexpr uint16_t kPmEnd = kAcpiPmTimer + kAcpiPmTimerLen;
bool IsPmPort(uint16_t port) { return port >= kAcpiPmBase && port < kPmEnd; }
}  // namespace

bool PlatformPorts::PmRead(uint16_t port, absl::Span<uint8_t> data) {
  uint64_t ns;
  if (callbacks_.now_ns) {
    ns = callbacks_.now_ns();
  } else {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ns = static_cast<uint64_t>(ts.tv_sec) * 1000000000u +
         static_cast<uint64_t>(ts.tv_nsec);
  }
  const uint32_t ticks =
      static_cast<uint32_t>((ns / 1000000000u) * kPmTimerHz +
                            (ns % 1000000000u) * kPmTimerHz / 1000000000u);
  const uint16_t control =
      static_cast<uint16_t>((pm1_control_ | kPm1SciEn) & ~kPm1SlpEn);
  uint8_t regs[kPmEnd - kAcpiPmBase] = {};
  std::memcpy(&regs[2], &pm1_enable_, 2);
  std::memcpy(&regs[4], &control, 2);
  std::memcpy(&regs[8], &ticks, 4);
  for (size_t i = 0; i < data.size(); ++i) {
    const size_t at = port - kAcpiPmBase + i;
    data[i] = at < sizeof(regs) ? regs[at] : 0xff;
  }
  return true;
}

bool PlatformPorts::PmWrite(uint16_t port, absl::Span<const uint8_t> data) {
  bool control_written = false;
  for (size_t i = 0; i < data.size(); ++i) {
    const size_t at = port - kAcpiPmBase + i;
    const int shift = 8 * static_cast<int>(at & 1);
    const uint16_t keep = static_cast<uint16_t>(~(0xff << shift));
    const uint16_t byte = static_cast<uint16_t>(data[i] << shift);
    if (at == 2 || at == 3) {
      pm1_enable_ = static_cast<uint16_t>((pm1_enable_ & keep) | byte);
    } else if (at == 4 || at == 5) {
      pm1_control_ = static_cast<uint16_t>((pm1_control_ & keep) | byte);
      control_written = true;
    }
  }
  if (control_written && (pm1_control_ & kPm1SlpEn)) {
    pm1_control_ = static_cast<uint16_t>(pm1_control_ & ~kPm1SlpEn);
    const int type = (pm1_control_ & kPm1SlpTypMask) >> kPm1SlpTypShift;
    if (type == kAcpiS5Type && callbacks_.on_poweroff) callbacks_.on_poweroff();
  }
  return true;
}

bool PlatformPorts::Read(uint16_t port, absl::Span<uint8_t> data) {
  if (IsPmPort(port)) return PmRead(port, data);
  std::memset(data.data(), 0xff, data.size());
  switch (port) {
    case kStopPort:
      std::memset(data.data(), 0, data.size());
      if (!data.empty()) data[0] = stop_requested_ ? 1 : 0;
      return true;
    case kExitPort:
    case kI8042Command:
    case kI8042Data:
    case kPostPort:
      return true;
    case 0x70:
    case 0x71:
      std::memset(data.data(), 0, data.size());
      return true;
    default:
      return IsAbsentDevicePort(port);
  }
}

bool PlatformPorts::Write(uint16_t port, absl::Span<const uint8_t> data) {
  if (IsPmPort(port)) return PmWrite(port, data);
  switch (port) {
    case kExitPort: {
      uint32_t code = 0;
      std::memcpy(&code, data.data(), std::min<size_t>(data.size(), 4));
      if (callbacks_.on_exit) callbacks_.on_exit(code);
      return true;
    }
    case kStopPort:
    case kPostPort:
    case kI8042Data:
    case 0x70:
    case 0x71:
      return true;
    case kI8042Command:
      if (!data.empty() && data[0] == 0xfe && callbacks_.on_reset) {
        callbacks_.on_reset();
      }
      return true;
    case kResetControl:
      if (data.size() != 1) return false;  // dword 0xcf8 is PCI's
      if ((data[0] & 0x04) && callbacks_.on_reset) callbacks_.on_reset();
      return true;
    default:
      return IsAbsentDevicePort(port);
  }
}

}  // namespace vmmkit::vmm
