// Tests of the KVM wrappers and MSI routes; skipped without usable /dev/kvm.
#include "vmm/kvm.h"

#include <fcntl.h>
#include <unistd.h>

#include "base/status_matchers.h"
#include "gtest/gtest.h"
#include "vmm/msi_routes.h"

namespace vmmkit::vmm {
namespace {

using ::vmmkit::testing::StatusIs;

class KvmTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<Kvm>> kvm = Kvm::Open();
    if (!kvm.ok()) GTEST_SKIP() << "KVM unusable: " << kvm.status();
    kvm_ = *std::move(kvm);
    absl::StatusOr<std::unique_ptr<VmFd>> vm = kvm_->CreateVm();
    ASSERT_OK(vm.status());
    vm_ = *std::move(vm);
  }
  std::unique_ptr<Kvm> kvm_;
  std::unique_ptr<VmFd> vm_;
};

TEST_F(KvmTest, SupportedCpuidAndGuestIds) {
  absl::StatusOr<std::vector<kvm_cpuid_entry2>> cpuid = kvm_->SupportedCpuid();
  ASSERT_OK(cpuid.status());
  ASSERT_FALSE(cpuid->empty());
  std::vector<kvm_cpuid_entry2> g = GuestCpuid(*cpuid, 3, 4);
  bool leaf1 = false;
  for (const kvm_cpuid_entry2& e : g) {
    if (e.function != 1) continue;
    leaf1 = true;
    EXPECT_EQ(e.ebx >> 24, 3u);  // initial APIC id
    EXPECT_EQ((e.ebx >> 16) & 0xff, 4u);
    EXPECT_TRUE(e.ecx & (1u << 31));  // hypervisor
  }
  EXPECT_TRUE(leaf1);
}

TEST_F(KvmTest, VcpuSetCpuidAndRegisters) {
  ASSERT_OK(vm_->CreateIrqchip());
  absl::StatusOr<std::unique_ptr<VcpuFd>> cpu = vm_->CreateVcpu(0);
  ASSERT_OK(cpu.status());
  absl::StatusOr<std::vector<kvm_cpuid_entry2>> cpuid = kvm_->SupportedCpuid();
  ASSERT_OK(cpuid.status());
  EXPECT_OK((*cpu)->SetCpuid(GuestCpuid(*cpuid, 0, 1)));
  absl::StatusOr<kvm_regs> regs = (*cpu)->GetRegs();
  ASSERT_OK(regs.status());
  regs->rax = 0x1234;
  ASSERT_OK((*cpu)->SetRegs(*regs));
  EXPECT_EQ((*cpu)->GetRegs()->rax, 0x1234u);
  EXPECT_OK((*cpu)->SetLapicLint(true));
  // A duplicate vCPU id is refused.
  EXPECT_FALSE(vm_->CreateVcpu(0).ok());
}

TEST_F(KvmTest, IoeventfdAssignAndDeassign) {
  absl::StatusOr<ScopedFd> ev = MakeEventFd();
  ASSERT_OK(ev.status());
  ASSERT_OK(vm_->Ioeventfd(ev->get(), 0x600, 2, /*pio=*/true, 1, false));
  // The same registration twice: EEXIST.
  EXPECT_FALSE(vm_->Ioeventfd(ev->get(), 0x600, 2, true, 1, false).ok());
  ASSERT_OK(vm_->Ioeventfd(ev->get(), 0x600, 2, true, 1, /*deassign=*/true));
  EXPECT_FALSE(vm_->Ioeventfd(ev->get(), 0x600, 2, true, 1, true).ok());
}

TEST_F(KvmTest, MsiRoutes) {
  ASSERT_OK(vm_->CreateIrqchip());
  MsiRoutes routes(vm_.get());
  ASSERT_OK(routes.Init());
  absl::StatusOr<int> a = routes.Add();
  absl::StatusOr<int> b = routes.Add();
  ASSERT_OK(a.status());
  ASSERT_OK(b.status());
  EXPECT_NE(routes.gsi(*a), routes.gsi(*b));
  EXPECT_GE(routes.gsi(*a), MsiRoutes::kFirstMsiGsi);
  EXPECT_OK(routes.Set(*a, std::make_pair(0xfee00000ull, 0x41u)));
  EXPECT_OK(routes.Set(*b, std::make_pair(0xfee01000ull, 0x42u)));
  EXPECT_OK(routes.Set(*a, std::nullopt));
  EXPECT_TRUE(routes.Trigger(*b));
  EXPECT_FALSE(routes.Trigger(99));
  EXPECT_THAT(routes.Set(99, std::nullopt),
              StatusIs(absl::StatusCode::kNotFound));
  // The legacy interrupt lines still work with the table replaced.
  EXPECT_OK(vm_->IrqLine(4, true));
  EXPECT_OK(vm_->IrqLine(4, false));
  EXPECT_OK(vm_->IrqLine(17, true));
}

TEST(ScopedFdTest, ClosesAndMoves) {
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  close(p[1]);
  ScopedFd a(p[0]);
  ScopedFd b(std::move(a));
  EXPECT_FALSE(a.valid());
  EXPECT_EQ(b.get(), p[0]);
  b.reset();
  EXPECT_EQ(fcntl(p[0], F_GETFD), -1);  // closed
}

}  // namespace
}  // namespace vmmkit::vmm
