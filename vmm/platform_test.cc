// Register-level tests of the 8250 UART and the fixed ports.
#include "vmm/platform.h"

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

}  // namespace
}  // namespace vmmkit::vmm
