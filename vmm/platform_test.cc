// Register-level tests of the 8250 UART and the fixed ports.
#include "vmm/platform.h"

#include <cstring>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace vmmkit::vmm {
namespace {

class UartTest : public ::testing::Test {
 protected:
  UartTest()
      : uart_([this](absl::string_view s) { out_.append(s.data(), s.size()); },
              [this](bool level) { irq_.push_back(level); }) {}
  std::string out_;
  std::vector<bool> irq_;
  Serial8250 uart_;
};

TEST_F(UartTest, TransmitAndLineStatus) {
  EXPECT_EQ(uart_.Read(kUartLsr) & (kLsrThrEmpty | kLsrTransmitterEmpty),
            kLsrThrEmpty | kLsrTransmitterEmpty);
  EXPECT_EQ(uart_.Read(kUartLsr) & kLsrDataReady, 0);
  uart_.Write(kUartRbrThr, 'o');
  uart_.Write(kUartRbrThr, 'k');
  EXPECT_EQ(out_, "ok");
  EXPECT_TRUE(irq_.empty()) << "no interrupt without IER";
  EXPECT_EQ(uart_.Read(kUartIirFcr), kIirNoInterrupt);
}

TEST_F(UartTest, DivisorLatch) {
  uart_.Write(kUartLcr, 0x83);  // DLAB, 8N1
  uart_.Write(kUartRbrThr, 0x01);
  uart_.Write(kUartIer, 0x00);
  EXPECT_EQ(uart_.divisor(), 1);  // 115200 baud
  EXPECT_EQ(uart_.Read(kUartRbrThr), 0x01);
  EXPECT_EQ(uart_.Read(kUartIer), 0x00);
  uart_.Write(kUartLcr, 0x03);
  EXPECT_TRUE(out_.empty()) << "divisor writes are not output";
  EXPECT_EQ(uart_.Read(kUartIer), 0);  // IER itself untouched
  uart_.Write(kUartRbrThr, 'x');
  EXPECT_EQ(out_, "x");
}

TEST_F(UartTest, ScratchAndModemRegisters) {
  uart_.Write(kUartScr, 0x5a);
  EXPECT_EQ(uart_.Read(kUartScr), 0x5a);
  EXPECT_EQ(uart_.Read(kUartMsr), kMsrDcd | kMsrDsr | kMsrCts);
  // Linux's loopback check: MCR = LOOP | OUT2 | RTS -> MSR DCD | CTS.
  uart_.Write(kUartMcr, 0x1a);
  EXPECT_EQ(uart_.Read(kUartMsr) & 0xf0, 0x90);
  EXPECT_EQ(uart_.Read(kUartMcr), 0x1a);
  // In loopback, THR feeds RBR instead of the output.
  uart_.Write(kUartRbrThr, 'L');
  EXPECT_TRUE(out_.empty());
  EXPECT_EQ(uart_.Read(kUartLsr) & kLsrDataReady, kLsrDataReady);
  EXPECT_EQ(uart_.Read(kUartRbrThr), 'L');
  // Offsets beyond the register block.
  EXPECT_EQ(uart_.Read(8), 0xff);
}

TEST_F(UartTest, ThrEmptyInterrupt) {
  // Enabling ETBEI with THR empty raises the interrupt at once.
  uart_.Write(kUartIer, kIerThrEmpty);
  ASSERT_EQ(irq_, std::vector<bool>{true});
  EXPECT_EQ(uart_.Read(kUartIirFcr) & 0x0f, kIirThrEmpty);
  // Reading IIR cleared it.
  EXPECT_EQ(irq_, (std::vector<bool>{true, false}));
  EXPECT_EQ(uart_.Read(kUartIirFcr), kIirNoInterrupt);
  // A write sends at once and THR is empty again: raised.
  uart_.Write(kUartRbrThr, 'a');
  EXPECT_EQ(irq_.back(), true);
  // Disabling ETBEI lowers the line.
  uart_.Write(kUartIer, 0);
  EXPECT_EQ(irq_.back(), false);
  EXPECT_EQ(irq_.size(), 4u);
}

TEST_F(UartTest, ReceiveInterruptAndFifo) {
  uart_.Write(kUartIirFcr, 0x07);  // FIFO on, clear both
  uart_.Write(kUartIer, kIerRxData);
  EXPECT_TRUE(irq_.empty());
  EXPECT_EQ(uart_.QueueInput("hi"), 2u);
  ASSERT_EQ(irq_, std::vector<bool>{true});
  EXPECT_EQ(uart_.Read(kUartIirFcr), kIirFifoEnabled | kIirRxData);
  EXPECT_EQ(uart_.Read(kUartRbrThr), 'h');
  EXPECT_EQ(irq_.size(), 1u) << "still data";
  EXPECT_EQ(uart_.Read(kUartRbrThr), 'i');
  EXPECT_EQ(irq_, (std::vector<bool>{true, false}));
  EXPECT_EQ(uart_.Read(kUartLsr) & kLsrDataReady, 0);
  EXPECT_EQ(uart_.Read(kUartRbrThr), 0) << "empty RBR reads 0";
  // RX data has priority over THR empty.
  uart_.Write(kUartIer, kIerRxData | kIerThrEmpty);
  uart_.QueueInput("z");
  EXPECT_EQ(uart_.Read(kUartIirFcr) & 0x0f, kIirRxData);
  // FCR bit 1 clears the receive FIFO.
  uart_.Write(kUartIirFcr, 0x03);
  EXPECT_EQ(uart_.input_pending(), 0u);
  EXPECT_EQ(uart_.Read(kUartIirFcr) & 0x0f, kIirThrEmpty);
}

TEST_F(UartTest, InputCapacity) {
  std::string big(Serial8250::kInputCapacity + 10, 'x');
  EXPECT_EQ(uart_.QueueInput(big), Serial8250::kInputCapacity);
  EXPECT_EQ(uart_.QueueInput("y"), 0u);
}

TEST(PlatformPortsTest, ExitStopResetAndAbsentDevices) {
  std::vector<uint32_t> exits;
  int resets = 0;
  PlatformPorts p({.on_exit = [&](uint32_t c) { exits.push_back(c); },
                   .on_reset = [&] { ++resets; }});
  uint8_t four[4] = {0x2a, 0x01, 0, 0};
  EXPECT_TRUE(p.Write(0x501, four));
  uint8_t one[1] = {5};
  EXPECT_TRUE(p.Write(0x501, one));
  EXPECT_EQ(exits, (std::vector<uint32_t>{0x12a, 5}));

  uint8_t r[1];
  EXPECT_TRUE(p.Read(0x502, r));
  EXPECT_EQ(r[0], 0);
  p.set_stop_requested(true);
  EXPECT_TRUE(p.Read(0x502, r));
  EXPECT_EQ(r[0], 1);

  uint8_t other[1] = {0xfd};
  EXPECT_TRUE(p.Write(0x64, other));
  EXPECT_EQ(resets, 0);
  uint8_t fe[1] = {0xfe};
  EXPECT_TRUE(p.Write(0x64, fe));
  EXPECT_EQ(resets, 1);
  uint8_t cf9[1] = {0x06};
  EXPECT_TRUE(p.Write(0xcf9, cf9));
  EXPECT_EQ(resets, 2);
  uint8_t dword[4] = {6, 0, 0, 0};
  EXPECT_FALSE(p.Write(0xcf9, dword));
  EXPECT_EQ(resets, 2);

  EXPECT_TRUE(p.Read(0x64, r));
  EXPECT_EQ(r[0], 0xff);
  EXPECT_TRUE(p.Read(0x2f8, r));  // COM2: absent
  EXPECT_EQ(r[0], 0xff);
  EXPECT_TRUE(p.Read(0x71, r));  // CMOS data
  EXPECT_EQ(r[0], 0);
  EXPECT_TRUE(p.Write(0x80, one));
  EXPECT_FALSE(p.Read(0x1234, r));
  EXPECT_FALSE(p.Write(0x1234, one));
}

// The ACPI PM registers as Linux's ACPICA uses them: SCI_EN set (ACPI mode
// without SMI_CMD), PM1 enable kept, the timer at 3.579545 MHz, and S5 only on
// SLP_EN with SLP_TYP = kAcpiS5Type (ACPICA writes SLP_TYP first, then
// SLP_TYP | SLP_EN).
TEST(PlatformPortsTest, AcpiPmRegisters) {
  int poweroffs = 0, resets = 0;
  uint64_t now = 0;
  PlatformPorts p({.on_reset = [&] { ++resets; },
                   .on_poweroff = [&] { ++poweroffs; },
                   .now_ns = [&] { return now; }});
  uint8_t w[2];
  ASSERT_TRUE(p.Read(kAcpiPm1aControl, w));
  EXPECT_EQ(w[0] & kPm1SciEn, kPm1SciEn);
  ASSERT_TRUE(p.Read(kAcpiPmBase, w));  // PM1_STS: nothing pending
  EXPECT_EQ(w[0] | w[1], 0);
  const uint8_t en[2] = {0x21, 0x01};  // PWRBTN_EN, GBL_EN, RTC_EN
  ASSERT_TRUE(p.Write(kAcpiPmBase + 2, en));
  uint8_t four[4];
  ASSERT_TRUE(p.Read(kAcpiPmBase, four));  // STS and EN in one dword
  EXPECT_EQ(four[2], 0x21);
  EXPECT_EQ(four[3], 0x01);

  // The PM timer: 1 s is 3579545 ticks; 32 bits wrap.
  uint8_t t[4];
  now = 1000000000;
  ASSERT_TRUE(p.Read(kAcpiPmTimer, t));
  uint32_t ticks;
  std::memcpy(&ticks, t, 4);
  EXPECT_EQ(ticks, kPmTimerHz);
  now = 1200 * uint64_t{1000000000};  // 20 minutes: past 2^32 ticks
  ASSERT_TRUE(p.Read(kAcpiPmTimer, t));
  std::memcpy(&ticks, t, 4);
  EXPECT_EQ(ticks, static_cast<uint32_t>(1200 * uint64_t{kPmTimerHz}));

  // S5: SLP_TYP alone does nothing; another sleep type with SLP_EN does
  // nothing; SLP_TYP 5 with SLP_EN powers off, and SLP_EN reads back 0.
  auto control = [&](uint16_t v) {
    uint8_t b[2] = {static_cast<uint8_t>(v), static_cast<uint8_t>(v >> 8)};
    return p.Write(kAcpiPm1aControl, b);
  };
  const uint16_t s5 = kAcpiS5Type << kPm1SlpTypShift;
  ASSERT_TRUE(control(s5 | kPm1SciEn));
  EXPECT_EQ(poweroffs, 0);
  ASSERT_TRUE(control((3 << kPm1SlpTypShift) | kPm1SlpEn));
  EXPECT_EQ(poweroffs, 0);
  ASSERT_TRUE(control(s5 | kPm1SlpEn));
  EXPECT_EQ(poweroffs, 1);
  ASSERT_TRUE(p.Read(kAcpiPm1aControl, w));
  EXPECT_EQ(w[1] & (kPm1SlpEn >> 8), 0);
  // Byte writes merge: the high byte alone with SLP_EN (type 5 kept).
  const uint8_t hi[1] = {static_cast<uint8_t>((s5 | kPm1SlpEn) >> 8)};
  ASSERT_TRUE(p.Write(kAcpiPm1aControl + 1, hi));
  EXPECT_EQ(poweroffs, 2);
  EXPECT_EQ(resets, 0);
  // Writes to the status and timer registers change nothing.
  const uint8_t ones[4] = {0xff, 0xff, 0xff, 0xff};
  EXPECT_TRUE(p.Write(kAcpiPmBase, ones));
  EXPECT_TRUE(p.Write(kAcpiPmTimer, ones));
  ASSERT_TRUE(p.Read(kAcpiPmBase, w));
  EXPECT_EQ(w[0] | w[1], 0);
}

}  // namespace
}  // namespace vmmkit::vmm
