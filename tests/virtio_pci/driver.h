// tests/virtio_pci/driver.h: a virtio-pci guest driver simulator that does
// what Linux's drivers/virtio/virtio_pci_{common,modern,legacy}.c (and the
// virtio core around them) do to a device, in the same order, through a small
// platform interface.
//
// The same code is meant to be compiled into a freestanding test guest (the
// `vmm` issue): it uses no exceptions, no heap, no standard library beyond
// <cstdint>/<cstddef>, and touches the world only through PlatformAccess:
// port I/O (configuration mechanism #1 at 0xCF8/0xCFC and I/O BARs), MMIO,
// DMA memory, and interrupts.
//
//   MyPlatform p;                          // implements PlatformAccess
//   VirtioPciDriver drv(p);
//   if (drv.FindDevice(/*virtio_type=*/4, /*instance=*/0) != DriverError::kOk)
//     ...;
//   DriverError e = drv.Probe({.mode = DriverMode::kModern, .use_msix = true});
//   uint64_t buf = p.AllocDma(64, 16);
//   VirtioPciDriver::Buffer b = {buf, 64, /*writable=*/true};
//   drv.Post(0, &b, 1, nullptr);
//   drv.Kick(0);
//   uint32_t id, len;
//   e = drv.WaitUsed(0, &id, &len);        // interrupt, then the used entry
//
// What is replayed (Linux 6.x):
// - PCI core: bus 0 scan through 0xCF8/0xCFC, BAR sizing (decode off, write
//   all-ones, read the mask back, restore), optional BAR programming, the
//   command register (I/O, memory, bus master), the capability walk.
// - Modern probe (vp_modern_probe): device id 0x1000..0x107f, the virtio id
//   from the subsystem id below 0x1040; the first vendor capability of each
//   cfg_type whose BAR exists; notify_off_multiplier; reset (write 0, poll
//   until 0); ACKNOWLEDGE, DRIVER; 64 feature bits through select 0/1;
//   driver features; FEATURES_OK and re-read; per queue: select, size, lower
//   it, desc/driver/device as two 32-bit halves (vp_iowrite64_twopart),
//   queue_notify_off, MSI-X vector written and read back; queue_enable = 1
//   for every queue last; DRIVER_OK.
// - Legacy probe (virtio_pci.force_legacy=1, virtio_pci_legacy_dev.c):
//   device id 0x1000..0x103f, revision 0, the I/O BAR 0; reset; 32 feature
//   bits; per queue: select, QUEUE_NUM (0 or a PFN already set: refused),
//   the vring at 4096 alignment, PFN = address >> 12, then the MSI-X vector
//   at 22 read back; device config at 20, or 24 while MSI-X is enabled.
// - Interrupts: MSI-X as pci_alloc_irq_vectors does (enable + function mask,
//   table entries, unmask) with vector 0 for config and 1 + q per queue (the
//   "one vector per queue" attempt), or INTx with the ISR read.
// - I/O: split-ring writes in guest memory, little-endian (x86), the kick
//   (modern: the queue's notify address, 16-bit index or 32-bit notification
//   data; legacy: QUEUE_NOTIFY), the interrupt, the used entry.
//
// Thread-compatibility: one thread at a time.
#ifndef VMMKIT_TESTS_VIRTIO_PCI_DRIVER_H_
#define VMMKIT_TESTS_VIRTIO_PCI_DRIVER_H_

#include <cstddef>
#include <cstdint>

namespace vmmkit::tests::virtio_pci {

// What the driver needs from the machine. Widths are 1, 2 or 4 (port I/O)
// and 1, 2, 4 or 8 (MMIO); values are the little-endian register values.
class PlatformAccess {
 public:
  virtual ~PlatformAccess() = default;
  virtual uint32_t InPort(uint16_t port, int width) = 0;
  virtual void OutPort(uint16_t port, uint32_t value, int width) = 0;
  virtual uint64_t MmioRead(uint64_t address, int width) = 0;
  virtual void MmioWrite(uint64_t address, uint64_t value, int width) = 0;
  // DMA memory (guest physical = bus address); 0 when exhausted.
  virtual uint64_t AllocDma(uint64_t size, uint64_t align) = 0;
  virtual void MemRead(uint64_t address, void* out, uint64_t length) = 0;
  virtual void MemWrite(uint64_t address, const void* in, uint64_t length) = 0;
  // mb(): orders ring writes before the index and the index before the kick.
  virtual void MemoryBarrier() = 0;
  // Takes the oldest MSI message delivered and not yet taken.
  virtual bool TakeMsi(uint64_t* address, uint32_t* data) = 0;
  // The INTx line's level.
  virtual bool IntxAsserted() = 0;
  // Waits a little for an interrupt (hlt in a guest; nothing in a
  // simulation where devices complete synchronously).
  virtual void WaitForInterrupt() = 0;
};

enum class DriverError : uint8_t {
  kOk,
  kNoDevice,          // nothing at the address / no such virtio device
  kUnsupported,       // id or revision this probe path refuses (Linux: ENODEV)
  kNoCapability,      // a required vendor capability or BAR is missing
  kBadCapability,     // a capability points outside its BAR
  kNoVersion1,        // modern probe, device without VERSION_1 (EINVAL)
  kFeaturesRefused,   // FEATURES_OK did not stick (ENODEV)
  kQueueUnavailable,  // queue size 0 or already active (ENOENT)
  kQueueTooLarge,     // above kMaxQueueSize and not reducible (legacy)
  kVectorRefused,     // MSI-X vector read back as NO_VECTOR (EBUSY)
  kNoMemory,
  kResetTimeout,  // status never read 0 after a reset
  kNeedsReset,    // DEVICE_NEEDS_RESET set
  kNoSpace,       // too few free descriptors
  kTimeout,       // no interrupt / used entry in time
  kBadState,      // call out of order
};
const char* DriverErrorName(DriverError e);

enum class DriverMode : uint8_t {
  kModern,  // virtio_pci (modern interface)
  kLegacy,  // virtio_pci.force_legacy=1
};

struct DriverOptions {
  DriverMode mode = DriverMode::kModern;
  bool use_msix = true;
  // Features the driver knows (virtio_driver::feature_table plus the
  // transport features vring_transport_features keeps). Intersected with
  // the offer. VERSION_1 is added in modern mode.
  uint64_t features = 0;
  // Lower every queue to at most this size (modern only; 0: keep).
  uint16_t max_queue_size = 0;
  // At most this many queues are set up (0: all the device has, up to
  // kMaxQueues).
  uint16_t num_queues = 0;
  // Program BARs from these bases instead of keeping firmware's addresses.
  bool assign_bars = false;
  uint32_t io_base = 0xd000;
  uint64_t mmio_base = 0xe0000000;
  // MSI messages: address and data = msi_data_base + vector.
  uint64_t msi_address = 0xfee00000;
  uint32_t msi_data_base = 0x40;
  // Stop before DRIVER_OK (to test the device in between).
  bool skip_driver_ok = false;
};

class VirtioPciDriver {
 public:
  static constexpr int kMaxQueues = 4;
  static constexpr uint16_t kMaxQueueSize = 1024;
  static constexpr uint16_t kNoVector = 0xffff;
  static constexpr int kMaxPolls = 1000;

  struct Bar {
    uint64_t address = 0;
    uint64_t size = 0;  // 0: absent
    bool io = false;
    bool is64 = false;
  };
  struct Capability {
    uint8_t offset = 0;  // in config space; 0: absent
    uint8_t bar = 0;
    uint32_t region_offset = 0;
    uint32_t length = 0;
  };
  struct Buffer {
    uint64_t address;
    uint32_t length;
    bool writable;
  };

  explicit VirtioPciDriver(PlatformAccess& platform) : p_(platform) {}
  VirtioPciDriver(const VirtioPciDriver&) = delete;
  VirtioPciDriver& operator=(const VirtioPciDriver&) = delete;

  // ---- PCI (configuration mechanism #1, bus 0).
  uint32_t ConfigRead(uint8_t device, uint8_t function, uint8_t reg, int width);
  void ConfigWrite(uint8_t device, uint8_t function, uint8_t reg,
                   uint32_t value, int width);
  // Scans bus 0 for the `instance`-th virtio function of `virtio_type`
  // (0: any); reads its ids.
  DriverError FindDevice(uint16_t virtio_type, int instance);
  uint32_t Cfg(uint8_t reg, int width) {
    return ConfigRead(dev_, fn_, reg, width);
  }
  void SetCfg(uint8_t reg, uint32_t value, int width) {
    ConfigWrite(dev_, fn_, reg, value, width);
  }

  // The whole probe, up to DRIVER_OK (see the header comment).
  DriverError Probe(const DriverOptions& options);
  // Writes 0 to status and waits until it reads 0 (vp_reset).
  DriverError Reset();

  // ---- After FindDevice.
  uint8_t device_number() const { return dev_; }
  uint16_t vendor_id() const { return vendor_; }
  uint16_t device_id() const { return device_id_; }
  uint8_t revision() const { return revision_; }
  uint16_t subsystem_vendor_id() const { return subsys_vendor_; }
  uint16_t subsystem_id() const { return subsys_id_; }
  uint16_t virtio_type() const { return virtio_type_; }
  // ---- After Probe (or its BAR/capability steps).
  const Bar& bar(int i) const { return bars_[i]; }
  const Capability& common_cap() const { return common_; }
  const Capability& notify_cap() const { return notify_; }
  const Capability& isr_cap() const { return isr_; }
  const Capability& device_cap() const { return device_; }
  const Capability& pci_cfg_cap() const { return pci_cfg_; }
  uint8_t msix_cap() const { return msix_cap_; }
  uint32_t notify_multiplier() const { return notify_multiplier_; }
  uint64_t device_features() const { return device_features_; }
  uint64_t driver_features() const { return driver_features_; }
  uint16_t num_queues() const { return nq_; }
  uint16_t queue_size(int q) const { return queues_[q].size; }
  // Where queue q's kick goes (absolute port or MMIO address).
  uint64_t notify_address(int q) const { return queues_[q].notify; }
  bool msix_enabled() const { return msix_on_; }
  uint16_t msix_table_size() const { return msix_vectors_; }

  // Status register (modern common config or legacy port 18).
  uint8_t ReadStatus();
  void WriteStatus(uint8_t status);
  // Device config, as vp_get/vp_set do: legacy byte by byte at 20 or 24,
  // modern at the access width (8 as two 4s) inside a generation loop.
  uint64_t ReadConfig(uint32_t offset, int width);
  void WriteConfig(uint32_t offset, uint64_t value, int width);
  // Where the legacy device config starts now (20 or 24).
  uint32_t legacy_config_offset() const { return msix_on_ ? 24 : 20; }
  // Legacy register access (port I/O on BAR 0).
  uint32_t LegacyRead(uint32_t offset, int width);
  void LegacyWrite(uint32_t offset, uint32_t value, int width);
  // Modern register access in BAR `cap.bar` at cap.region_offset + offset.
  uint64_t ModernRead(const Capability& cap, uint32_t offset, int width);
  void ModernWrite(const Capability& cap, uint32_t offset, uint64_t value,
                   int width);
  // Through the VIRTIO_PCI_CAP_PCI_CFG window (§4.1.4.9.1).
  uint32_t PciCfgRead(uint8_t bar, uint32_t offset, uint32_t length);
  void PciCfgWrite(uint8_t bar, uint32_t offset, uint32_t length,
                   uint32_t value);

  // Turns MSI-X on (programs the table, then enables; INTx disable set) or
  // off. The probe calls these; tests use them to move the legacy config.
  DriverError EnableMsix();
  void DisableMsix();

  // ---- I/O.
  // Publishes a chain (readable buffers first); *head gets its id.
  DriverError Post(uint16_t queue, const Buffer* buffers, int count,
                   uint16_t* head);
  void Kick(uint16_t queue);
  // Services interrupts until queue `queue` got one and has a used entry,
  // then reaps it (frees its descriptors). kTimeout after kMaxPolls waits.
  DriverError WaitUsed(uint16_t queue, uint32_t* id, uint32_t* length);
  // Handles what is pending: MSI messages, or INTx + ISR. Returns the
  // number of interrupts handled.
  int ServiceInterrupts();

  // Interrupt counters.
  uint32_t queue_interrupts(int q) const { return queues_[q].interrupts; }
  uint32_t config_interrupts() const { return config_interrupts_; }
  uint32_t spurious_interrupts() const { return spurious_; }
  uint32_t isr_reads() const { return isr_reads_; }

 private:
  struct Queue {
    uint16_t size = 0;
    uint64_t desc = 0, avail = 0, used = 0;
    uint64_t notify = 0;
    uint16_t vector = kNoVector;
    uint16_t avail_idx = 0;
    uint16_t last_used = 0;
    uint16_t free_head = 0;
    uint16_t num_free = 0;
    uint32_t interrupts = 0;
    uint32_t seen_interrupts = 0;
    bool ready = false;  // interrupted, used entries may be waiting
    uint16_t next[kMaxQueueSize] = {};
    uint16_t chain_len[kMaxQueueSize] = {};
  };

  DriverError SetupBars(const DriverOptions& o);
  DriverError WalkCapabilities();
  DriverError ProbeModern(const DriverOptions& o);
  DriverError ProbeLegacy(const DriverOptions& o);
  DriverError SetupQueueModern(uint16_t q, const DriverOptions& o);
  DriverError SetupQueueLegacy(uint16_t q);
  void InitRing(Queue& vq, uint64_t base, uint32_t align);
  uint16_t Load16(uint64_t a);
  void Store16(uint64_t a, uint16_t v);
  void Store32(uint64_t a, uint32_t v);
  void Store64(uint64_t a, uint64_t v);
  uint32_t Load32(uint64_t a);
  bool legacy() const { return mode_ == DriverMode::kLegacy; }
  void AddStatus(uint8_t bits) { WriteStatus(ReadStatus() | bits); }

  PlatformAccess& p_;
  uint8_t dev_ = 0, fn_ = 0;
  bool found_ = false;
  uint16_t vendor_ = 0, device_id_ = 0, subsys_vendor_ = 0, subsys_id_ = 0;
  uint8_t revision_ = 0;
  uint16_t virtio_type_ = 0;
  DriverMode mode_ = DriverMode::kModern;
  Bar bars_[6];
  Capability common_, notify_, isr_, device_, pci_cfg_;
  uint8_t msix_cap_ = 0;
  uint16_t msix_vectors_ = 0;
  bool msix_on_ = false;
  uint64_t msi_address_ = 0xfee00000;
  uint32_t msi_data_base_ = 0x40;
  uint32_t notify_multiplier_ = 0;
  uint64_t device_features_ = 0, driver_features_ = 0;
  uint16_t nq_ = 0;
  Queue queues_[kMaxQueues];
  uint32_t config_interrupts_ = 0, spurious_ = 0, isr_reads_ = 0;
};

}  // namespace vmmkit::tests::virtio_pci

#endif  // VMMKIT_TESTS_VIRTIO_PCI_DRIVER_H_
