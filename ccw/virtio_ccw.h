// ccw/virtio_ccw.h: the virtio-ccw transport (virtio 1.2 §4.3), revisions 0
// to 2, as a CcwCommandHandler over one virtio::DeviceState.
//
//   VirtioCcwDevice dev(device, memory, {.min_revision = 0, .max_revision = 2},
//                       &vmm_interrupts);
//   Subchannel sch(memory, &dev, ...);      // the channel program interpreter
//   ... the guest's DIAGNOSE 0x500 notify:  dev.Notify(queue);
//
// Revision negotiation: the revision is fixed by the first virtio command. A
// SET_VIRTIO_REV (0x83) first sets it if it lies in [min, max] and its length
// fits; any other revision is rejected (unit check, command reject) so that
// the driver steps down, as Linux's virtio_ccw does. A first command that is
// not SET_VIRTIO_REV fixes revision 0 (a legacy driver), unless min > 0:
// then it is rejected, as a non-transitional device must. A second
// SET_VIRTIO_REV is rejected. Revision 0 is legacy: the legacy queue block
// {be64 queue, be32 align, be16 index, be16 num}, rings and configuration in
// the guest's native (big-endian) order, feature bits 0..31 only; from
// revision 1 the configuration is little-endian from the start (a revision-1
// driver is a virtio 1 driver, and may read it before writing features).
// Revision 1 adds SET_IND_ADAPTER and the {desc, res0, index, num, avail, used}
// block; revision 2 adds READ_STATUS. A command outside the revision is
// rejected. READ_VQ_CONF is valid in every revision: it predates SET_VIRTIO_REV
// and Linux's legacy queue setup issues it at revision 0.
//
// Interrupts leave through VirtioCcwInterrupts: classic indicators (a 64-bit
// big-endian word, bit n for queue n, and a second word whose bit 0 is the
// configuration change) followed by an I/O interrupt for the subchannel, or
// adapter (thin) interrupts: the queue's bit in the device indicator area (bit
// number bit_nr + queue, most significant bit first), then the summary
// indicator byte; the adapter interrupt is raised only when the summary byte
// was clear.
//
// Stricter than QEMU, deliberately:
// - A length error is reported as incorrect length (with the residual
//   count), not turned into a program check or unit check: the channel
//   program interpreter judges lengths; a block too short to act on is
//   rejected only when length checking is suppressed (SLI).
// - READ_CONF stores min(count, config size) bytes and the residual count says
//   how many were not stored; WRITE_CONF takes min(count, config size). A
//   count below the config size is the driver asking for a prefix (Linux
//   sends offset + len), not a length error. (With data chaining the whole
//   configuration is offered: a shorter chain is incorrect length.)
// - WRITE_FEAT with a feature-word index the revision does not have is a
//   command reject (QEMU ignores it): a driver must not believe it set bits
//   the device never saw.
// - SET_VQ checks the queue against the device maximum and guest memory when
//   it is given, and rejects a bad one then.
// - WRITE_STATUS that the device does not take as written (FEATURES_OK
//   refused, a write that would clear bits) is a command reject with the
//   status unchanged (§4.3.2.3), as the driver of revisions 0 and 1 has no
//   other way to learn it.
// - Indicator addresses are checked against guest memory (8 bytes; the
//   adapter summary byte, and the device indicator bit's byte). Address 0
//   deregisters (SET_IND / SET_CONF_IND with 0, SET_IND_ADAPTER with
//   indicator 0), which Linux does when it tears its queues down.
//
// Thread-compatibility: one thread at a time (the VMM serializes channel
// programs, notifications and queue work on a device).
#ifndef VMMKIT_CCW_VIRTIO_CCW_H_
#define VMMKIT_CCW_VIRTIO_CCW_H_

#include <cstdint>

#include "ccw/command_handler.h"
#include "virtio-device/device_state.h"
#include "virtio-device/virtio_device.h"

namespace vmmkit::ccw {

// virtio-ccw command codes (§4.3.2).
inline constexpr uint8_t kVirtioCcwSetVq = 0x13;
inline constexpr uint8_t kVirtioCcwVdevReset = 0x33;
inline constexpr uint8_t kVirtioCcwSetInd = 0x43;
inline constexpr uint8_t kVirtioCcwSetConfInd = 0x53;
inline constexpr uint8_t kVirtioCcwReadFeat = 0x12;
inline constexpr uint8_t kVirtioCcwWriteFeat = 0x11;
inline constexpr uint8_t kVirtioCcwReadConf = 0x22;
inline constexpr uint8_t kVirtioCcwWriteConf = 0x21;
inline constexpr uint8_t kVirtioCcwWriteStatus = 0x31;
inline constexpr uint8_t kVirtioCcwReadVqConf = 0x32;
inline constexpr uint8_t kVirtioCcwReadStatus = 0x72;
inline constexpr uint8_t kVirtioCcwSetIndAdapter = 0x73;
inline constexpr uint8_t kVirtioCcwSetVirtioRev = 0x83;

// Wire blocks, big-endian unless the name says le.
struct VqInfoBlockLegacy {
  uint8_t queue[8];  // be64
  uint8_t align[4];  // be32
  uint8_t index[2];  // be16
  uint8_t num[2];    // be16
};
static_assert(sizeof(VqInfoBlockLegacy) == 16);

struct VqInfoBlock {
  uint8_t desc[8];  // be64
  uint8_t res0[4];
  uint8_t index[2];  // be16
  uint8_t num[2];    // be16
  uint8_t avail[8];  // be64
  uint8_t used[8];   // be64
};
static_assert(sizeof(VqInfoBlock) == 32);
static_assert(offsetof(VqInfoBlock, avail) == 16);

struct FeatureBlock {
  uint8_t features[4];  // le32 (little-endian even on s390)
  uint8_t index;
};
static_assert(sizeof(FeatureBlock) == 5);

struct ThinintArea {
  uint8_t summary_indicator[8];  // be64
  uint8_t indicator[8];          // be64
  uint8_t bit_nr[8];             // be64
  uint8_t isc;
};
static_assert(sizeof(ThinintArea) == 25);

struct RevInfo {
  uint8_t revision[2];  // be16
  uint8_t length[2];    // be16
};
static_assert(sizeof(RevInfo) == 4);

struct VqConfigBlock {
  uint8_t index[2];    // be16
  uint8_t max_num[2];  // be16
};
static_assert(sizeof(VqConfigBlock) == 4);

// Implemented by the VMM.
class VirtioCcwInterrupts {
 public:
  virtual ~VirtioCcwInterrupts() = default;
  // An I/O interrupt for this device's subchannel (classic indicators).
  virtual void ClassicInterrupt() = 0;
  // An adapter interrupt for interruption subclass `isc`.
  virtual void AdapterInterrupt(uint8_t isc) = 0;
};

class VirtioCcwDevice final : public CcwCommandHandler,
                              private virtio::InterruptSink {
 public:
  struct Options {
    uint16_t min_revision = 0;
    uint16_t max_revision = 2;
    // s390 is big-endian: what a legacy (revision 0) driver uses.
    virtio::Endian guest_endian = virtio::Endian::kBig;
  };
  static constexpr int kRevisionUnset = -1;

  // `device`, `memory` and `interrupts` must outlive this object.
  VirtioCcwDevice(virtio::VirtioDevice& device,
                  const virtio::GuestMemory& memory, const Options& options,
                  VirtioCcwInterrupts* interrupts);

  // CcwCommandHandler.
  SenseIdData sense_id() const override;
  CommandResult Execute(const Command& command, CcwData& data) override;

  // The guest's notification (DIAGNOSE 0x500, subcode 3) for `queue`.
  void Notify(uint16_t queue) { state_.Notify(queue); }
  // A subchannel reset: the device is reset and the revision forgotten.
  void Reset();

  int revision() const { return revision_; }
  bool adapter_interrupts() const { return adapter_; }
  virtio::DeviceState& state() { return state_; }

 private:
  // virtio::InterruptSink.
  void QueueInterrupt(uint16_t index) override;
  void ConfigInterrupt() override;

  CommandResult SetVq(const Command& cmd, CcwData& data);
  CommandResult ReadFeat(const Command& cmd, CcwData& data);
  CommandResult WriteFeat(const Command& cmd, CcwData& data);
  CommandResult ReadConf(const Command& cmd, CcwData& data);
  CommandResult WriteConf(const Command& cmd, CcwData& data);
  CommandResult WriteStatus(const Command& cmd, CcwData& data);
  CommandResult SetInd(const Command& cmd, CcwData& data, bool config);
  CommandResult SetIndAdapter(const Command& cmd, CcwData& data);
  CommandResult ReadVqConf(const Command& cmd, CcwData& data);
  CommandResult SetRevision(const Command& cmd, CcwData& data);
  // Reads a whole block; false if the program gave fewer bytes. `*result` is
  // what to answer then.
  bool ReadBlock(const Command& cmd, CcwData& data, absl::Span<uint8_t> out,
                 CommandResult* result);
  // The byte order of READ_CONF/WRITE_CONF data.
  virtio::Endian ConfigEndian() const;
  // Sets a bit with an atomic OR in guest memory; returns the old byte.
  uint8_t OrGuestByte(uint64_t addr, uint8_t bits);

  const virtio::GuestMemory& memory_;
  Options options_;
  VirtioCcwInterrupts* interrupts_;
  virtio::DeviceState state_;
  int revision_ = kRevisionUnset;
  // Classic indicators (0: not set).
  uint64_t indicators_ = 0;
  uint64_t config_indicators_ = 0;
  // Adapter interrupts.
  bool adapter_ = false;
  uint64_t summary_indicator_ = 0;
  uint64_t device_indicators_ = 0;
  uint64_t bit_nr_ = 0;
  uint8_t isc_ = 0;
};

}  // namespace vmmkit::ccw

#endif  // VMMKIT_CCW_VIRTIO_CCW_H_
