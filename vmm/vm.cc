// vmm/vm.cc: see vm.h. The wiring: guest RAM (one KVM slot from 0), the
// in-kernel irqchip and PIT, the image loaded by vmm/boot, the PCI bus with
// the DeviceSlots, the UART and fixed ports, one thread per vCPU and one I/O
// thread (epoll over ioeventfds and backend fds).
//
// Locks, in the order they nest: io_mu_ (the UART, the fixed ports and the
// PCI bus; vCPU exits take it), then a device's lock (inside the bus, see
// devices.h), state_mu_ (lifecycle; the exit port's callback takes it inside
// io_mu_) or console_mu_ (serial output buffer and subscribers).
#include "vmm/vm.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "base/status.h"
#include "pci/root_bus.h"
#include "virtqueue/guest_memory.h"
#include "vmm/acpi.h"
#include "vmm/boot.h"
#include "vmm/devices.h"
#include "vmm/kvm.h"
#include "vmm/mptable.h"
#include "vmm/msi_routes.h"
#include "vmm/platform.h"

namespace vmmkit::vmm {

const char* TransportName(Transport transport) {
  switch (transport) {
    case Transport::kPciModern:
      return "pci-modern";
    case Transport::kPciTransitional:
      return "pci-transitional";
    case Transport::kPciLegacy:
      return "pci-legacy";
    case Transport::kPciLegacyViaAdmin:
      return "pci-legacy-via-admin";
  }
  return "unknown";
}

const char* VmStateName(VmState state) {
  switch (state) {
    case VmState::kCreated:
      return "created";
    case VmState::kRunning:
      return "running";
    case VmState::kPaused:
      return "paused";
    case VmState::kStopped:
      return "stopped";
  }
  return "unknown";
}

bool KvmUsable(std::string* why_not) {
  absl::StatusOr<std::unique_ptr<Kvm>> kvm = Kvm::Open();
  if (!kvm.ok()) {
    if (why_not != nullptr) *why_not = std::string(kvm.status().message());
    return false;
  }
  return true;
}

bool IsPvm() {
  struct stat st;
  return stat("/sys/module/kvm_pvm", &st) == 0;
}

namespace {

// The signal that kicks a vCPU thread out of KVM_RUN (no SA_RESTART, an
// empty handler: KVM_RUN returns EINTR). Process-wide by nature.
int KickSignal() { return SIGRTMIN + 4; }

void InstallKickHandler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa = {};
    sa.sa_handler = [](int) {};
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;
    sigaction(KickSignal(), &sa, nullptr);
  });
}

absl::StatusOr<std::vector<uint8_t>> ReadFile(const std::string& path,
                                              const char* what) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return ErrnoToStatus(errno, absl::StrCat(what, " ", path));
  }
  ScopedFd f(fd);
  struct stat st;
  if (fstat(fd, &st) < 0) return ErrnoToStatus(errno, "fstat");
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " ", path, " is not a regular file"));
  }
  constexpr off_t kMaxImage = off_t{1} << 30;
  if (st.st_size > kMaxImage) {
    return absl::InvalidArgumentError(absl::StrCat(what, " is too large"));
  }
  std::vector<uint8_t> data(static_cast<size_t>(st.st_size));
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = read(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoToStatus(errno, absl::StrCat("read ", path));
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  data.resize(done);
  return data;
}

constexpr uint64_t kTssAddr = 0xfffbd000;
constexpr uint64_t kPciMmio32Size = 0x20000000;  // [3 GiB, 3.5 GiB)
constexpr uint64_t kIdentityMapAddr = 0xfffbc000;

}  // namespace

class VmImpl {
 public:
  explicit VmImpl(VmConfig config) : config_(std::move(config)) {}
  ~VmImpl() { Shutdown(); }

  absl::Status Init();
  absl::Status AddDevice(DeviceConfig config);
  absl::Status RemoveDevice(absl::string_view id);
  absl::Status Start();
  absl::Status Pause();
  absl::Status Resume();
  absl::Status Stop(absl::Duration graceful_timeout);
  absl::Status WaitStopped(absl::Duration timeout);
  void Shutdown();

  VmState state() const {
    absl::MutexLock l(&state_mu_);
    return state_;
  }
  std::optional<int> exit_code() const {
    absl::MutexLock l(&state_mu_);
    return exit_code_;
  }
  absl::Status stop_reason() const {
    absl::MutexLock l(&state_mu_);
    return stop_reason_;
  }
  std::vector<DeviceReport> Devices() const;
  VmMetrics Metrics() const {
    return {exits_io_.load(), exits_mmio_.load(), exits_other_.load()};
  }
  std::string ConsoleOutput() const {
    absl::MutexLock l(&console_mu_);
    return console_;
  }
  int SubscribeConsole(std::function<void(absl::string_view)> fn) {
    absl::MutexLock l(&console_mu_);
    const int id = next_subscriber_++;
    subscribers_[id] = std::move(fn);
    return id;
  }
  void UnsubscribeConsole(int id) {
    absl::MutexLock l(&console_mu_);
    subscribers_.erase(id);
  }
  absl::Status WriteConsoleInput(absl::string_view bytes) {
    absl::MutexLock l(&io_mu_);
    size_t n = uart_->QueueInput(bytes);
    if (n < bytes.size()) {
      return absl::ResourceExhaustedError(
          absl::StrCat("serial input full: took ", n, " of ", bytes.size()));
    }
    return absl::OkStatus();
  }
  absl::Status WriteVirtioConsoleInput(absl::string_view id,
                                       absl::string_view bytes);
  std::string VirtioConsoleOutput(absl::string_view id) const;

 private:
  void VcpuLoop(int index);
  // Handles one exit; false when this vCPU should stop.
  bool HandleExit(VcpuFd& cpu);
  void HandlePio(uint16_t port, absl::Span<uint8_t> data, bool write);
  void HandleMmio(uint64_t addr, absl::Span<uint8_t> data, bool write);
  void IoLoop();
  // Ends the run (first reason wins) and kicks every vCPU.
  void RequestStop(std::optional<int> code, absl::Status why);
  void KickAll() ABSL_EXCLUSIVE_LOCKS_REQUIRED(state_mu_);
  // Run by the last vCPU thread out: stops the I/O thread, flushes and
  // resets the devices, marks the VM stopped.
  void FinishRun();
  void AppendConsole(absl::string_view bytes);
  void JoinVcpus();
  absl::Status SetupVcpu(VcpuFd& cpu, int index,
                         const std::vector<kvm_cpuid_entry2>& cpuid);
  DeviceSlot* FindSlot(absl::string_view id) const;

  const VmConfig config_;
  uint64_t ram_size_ = 0;
  std::unique_ptr<Kvm> kvm_;
  std::unique_ptr<VmFd> vm_;
  std::unique_ptr<MsiRoutes> routes_;  // outlives the slots
  std::unique_ptr<virtqueue::GuestMemoryMmap> memory_;
  BootInfo boot_;

  // Fixed once Start() begins (AddDevice/RemoveDevice refuse after).
  std::vector<std::unique_ptr<DeviceSlot>> slots_;
  // Filled (under state_mu_) when the threads start; fixed after.
  std::vector<std::unique_ptr<VcpuFd>> vcpus_ ABSL_GUARDED_BY(state_mu_);

  mutable absl::Mutex state_mu_;
  absl::CondVar state_cv_;
  VmState state_ ABSL_GUARDED_BY(state_mu_) = VmState::kCreated;
  bool starting_ ABSL_GUARDED_BY(state_mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(state_mu_) = false;
  bool pause_requested_ ABSL_GUARDED_BY(state_mu_) = false;
  int vcpus_paused_ ABSL_GUARDED_BY(state_mu_) = 0;
  int vcpus_running_ ABSL_GUARDED_BY(state_mu_) = 0;
  std::optional<int> exit_code_ ABSL_GUARDED_BY(state_mu_);
  absl::Status stop_reason_ ABSL_GUARDED_BY(state_mu_);
  std::vector<pthread_t> vcpu_handles_ ABSL_GUARDED_BY(state_mu_);
  absl::Mutex join_mu_;
  std::vector<std::thread> vcpu_threads_;  // joined under join_mu_
  std::thread io_thread_;
  ScopedFd io_stop_;
  ScopedFd epoll_;
  std::vector<DeviceSlot::PollFd> poll_fds_;
  std::vector<DeviceSlot*> poll_slots_;  // parallel to poll_fds_

  absl::Mutex io_mu_;
  std::unique_ptr<pci::RootBus> bus_ ABSL_GUARDED_BY(io_mu_);
  std::unique_ptr<Serial8250> uart_ ABSL_GUARDED_BY(io_mu_);
  std::unique_ptr<PlatformPorts> ports_ ABSL_GUARDED_BY(io_mu_);

  mutable absl::Mutex console_mu_;
  std::string console_ ABSL_GUARDED_BY(console_mu_);
  std::map<int, std::function<void(absl::string_view)>> subscribers_
      ABSL_GUARDED_BY(console_mu_);
  int next_subscriber_ ABSL_GUARDED_BY(console_mu_) = 1;

  std::atomic<uint64_t> exits_io_{0}, exits_mmio_{0}, exits_other_{0};
};

absl::Status VmImpl::Init() {
  if (config_.vcpus < 1 || config_.vcpus > kMaxVcpus) {
    return absl::InvalidArgumentError(
        absl::StrCat("vcpus must be 1..", kMaxVcpus));
  }
  if (config_.memory_mib < 4 || config_.memory_mib > kMaxRamSize >> 20) {
    return absl::InvalidArgumentError(
        absl::StrCat("memory_mib must be 4..", kMaxRamSize >> 20));
  }
  if (config_.kernel.empty()) {
    return absl::InvalidArgumentError("no kernel given");
  }
  if (config_.cmdline.size() >= kCmdlineMax) {
    return absl::InvalidArgumentError("command line too long");
  }
  ram_size_ = config_.memory_mib << 20;
  VMMKIT_ASSIGN_OR_RETURN(std::vector<uint8_t> kernel,
                          ReadFile(config_.kernel, "kernel"));
  std::vector<uint8_t> initrd;
  if (!config_.initrd.empty()) {
    VMMKIT_ASSIGN_OR_RETURN(initrd, ReadFile(config_.initrd, "initrd"));
  }
  VMMKIT_RETURN_IF_ERROR(DetectImage(kernel).status());

  VMMKIT_ASSIGN_OR_RETURN(kvm_, Kvm::Open());
  VMMKIT_ASSIGN_OR_RETURN(vm_, kvm_->CreateVm());
  VMMKIT_ASSIGN_OR_RETURN(memory_,
                          virtqueue::GuestMemoryMmap::Create({{0, ram_size_}}));
  VMMKIT_RETURN_IF_ERROR(vm_->SetTssAddr(kTssAddr));
  VMMKIT_RETURN_IF_ERROR(vm_->SetIdentityMapAddr(kIdentityMapAddr));
  VMMKIT_RETURN_IF_ERROR(vm_->CreateIrqchip());
  VMMKIT_RETURN_IF_ERROR(vm_->CreatePit2());
  routes_ = std::make_unique<MsiRoutes>(vm_.get());
  VMMKIT_RETURN_IF_ERROR(routes_->Init());
  VMMKIT_RETURN_IF_ERROR(
      vm_->SetUserMemoryRegion(0, 0, ram_size_, memory_->regions()[0].host));
  VMMKIT_ASSIGN_OR_RETURN(
      boot_, LoadImage(kernel, initrd, config_.cmdline, *memory_, ram_size_));
  VMMKIT_RETURN_IF_ERROR(WriteLongModeTables(*memory_, boot_.kind));

  absl::MutexLock l(&io_mu_);
  // Contract A: every BAR in the 32-bit window [0xC0000000, 0xE0000000)
  // below the IOAPIC and LAPIC (64-bit BARs too: the identity map a test
  // guest starts with covers 4 GiB), I/O BARs from 0xC000. No ECAM: nothing
  // tells a guest without ACPI where it is, and its default address would
  // sit inside RAM above 2.75 GiB.
  pci::RootBus::Options bus_options;
  bus_options.io = {0xc000, 0x4000};
  bus_options.mmio32 = {kMaxRamSize, kPciMmio32Size};
  bus_options.mmio64 = {0, 0};
  bus_options.ecam_base = 0;
  bus_ = std::make_unique<pci::RootBus>(bus_options);
  uart_ = std::make_unique<Serial8250>(
      [this](absl::string_view out) { AppendConsole(out); },
      [this](bool level) { (void)vm_->IrqLine(kCom1Irq, level); });
  PlatformPorts::Callbacks cb;
  cb.on_exit = [this](uint32_t code) {
    RequestStop(static_cast<int>(code), absl::OkStatus());
  };
  cb.on_reset = [this]() { RequestStop(0, absl::OkStatus()); };
  cb.on_poweroff = [this]() { RequestStop(0, absl::OkStatus()); };
  ports_ = std::make_unique<PlatformPorts>(std::move(cb));
  return absl::OkStatus();
}

void VmImpl::AppendConsole(absl::string_view bytes) {
  absl::MutexLock l(&console_mu_);
  console_.append(bytes.data(), bytes.size());
  constexpr size_t kMaxConsole = 4u << 20;  // keep the last 4 MiB
  if (console_.size() > kMaxConsole) {
    console_.erase(0, console_.size() - kMaxConsole);
  }
  for (auto& [id, fn] : subscribers_) fn(bytes);
}

DeviceSlot* VmImpl::FindSlot(absl::string_view id) const {
  for (const auto& s : slots_) {
    if (s->id() == id) return s.get();
  }
  return nullptr;
}

absl::Status VmImpl::AddDevice(DeviceConfig config) {
  absl::MutexLock l(&state_mu_);
  if (state_ != VmState::kCreated || starting_) {
    return absl::FailedPreconditionError("devices are added before Start()");
  }
  if (FindSlot(config.id) != nullptr) {
    return absl::AlreadyExistsError(
        absl::StrCat("device ", config.id, " exists"));
  }
  if (slots_.size() >= pci::kDevicesPerBus - 1) {
    return absl::ResourceExhaustedError("PCI bus 0 is full (31 devices)");
  }
  VMMKIT_ASSIGN_OR_RETURN(std::unique_ptr<DeviceSlot> slot,
                          DeviceSlot::Create(config, *memory_, vm_.get()));
  slots_.push_back(std::move(slot));
  return absl::OkStatus();
}

absl::Status VmImpl::RemoveDevice(absl::string_view id) {
  absl::MutexLock l(&state_mu_);
  if (state_ != VmState::kCreated || starting_) {
    return absl::FailedPreconditionError("devices are removed before Start()");
  }
  for (auto it = slots_.begin(); it != slots_.end(); ++it) {
    if ((*it)->id() == id) {
      slots_.erase(it);
      return absl::OkStatus();
    }
  }
  return absl::NotFoundError(absl::StrCat("no device ", id));
}

absl::Status VmImpl::SetupVcpu(VcpuFd& cpu, int index,
                               const std::vector<kvm_cpuid_entry2>& cpuid) {
  VMMKIT_RETURN_IF_ERROR(cpu.SetCpuid(
      GuestCpuid(cpuid, static_cast<uint32_t>(index), config_.vcpus)));
  VMMKIT_RETURN_IF_ERROR(cpu.SetLapicLint(index == 0));
  kvm_fpu fpu = {};
  fpu.fcw = 0x37f;
  fpu.mxcsr = 0x1f80;
  VMMKIT_RETURN_IF_ERROR(cpu.SetFpu(fpu));
  // As firmware leaves them: fast strings on, MTRRs enabled with write-back
  // as the default type (with MTRRs off, Linux also leaves PAT off).
  // Best effort: a KVM that refuses one of these still runs the guest.
  kvm_msr_entry misc = {};
  misc.index = 0x1a0;  // IA32_MISC_ENABLE
  misc.data = 1;       // fast-string enable
  kvm_msr_entry mtrr = {};
  mtrr.index = 0x2ff;  // IA32_MTRR_DEF_TYPE
  mtrr.data = (1 << 11) | 6;
  (void)cpu.SetMsrs({misc, mtrr});
  if (index != 0) return absl::OkStatus();  // APs wait for INIT/SIPI
  VMMKIT_ASSIGN_OR_RETURN(kvm_sregs sregs, cpu.GetSregs());
  SetLongModeSregs(boot_.kind, &sregs);
  VMMKIT_RETURN_IF_ERROR(cpu.SetSregs(sregs));
  kvm_regs regs = {};
  regs.rflags = 0x2;
  regs.rip = boot_.entry;
  regs.rsp = kBootStackTop;
  regs.rbp = 0;
  regs.rdi = boot_.rdi;
  regs.rsi = boot_.rsi;
  return cpu.SetRegs(regs);
}

absl::Status VmImpl::Start() {
  {
    absl::MutexLock l(&state_mu_);
    if (state_ != VmState::kCreated || starting_) {
      return absl::FailedPreconditionError(absl::StrCat(
          "Start() needs a created VM, it is ", VmStateName(state_)));
    }
    starting_ = true;
  }
  auto fail = [this](absl::Status s) {
    absl::MutexLock l(&state_mu_);
    starting_ = false;
    state_ = VmState::kStopped;
    stop_reason_ = s;
    state_cv_.SignalAll();
    return s;
  };
  // PCI: slots in AddDevice order, BARs as firmware would, ioeventfds.
  std::vector<uint8_t> pci_slots;
  {
    absl::MutexLock l(&io_mu_);
    for (auto& s : slots_) {
      absl::Status st = s->Attach(*bus_, *routes_);
      if (!st.ok()) return fail(st);
      pci_slots.push_back(s->address()->device);
    }
    absl::Status st = bus_->AssignBars(/*enable_decoding=*/true);
    if (!st.ok()) return fail(st);
    for (auto& s : slots_) {
      st = s->SyncIoeventfds();
      if (!st.ok()) return fail(st);
    }
    bus_->set_bar_changed([this](pci::PciAddress at, int) {
      // Runs inside a guest configuration write, io_mu_ held.
      for (auto& s : slots_) {
        if (s->address() == at) (void)s->SyncIoeventfds();
      }
    });
  }
  std::vector<uint8_t> mp =
      BuildMpTable({.num_cpus = config_.vcpus,
                    .pci_slots = pci_slots,
                    .base = static_cast<uint32_t>(kMpTableAddr)});
  if (absl::Status s = memory_->Write(kMpTableAddr, mp); !s.ok()) {
    return fail(s);
  }
  // ACPI for kernels without MP-table parsing (Debian's cloud kernel): the
  // same processors, IOAPIC and INTx routing, the PCI window, power-off.
  std::vector<uint8_t> acpi = BuildAcpiTables({.num_cpus = config_.vcpus,
                                               .pci_slots = pci_slots,
                                               .base = kAcpiTablesAddr,
                                               .mmio32_base = kMaxRamSize,
                                               .mmio32_size = kPciMmio32Size});
  if (absl::Status s = memory_->Write(kAcpiTablesAddr, acpi); !s.ok()) {
    return fail(s);
  }
  absl::StatusOr<std::vector<kvm_cpuid_entry2>> cpuid = kvm_->SupportedCpuid();
  if (!cpuid.ok()) return fail(cpuid.status());
  std::vector<std::unique_ptr<VcpuFd>> vcpus;
  for (int i = 0; i < config_.vcpus; ++i) {
    absl::StatusOr<std::unique_ptr<VcpuFd>> cpu =
        vm_->CreateVcpu(static_cast<uint32_t>(i));
    if (!cpu.ok()) return fail(cpu.status());
    if (absl::Status s = SetupVcpu(**cpu, i, *cpuid); !s.ok()) return fail(s);
    vcpus.push_back(*std::move(cpu));
  }
  // The I/O thread's epoll set: every slot's fds, edge-triggered, and a
  // stop eventfd.
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) return fail(ErrnoToStatus(errno, "epoll_create1"));
  epoll_.reset(ep);
  absl::StatusOr<ScopedFd> stop = MakeEventFd();
  if (!stop.ok()) return fail(stop.status());
  io_stop_ = *std::move(stop);
  epoll_event ev = {};
  ev.events = EPOLLIN;
  ev.data.u64 = UINT64_MAX;
  if (epoll_ctl(ep, EPOLL_CTL_ADD, io_stop_.get(), &ev) < 0) {
    return fail(ErrnoToStatus(errno, "epoll_ctl"));
  }
  for (auto& s : slots_) {
    for (const DeviceSlot::PollFd& p : s->poll_fds()) {
      ev.events = EPOLLIN | EPOLLET;
      ev.data.u64 = poll_fds_.size();
      if (epoll_ctl(ep, EPOLL_CTL_ADD, p.fd, &ev) < 0) {
        return fail(ErrnoToStatus(errno, "epoll_ctl"));
      }
      poll_fds_.push_back(p);
      poll_slots_.push_back(s.get());
    }
  }
  InstallKickHandler();
  io_thread_ = std::thread([this] { IoLoop(); });
  absl::MutexLock l(&state_mu_);
  state_ = VmState::kRunning;
  starting_ = false;
  vcpus_ = std::move(vcpus);
  vcpus_running_ = config_.vcpus;
  vcpu_handles_.resize(config_.vcpus);
  for (int i = 0; i < config_.vcpus; ++i) {
    vcpu_threads_.emplace_back([this, i] { VcpuLoop(i); });
    vcpu_handles_[i] = vcpu_threads_.back().native_handle();
  }
  state_cv_.SignalAll();
  return absl::OkStatus();
}

void VmImpl::IoLoop() {
  epoll_event events[32];
  for (;;) {
    int n = epoll_wait(epoll_.get(), events, 32, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;
    }
    for (int i = 0; i < n; ++i) {
      const uint64_t key = events[i].data.u64;
      if (key == UINT64_MAX) return;
      if (key < poll_fds_.size()) poll_slots_[key]->OnReady(poll_fds_[key]);
    }
  }
}

void VmImpl::KickAll() {
  for (size_t i = 0; i < vcpus_.size(); ++i) {
    vcpus_[i]->set_immediate_exit(true);  // a field of the shared kvm_run
    if (i < vcpu_handles_.size()) pthread_kill(vcpu_handles_[i], KickSignal());
  }
}

void VmImpl::RequestStop(std::optional<int> code, absl::Status why) {
  absl::MutexLock l(&state_mu_);
  if (stopping_) return;
  stopping_ = true;
  exit_code_ = code;
  stop_reason_ = std::move(why);
  KickAll();
  state_cv_.SignalAll();
}

void VmImpl::VcpuLoop(int index) {
  VcpuFd* cpu_ptr;
  {
    absl::MutexLock l(&state_mu_);
    cpu_ptr = vcpus_[index].get();
  }
  VcpuFd& cpu = *cpu_ptr;
  for (;;) {
    {
      absl::MutexLock l(&state_mu_);
      if (pause_requested_ && !stopping_) {
        ++vcpus_paused_;
        state_cv_.SignalAll();
        while (pause_requested_ && !stopping_) state_cv_.Wait(&state_mu_);
        --vcpus_paused_;
      }
      if (stopping_) break;
    }
    absl::Status s = cpu.Run();
    if (absl::IsAborted(s)) {
      cpu.set_immediate_exit(false);
      continue;
    }
    if (!s.ok()) {
      RequestStop(std::nullopt, Annotate(s, absl::StrCat("vCPU ", index)));
      break;
    }
    if (!HandleExit(cpu)) break;
  }
  bool last;
  {
    absl::MutexLock l(&state_mu_);
    last = --vcpus_running_ == 0;
  }
  if (last) FinishRun();
}

void VmImpl::FinishRun() {
  uint64_t one = 1;
  (void)!write(io_stop_.get(), &one, sizeof(one));
  if (io_thread_.joinable()) io_thread_.join();
  absl::Status flush;
  for (auto& s : slots_) {
    absl::Status st = s->FlushAndReset();
    if (flush.ok() && !st.ok()) flush = st;
  }
  {
    absl::MutexLock l(&io_mu_);
    for (auto& s : slots_) s->ReleaseIoeventfds();
  }
  absl::MutexLock l(&state_mu_);
  if (!flush.ok() && stop_reason_.ok()) stop_reason_ = flush;
  state_ = VmState::kStopped;
  state_cv_.SignalAll();
}

bool VmImpl::HandleExit(VcpuFd& cpu) {
  kvm_run* run = cpu.run();
  switch (run->exit_reason) {
    case KVM_EXIT_IO: {
      exits_io_.fetch_add(1, std::memory_order_relaxed);
      const uint32_t size = run->io.size;
      const uint32_t count = run->io.count;
      // The data area lies inside the kvm_run mapping (KVM's own layout);
      // check anyway before touching it.
      if (size == 0 || size > 4 || count == 0 ||
          run->io.data_offset + uint64_t{size} * count > 4096 * 2) {
        return true;
      }
      uint8_t* data = reinterpret_cast<uint8_t*>(run) + run->io.data_offset;
      for (uint32_t i = 0; i < count; ++i) {
        HandlePio(run->io.port, absl::MakeSpan(data + i * size, size),
                  run->io.direction == KVM_EXIT_IO_OUT);
      }
      return true;
    }
    case KVM_EXIT_MMIO: {
      exits_mmio_.fetch_add(1, std::memory_order_relaxed);
      const uint32_t len = run->mmio.len;
      if (len == 0 || len > sizeof(run->mmio.data)) return true;
      HandleMmio(run->mmio.phys_addr, absl::MakeSpan(run->mmio.data, len),
                 run->mmio.is_write);
      return true;
    }
    case KVM_EXIT_INTR:
      exits_other_.fetch_add(1, std::memory_order_relaxed);
      return true;
    case KVM_EXIT_HLT:
      // Only without an in-kernel LAPIC; ours has one. Treat as idle.
      exits_other_.fetch_add(1, std::memory_order_relaxed);
      return true;
    case KVM_EXIT_SHUTDOWN: {
      exits_other_.fetch_add(1, std::memory_order_relaxed);
      absl::StatusOr<kvm_regs> regs = cpu.GetRegs();
      RequestStop(std::nullopt,
                  absl::InternalError(absl::StrFormat(
                      "vCPU %d: triple fault (KVM_EXIT_SHUTDOWN) at rip %#x",
                      cpu.id(), regs.ok() ? regs->rip : 0)));
      return false;
    }
    case KVM_EXIT_SYSTEM_EVENT:
      exits_other_.fetch_add(1, std::memory_order_relaxed);
      RequestStop(0, absl::OkStatus());
      return false;
    default: {
      exits_other_.fetch_add(1, std::memory_order_relaxed);
      absl::StatusOr<kvm_regs> regs = cpu.GetRegs();
      std::string detail;
      if (run->exit_reason == KVM_EXIT_INTERNAL_ERROR) {
        detail = absl::StrFormat(" suberror %d", run->internal.suberror);
      } else if (run->exit_reason == KVM_EXIT_FAIL_ENTRY) {
        detail = absl::StrFormat(" hardware reason %#x",
                                 run->fail_entry.hardware_entry_failure_reason);
      }
      RequestStop(std::nullopt,
                  absl::InternalError(absl::StrFormat(
                      "vCPU %d: KVM exit %d%s at rip %#x", cpu.id(),
                      run->exit_reason, detail, regs.ok() ? regs->rip : 0)));
      return false;
    }
  }
}

void VmImpl::HandlePio(uint16_t port, absl::Span<uint8_t> data, bool write) {
  absl::MutexLock l(&io_mu_);
  if (port >= kCom1Base && port < kCom1Base + 8) {
    const uint8_t reg = static_cast<uint8_t>(port - kCom1Base);
    if (write) {
      uart_->Write(reg, data[0]);
    } else {
      std::memset(data.data(), 0, data.size());
      data[0] = uart_->Read(reg);
    }
    return;
  }
  if (write) {
    if (bus_->PioWrite(port, data)) return;
    (void)ports_->Write(port, data);
  } else {
    if (bus_->PioRead(port, data)) return;
    if (ports_->Read(port, data)) return;
    std::memset(data.data(), 0xff, data.size());
  }
}

void VmImpl::HandleMmio(uint64_t addr, absl::Span<uint8_t> data, bool write) {
  absl::MutexLock l(&io_mu_);
  if (write) {
    (void)bus_->MmioWrite(addr, data);
  } else if (!bus_->MmioRead(addr, data)) {
    std::memset(data.data(), 0xff, data.size());
  }
}

absl::Status VmImpl::Pause() {
  absl::MutexLock l(&state_mu_);
  if (state_ != VmState::kRunning || stopping_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "Pause() needs a running VM, it is ", VmStateName(state_)));
  }
  pause_requested_ = true;
  KickAll();
  // Every vCPU still in its loop parks; a stop ends the wait too.
  while (vcpus_paused_ < vcpus_running_ && !stopping_) {
    state_cv_.Wait(&state_mu_);
  }
  if (stopping_) {
    pause_requested_ = false;
    return absl::FailedPreconditionError("the VM stopped while pausing");
  }
  state_ = VmState::kPaused;
  return absl::OkStatus();
}

absl::Status VmImpl::Resume() {
  absl::MutexLock l(&state_mu_);
  if (state_ != VmState::kPaused) {
    return absl::FailedPreconditionError(absl::StrCat(
        "Resume() needs a paused VM, it is ", VmStateName(state_)));
  }
  pause_requested_ = false;
  state_ = VmState::kRunning;
  state_cv_.SignalAll();
  return absl::OkStatus();
}

absl::Status VmImpl::WaitStopped(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::MutexLock l(&state_mu_);
  while (state_ != VmState::kStopped) {
    if (state_cv_.WaitWithDeadline(&state_mu_, deadline) &&
        state_ != VmState::kStopped) {
      return absl::DeadlineExceededError(
          absl::StrCat("VM still ", VmStateName(state_), " after ",
                       absl::FormatDuration(timeout)));
    }
  }
  return absl::OkStatus();
}

absl::Status VmImpl::Stop(absl::Duration graceful_timeout) {
  {
    absl::MutexLock l(&state_mu_);
    if (state_ == VmState::kCreated && !starting_) {
      state_ = VmState::kStopped;
      state_cv_.SignalAll();
      return absl::OkStatus();
    }
  }
  if (state() != VmState::kStopped) {
    {
      absl::MutexLock l(&io_mu_);
      ports_->set_stop_requested(true);
    }
    const bool paused = state() == VmState::kPaused;
    if (paused || graceful_timeout <= absl::ZeroDuration() ||
        !WaitStopped(graceful_timeout).ok()) {
      RequestStop(
          std::nullopt,
          absl::CancelledError(
              paused ? "stopped while paused"
                     : absl::StrCat("stopped: the guest did not end "
                                    "within ",
                                    absl::FormatDuration(graceful_timeout))));
    }
    {
      // A paused VM's vCPUs wake on stopping_.
      absl::MutexLock l(&state_mu_);
      state_cv_.SignalAll();
    }
    VMMKIT_RETURN_IF_ERROR(WaitStopped(absl::Seconds(30)));
  }
  JoinVcpus();
  return absl::OkStatus();
}

void VmImpl::JoinVcpus() {
  absl::MutexLock l(&join_mu_);  // Stop() may be called from many threads
  for (std::thread& t : vcpu_threads_) {
    if (t.joinable()) t.join();
  }
}

void VmImpl::Shutdown() {
  (void)Stop(absl::ZeroDuration());
  {
    // No kicks after this point: the threads end.
    absl::MutexLock l(&state_mu_);
    vcpu_handles_.clear();
  }
  JoinVcpus();
  if (io_thread_.joinable()) io_thread_.join();
  slots_.clear();
  absl::MutexLock l(&state_mu_);
  vcpus_.clear();
}

std::vector<DeviceReport> VmImpl::Devices() const {
  std::vector<DeviceReport> out;
  absl::MutexLock l(&state_mu_);
  for (size_t i = 0; i < slots_.size(); ++i) {
    DeviceReport r = slots_[i]->Report();
    // Before Start() the slot a device will get: AddDevice order from 1.
    if (!slots_[i]->address().has_value()) r.pci_slot = i + 1;
    out.push_back(std::move(r));
  }
  return out;
}

absl::Status VmImpl::WriteVirtioConsoleInput(absl::string_view id,
                                             absl::string_view bytes) {
  DeviceSlot* slot;
  {
    absl::MutexLock l(&state_mu_);
    slot = FindSlot(id);
  }
  if (slot == nullptr)
    return absl::NotFoundError(absl::StrCat("no device ", id));
  return slot->WriteConsoleInput(bytes);
}

std::string VmImpl::VirtioConsoleOutput(absl::string_view id) const {
  absl::MutexLock l(&state_mu_);
  DeviceSlot* slot = FindSlot(id);
  return slot == nullptr ? std::string() : slot->ConsoleOutput();
}

// --- Vm: forwards to VmImpl.

absl::StatusOr<std::unique_ptr<Vm>> Vm::Create(VmConfig config) {
  auto impl = std::make_unique<VmImpl>(std::move(config));
  VMMKIT_RETURN_IF_ERROR(impl->Init());
  return std::unique_ptr<Vm>(new Vm(std::move(impl)));
}
Vm::Vm(std::unique_ptr<VmImpl> impl) : impl_(std::move(impl)) {}
Vm::~Vm() = default;
absl::Status Vm::AddDevice(DeviceConfig config) {
  return impl_->AddDevice(std::move(config));
}
absl::Status Vm::RemoveDevice(absl::string_view id) {
  return impl_->RemoveDevice(id);
}
absl::Status Vm::Start() { return impl_->Start(); }
absl::Status Vm::Pause() { return impl_->Pause(); }
absl::Status Vm::Resume() { return impl_->Resume(); }
absl::Status Vm::Stop(absl::Duration graceful_timeout) {
  return impl_->Stop(graceful_timeout);
}
VmState Vm::state() const { return impl_->state(); }
std::optional<int> Vm::exit_code() const { return impl_->exit_code(); }
absl::Status Vm::stop_reason() const { return impl_->stop_reason(); }
absl::Status Vm::WaitStopped(absl::Duration timeout) {
  return impl_->WaitStopped(timeout);
}
std::vector<DeviceReport> Vm::Devices() const { return impl_->Devices(); }
VmMetrics Vm::Metrics() const { return impl_->Metrics(); }
std::string Vm::ConsoleOutput() const { return impl_->ConsoleOutput(); }
int Vm::SubscribeConsole(std::function<void(absl::string_view)> on_output) {
  return impl_->SubscribeConsole(std::move(on_output));
}
void Vm::UnsubscribeConsole(int id) { impl_->UnsubscribeConsole(id); }
absl::Status Vm::WriteConsoleInput(absl::string_view bytes) {
  return impl_->WriteConsoleInput(bytes);
}
absl::Status Vm::WriteVirtioConsoleInput(absl::string_view id,
                                         absl::string_view bytes) {
  return impl_->WriteVirtioConsoleInput(id, bytes);
}
std::string Vm::VirtioConsoleOutput(absl::string_view id) const {
  return impl_->VirtioConsoleOutput(id);
}

}  // namespace vmmkit::vmm
