// tests/virtio_ccw/driver.h: a simulator of Linux's virtio-ccw driver
// (drivers/s390/virtio/virtio_ccw.c with the virtio core's probe order),
// driving a ccw::VirtioCcwDevice through a ccw::Subchannel with channel
// programs it builds in guest memory, as the guest kernel would.
//
//   InterruptRecorder irq;
//   VirtioCcwDevice dev(rng, *memory, {.min_revision = 0, .max_revision = 2},
//                       &irq);
//   Subchannel sch(*memory, dev, irq);
//   LinuxVirtioCcwDriver drv(*memory, sch, dev, irq, {});
//   ASSERT_OK(drv.Probe(Features::Of({kFVersion1})));   // ... DRIVER_OK
//   uint64_t buf = drv.Alloc(64);
//   ASSERT_OK(drv.queue(0).AddChain({{buf, 64, true}}).status());
//   drv.Kick(0);                       // DIAGNOSE 0x500 -> dev.Notify(0)
//   LinuxVirtioCcwDriver::Interrupts seen = drv.HandleInterrupts();
//   std::optional<VirtqUsedElem> used = drv.queue(0).PopUsed();
//   ASSERT_OK(drv.Remove());           // reset, drop indicators, del vqs
//
// What it replays (each command is its own one-CCW channel program, format 1,
// started with an ORB like Linux's cio builds: format-1, prefetch, 64-bit
// IDAWs, LPM 0x80; the interruption parameter is the VIRTIO_CCW_DOING_* flag):
// - SENSE ID: control unit type 0x3832, model = the virtio device type.
// - virtio_ccw_set_transport_rev: SET_VIRTIO_REV from max_revision down on
//   command reject; a reject at revision 0 means a legacy device (revision
//   0); stops below min_revision.
// - The virtio core's probe: VDEV_RESET, status ACKNOWLEDGE then DRIVER (each
//   add_status reads the status first: READ_STATUS from revision 2), the
//   feature words (READ_FEAT/WRITE_FEAT index 0, and 1 from revision 1),
//   FEATURES_OK for a VERSION_1 driver and its check, find_vqs (READ_VQ_CONF
//   and SET_VQ per queue: the legacy block with align 4096 at revision 0, the
//   desc/avail/used block otherwise, rings in Linux's layout with align
//   4096), indicators (SET_IND_ADAPTER with SLI when adapter interrupts are
//   wanted, falling back to SET_IND on a reject; then SET_CONF_IND), and
//   DRIVER_OK.
// - Errors as virtio_ccw_int_handler maps them: unit check with sense byte 0
//   command reject -> kUnimplemented (-EOPNOTSUPP); any other error status
//   -> kInternal (-EIO). With concurrent sense the sense bytes come in the
//   IRB; without, the driver fetches them with BASIC SENSE (what cio does).
// - Interrupts: the classic indicators (a big-endian 64-bit word, bit n =
//   queue n; config word bit 0) and the adapter indicators (summary byte,
//   device bits MSB-first from bit_nr), scanned, cleared and reported.
//
// Rings: a revision-0 (legacy) driver writes big-endian rings, as s390 is;
// revisions 1 and 2 little-endian.
//
// Thread-compatible. Test-only: it never aborts on what the device does.
#ifndef VMMKIT_TESTS_VIRTIO_CCW_DRIVER_H_
#define VMMKIT_TESTS_VIRTIO_CCW_DRIVER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "ccw/ccw.h"
#include "ccw/subchannel.h"
#include "ccw/virtio_ccw.h"
#include "virtio-device/virtio_device.h"
#include "virtqueue/guest_memory.h"
#include "virtqueue/testing/driver_queue.h"

namespace vmmkit::tests::virtio_ccw {

// What the VMM would deliver: I/O interruptions of the subchannel and the
// device's classic and adapter interrupts, counted.
class InterruptRecorder final : public ccw::InterruptSink,
                                public ccw::VirtioCcwInterrupts {
 public:
  void StatusPending(ccw::Subchannel&, uint32_t intparm) override {
    ++status_pending;
    last_intparm = intparm;
  }
  void ClassicInterrupt() override { ++classic; }
  void AdapterInterrupt(uint8_t isc) override {
    ++adapter;
    last_isc = isc;
  }

  int status_pending = 0;
  uint32_t last_intparm = 0;
  int classic = 0;
  int adapter = 0;
  int last_isc = -1;
};

// Linux's VIRTIO_CCW_DOING_* interruption parameters.
inline constexpr uint32_t kDoingSetVq = 0x00010000;
inline constexpr uint32_t kDoingReset = 0x00040000;
inline constexpr uint32_t kDoingReadFeat = 0x00080000;
inline constexpr uint32_t kDoingWriteFeat = 0x00100000;
inline constexpr uint32_t kDoingReadConfig = 0x00200000;
inline constexpr uint32_t kDoingWriteConfig = 0x00400000;
inline constexpr uint32_t kDoingWriteStatus = 0x00800000;
inline constexpr uint32_t kDoingSetInd = 0x01000000;
inline constexpr uint32_t kDoingReadVqConf = 0x02000000;
inline constexpr uint32_t kDoingSetConfInd = 0x04000000;
inline constexpr uint32_t kDoingSetIndAdapter = 0x08000000;
inline constexpr uint32_t kDoingSetVirtioRev = 0x10000000;
inline constexpr uint32_t kDoingReadStatus = 0x20000000;

class LinuxVirtioCcwDriver {
 public:
  struct Options {
    // VIRTIO_CCW_REV_MAX and the min_revision module parameter.
    uint16_t max_revision = 2;
    uint16_t min_revision = 0;
    // A driver from before SET_VIRTIO_REV: starts with VDEV_RESET and speaks
    // revision 0.
    bool legacy_only = false;
    // virtio_ccw_use_airq: try adapter (thin) interrupts first.
    bool adapter_interrupts = true;
    // The PMCW's concurrent-sense bit, which Linux's cio sets.
    bool concurrent_sense = true;
    // Where the adapter indicators start in the indicator vector (Linux's
    // airq_iv_alloc result) and the adapter ISC (VIRTIO_AIRQ_ISC).
    uint64_t adapter_bit_nr = 5;
    uint8_t adapter_isc = 3;
    // Guest memory the driver allocates from (CCWs, blocks, rings, buffers):
    // [arena_base, arena_base + arena_size).
    uint64_t arena_base = 0x10000;
    uint64_t arena_size = 0x400000;
  };

  // The outcome of one channel program: Linux's vcdev->err and the IRB.
  struct Io {
    absl::Status status;
    ccw::Irb irb;
  };

  // Which interrupts HandleInterrupts() found.
  struct Interrupts {
    uint64_t queues = 0;  // bit n: queue n was signalled
    bool config = false;
  };

  // Everything must outlive the driver. Sets the subchannel's concurrent
  // sense bit as Options says.
  LinuxVirtioCcwDriver(const virtqueue::GuestMemory& memory,
                       ccw::Subchannel& subchannel,
                       ccw::VirtioCcwDevice& device, InterruptRecorder& irq,
                       Options options);

  // ---- The steps of the probe, one by one.
  // SENSE ID; kNotFound unless the control unit type is 0x3832.
  absl::Status SenseId();
  uint16_t cu_type() const { return cu_type_; }
  uint8_t cu_model() const { return cu_model_; }
  // virtio_ccw_set_transport_rev. The revision it settled on is revision().
  absl::Status SetTransportRev();
  int revision() const { return revision_; }
  absl::Status ResetDevice();  // VDEV_RESET
  // virtio core's add_status: get_status() | bits, written with WRITE_STATUS.
  absl::Status AddStatus(uint8_t bits);
  // READ_STATUS from revision 2, the driver's cached status below.
  absl::StatusOr<uint8_t> GetStatus();
  uint64_t GetFeatures();  // 0 on error, as Linux
  absl::Status FinalizeFeatures(uint64_t features);
  absl::Status FindVqs(uint16_t nvqs);
  // The probe: SenseId, SetTransportRev (unless legacy_only), reset,
  // ACKNOWLEDGE, DRIVER, features = device & wanted, FEATURES_OK when
  // VERSION_1 was taken (kFailedPrecondition if refused), FindVqs for every
  // queue the device has, DRIVER_OK.
  absl::Status Probe(const virtio::Features& wanted);
  // virtio_dev_remove: reset, the status must read 0, del_vqs (indicators
  // deregistered, every queue released with SET_VQ), ACKNOWLEDGE again.
  absl::Status Remove();

  // ---- Configuration space (virtio_ccw_get_config / set_config).
  absl::Status ReadConfig(uint32_t offset, absl::Span<uint8_t> out);
  absl::Status WriteConfig(uint32_t offset, absl::Span<const uint8_t> in);

  // ---- Queues and interrupts.
  virtqueue::testing::DriverQueue& queue(uint16_t i) { return *queues_[i]; }
  size_t num_queues() const { return queues_.size(); }
  uint64_t features() const { return features_; }
  bool adapter_interrupts_in_use() const { return thinint_; }
  // virtqueue_kick: the DIAGNOSE 0x500 notification (VirtioCcwDevice::
  // Notify) if the device wants one (virtqueue_kick_prepare: NO_NOTIFY or
  // avail_event). Returns whether it notified.
  bool Kick(uint16_t queue);
  // virtqueue_get_buf: the next used element; with EVENT_IDX it then moves
  // used_event to the entries reaped so far.
  std::optional<virtqueue::VirtqUsedElem> GetBuf(uint16_t queue);
  // The interrupt handlers: classic (virtio_ccw_int_handler's indicator
  // scan) and adapter (virtio_airq_handler: scan, clear summary, scan again).
  Interrupts HandleInterrupts();
  // Addresses of the indicators, to look at them from a test.
  uint64_t indicators_addr() const { return indicators_; }
  uint64_t config_indicators_addr() const { return indicators2_; }
  uint64_t summary_indicator_addr() const { return summary_; }
  uint64_t adapter_vector_addr() const { return airq_vector_; }

  // ---- Raw channel programs, for tests.
  // Guest memory for the driver's own use (zeroed, 8-byte aligned at least).
  uint64_t Alloc(uint64_t size, uint64_t align = 8);
  // Runs the one-CCW program {cmd, flags, count, data} at a fresh CCW slot.
  Io RunCcw(uint8_t cmd, uint8_t flags, uint16_t count, uint32_t data,
            uint32_t intparm);
  // Runs the program at `cpa` (format 1).
  Io RunProgram(uint32_t cpa, uint32_t intparm);
  const ccw::Irb& last_irb() const { return last_irb_; }
  uint32_t programs_run() const { return programs_; }

 private:
  absl::Status SetupVq(uint16_t index);
  absl::Status RegisterAdapterIndicators(uint16_t nvqs);
  void ReadIndicatorWord(uint64_t addr, uint64_t* value);
  void WriteIndicatorWord(uint64_t addr, uint64_t value);

  const virtqueue::GuestMemory& memory_;
  ccw::Subchannel& subchannel_;
  ccw::VirtioCcwDevice& device_;
  InterruptRecorder& irq_;
  Options options_;

  uint64_t next_ = 0;  // bump allocator
  uint64_t ccw_slot_ = 0;
  uint16_t cu_type_ = 0;
  uint8_t cu_model_ = 0;
  int revision_ = -1;
  uint8_t status_ = 0;  // vcdev->dma_area->status
  uint64_t features_ = 0;
  bool thinint_ = false;
  // Indicator areas (vcdev->dma_area and the airq vector).
  uint64_t indicators_ = 0;
  uint64_t indicators2_ = 0;
  uint64_t summary_ = 0;
  uint64_t airq_vector_ = 0;
  std::vector<std::unique_ptr<virtqueue::testing::DriverQueue>> queues_;
  std::vector<uint64_t> info_blocks_;
  std::vector<uint16_t> reaped_;
  ccw::Irb last_irb_;
  uint32_t programs_ = 0;
};

}  // namespace vmmkit::tests::virtio_ccw

#endif  // VMMKIT_TESTS_VIRTIO_CCW_DRIVER_H_
