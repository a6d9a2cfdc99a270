// Tests of the Vm with tiny guests assembled here as bytes: serial output,
// the exit port, the command line in RDI, MMIO exits, PCI configuration
// reads, graceful and forced stops, pause/resume, two vCPUs, fd hygiene.
// Skipped with the reason where /dev/kvm is unusable.
#include "vmm/vm.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "base/status_matchers.h"
#include "gtest/gtest.h"
#include "vmm/testing_elf.h"

namespace vmmkit::vmm {
namespace {

using ::vmmkit::testing::StatusIs;
using namespace ::vmmkit::vmm::testing;

class VmTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!KvmUsable(&why)) GTEST_SKIP() << "KVM unusable: " << why;
  }
  // Writes `code` as an ELF test guest and returns its path.
  std::string Guest(const std::vector<uint8_t>& code) {
    std::string path =
        absl::StrCat(::testing::TempDir(), "/guest_", counter_++, ".elf");
    std::vector<uint8_t> elf = MakeElf(code);
    std::ofstream(path, std::ios::binary)
        .write(reinterpret_cast<const char*>(elf.data()), elf.size());
    return path;
  }
  std::unique_ptr<Vm> Make(const std::vector<uint8_t>& code, int vcpus = 1,
                           std::string cmdline = "") {
    absl::StatusOr<std::unique_ptr<Vm>> vm = Vm::Create({.vcpus = vcpus,
                                                         .memory_mib = 32,
                                                         .kernel = Guest(code),
                                                         .cmdline = cmdline});
    EXPECT_TRUE(vm.ok()) << vm.status();
    return vm.ok() ? *std::move(vm) : nullptr;
  }
  int counter_ = 0;
};

TEST_F(VmTest, SerialOutputAndExitCode) {
  std::vector<uint8_t> c;
  Print(c, "hello\n");
  Exit(c, 42);
  std::unique_ptr<Vm> vm = Make(c);
  ASSERT_NE(vm, nullptr);
  std::string streamed;
  std::atomic<int> chunks{0};
  int sub = vm->SubscribeConsole([&](absl::string_view s) {
    streamed.append(s.data(), s.size());
    ++chunks;
  });
  EXPECT_EQ(vm->state(), VmState::kCreated);
  ASSERT_OK(vm->Start());
  ASSERT_OK(vm->WaitStopped(absl::Seconds(20)));
  EXPECT_EQ(vm->state(), VmState::kStopped);
  EXPECT_EQ(vm->exit_code(), 42);
  EXPECT_OK(vm->stop_reason());
  EXPECT_EQ(vm->ConsoleOutput(), "hello\n");
  vm->UnsubscribeConsole(sub);
  EXPECT_EQ(streamed, "hello\n");
  EXPECT_EQ(chunks.load(), 6);
  // 6 bytes + the exit write, each a port I/O exit.
  EXPECT_GE(vm->Metrics().exits_io, 7u);
  ASSERT_OK(vm->Stop(absl::Seconds(1)));  // already stopped: fine
  EXPECT_THAT(vm->Start(), StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST_F(VmTest, OneByteExitWrite) {
  std::vector<uint8_t> c;
  MovDx(c, 0x501);
  OutAl(c, 7);
  Emit(c, {0xeb, 0xfe});
  std::unique_ptr<Vm> vm = Make(c);
  ASSERT_NE(vm, nullptr);
  ASSERT_OK(vm->Start());
  ASSERT_OK(vm->WaitStopped(absl::Seconds(20)));
  EXPECT_EQ(vm->exit_code(), 7);
}

TEST_F(VmTest, CommandLineInRdi) {
  std::vector<uint8_t> c;
  // mov rsi, rdi ; mov dx, 0x3f8
  Emit(c, {0x48, 0x89, 0xfe});
  MovDx(c, 0x3f8);
  // loop: mov al, [rsi]; test al, al; jz done; out dx, al; inc rsi; jmp loop
  Emit(c, {0x8a, 0x06, 0x84, 0xc0, 0x74, 0x06, 0xee, 0x48, 0xff, 0xc6, 0xeb,
           0xf4});
  Exit(c, 0);
  std::unique_ptr<Vm> vm = Make(c, 1, "mode=legacy devices=blk,rng");
  ASSERT_NE(vm, nullptr);
  ASSERT_OK(vm->Start());
  ASSERT_OK(vm->WaitStopped(absl::Seconds(20)));
  EXPECT_EQ(vm->exit_code(), 0);
  EXPECT_EQ(vm->ConsoleOutput(), "mode=legacy devices=blk,rng");
}

TEST_F(VmTest, UnclaimedMmioReadsAllOnes) {
  std::vector<uint8_t> c;
  MovEax(c, 0x1234);
  c.push_back(0xa3);  // mov [moffs64], eax
  Imm64(c, 0xd0000000);
  MovEax(c, 0);
  c.push_back(0xa1);  // mov eax, [moffs64]
  Imm64(c, 0xd0000000);
  MovDx(c, 0x501);
  Emit(c, {0xef, 0xeb, 0xfe});  // out dx, eax
  std::unique_ptr<Vm> vm = Make(c);
  ASSERT_NE(vm, nullptr);
  ASSERT_OK(vm->Start());
  ASSERT_OK(vm->WaitStopped(absl::Seconds(20)));
  EXPECT_EQ(vm->exit_code(), -1);  // 0xffffffff
  EXPECT_EQ(vm->Metrics().exits_mmio, 2u);
}

// Reads the vendor/device id dword of 00:00.0 (host bridge) and 00:01.0 (the
// rng device) through 0xCF8/0xCFC and prints... exits with the device's.
TEST_F(VmTest, PciConfigThroughCf8) {
  std::vector<uint8_t> c;
  MovDx(c, 0xcf8);
  MovEax(c, 0x80000800);  // bus 0, device 1, function 0, register 0
  c.push_back(0xef);
  MovDx(c, 0xcfc);
  c.push_back(0xed);  // in eax, dx
  MovDx(c, 0x501);
  Emit(c, {0xef, 0xeb, 0xfe});
  std::unique_ptr<Vm> vm = Make(c);
  ASSERT_NE(vm, nullptr);
  ASSERT_OK(vm->AddDevice({.id = "rng0",
                           .type = virtio::DeviceType::kRng,
                           .transport = Transport::kPciTransitional,
                           .params = RngParams{}}));
  ASSERT_OK(vm->Start());
  ASSERT_OK(vm->WaitStopped(absl::Seconds(20)));
  // 0x1af4 (virtio), transitional rng 0x1005.
  EXPECT_EQ(vm->exit_code(), 0x10051af4);
  std::vector<DeviceReport> devs = vm->Devices();
  ASSERT_EQ(devs.size(), 1u);
  EXPECT_EQ(devs[0].id, "rng0");
  EXPECT_EQ(devs[0].pci_slot, 1);
  EXPECT_EQ(devs[0].status, 0);
}

// A modern device's BARs (MSI-X BAR 1, 64-bit BAR 4) land below 4 GiB in
// the 32-bit window: the guest reads BAR 4's low and high dwords and exits
// with (high != 0) << 31 | low >> 4.
TEST_F(VmTest, ModernBarsBelow4GiB) {
  std::vector<uint8_t> c;
  MovDx(c, 0xcf8);
  MovEax(c, 0x80000820);  // 00:01.0 BAR 4
  c.push_back(0xef);
  MovDx(c, 0xcfc);
  Emit(c, {0xed, 0x89, 0xc3});  // in eax, dx ; mov ebx, eax
  MovDx(c, 0xcf8);
  MovEax(c, 0x80000824);  // BAR 5: the upper half
  c.push_back(0xef);
  MovDx(c, 0xcfc);
  c.push_back(0xed);
  // ecx = (eax != 0) << 31 ; eax = ebx >> 4 | ecx
  Emit(c, {0x31, 0xc9, 0x85, 0xc0, 0x0f, 0x95, 0xc1, 0xc1, 0xe1, 0x1f});
  Emit(c, {0x89, 0xd8, 0xc1, 0xe8, 0x04, 0x09, 0xc8});
  MovDx(c, 0x501);
  Emit(c, {0xef, 0xeb, 0xfe});
  std::unique_ptr<Vm> vm = Make(c);
  ASSERT_NE(vm, nullptr);
  ASSERT_OK(vm->AddDevice({.id = "rng",
                           .type = virtio::DeviceType::kRng,
                           .transport = Transport::kPciModern,
                           .params = RngParams{}}));
  ASSERT_OK(vm->Start());
  ASSERT_OK(vm->WaitStopped(absl::Seconds(20)));
  ASSERT_TRUE(vm->exit_code().has_value());
  const uint32_t v = static_cast<uint32_t>(*vm->exit_code());
  EXPECT_EQ(v >> 31, 0u) << "BAR 4 above 4 GiB";
  const uint64_t bar = uint64_t{v & 0x7fffffff} << 4 & ~uint64_t{0xf};
  EXPECT_GE(bar, 0xc0000000u);
  EXPECT_LT(bar, 0xe0000000u);
}

TEST_F(VmTest, AddDeviceErrors) {
  std::vector<uint8_t> c;
  Exit(c, 0);
  std::unique_ptr<Vm> vm = Make(c);
  ASSERT_NE(vm, nullptr);
  ASSERT_OK(vm->AddDevice(
      {.id = "r", .type = virtio::DeviceType::kRng, .params = RngParams{}}));
  EXPECT_THAT(
      vm->AddDevice(
          {.id = "r", .type = virtio::DeviceType::kRng, .params = RngParams{}}),
      StatusIs(absl::StatusCode::kAlreadyExists));
  EXPECT_THAT(vm->AddDevice({.id = "b",
                             .type = virtio::DeviceType::kBlock,
                             .params = RngParams{}}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(vm->AddDevice({.id = "b",
                             .type = virtio::DeviceType::kBlock,
                             .params = BlkParams{.path = "/nonexistent"}}),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(vm->AddDevice({.id = "n",
                             .type = virtio::DeviceType::kNet,
                             .queue_size = 100,
                             .params = NetParams{}}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(
      vm->AddDevice(
          {.id = "", .type = virtio::DeviceType::kRng, .params = RngParams{}}),
      StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(vm->RemoveDevice("nope"), StatusIs(absl::StatusCode::kNotFound));
  ASSERT_OK(vm->AddDevice({.id = "c",
                           .type = virtio::DeviceType::kConsole,
                           .params = ConsoleParams{}}));
  ASSERT_OK(vm->RemoveDevice("r"));
  EXPECT_EQ(vm->Devices().size(), 1u);
  EXPECT_EQ(vm->Devices()[0].pci_slot, 1);
  ASSERT_OK(vm->Start());
  EXPECT_THAT(
      vm->AddDevice(
          {.id = "x", .type = virtio::DeviceType::kRng, .params = RngParams{}}),
      StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(vm->RemoveDevice("c"),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  ASSERT_OK(vm->WaitStopped(absl::Seconds(20)));
}

TEST_F(VmTest, CreateErrors) {
  EXPECT_THAT(Vm::Create({.kernel = "/nonexistent/kernel"}).status(),
              StatusIs(absl::StatusCode::kNotFound));
  std::string junk = absl::StrCat(::testing::TempDir(), "/junk");
  std::ofstream(junk) << "this is no kernel at all, just text";
  EXPECT_THAT(Vm::Create({.kernel = junk}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  std::vector<uint8_t> c;
  Exit(c, 0);
  std::string guest = Guest(c);
  EXPECT_THAT(Vm::Create({.vcpus = 0, .kernel = guest}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Vm::Create({.memory_mib = 4096, .kernel = guest}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(
      Vm::Create({.kernel = guest, .cmdline = std::string(5000, 'x')}).status(),
      StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Vm::Create({.kernel = guest, .initrd = junk}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

// The guest polls port 0x502 and exits with 3 once a stop was requested.
TEST_F(VmTest, GracefulStopThroughPort502) {
  std::vector<uint8_t> c;
  Print(c, "up\n");
  // loop: mov dx, 0x502; in al, dx; test al, al; jz loop
  Emit(c, {0x66, 0xba, 0x02, 0x05, 0xec, 0x84, 0xc0, 0x74, 0xf7});
  Exit(c, 3);
  std::unique_ptr<Vm> vm = Make(c);
  ASSERT_NE(vm, nullptr);
  ASSERT_OK(vm->Start());
  const absl::Time until = absl::Now() + absl::Seconds(10);
  while (vm->ConsoleOutput() != "up\n" && absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_EQ(vm->state(), VmState::kRunning);
  EXPECT_THAT(vm->WaitStopped(absl::Milliseconds(50)),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
  ASSERT_OK(vm->Stop(absl::Seconds(20)));
  EXPECT_EQ(vm->state(), VmState::kStopped);
  EXPECT_EQ(vm->exit_code(), 3);
  EXPECT_OK(vm->stop_reason());
}

// A guest that ignores the request is stopped after the timeout.
TEST_F(VmTest, ForcedStopAndPauseResume) {
  std::vector<uint8_t> c;
  // loop: out 0x3f8, '.' ... a spinning guest that keeps exiting: pause
  // must stop the output.
  MovDx(c, 0x80);
  Emit(c, {0xee, 0xeb, 0xfd});  // out dx, al ; jmp back to the out
  std::unique_ptr<Vm> vm = Make(c, 2);
  ASSERT_NE(vm, nullptr);
  ASSERT_OK(vm->Start());
  absl::SleepFor(absl::Milliseconds(100));
  ASSERT_OK(vm->Pause());
  EXPECT_EQ(vm->state(), VmState::kPaused);
  EXPECT_THAT(vm->Pause(), StatusIs(absl::StatusCode::kFailedPrecondition));
  const uint64_t exits = vm->Metrics().exits_io;
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_EQ(vm->Metrics().exits_io, exits) << "a paused vCPU ran";
  ASSERT_OK(vm->Resume());
  EXPECT_EQ(vm->state(), VmState::kRunning);
  EXPECT_THAT(vm->Resume(), StatusIs(absl::StatusCode::kFailedPrecondition));
  const absl::Time until = absl::Now() + absl::Seconds(10);
  while (vm->Metrics().exits_io == exits && absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_GT(vm->Metrics().exits_io, exits) << "no progress after Resume";
  ASSERT_OK(vm->Stop(absl::Milliseconds(100)));
  EXPECT_EQ(vm->state(), VmState::kStopped);
  EXPECT_EQ(vm->exit_code(), std::nullopt);
  EXPECT_THAT(vm->stop_reason(), StatusIs(absl::StatusCode::kCancelled));
}

// The BSP starts the AP with INIT-SIPI-SIPI; the AP, in real mode at
// 0x10000, writes 9 to the exit port. The BSP spins.
TEST_F(VmTest, SecondVcpuStartsOnSipi) {
  std::vector<uint8_t> c;
  // mov rax, <trampoline bytes>: mov dx,0x501; mov al,9; out dx,al; jmp $
  Emit(c, {0x48, 0xb8, 0xba, 0x01, 0x05, 0xb0, 0x09, 0xee, 0xeb, 0xfe});
  // mov [0x10000], rax
  Emit(c, {0x48, 0x89, 0x04, 0x25, 0x00, 0x00, 0x01, 0x00});
  // mov ecx, 0xfee00000
  c.push_back(0xb9);
  Imm32(c, 0xfee00000);
  auto store = [&](uint32_t reg, uint32_t value) {  // mov [rcx+reg], imm32
    Emit(c, {0xc7, 0x81});
    Imm32(c, reg);
    Imm32(c, value);
  };
  store(0xf0, 0x1ff);        // SVR: APIC enabled
  store(0x310, 1u << 24);    // ICR high: APIC id 1
  store(0x300, 0x00004500);  // INIT, assert
  store(0x300, 0x00004610);  // SIPI, vector 0x10 -> 0x10000
  store(0x300, 0x00004610);  // second SIPI, as the MP spec says
  Emit(c, {0xeb, 0xfe});
  std::unique_ptr<Vm> vm = Make(c, 2);
  ASSERT_NE(vm, nullptr);
  ASSERT_OK(vm->Start());
  absl::Status s = vm->WaitStopped(absl::Seconds(20));
  if (!s.ok()) (void)vm->Stop(absl::ZeroDuration());
  ASSERT_OK(s) << vm->stop_reason();
  EXPECT_EQ(vm->exit_code(), 9) << vm->stop_reason();
}

TEST_F(VmTest, SerialInputReachesRbr) {
  std::vector<uint8_t> c;
  // Wait for LSR.DR, read RBR, echo it to THR, exit with it.
  // loop: mov dx,0x3fd; in al,dx; test al,1; jz loop
  Emit(c, {0x66, 0xba, 0xfd, 0x03, 0xec, 0xa8, 0x01, 0x74, 0xf7});
  MovDx(c, 0x3f8);
  Emit(c, {0xec, 0xee});        // in al, dx ; out dx, al
  Emit(c, {0x0f, 0xb6, 0xc0});  // movzx eax, al
  MovDx(c, 0x501);
  Emit(c, {0xef, 0xeb, 0xfe});
  std::unique_ptr<Vm> vm = Make(c);
  ASSERT_NE(vm, nullptr);
  ASSERT_OK(vm->Start());
  ASSERT_OK(vm->WriteConsoleInput("Z"));
  ASSERT_OK(vm->WaitStopped(absl::Seconds(20)));
  EXPECT_EQ(vm->exit_code(), 'Z');
  EXPECT_EQ(vm->ConsoleOutput(), "Z");
}

// A polled legacy virtio-rng driver: finds BAR 0 through 0xCF8/0xCFC, sets
// up queue 0 at PFN 0x200 with one 16-byte device-writable buffer, kicks it
// (through the ioeventfd on QUEUE_NOTIFY: no exit), waits for the used ring
// and exits with the used length.
// With move_bar, the guest first moves BAR 0 to 0xd000 (as a kernel may
// re-program it): the ioeventfd must follow.
class LegacyRngTest
    : public VmTest,
      public ::testing::WithParamInterface<std::tuple<Transport, bool>> {};

TEST_P(LegacyRngTest, PolledRequestThroughIoeventfd) {
  const auto [transport, move_bar] = GetParam();
  std::vector<uint8_t> c;
  MovDx(c, 0xcf8);
  MovEax(c, 0x80000810);  // 00:01.0 BAR 0
  c.push_back(0xef);
  MovDx(c, 0xcfc);
  if (move_bar) {
    MovEax(c, 0xd000);
    c.push_back(0xef);  // out dx, eax: BAR 0 = 0xd000
  }
  c.push_back(0xed);
  Emit(c, {0x25, 0xfc, 0xff, 0x00, 0x00});  // and eax, 0xfffc
  Emit(c, {0x89, 0xc3});                    // mov ebx, eax
  auto lea = [&](uint8_t off) { Emit(c, {0x8d, 0x53, off}); };  // edx=rbx+off
  lea(18);
  OutAl(c, 3);  // status ACKNOWLEDGE | DRIVER
  lea(4);
  Emit(c, {0x31, 0xc0, 0xef});  // guest features 0
  lea(14);
  Emit(c, {0x31, 0xc0, 0x66, 0xef});  // queue select 0
  lea(8);
  MovEax(c, 0x200);
  c.push_back(0xef);                        // queue PFN
  Emit(c, {0xbf, 0x00, 0x00, 0x20, 0x00});  // mov edi, 0x200000
  auto store = [&](std::initializer_list<uint8_t> modrm, uint32_t v) {
    c.push_back(0xc7);
    c.insert(c.end(), modrm);
    Imm32(c, v);
  };
  store({0x07}, 0x300000);  // desc[0].addr
  store({0x47, 0x04}, 0);   //   (high)
  store({0x47, 0x08}, 16);  // desc[0].len
  store({0x47, 0x0c}, 2);   // desc[0].flags = WRITE, next 0
  // avail.ring[0] = 0, then avail.flags = 0, avail.idx = 1
  Emit(c, {0x66, 0xc7, 0x87, 0x04, 0x10, 0x00, 0x00, 0x00, 0x00});
  store({0x87, 0x00, 0x10, 0x00, 0x00}, 0x00010000);
  lea(18);
  OutAl(c, 7);  // DRIVER_OK
  lea(16);
  Emit(c, {0x31, 0xc0, 0x66, 0xef});  // QUEUE_NOTIFY 0
  // loop: movzx eax, word [rdi+0x2002]; test eax, eax; jz loop
  Emit(c, {0x0f, 0xb7, 0x87, 0x02, 0x20, 0x00, 0x00, 0x85, 0xc0, 0x74, 0xf5});
  Emit(c, {0x8b, 0x87, 0x08, 0x20, 0x00, 0x00});  // used.ring[0].len
  MovDx(c, 0x501);
  Emit(c, {0xef, 0xeb, 0xfe});
  std::unique_ptr<Vm> vm = Make(c);
  ASSERT_NE(vm, nullptr);
  ASSERT_OK(vm->AddDevice({.id = "rng",
                           .type = virtio::DeviceType::kRng,
                           .transport = transport,
                           .params = RngParams{}}));
  ASSERT_OK(vm->Start());
  absl::Status s = vm->WaitStopped(absl::Seconds(20));
  if (!s.ok()) (void)vm->Stop(absl::ZeroDuration());
  ASSERT_OK(s);
  EXPECT_EQ(vm->exit_code(), 16) << vm->stop_reason();
  // 8 port exits (9 with the BAR write): the notify went to the ioeventfd.
  EXPECT_EQ(vm->Metrics().exits_io, move_bar ? 9u : 8u);
  std::vector<DeviceReport> d = vm->Devices();
  ASSERT_EQ(d.size(), 1u);
  EXPECT_TRUE(d[0].driver_legacy);
  EXPECT_EQ(d[0].requests, 1u);
  EXPECT_EQ(d[0].bytes, 16u);
  EXPECT_EQ(d[0].notifications, 1u);
  EXPECT_EQ(d[0].queue_sizes, std::vector<uint16_t>{256});
  // As the driver left it (the device itself is reset at stop).
  EXPECT_EQ(d[0].status, 7);
  EXPECT_EQ(d[0].negotiated_features, 0u);
}

INSTANTIATE_TEST_SUITE_P(
    Modes, LegacyRngTest,
    ::testing::Combine(::testing::Values(Transport::kPciLegacy,
                                         Transport::kPciTransitional,
                                         // The notify reaches the shim's
                                         // ioeventfd, the rest admin commands.
                                         Transport::kPciLegacyViaAdmin),
                       ::testing::Bool()));

TEST_F(VmTest, I8042ResetPowersOff) {
  std::vector<uint8_t> c;
  Print(c, "bye");
  MovDx(c, 0x64);
  OutAl(c, 0xfe);
  Emit(c, {0xeb, 0xfe});
  std::unique_ptr<Vm> vm = Make(c);
  ASSERT_NE(vm, nullptr);
  ASSERT_OK(vm->Start());
  ASSERT_OK(vm->WaitStopped(absl::Seconds(20)));
  EXPECT_EQ(vm->exit_code(), 0);
  EXPECT_OK(vm->stop_reason());
  EXPECT_EQ(vm->ConsoleOutput(), "bye");
}

// int3 with no IDT: a triple fault. The VM stops with the reason; the VMM
// survives.
TEST_F(VmTest, TripleFaultStopsWithReason) {
  std::vector<uint8_t> c;
  Emit(c, {0xcc, 0xeb, 0xfe});
  std::unique_ptr<Vm> vm = Make(c);
  ASSERT_NE(vm, nullptr);
  ASSERT_OK(vm->Start());
  absl::Status s = vm->WaitStopped(absl::Seconds(20));
  if (!s.ok()) (void)vm->Stop(absl::ZeroDuration());
  ASSERT_OK(s);
  EXPECT_EQ(vm->exit_code(), std::nullopt);
  EXPECT_THAT(vm->stop_reason(), StatusIs(absl::StatusCode::kInternal));
}

int CountFds() {
  int n = 0;
  DIR* d = opendir("/proc/self/fd");
  if (d == nullptr) return -1;
  while (readdir(d) != nullptr) ++n;
  closedir(d);
  return n;
}

TEST_F(VmTest, NoFdLeaks) {
  std::vector<uint8_t> c;
  Print(c, "x");
  Exit(c, 1);
  const std::string guest = Guest(c);
  std::string disk = absl::StrCat(::testing::TempDir(), "/leak.img");
  {
    std::ofstream f(disk, std::ios::binary);
    f.seekp((1 << 20) - 1);
    f.put(0);
  }
  // One run first, so that one-time process state (the signal handler,
  // Abseil's internals) is in place before counting.
  for (int round = 0; round < 2; ++round) {
    const int before = CountFds();
    {
      absl::StatusOr<std::unique_ptr<Vm>> vm =
          Vm::Create({.vcpus = 2, .memory_mib = 32, .kernel = guest});
      ASSERT_OK(vm.status());
      ASSERT_OK((*vm)->AddDevice({.id = "d",
                                  .type = virtio::DeviceType::kBlock,
                                  .transport = Transport::kPciModern,
                                  .params = BlkParams{.path = disk}}));
      ASSERT_OK((*vm)->AddDevice({.id = "n",
                                  .type = virtio::DeviceType::kNet,
                                  .params = NetParams{}}));
      ASSERT_OK((*vm)->AddDevice({.id = "c",
                                  .type = virtio::DeviceType::kConsole,
                                  .transport = Transport::kPciLegacy,
                                  .params = ConsoleParams{}}));
      ASSERT_OK((*vm)->Start());
      ASSERT_OK((*vm)->WaitStopped(absl::Seconds(20)));
      EXPECT_EQ((*vm)->exit_code(), 1);
    }
    if (round == 1) EXPECT_EQ(CountFds(), before);
  }
}

TEST_F(VmTest, DestroyWhileRunning) {
  std::vector<uint8_t> c;
  Emit(c, {0xeb, 0xfe});  // spin without exits
  std::unique_ptr<Vm> vm = Make(c, 2);
  ASSERT_NE(vm, nullptr);
  ASSERT_OK(vm->Start());
  absl::SleepFor(absl::Milliseconds(50));
  vm.reset();  // must stop and join, not hang
}

// The gRPC layer may call Stop (and the accessors) from several threads at
// once, and stop a paused VM.
TEST_F(VmTest, ConcurrentStopOfPausedVm) {
  std::vector<uint8_t> c;
  Emit(c, {0xeb, 0xfe});
  std::unique_ptr<Vm> vm = Make(c, 2);
  ASSERT_NE(vm, nullptr);
  ASSERT_OK(vm->Start());
  ASSERT_OK(vm->Pause());
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&] {
      if (vm->Stop(absl::Seconds(1)).ok()) ++ok;
      (void)vm->Devices();
      (void)vm->state();
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(ok.load(), 4);
  EXPECT_EQ(vm->state(), VmState::kStopped);
  EXPECT_THAT(vm->stop_reason(), StatusIs(absl::StatusCode::kCancelled));
  EXPECT_THAT(vm->Resume(), StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST_F(VmTest, StopBeforeStart) {
  std::vector<uint8_t> c;
  Exit(c, 0);
  std::unique_ptr<Vm> vm = Make(c);
  ASSERT_NE(vm, nullptr);
  EXPECT_THAT(vm->WaitStopped(absl::Milliseconds(10)),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
  ASSERT_OK(vm->Stop(absl::Seconds(1)));
  EXPECT_EQ(vm->state(), VmState::kStopped);
  EXPECT_THAT(vm->Start(), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(vm->exit_code(), std::nullopt);
}

TEST(KvmProbe, IsPvmMatchesSysfs) {
  EXPECT_EQ(IsPvm(), access("/sys/module/kvm_pvm", F_OK) == 0);
}

}  // namespace
}  // namespace vmmkit::vmm
