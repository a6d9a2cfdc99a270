// vmm/kvm.cc: see kvm.h.
#include "vmm/kvm.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/status.h"

namespace vmmkit::vmm {
namespace {

// ioctl retried on EINTR, except for KVM_RUN (where EINTR is the point).
template <typename Arg>
int Ioctl(int fd, unsigned long request, Arg arg) {
  int r;
  do {
    r = ioctl(fd, request, arg);
  } while (r < 0 && errno == EINTR);
  return r;
}

// Linux's uapi headers declare the variable-length KVM structures with
// __DECLARE_FLEX_ARRAY, which in C++ adds an empty struct member: sizeof and
// the offset of the entries grow by 4 and the ioctl numbers (which encode
// the size) no longer match the kernel's. These are the kernel's layouts:
// an 8-byte header followed by the entries.
struct VarHeader {
  uint32_t count;
  uint32_t padding_or_flags;
};
static_assert(sizeof(VarHeader) == 8);
constexpr unsigned long kGetSupportedCpuid = _IOWR(KVMIO, 0x05, VarHeader);
constexpr unsigned long kSetCpuid2 = _IOW(KVMIO, 0x90, VarHeader);
constexpr unsigned long kSetMsrs = _IOW(KVMIO, 0x89, VarHeader);
constexpr unsigned long kSetGsiRouting = _IOW(KVMIO, 0x6a, VarHeader);

// A header and `entries` in one buffer, as the kernel reads it.
template <typename Entry>
std::vector<uint8_t> VarBuffer(uint32_t count, const Entry* entries) {
  std::vector<uint8_t> buf(sizeof(VarHeader) + count * sizeof(Entry), 0);
  VarHeader h = {count, 0};
  std::memcpy(buf.data(), &h, sizeof(h));
  if (entries != nullptr && count > 0) {
    std::memcpy(buf.data() + sizeof(h), entries, count * sizeof(Entry));
  }
  return buf;
}

absl::Status IoctlStatus(int r, const char* what) {
  if (r < 0) return ErrnoToStatus(errno, what);
  return absl::OkStatus();
}

}  // namespace

ScopedFd& ScopedFd::operator=(ScopedFd&& o) noexcept {
  if (this != &o) reset(o.release());
  return *this;
}

void ScopedFd::reset(int fd) {
  if (fd_ >= 0) close(fd_);
  fd_ = fd;
}

absl::StatusOr<ScopedFd> MakeEventFd() {
  int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) return ErrnoToStatus(errno, "eventfd");
  return ScopedFd(fd);
}

absl::StatusOr<std::unique_ptr<Kvm>> Kvm::Open() {
  int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    return absl::UnavailableError(
        absl::StrCat("open /dev/kvm: ", strerror(errno)));
  }
  ScopedFd kvm(fd);
  int version = ioctl(fd, KVM_GET_API_VERSION, 0);
  if (version != KVM_API_VERSION) {
    return absl::UnavailableError(
        absl::StrCat("KVM API version ", version, ", want ", KVM_API_VERSION));
  }
  for (int ext :
       {KVM_CAP_IRQCHIP, KVM_CAP_IOEVENTFD, KVM_CAP_IRQFD, KVM_CAP_USER_MEMORY,
        KVM_CAP_SIGNAL_MSI, KVM_CAP_IMMEDIATE_EXIT}) {
    if (ioctl(fd, KVM_CHECK_EXTENSION, ext) <= 0) {
      return absl::UnavailableError(absl::StrCat("KVM lacks extension ", ext));
    }
  }
  int run_size = ioctl(fd, KVM_GET_VCPU_MMAP_SIZE, 0);
  if (run_size < static_cast<int>(sizeof(kvm_run))) {
    return absl::UnavailableError("KVM_GET_VCPU_MMAP_SIZE failed");
  }
  return std::unique_ptr<Kvm>(new Kvm(std::move(kvm), run_size));
}

int Kvm::CheckExtension(int extension) const {
  int r = ioctl(fd(), KVM_CHECK_EXTENSION, extension);
  return r < 0 ? 0 : r;
}

absl::StatusOr<std::vector<kvm_cpuid_entry2>> Kvm::SupportedCpuid() const {
  for (uint32_t n = 64; n <= 1024; n *= 2) {
    std::vector<uint8_t> buf =
        VarBuffer<kvm_cpuid_entry2>(n, /*entries=*/nullptr);
    if (Ioctl(fd(), kGetSupportedCpuid, buf.data()) == 0) {
      VarHeader h;
      std::memcpy(&h, buf.data(), sizeof(h));
      std::vector<kvm_cpuid_entry2> out(std::min(h.count, n));
      std::memcpy(out.data(), buf.data() + sizeof(h),
                  out.size() * sizeof(kvm_cpuid_entry2));
      return out;
    }
    if (errno != E2BIG) return ErrnoToStatus(errno, "KVM_GET_SUPPORTED_CPUID");
  }
  return absl::InternalError("KVM_GET_SUPPORTED_CPUID: too many entries");
}

absl::StatusOr<std::unique_ptr<VmFd>> Kvm::CreateVm() const {
  int fd = Ioctl(this->fd(), KVM_CREATE_VM, 0);
  if (fd < 0) return ErrnoToStatus(errno, "KVM_CREATE_VM");
  return std::make_unique<VmFd>(ScopedFd(fd), run_size_);
}

absl::Status VmFd::SetUserMemoryRegion(uint32_t slot, uint64_t gpa,
                                       uint64_t size, void* host) {
  kvm_userspace_memory_region r = {};
  r.slot = slot;
  r.guest_phys_addr = gpa;
  r.memory_size = size;
  r.userspace_addr = reinterpret_cast<uint64_t>(host);
  return IoctlStatus(Ioctl(fd(), KVM_SET_USER_MEMORY_REGION, &r),
                     "KVM_SET_USER_MEMORY_REGION");
}

absl::Status VmFd::SetTssAddr(uint64_t addr) {
  return IoctlStatus(Ioctl(fd(), KVM_SET_TSS_ADDR, addr), "KVM_SET_TSS_ADDR");
}

absl::Status VmFd::SetIdentityMapAddr(uint64_t addr) {
  return IoctlStatus(Ioctl(fd(), KVM_SET_IDENTITY_MAP_ADDR, &addr),
                     "KVM_SET_IDENTITY_MAP_ADDR");
}

absl::Status VmFd::CreateIrqchip() {
  return IoctlStatus(Ioctl(fd(), KVM_CREATE_IRQCHIP, 0), "KVM_CREATE_IRQCHIP");
}

absl::Status VmFd::CreatePit2() {
  kvm_pit_config pit = {};
  pit.flags = KVM_PIT_SPEAKER_DUMMY;
  return IoctlStatus(Ioctl(fd(), KVM_CREATE_PIT2, &pit), "KVM_CREATE_PIT2");
}

absl::Status VmFd::IrqLine(uint32_t irq, bool level) {
  kvm_irq_level l = {};
  l.irq = irq;
  l.level = level ? 1 : 0;
  return IoctlStatus(Ioctl(fd(), KVM_IRQ_LINE, &l), "KVM_IRQ_LINE");
}

absl::Status VmFd::SignalMsi(uint64_t address, uint32_t data) {
  kvm_msi msi = {};
  msi.address_lo = static_cast<uint32_t>(address);
  msi.address_hi = static_cast<uint32_t>(address >> 32);
  msi.data = data;
  int r = Ioctl(fd(), KVM_SIGNAL_MSI, &msi);
  if (r < 0) return ErrnoToStatus(errno, "KVM_SIGNAL_MSI");
  if (r == 0) return absl::UnavailableError("KVM_SIGNAL_MSI: blocked by guest");
  return absl::OkStatus();
}

absl::Status VmFd::Ioeventfd(int event_fd, uint64_t addr, uint32_t len,
                             bool pio, std::optional<uint64_t> datamatch,
                             bool deassign) {
  kvm_ioeventfd io = {};
  io.addr = addr;
  io.len = len;
  io.fd = event_fd;
  if (pio) io.flags |= KVM_IOEVENTFD_FLAG_PIO;
  if (datamatch.has_value()) {
    io.flags |= KVM_IOEVENTFD_FLAG_DATAMATCH;
    io.datamatch = *datamatch;
  }
  if (deassign) io.flags |= KVM_IOEVENTFD_FLAG_DEASSIGN;
  return IoctlStatus(Ioctl(fd(), KVM_IOEVENTFD, &io), "KVM_IOEVENTFD");
}

absl::Status VmFd::Irqfd(int event_fd, uint32_t gsi,
                         std::optional<int> resample_fd, bool deassign) {
  kvm_irqfd irqfd = {};
  irqfd.fd = event_fd;
  irqfd.gsi = gsi;
  if (resample_fd.has_value()) {
    irqfd.flags |= KVM_IRQFD_FLAG_RESAMPLE;
    irqfd.resamplefd = *resample_fd;
  }
  if (deassign) irqfd.flags |= KVM_IRQFD_FLAG_DEASSIGN;
  return IoctlStatus(Ioctl(fd(), KVM_IRQFD, &irqfd), "KVM_IRQFD");
}

absl::Status VmFd::SetGsiRouting(
    const std::vector<kvm_irq_routing_entry>& entries) {
  std::vector<uint8_t> buf =
      VarBuffer(static_cast<uint32_t>(entries.size()), entries.data());
  return IoctlStatus(Ioctl(fd(), kSetGsiRouting, buf.data()),
                     "KVM_SET_GSI_ROUTING");
}

absl::StatusOr<std::unique_ptr<VcpuFd>> VmFd::CreateVcpu(uint32_t id) {
  int fd = Ioctl(this->fd(), KVM_CREATE_VCPU, static_cast<unsigned long>(id));
  if (fd < 0) return ErrnoToStatus(errno, "KVM_CREATE_VCPU");
  ScopedFd vcpu(fd);
  void* run =
      mmap(nullptr, run_size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (run == MAP_FAILED) return ErrnoToStatus(errno, "mmap kvm_run");
  return std::unique_ptr<VcpuFd>(
      new VcpuFd(id, std::move(vcpu), static_cast<kvm_run*>(run), run_size_));
}

VcpuFd::~VcpuFd() { munmap(run_, run_size_); }

absl::Status VcpuFd::Run() {
  if (ioctl(fd(), KVM_RUN, 0) < 0) {
    if (errno == EINTR || errno == EAGAIN) {
      return absl::AbortedError("KVM_RUN interrupted");
    }
    return ErrnoToStatus(errno, "KVM_RUN");
  }
  return absl::OkStatus();
}

void VcpuFd::set_immediate_exit(bool on) {
  // A plain byte store the kernel reads at KVM_RUN entry; volatile keeps the
  // compiler from dropping or reordering it around the kick's signal.
  *reinterpret_cast<volatile uint8_t*>(&run_->immediate_exit) = on ? 1 : 0;
}

absl::StatusOr<kvm_regs> VcpuFd::GetRegs() const {
  kvm_regs regs;
  if (Ioctl(fd(), KVM_GET_REGS, &regs) < 0) {
    return ErrnoToStatus(errno, "KVM_GET_REGS");
  }
  return regs;
}

absl::Status VcpuFd::SetRegs(const kvm_regs& regs) {
  return IoctlStatus(Ioctl(fd(), KVM_SET_REGS, &regs), "KVM_SET_REGS");
}

absl::StatusOr<kvm_sregs> VcpuFd::GetSregs() const {
  kvm_sregs sregs;
  if (Ioctl(fd(), KVM_GET_SREGS, &sregs) < 0) {
    return ErrnoToStatus(errno, "KVM_GET_SREGS");
  }
  return sregs;
}

absl::Status VcpuFd::SetSregs(const kvm_sregs& sregs) {
  return IoctlStatus(Ioctl(fd(), KVM_SET_SREGS, &sregs), "KVM_SET_SREGS");
}

absl::Status VcpuFd::SetFpu(const kvm_fpu& fpu) {
  return IoctlStatus(Ioctl(fd(), KVM_SET_FPU, &fpu), "KVM_SET_FPU");
}

absl::Status VcpuFd::SetCpuid(const std::vector<kvm_cpuid_entry2>& entries) {
  std::vector<uint8_t> buf =
      VarBuffer(static_cast<uint32_t>(entries.size()), entries.data());
  return IoctlStatus(Ioctl(fd(), kSetCpuid2, buf.data()), "KVM_SET_CPUID2");
}

absl::Status VcpuFd::SetMsrs(const std::vector<kvm_msr_entry>& msrs) {
  std::vector<uint8_t> buf =
      VarBuffer(static_cast<uint32_t>(msrs.size()), msrs.data());
  int r = Ioctl(fd(), kSetMsrs, buf.data());
  if (r < 0) return ErrnoToStatus(errno, "KVM_SET_MSRS");
  if (r != static_cast<int>(msrs.size())) {
    return absl::InternalError(
        absl::StrCat("KVM_SET_MSRS set ", r, " of ", msrs.size()));
  }
  return absl::OkStatus();
}

absl::Status VcpuFd::SetLapicLint(bool bsp) {
  kvm_lapic_state lapic;
  if (Ioctl(fd(), KVM_GET_LAPIC, &lapic) < 0) {
    return ErrnoToStatus(errno, "KVM_GET_LAPIC");
  }
  // LVT LINT0 (0x350) and LINT1 (0x360): delivery mode in bits 10:8.
  auto set_mode = [&](int reg, uint32_t mode) {
    uint32_t v;
    std::memcpy(&v, &lapic.regs[reg], 4);
    v = (v & ~uint32_t{0x700} & ~uint32_t{1 << 16}) | (mode << 8);
    std::memcpy(&lapic.regs[reg], &v, 4);
  };
  constexpr uint32_t kExtInt = 7, kNmi = 4;
  if (bsp) set_mode(0x350, kExtInt);
  set_mode(0x360, kNmi);
  return IoctlStatus(Ioctl(fd(), KVM_SET_LAPIC, &lapic), "KVM_SET_LAPIC");
}

std::vector<kvm_cpuid_entry2> GuestCpuid(std::vector<kvm_cpuid_entry2> cpuid,
                                         uint32_t vcpu_id, int num_vcpus) {
  for (kvm_cpuid_entry2& e : cpuid) {
    switch (e.function) {
      case 1:
        // EBX[31:24] initial APIC id, [23:16] logical processors; ECX[31]
        // hypervisor present.
        e.ebx = (e.ebx & 0x0000ffff) | (vcpu_id << 24) |
                (static_cast<uint32_t>(num_vcpus) << 16);
        e.ecx |= 1u << 31;
        if (num_vcpus > 1) e.edx |= 1u << 28;  // HTT: the count is valid
        break;
      case 0xb:
      case 0x1f:
        e.edx = vcpu_id;  // x2APIC id
        break;
      default:
        break;
    }
  }
  return cpuid;
}

}  // namespace vmmkit::vmm
