// vmm/platform.h: the PC devices the VMM emulates in user space besides PCI:
// an 8250/16550A UART, and the fixed ports of contract A (test exit, stop
// request, i8042 reset, POST code) plus the "nothing here" answers for ports
// Linux probes.
//
//   Serial8250 uart([&](absl::string_view out) { console.Append(out); },
//                   [&](bool level) { (void)vm.IrqLine(4, level); });
//   uart.Write(0, 'A');           // THR: "A" goes to the output callback
//   uint8_t lsr = uart.Read(5);   // THRE | TEMT
//   uart.QueueInput("ls\n");      // RBR, data-ready, RX interrupt per IER
//
//   PlatformPorts ports({.on_exit = ..., .on_reset = ...});
//   if (ports.Write(port, data)) ...;  // claimed
//
// Serial8250 registers (offset from 0x3f8), per the 16550A data sheet:
//   0 RBR (read) / THR (write); DLL with LCR.DLAB
//   1 IER (bits 0..3: RX data, THR empty, line status, modem status); DLM
//     with DLAB
//   2 IIR (read: bit 0 clear while an interrupt is pending, bits 3:1 its
//     kind, 7:6 FIFOs enabled) / FCR (write: bit 0 enables FIFOs, bit 1
//     clears the receive FIFO)
//   3 LCR (bit 7 DLAB)   4 MCR (bit 4 loopback)   5 LSR (DR, THRE, TEMT)
//   6 MSR (DCD|DSR|CTS; in loopback the MCR outputs)   7 SCR (scratch)
// Transmission is instant: a THR write goes to the output callback (or, in
// loopback, to the receive FIFO) and THR is empty again at once, which raises
// the THR-empty interrupt if enabled; reading IIR while that is the reason,
// or writing THR, clears it; enabling it in IER while THR is empty raises it
// (as a 16550 does). The interrupt line is level = "an enabled condition is
// pending"; the callback is called on every change. Input waits in a FIFO of
// kInputCapacity bytes.
//
// Thread-compatibility: one thread at a time (the VMM holds its platform
// lock); callbacks run on the caller's thread, inside Read/Write/QueueInput.
#ifndef VMMKIT_VMM_PLATFORM_H_
#define VMMKIT_VMM_PLATFORM_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "vmm/acpi.h"

namespace vmmkit::vmm {

inline constexpr uint16_t kCom1Base = 0x3f8;
inline constexpr uint32_t kCom1Irq = 4;

// Register offsets and bits.
inline constexpr uint8_t kUartRbrThr = 0;
inline constexpr uint8_t kUartIer = 1;
inline constexpr uint8_t kUartIirFcr = 2;
inline constexpr uint8_t kUartLcr = 3;
inline constexpr uint8_t kUartMcr = 4;
inline constexpr uint8_t kUartLsr = 5;
inline constexpr uint8_t kUartMsr = 6;
inline constexpr uint8_t kUartScr = 7;
inline constexpr uint8_t kIerRxData = 1 << 0;
inline constexpr uint8_t kIerThrEmpty = 1 << 1;
inline constexpr uint8_t kIerLineStatus = 1 << 2;
inline constexpr uint8_t kIerModemStatus = 1 << 3;
inline constexpr uint8_t kIirNoInterrupt = 0x01;
inline constexpr uint8_t kIirThrEmpty = 0x02;
inline constexpr uint8_t kIirRxData = 0x04;
inline constexpr uint8_t kIirFifoEnabled = 0xc0;
inline constexpr uint8_t kLcrDlab = 1 << 7;
inline constexpr uint8_t kMcrLoopback = 1 << 4;
inline constexpr uint8_t kLsrDataReady = 1 << 0;
inline constexpr uint8_t kLsrThrEmpty = 1 << 5;
inline constexpr uint8_t kLsrTransmitterEmpty = 1 << 6;
inline constexpr uint8_t kMsrCts = 1 << 4;
inline constexpr uint8_t kMsrDsr = 1 << 5;
inline constexpr uint8_t kMsrRi = 1 << 6;
inline constexpr uint8_t kMsrDcd = 1 << 7;

class Serial8250 {
 public:
  static constexpr size_t kInputCapacity = 4096;
  using OutputCallback = std::function<void(absl::string_view bytes)>;
  using IrqCallback = std::function<void(bool level)>;

  Serial8250(OutputCallback output, IrqCallback irq)
      : output_(std::move(output)), irq_(std::move(irq)) {}

  // Register access at `offset` (0..7; others read 0xff, writes dropped).
  uint8_t Read(uint8_t offset);
  void Write(uint8_t offset, uint8_t value);

  // Appends bytes to the receive FIFO; returns how many fit.
  size_t QueueInput(absl::string_view bytes);

  bool irq_level() const { return irq_level_; }
  uint16_t divisor() const { return divisor_; }
  uint8_t lcr() const { return lcr_; }
  size_t input_pending() const { return rx_.size(); }

 private:
  uint8_t Iir() const;
  void UpdateIrq();

  OutputCallback output_;
  IrqCallback irq_;
  std::deque<uint8_t> rx_;
  uint16_t divisor_ = 12;  // 9600 baud
  uint8_t ier_ = 0;
  uint8_t lcr_ = 0x03;  // 8N1
  uint8_t mcr_ = 0x08;  // OUT2
  uint8_t scr_ = 0;
  bool fifo_enabled_ = false;
  bool thr_empty_pending_ = false;
  bool irq_level_ = false;
};

// The fixed ports (contract A). Reads fill `data` (little-endian), writes
// take the low bytes.
//   0x501 (1 or 4 bytes) write: the test guest's exit code -> on_exit(value)
//   0x502 read: 1 once stop_requested() is set, else 0 (writes ignored)
//   0x64  write 0xFE: CPU reset -> on_reset(); reads 0xff (no i8042: Linux's
//         probe then finds no controller instead of waiting for one)
//   0x60  reads 0xff
//   0xCF9 (byte) write with bit 2 (reset CPU): on_reset()
//   0x80  POST code: ignored
//   0x70/0x71 CMOS/RTC: index write ignored, data reads 0 (a clock at 0 with
//         no update in progress, so time reads do not spin)
//   0x600..0x60b the ACPI PM registers of vmm/acpi.h (fixed-hardware model),
//         any access size, byte-merged:
//         0x600 PM1a_STS (16 bits): no event is ever raised: reads 0, writes
//               (1 to clear) change nothing
//         0x602 PM1a_EN (16 bits): kept and read back
//         0x604 PM1a_CNT (16 bits): SCI_EN always reads 1 (the machine is in
//               ACPI mode, there is no SMI_CMD); a write with SLP_EN and
//               SLP_TYP = kAcpiS5Type is the guest's power-off ->
//               on_poweroff(); SLP_EN reads 0; other bits are kept
//         0x608 PM_TMR (32 bits): 3.579545 MHz from now_ns(); writes ignored
// Absent hardware that Linux and firmware-style probes touch reads 0xff and
// ignores writes: the other COM ports (0x2f8, 0x3e8, 0x2e8), LPT (0x278,
// 0x378, 0x3bc), VGA (0x3b0-0x3df), the floppy and IDE controllers
// (0x1f0-0x1f7, 0x170-0x177, 0x3f0-0x3f7 except the UART), the i8237 DMA
// pages (0x87..0x8f), PnP (0x279, 0xa79) and game port (0x201). Those are
// claimed too (Write/Read return true); other ports are not claimed.
class PlatformPorts {
 public:
  struct Callbacks {
    std::function<void(uint32_t code)> on_exit;
    std::function<void()> on_reset;
    std::function<void()> on_poweroff;
    // Monotonic nanoseconds for the PM timer; null: CLOCK_MONOTONIC.
    std::function<uint64_t()> now_ns;
  };
  static constexpr uint16_t kExitPort = 0x501;
  static constexpr uint16_t kStopPort = 0x502;
  static constexpr uint16_t kI8042Command = 0x64;
  static constexpr uint16_t kI8042Data = 0x60;
  static constexpr uint16_t kResetControl = 0xcf9;
  static constexpr uint16_t kPostPort = 0x80;

  explicit PlatformPorts(Callbacks callbacks)
      : callbacks_(std::move(callbacks)) {}

  bool Read(uint16_t port, absl::Span<uint8_t> data);
  bool Write(uint16_t port, absl::Span<const uint8_t> data);

  void set_stop_requested(bool on) { stop_requested_ = on; }
  bool stop_requested() const { return stop_requested_; }

 private:
  bool PmRead(uint16_t port, absl::Span<uint8_t> data);
  bool PmWrite(uint16_t port, absl::Span<const uint8_t> data);

  Callbacks callbacks_;
  bool stop_requested_ = false;
  uint16_t pm1_enable_ = 0;
  uint16_t pm1_control_ = 0;
};

// Whether `port` is one of the absent devices PlatformPorts answers for.
bool IsAbsentDevicePort(uint16_t port);

}  // namespace vmmkit::vmm

#endif  // VMMKIT_VMM_PLATFORM_H_
