// vmm/devices.cc: see devices.h.
#include "vmm/devices.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "pci/msix.h"
#include "virtio-device/blk.h"
#include "virtio-device/console.h"
#include "virtio-device/net.h"
#include "virtio-device/rng.h"
#include "virtio-device/tap.h"
#include "vmm/admin_legacy.h"
#include "vmm/mptable.h"
#include "vmm/msi_routes.h"

namespace vmmkit::vmm {

pci::VirtioPciMode PciModeFor(Transport transport) {
  switch (transport) {
    case Transport::kPciModern:
      return pci::VirtioPciMode::kModern;
    case Transport::kPciTransitional:
      return pci::VirtioPciMode::kTransitional;
    case Transport::kPciLegacy:
      return pci::VirtioPciMode::kLegacy;
    case Transport::kPciLegacyViaAdmin:
      return pci::VirtioPciMode::kModern;
  }
  return pci::VirtioPciMode::kModern;
}

// The function as the bus sees it: every access under the device's lock.
class DeviceSlot::LockedFunction final : public pci::PciFunction {
 public:
  explicit LockedFunction(DeviceSlot& slot) : slot_(slot) {}
  // The bus reads BAR layout and decode enables; the device side never
  // changes those bytes concurrently (they change only in guest config
  // writes, which come through here under the lock).
  pci::ConfigSpace& config_space() override ABSL_NO_THREAD_SAFETY_ANALYSIS {
    return slot_.bus_function().config_space();
  }
  void ConfigRead(uint32_t offset, absl::Span<uint8_t> data) override {
    absl::MutexLock l(&slot_.mu_);
    slot_.bus_function().ConfigRead(offset, data);
  }
  void ConfigWrite(uint32_t offset, absl::Span<const uint8_t> data) override {
    absl::MutexLock l(&slot_.mu_);
    slot_.bus_function().ConfigWrite(offset, data);
  }
  void BarRead(int bar, uint64_t offset, absl::Span<uint8_t> data) override {
    absl::MutexLock l(&slot_.mu_);
    slot_.bus_function().BarRead(bar, offset, data);
  }
  void BarWrite(int bar, uint64_t offset,
                absl::Span<const uint8_t> data) override {
    absl::MutexLock l(&slot_.mu_);
    slot_.bus_function().BarWrite(bar, offset, data);
  }

 private:
  DeviceSlot& slot_;
};

// MSI-X messages and the INTx pin, to KVM. Called under the device's lock.
// Each MSI-X vector has an irqfd route whose message follows the guest's
// vector table (the MSI-X observer); a message is sent by writing the
// route's eventfd, or with KVM_SIGNAL_MSI if no route carries it.
class DeviceSlot::Interrupts final : public pci::MsiSink, public pci::IntxSink {
 public:
  Interrupts(VmFd* vm, MsiRoutes* routes, uint32_t gsi)
      : vm_(vm), routes_(routes), gsi_(gsi) {}

  absl::Status AddVectors(uint16_t n) {
    for (uint16_t v = 0; v < n; ++v) {
      VMMKIT_ASSIGN_OR_RETURN(int route, routes_->Add());
      vectors_.push_back({route, std::nullopt});
    }
    return absl::OkStatus();
  }
  // The guest changed vector `v`'s entry.
  void OnVector(uint16_t v, const pci::MsiMessage& m) {
    if (v >= vectors_.size()) return;
    std::optional<std::pair<uint64_t, uint32_t>> msg;
    // Only messages the LAPICs decode get a route (0xFEEx_xxxx).
    if ((m.address >> 20) == 0xfee) msg = std::make_pair(m.address, m.data);
    vectors_[v].message = msg;
    (void)routes_->Set(vectors_[v].route, msg);
  }
  void SendMsi(uint64_t address, uint32_t data) override {
    for (const Vector& v : vectors_) {
      if (v.message.has_value() && v.message->first == address &&
          v.message->second == data && routes_->Trigger(v.route)) {
        return;
      }
    }
    // A failure means the guest programmed an address the LAPICs do not
    // decode: the message is lost, as on hardware.
    (void)vm_->SignalMsi(address, data);
  }
  void SetIntx(bool asserted) override { (void)vm_->IrqLine(gsi_, asserted); }

 private:
  struct Vector {
    int route;
    std::optional<std::pair<uint64_t, uint32_t>> message;
  };
  VmFd* vm_;
  MsiRoutes* routes_;
  uint32_t gsi_;
  std::vector<Vector> vectors_;
};

namespace {

bool PowerOfTwo(uint32_t v) { return v != 0 && (v & (v - 1)) == 0; }

absl::StatusOr<std::pair<ScopedFd, ScopedFd>> MakePipe() {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) < 0) {
    return ErrnoToStatus(errno, "pipe2");
  }
  return std::make_pair(ScopedFd(fds[0]), ScopedFd(fds[1]));
}

}  // namespace

DeviceSlot::DeviceSlot(DeviceConfig config, VmFd* vm)
    : config_(std::move(config)), vm_(vm) {}

DeviceSlot::~DeviceSlot() {
  ReleaseIoeventfds();
  absl::MutexLock l(&mu_);
  admin_.reset();     // before the member it fronts
  function_.reset();  // before the device it refers to
  device_.reset();
}

absl::StatusOr<std::unique_ptr<DeviceSlot>> DeviceSlot::Create(
    const DeviceConfig& config, const virtqueue::GuestMemory& memory,
    VmFd* vm) {
  if (config.id.empty()) {
    return absl::InvalidArgumentError("device id must not be empty");
  }
  if (config.queue_size != 0 &&
      (!PowerOfTwo(config.queue_size) || config.queue_size > 32768)) {
    return absl::InvalidArgumentError(
        absl::StrCat("queue size ", config.queue_size,
                     " is not a power of two in 1..32768"));
  }
  std::unique_ptr<DeviceSlot> slot(new DeviceSlot(config, vm));
  std::unique_ptr<virtio::VirtioDevice> device;
  auto wrong_params = [&]() {
    return absl::InvalidArgumentError(
        absl::StrCat("device ", config.id, ": parameters do not match type ",
                     virtio::DeviceTypeName(config.type)));
  };
  switch (config.type) {
    case virtio::DeviceType::kBlock: {
      const auto* p = std::get_if<BlkParams>(&config.params);
      if (p == nullptr) return wrong_params();
      if (config.queue_size != 0 && config.queue_size < 4) {
        return absl::InvalidArgumentError("blk queue size must be >= 4");
      }
      virtio::BlockDevice::Options o;
      o.path = p->path;
      o.read_only = p->read_only;
      o.serial = config.id.substr(0, virtio::kBlkIdBytes);
      if (config.queue_size != 0) o.queue_size = config.queue_size;
      VMMKIT_ASSIGN_OR_RETURN(device, virtio::BlockDevice::Create(o));
      break;
    }
    case virtio::DeviceType::kNet: {
      const auto* p = std::get_if<NetParams>(&config.params);
      if (p == nullptr) return wrong_params();
      std::unique_ptr<virtio::NetBackend> backend;
      if (p->tap.empty()) {
        VMMKIT_ASSIGN_OR_RETURN(auto pair,
                                virtio::LoopbackNetBackend::CreatePair());
        backend = std::move(pair.first);
        absl::MutexLock l(&slot->mu_);
        slot->net_peer_ = std::move(pair.second);
        slot->echo_buffer_.resize(virtio::kMaxNetFrameSize + 64);
      } else {
        VMMKIT_ASSIGN_OR_RETURN(backend, virtio::TapBackend::Create(p->tap));
      }
      virtio::NetDevice::Options o;
      o.mac = p->mac;
      if (config.queue_size != 0) o.queue_size = config.queue_size;
      VMMKIT_ASSIGN_OR_RETURN(device,
                              virtio::NetDevice::Create(std::move(backend), o));
      break;
    }
    case virtio::DeviceType::kConsole: {
      const auto* p = std::get_if<ConsoleParams>(&config.params);
      if (p == nullptr) return wrong_params();
      virtio::ConsoleDevice::Options o;
      if (config.queue_size != 0) o.queue_size = config.queue_size;
      if (p->output_path.empty()) {
        VMMKIT_ASSIGN_OR_RETURN(auto in, MakePipe());
        VMMKIT_ASSIGN_OR_RETURN(auto out, MakePipe());
        slot->console_in_read_ = std::move(in.first);
        slot->console_in_write_ = std::move(in.second);
        slot->console_out_read_ = std::move(out.first);
        slot->console_out_write_ = std::move(out.second);
        o.input_fd = slot->console_in_read_.get();
        o.output_fd = slot->console_out_write_.get();
      } else {
        int fd = open(p->output_path.c_str(),
                      O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd < 0) {
          return ErrnoToStatus(errno, absl::StrCat("open ", p->output_path));
        }
        slot->console_file_.reset(fd);
        o.output_fd = fd;
      }
      VMMKIT_ASSIGN_OR_RETURN(device, virtio::ConsoleDevice::Create(o));
      break;
    }
    case virtio::DeviceType::kRng: {
      if (std::get_if<RngParams>(&config.params) == nullptr) {
        return wrong_params();
      }
      if (config.queue_size != 0 &&
          config.queue_size != virtio::RngDevice::kQueueSize) {
        return absl::InvalidArgumentError(absl::StrCat(
            "rng queue size is fixed at ", virtio::RngDevice::kQueueSize));
      }
      device = std::make_unique<virtio::RngDevice>();
      break;
    }
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("device type ", virtio::DeviceTypeName(config.type),
                       " is not supported"));
  }
  pci::VirtioPciFunction::Options fo;
  fo.mode = PciModeFor(config.transport);
  fo.admin_legacy = config.transport == Transport::kPciLegacyViaAdmin;
  VMMKIT_ASSIGN_OR_RETURN(std::unique_ptr<pci::VirtioPciFunction> function,
                          pci::VirtioPciFunction::Create(*device, memory, fo));
  std::unique_ptr<AdminLegacyGroup> admin;
  if (fo.admin_legacy) {
    VMMKIT_ASSIGN_OR_RETURN(admin,
                            AdminLegacyGroup::Create(*function, config.type));
  }
  absl::MutexLock l(&slot->mu_);
  slot->device_ = std::move(device);
  slot->function_ = std::move(function);
  slot->admin_ = std::move(admin);
  return slot;
}

pci::PciFunction& DeviceSlot::bus_function() {
  if (admin_ != nullptr) return admin_->shim();
  return *function_;
}

absl::Status DeviceSlot::Attach(pci::RootBus& bus, MsiRoutes& routes) {
  locked_ = std::make_unique<LockedFunction>(*this);
  VMMKIT_ASSIGN_OR_RETURN(pci::PciAddress at, bus.AddDevice(locked_.get()));
  address_ = at;
  interrupts_ =
      std::make_unique<Interrupts>(vm_, &routes, PciSlotGsi(at.device));
  absl::MutexLock l(&mu_);
  if (pci::MsixController* msix = function_->msix(); msix != nullptr) {
    VMMKIT_RETURN_IF_ERROR(interrupts_->AddVectors(msix->num_vectors()));
    // Runs inside a guest table write, under this device's lock.
    msix->SetObserver(
        [this, msix](uint16_t v) ABSL_NO_THREAD_SAFETY_ANALYSIS {
          interrupts_->OnVector(v, msix->message(v));
        },
        nullptr);
  }
  function_->config_space().Set8(pci::kRegInterruptLine,
                                 static_cast<uint8_t>(PciSlotGsi(at.device)));
  function_->set_msi_sink(interrupts_.get());
  function_->set_intx_sink(interrupts_.get());
  if (admin_ != nullptr) {
    for (uint16_t q = 0; q < function_->state().num_queues(); ++q) {
      VMMKIT_ASSIGN_OR_RETURN(ScopedFd fd, MakeEventFd());
      ioevents_.push_back({std::move(fd),
                           pci::LegacyShimFunction::LegacyDoorbell(q),
                           std::nullopt, /*shim=*/true});
    }
  }
  for (const pci::Doorbell& d : function_->doorbells()) {
    VMMKIT_ASSIGN_OR_RETURN(ScopedFd fd, MakeEventFd());
    ioevents_.push_back({std::move(fd), d, std::nullopt});
  }
  return absl::OkStatus();
}

absl::Status DeviceSlot::SyncIoeventfds() {
  absl::Status result;
  for (Ioevent& e : ioevents_) {
    const pci::Doorbell& d = e.doorbell;
    std::optional<uint64_t> want;
    bool pio;
    {
      absl::MutexLock l(&mu_);
      pci::ConfigSpace& cfg = bus_function().config_space();
      pio = cfg.bar(d.bar).type == pci::BarType::kIo;
      const uint64_t base = cfg.BarAddress(d.bar);
      if (cfg.BarDecodingEnabled(d.bar) && base != 0) want = base + d.offset;
    }
    if (e.registered_at == want) continue;
    if (e.registered_at.has_value()) {
      (void)vm_->Ioeventfd(e.fd.get(), *e.registered_at, d.width, pio,
                           d.datamatch, /*deassign=*/true);
      e.registered_at.reset();
    }
    if (want.has_value()) {
      absl::Status s = vm_->Ioeventfd(e.fd.get(), *want, d.width, pio,
                                      d.datamatch, /*deassign=*/false);
      // EEXIST: another function's doorbell is at the same address (the
      // guest overlapped two BARs); the access then exits to user space.
      if (s.ok()) {
        e.registered_at = want;
      } else if (result.ok()) {
        result = Annotate(s, absl::StrCat("ioeventfd for ", config_.id));
      }
    }
  }
  return result;
}

void DeviceSlot::ReleaseIoeventfds() {
  for (Ioevent& e : ioevents_) {
    if (!e.registered_at.has_value()) continue;
    bool pio;
    {
      absl::MutexLock l(&mu_);
      pio = bus_function().config_space().bar(e.doorbell.bar).type ==
            pci::BarType::kIo;
    }
    (void)vm_->Ioeventfd(e.fd.get(), *e.registered_at, e.doorbell.width, pio,
                         e.doorbell.datamatch, /*deassign=*/true);
    e.registered_at.reset();
  }
}

std::vector<DeviceSlot::PollFd> DeviceSlot::poll_fds() const {
  std::vector<PollFd> fds;
  for (const Ioevent& e : ioevents_) {
    fds.push_back(
        {e.fd.get(), PollFd::Kind::kDoorbell, e.doorbell.queue, e.shim});
  }
  absl::MutexLock l(&mu_);
  for (int fd : device_->backend_fds()) {
    fds.push_back({fd, PollFd::Kind::kBackend});
  }
  if (net_peer_ != nullptr) {
    fds.push_back({net_peer_->rx_fd(), PollFd::Kind::kNetPeer});
  }
  if (console_out_read_.valid()) {
    fds.push_back({console_out_read_.get(), PollFd::Kind::kConsoleOutput});
  }
  return fds;
}

void DeviceSlot::EchoNetFrames() {
  // Everything the guest sent comes back, header included (10-byte form in
  // the loopback pair). Bounded by what the peer holds.
  for (size_t i = 0; i < virtio::LoopbackNetBackend::kMaxQueued; ++i) {
    absl::StatusOr<size_t> n = net_peer_->Receive(absl::MakeSpan(echo_buffer_));
    if (!n.ok() || *n == 0) break;
    iovec iov = {echo_buffer_.data(), *n};
    (void)net_peer_->Send(absl::MakeConstSpan(&iov, 1));
  }
}

void DeviceSlot::DrainConsoleOutput() {
  char buf[4096];
  for (;;) {
    ssize_t n = read(console_out_read_.get(), buf, sizeof(buf));
    if (n <= 0) break;
    absl::MutexLock l(&console_mu_);
    // Keep the last 1 MiB.
    console_output_.append(buf, static_cast<size_t>(n));
    if (console_output_.size() > (1u << 20)) {
      console_output_.erase(0, console_output_.size() - (1u << 20));
    }
  }
}

void DeviceSlot::OnReady(const PollFd& p) {
  switch (p.kind) {
    case PollFd::Kind::kDoorbell: {
      uint64_t count;
      while (read(p.fd, &count, sizeof(count)) == sizeof(count)) {
      }
      absl::MutexLock l(&mu_);
      if (p.shim && admin_ != nullptr) {
        admin_->shim().NotifyQueue(p.queue);
      } else {
        function_->NotifyQueue(p.queue);
      }
      return;
    }
    case PollFd::Kind::kBackend: {
      absl::MutexLock l(&mu_);
      device_->ProcessBackend();
      return;
    }
    case PollFd::Kind::kNetPeer: {
      uint64_t count;
      (void)count;
      absl::MutexLock l(&mu_);
      EchoNetFrames();
      device_->ProcessBackend();
      return;
    }
    case PollFd::Kind::kConsoleOutput: {
      DrainConsoleOutput();
      absl::MutexLock l(&mu_);
      // Output the device held back because the pipe was full.
      device_->ProcessBackend();
      return;
    }
  }
}

DeviceReport DeviceSlot::Report() const {
  absl::MutexLock l(&mu_);
  if (final_report_.has_value()) return *final_report_;
  return ReportLocked();
}

DeviceReport DeviceSlot::ReportLocked() const {
  DeviceReport r;
  r.id = config_.id;
  r.type = config_.type;
  r.transport = config_.transport;
  r.pci_slot = address_.has_value() ? address_->device : 0;
  const virtio::DeviceState& st = function_->state();
  r.status = st.status();
  // While no driver holds the device (before the first start, or after the
  // guest reset it, as Linux does at shutdown), the last start's features.
  r.driver_starts = st.starts();
  if (st.active() || st.starts() == 0) {
    r.driver_legacy = st.status() != 0 && st.legacy();
    r.negotiated_features = st.driver_features().Low64();
  } else {
    r.driver_legacy = !st.last_started_features().Has(virtio::kFVersion1);
    r.negotiated_features = st.last_started_features().Low64();
  }
  for (uint16_t q = 0; q < st.num_queues(); ++q) {
    r.queue_sizes.push_back(st.queue_config(q).size());
  }
  r.notifications = st.stats().notifications;
  r.interrupts = st.stats().queue_interrupts + st.stats().config_interrupts;
  switch (config_.type) {
    case virtio::DeviceType::kBlock: {
      const auto& s = static_cast<const virtio::BlockDevice&>(*device_).stats();
      r.requests = s.in + s.out + s.flush + s.get_id + s.discard +
                   s.write_zeroes + s.unsupported;
      r.bytes = s.bytes_read + s.bytes_written;
      break;
    }
    case virtio::DeviceType::kNet: {
      const auto& s = static_cast<const virtio::NetDevice&>(*device_).stats();
      r.requests = s.tx_frames + s.rx_frames;
      r.bytes = s.tx_bytes + s.rx_bytes;
      break;
    }
    case virtio::DeviceType::kConsole: {
      const auto& s =
          static_cast<const virtio::ConsoleDevice&>(*device_).stats();
      r.requests = s.rx_chains + s.tx_chains;
      r.bytes = s.rx_bytes + s.tx_bytes;
      break;
    }
    case virtio::DeviceType::kRng: {
      const auto& s = static_cast<const virtio::RngDevice&>(*device_).stats();
      r.requests = s.requests;
      r.bytes = s.bytes;
      break;
    }
    default:
      break;
  }
  return r;
}

absl::Status DeviceSlot::FlushAndReset() {
  absl::MutexLock l(&mu_);
  absl::Status s = device_->Flush();
  final_report_ = ReportLocked();
  function_->state().Reset();
  return s;
}

absl::Status DeviceSlot::WriteConsoleInput(absl::string_view bytes) {
  if (!console_in_write_.valid()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "device ", config_.id, " is not a console with VMM-kept input"));
  }
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = write(console_in_write_.get(), bytes.data() + done,
                      bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        return absl::ResourceExhaustedError(
            absl::StrCat("console input full after ", done, " bytes"));
      }
      return ErrnoToStatus(errno, "console input");
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

std::string DeviceSlot::ConsoleOutput() const {
  absl::MutexLock l(&console_mu_);
  return console_output_;
}

}  // namespace vmmkit::vmm
