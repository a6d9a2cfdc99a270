// vmm/kvm.h: RAII wrappers over the KVM ioctls the VMM uses, each returning
// absl::Status with the errno turned into a code right at the syscall.
//
//   VMMKIT_ASSIGN_OR_RETURN(std::unique_ptr<Kvm> kvm, Kvm::Open());
//   VMMKIT_ASSIGN_OR_RETURN(std::unique_ptr<VmFd> vm, kvm->CreateVm());
//   VMMKIT_RETURN_IF_ERROR(vm->SetUserMemoryRegion(0, 0, size, host));
//   VMMKIT_RETURN_IF_ERROR(vm->CreateIrqchip());
//   VMMKIT_ASSIGN_OR_RETURN(std::unique_ptr<VcpuFd> cpu, vm->CreateVcpu(0));
//   VMMKIT_RETURN_IF_ERROR(cpu->SetCpuid(cpuid));
//   while (cpu->Run().ok()) { switch (cpu->run()->exit_reason) { ... } }
//
// ScopedFd owns one file descriptor (eventfds, /dev/kvm, VM and vCPU fds).
//
// Thread-safety: Kvm and VmFd methods may be called from any thread (each is
// one ioctl on an fd that KVM serialises itself). A VcpuFd belongs to the
// thread that runs it (KVM requires vCPU ioctls from one thread at a time),
// except set_immediate_exit(), which other threads may call to kick it.
#ifndef VMMKIT_VMM_KVM_H_
#define VMMKIT_VMM_KVM_H_

#include <linux/kvm.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace vmmkit::vmm {

class ScopedFd {
 public:
  ScopedFd() = default;
  explicit ScopedFd(int fd) : fd_(fd) {}
  ScopedFd(ScopedFd&& o) noexcept : fd_(o.release()) {}
  ScopedFd& operator=(ScopedFd&& o) noexcept;
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;
  ~ScopedFd() { reset(); }
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void reset(int fd = -1);

 private:
  int fd_ = -1;
};

// A non-blocking, close-on-exec eventfd.
absl::StatusOr<ScopedFd> MakeEventFd();

class VcpuFd;

class VmFd {
 public:
  VmFd(ScopedFd fd, int run_size) : fd_(std::move(fd)), run_size_(run_size) {}
  int fd() const { return fd_.get(); }

  // KVM_SET_USER_MEMORY_REGION: `size` bytes at `host` appear at guest
  // physical `gpa`. size 0 deletes the slot.
  absl::Status SetUserMemoryRegion(uint32_t slot, uint64_t gpa, uint64_t size,
                                   void* host);
  // x86 housekeeping KVM needs before the first vCPU runs (three pages for
  // the TSS, one for the EPT identity map), here just below 4 GiB's BIOS area.
  absl::Status SetTssAddr(uint64_t addr);
  absl::Status SetIdentityMapAddr(uint64_t addr);
  // In-kernel PIC + IOAPIC (+ LAPICs), and the PIT.
  absl::Status CreateIrqchip();
  absl::Status CreatePit2();
  // Drives GSI `irq` (an IOAPIC/PIC input) to `level`.
  absl::Status IrqLine(uint32_t irq, bool level);
  // Injects one MSI (KVM_SIGNAL_MSI). kUnavailable if the guest blocked it.
  absl::Status SignalMsi(uint64_t address, uint32_t data);
  // KVM_IOEVENTFD: guest writes of `len` bytes to `addr` (port I/O when
  // `pio`), optionally only of `datamatch`, signal `event_fd` instead of
  // exiting. `deassign` removes exactly that registration.
  absl::Status Ioeventfd(int event_fd, uint64_t addr, uint32_t len, bool pio,
                         std::optional<uint64_t> datamatch, bool deassign);
  // KVM_IRQFD: writes to `event_fd` raise GSI `gsi`; with `resample_fd`
  // (level-triggered IOAPIC inputs) the line is lowered on EOI and
  // resample_fd signalled.
  absl::Status Irqfd(int event_fd, uint32_t gsi, std::optional<int> resample_fd,
                     bool deassign);
  // KVM_SET_GSI_ROUTING with exactly `entries` (replaces the table).
  absl::Status SetGsiRouting(const std::vector<kvm_irq_routing_entry>& entries);

  absl::StatusOr<std::unique_ptr<VcpuFd>> CreateVcpu(uint32_t id);

 private:
  ScopedFd fd_;
  int run_size_;
};

class VcpuFd {
 public:
  ~VcpuFd();
  VcpuFd(const VcpuFd&) = delete;
  VcpuFd& operator=(const VcpuFd&) = delete;

  uint32_t id() const { return id_; }
  int fd() const { return fd_.get(); }
  // The shared kvm_run structure (exit reason and data).
  kvm_run* run() const { return run_; }

  // KVM_RUN. kAborted for EINTR/EAGAIN (a kick: check why and call again),
  // other errors as errno says.
  absl::Status Run();
  // Makes the next (or current, with a signal) KVM_RUN return at once.
  void set_immediate_exit(bool on);

  absl::StatusOr<kvm_regs> GetRegs() const;
  absl::Status SetRegs(const kvm_regs& regs);
  absl::StatusOr<kvm_sregs> GetSregs() const;
  absl::Status SetSregs(const kvm_sregs& sregs);
  absl::Status SetFpu(const kvm_fpu& fpu);
  absl::Status SetCpuid(const std::vector<kvm_cpuid_entry2>& entries);
  absl::Status SetMsrs(const std::vector<kvm_msr_entry>& msrs);
  absl::Status SetLapicLint(bool bsp);  // LINT0 ExtINT, LINT1 NMI (as a BIOS)

 private:
  friend class VmFd;
  VcpuFd(uint32_t id, ScopedFd fd, kvm_run* run, int run_size)
      : id_(id), fd_(std::move(fd)), run_(run), run_size_(run_size) {}
  uint32_t id_;
  ScopedFd fd_;
  kvm_run* run_;
  int run_size_;
};

class Kvm {
 public:
  // Opens /dev/kvm and checks the API version (12) and the extensions the
  // VMM relies on. kUnavailable (with the reason) if it cannot.
  static absl::StatusOr<std::unique_ptr<Kvm>> Open();
  int fd() const { return fd_.get(); }
  // KVM_CHECK_EXTENSION's answer (0: absent).
  int CheckExtension(int extension) const;
  // KVM_GET_SUPPORTED_CPUID.
  absl::StatusOr<std::vector<kvm_cpuid_entry2>> SupportedCpuid() const;
  absl::StatusOr<std::unique_ptr<VmFd>> CreateVm() const;

 private:
  Kvm(ScopedFd fd, int run_size) : fd_(std::move(fd)), run_size_(run_size) {}
  ScopedFd fd_;
  int run_size_;
};

// Adjusts KVM's supported CPUID for a guest with `num_vcpus` vCPUs, as vCPU
// `vcpu_id`: APIC id and logical processor count in leaf 1, x2APIC id in
// leaves 0xb/0x1f, the hypervisor bit. KVM's own leaves (0x40000000..:
// kvmclock and the paravirtual features it supports) are passed through.
std::vector<kvm_cpuid_entry2> GuestCpuid(std::vector<kvm_cpuid_entry2> cpuid,
                                         uint32_t vcpu_id, int num_vcpus);

}  // namespace vmmkit::vmm

#endif  // VMMKIT_VMM_KVM_H_
