#include "ccw/virtio_ccw.h"

#include <algorithm>
#include <vector>

namespace vmmkit::ccw {

using virtio::DeviceState;
using virtio::Features;

namespace {

uint64_t Be(const uint8_t* p, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; ++i) v = v << 8 | p[i];
  return v;
}

void PutBe(uint8_t* p, uint64_t v, size_t n) {
  for (size_t i = 0; i < n; ++i)
    p[n - 1 - i] = static_cast<uint8_t>(v >> (8 * i));
}

template <typename T>
absl::Span<uint8_t> Bytes(T& t) {
  return absl::MakeSpan(reinterpret_cast<uint8_t*>(&t), sizeof(T));
}

DeviceState::Options StateOptions(const VirtioCcwDevice::Options& o) {
  DeviceState::Options s;
  s.guest_endian = o.guest_endian;
  // A device that refuses revision 0 refuses legacy drivers altogether.
  s.allow_legacy = o.min_revision == 0;
  return s;
}

}  // namespace

VirtioCcwDevice::VirtioCcwDevice(virtio::VirtioDevice& device,
                                 const virtio::GuestMemory& memory,
                                 const Options& options,
                                 VirtioCcwInterrupts* interrupts)
    : memory_(memory),
      options_(options),
      interrupts_(interrupts),
      state_(device, memory, StateOptions(options)) {
  state_.set_interrupt_sink(this);
}

SenseIdData VirtioCcwDevice::sense_id() const {
  SenseIdData id;
  id.cu_type = 0x3832;
  id.cu_model = static_cast<uint8_t>(state_.device().type());
  return id;
}

void VirtioCcwDevice::Reset() {
  state_.SetStatus(0);
  revision_ = kRevisionUnset;
  indicators_ = config_indicators_ = 0;
  adapter_ = false;
  summary_indicator_ = device_indicators_ = bit_nr_ = 0;
  isc_ = 0;
}

bool VirtioCcwDevice::ReadBlock(const Command& cmd, CcwData& data,
                                absl::Span<uint8_t> out,
                                CommandResult* result) {
  absl::StatusOr<size_t> n = data.CopyFromGuest(out);
  if (n.ok() && *n == out.size()) return true;
  // A program check (bad data address) wins over anything we could say.
  if (!n.ok() || !data.status().ok()) {
    *result = CommandResult::Accepted();
    return false;
  }
  // Too short to act on. With length checking on, the interpreter reports
  // incorrect length and the residual count; with SLI the device cannot
  // execute a command it has no data for, so it rejects it.
  const bool check_len =
      !((cmd.flags & kCcwFlagSli) && !(cmd.flags & kCcwFlagCd));
  *result =
      check_len ? CommandResult::Accepted() : CommandResult::CommandReject();
  return false;
}

CommandResult VirtioCcwDevice::Execute(const Command& cmd, CcwData& data) {
  if (revision_ == kRevisionUnset && cmd.code != kVirtioCcwSetVirtioRev) {
    // §4.3.2.1.1: a first command other than SET_VIRTIO_REV means a legacy
    // driver; a device without revision 0 has to refuse it.
    if (options_.min_revision > 0) return CommandResult::CommandReject();
    revision_ = 0;
  }
  switch (cmd.code) {
    case kVirtioCcwSetVirtioRev:
      return SetRevision(cmd, data);
    case kVirtioCcwSetVq:
      return SetVq(cmd, data);
    case kVirtioCcwVdevReset:
      state_.SetStatus(0);
      indicators_ = config_indicators_ = 0;
      adapter_ = false;
      return CommandResult::Accepted();
    case kVirtioCcwReadFeat:
      return ReadFeat(cmd, data);
    case kVirtioCcwWriteFeat:
      return WriteFeat(cmd, data);
    case kVirtioCcwReadConf:
      return ReadConf(cmd, data);
    case kVirtioCcwWriteConf:
      return WriteConf(cmd, data);
    case kVirtioCcwWriteStatus:
      return WriteStatus(cmd, data);
    case kVirtioCcwSetInd:
      return SetInd(cmd, data, /*config=*/false);
    case kVirtioCcwSetConfInd:
      return SetInd(cmd, data, /*config=*/true);
    case kVirtioCcwReadVqConf:
      // Not revision-bound: READ_VQ_CONF predates SET_VIRTIO_REV, and Linux's
      // legacy queue setup (virtio_ccw_setup_vq at revision 0) issues it.
      return ReadVqConf(cmd, data);
    case kVirtioCcwSetIndAdapter:
      if (revision_ < 1) return CommandResult::CommandReject();
      return SetIndAdapter(cmd, data);
    case kVirtioCcwReadStatus: {
      if (revision_ < 2) return CommandResult::CommandReject();
      const uint8_t status = state_.status();
      (void)data.CopyToGuest(absl::MakeConstSpan(&status, 1));
      return CommandResult::Accepted();
    }
    default:
      return CommandResult::CommandReject();
  }
}

CommandResult VirtioCcwDevice::SetRevision(const Command& cmd, CcwData& data) {
  // "A second SET_VIRTIO_REV" (or one after the revision was fixed).
  if (revision_ != kRevisionUnset) return CommandResult::CommandReject();
  RevInfo info;
  CommandResult result = CommandResult::Accepted();
  if (!ReadBlock(cmd, data, Bytes(info), &result)) return result;
  const uint16_t rev = static_cast<uint16_t>(Be(info.revision, 2));
  const uint16_t length = static_cast<uint16_t>(Be(info.length, 2));
  // §4.3.2.1.1: the device rejects a revision it does not support, so that
  // the driver may try a lower one. Revisions 1 and 2 carry no data.
  if (rev < options_.min_revision || rev > options_.max_revision ||
      length != 0) {
    return CommandResult::CommandReject();
  }
  revision_ = rev;
  return CommandResult::Accepted();
}

CommandResult VirtioCcwDevice::SetVq(const Command& cmd, CcwData& data) {
  uint64_t desc, avail = 0, used = 0;
  uint32_t align = 0;
  uint16_t index, num;
  CommandResult result = CommandResult::Accepted();
  if (revision_ == 0) {
    VqInfoBlockLegacy b;
    if (!ReadBlock(cmd, data, Bytes(b), &result)) return result;
    desc = Be(b.queue, 8);
    align = static_cast<uint32_t>(Be(b.align, 4));
    index = static_cast<uint16_t>(Be(b.index, 2));
    num = static_cast<uint16_t>(Be(b.num, 2));
  } else {
    VqInfoBlock b;
    if (!ReadBlock(cmd, data, Bytes(b), &result)) return result;
    desc = Be(b.desc, 8);
    avail = Be(b.avail, 8);
    used = Be(b.used, 8);
    index = static_cast<uint16_t>(Be(b.index, 2));
    num = static_cast<uint16_t>(Be(b.num, 2));
  }
  if (index >= state_.num_queues() || state_.active()) {
    return CommandResult::CommandReject();
  }
  if (desc == 0) {  // the driver tears the queue down
    state_.DisableQueue(index);
    return CommandResult::Accepted();
  }
  virtio::SplitQueue& q = state_.queue_config(index);
  if (num == 0 || num > q.max_size() || (num & (num - 1)) != 0) {
    return CommandResult::CommandReject();
  }
  q.set_size(num);
  if (revision_ == 0) {
    if (!q.SetLegacyLayout(desc, align).ok()) {
      return CommandResult::CommandReject();
    }
  } else {
    q.set_desc_table(desc);
    q.set_avail_ring(avail);
    q.set_used_ring(used);
  }
  if (!q.Validate(memory_).ok()) {
    state_.DisableQueue(index);
    return CommandResult::CommandReject();
  }
  state_.EnableQueue(index);
  return CommandResult::Accepted();
}

CommandResult VirtioCcwDevice::ReadFeat(const Command& cmd, CcwData& data) {
  // {le32 features, u8 index}: read the index, then store the word.
  uint8_t index = 0;
  absl::StatusOr<size_t> skipped = data.Skip(4);
  absl::StatusOr<size_t> n = data.CopyFromGuest(absl::MakeSpan(&index, 1));
  if (!skipped.ok() || !n.ok() || !data.status().ok()) {
    return CommandResult::Accepted();
  }
  if (*n != 1) {
    const bool check_len =
        !((cmd.flags & kCcwFlagSli) && !(cmd.flags & kCcwFlagCd));
    return check_len ? CommandResult::Accepted()
                     : CommandResult::CommandReject();
  }
  // Revision 0 has feature bits 0..31 only; words beyond read as zero.
  uint32_t word = 0;
  if (index == 0 || (revision_ >= 1 && index < Features::kWords)) {
    word = state_.DeviceFeatures(index);
  }
  uint8_t le[4] = {static_cast<uint8_t>(word), static_cast<uint8_t>(word >> 8),
                   static_cast<uint8_t>(word >> 16),
                   static_cast<uint8_t>(word >> 24)};
  data.Rewind();
  (void)data.CopyToGuest(le);
  return CommandResult::Accepted();
}

CommandResult VirtioCcwDevice::WriteFeat(const Command& cmd, CcwData& data) {
  FeatureBlock b;
  CommandResult result = CommandResult::Accepted();
  if (!ReadBlock(cmd, data, Bytes(b), &result)) return result;
  const uint32_t max_index = revision_ == 0 ? 1 : Features::kWords;
  if (b.index >= max_index) return CommandResult::CommandReject();
  const uint32_t word = b.features[0] | b.features[1] << 8 |
                        b.features[2] << 16 |
                        static_cast<uint32_t>(b.features[3]) << 24;
  state_.SetDriverFeatures(b.index, word);
  return CommandResult::Accepted();
}

// How many configuration bytes READ_CONF/WRITE_CONF move: the count says how
// much of the configuration (from offset 0) the driver wants, so a count
// below the configuration size is no length error (Linux reads offset + len
// bytes). With data chaining the total count is unknown until the chain's
// end, so the whole configuration is offered and a shorter chain is
// incorrect length.
namespace {
size_t ConfigTransferSize(const Command& cmd, size_t config_size) {
  if (cmd.data_chained()) return config_size;
  return std::min<size_t>(config_size, cmd.count);
}
}  // namespace

virtio::Endian VirtioCcwDevice::ConfigEndian() const {
  // Revisions 1 and 2 are spoken by virtio 1 drivers only: little-endian
  // configuration even before the features are written (Linux's validate
  // callbacks, e.g. virtio-net's MTU check, read it then).
  return revision_ >= 1 ? virtio::Endian::kLittle : state_.legacy_endian();
}

CommandResult VirtioCcwDevice::ReadConf(const Command& cmd, CcwData& data) {
  // The configuration from offset 0; the driver picks its field out of it.
  std::vector<uint8_t> config(ConfigTransferSize(cmd, state_.config_size()));
  state_.ReadConfig(0, absl::MakeSpan(config), ConfigEndian());
  (void)data.CopyToGuest(config);
  return CommandResult::Accepted();
}

CommandResult VirtioCcwDevice::WriteConf(const Command& cmd, CcwData& data) {
  std::vector<uint8_t> config(ConfigTransferSize(cmd, state_.config_size()));
  absl::StatusOr<size_t> n = data.CopyFromGuest(absl::MakeSpan(config));
  if (!n.ok() || !data.status().ok()) return CommandResult::Accepted();
  state_.WriteConfig(0, absl::MakeConstSpan(config).subspan(0, *n),
                     ConfigEndian());
  return CommandResult::Accepted();
}

CommandResult VirtioCcwDevice::WriteStatus(const Command& cmd, CcwData& data) {
  uint8_t status = 0;
  CommandResult result = CommandResult::Accepted();
  if (!ReadBlock(cmd, data, absl::MakeSpan(&status, 1), &result)) {
    return result;
  }
  if (status == 0) {
    state_.SetStatus(0);
    indicators_ = config_indicators_ = 0;
    adapter_ = false;
    return CommandResult::Accepted();
  }
  state_.SetStatus(status);
  // §4.3.2.3: "If the device fails to set the device status field to the
  // value written by the driver, the device MUST assure that the device
  // status field is left unchanged and MUST post a unit check with command
  // reject." The driver learns so that FEATURES_OK was refused (revisions 0
  // and 1 have no READ_STATUS), or that a write clearing bits was ignored.
  // DEVICE_NEEDS_RESET is the device's bit and not compared.
  const uint8_t mask = static_cast<uint8_t>(~virtio::kStatusNeedsReset);
  if ((state_.status() & mask) != (status & mask)) {
    return CommandResult::CommandReject();
  }
  return CommandResult::Accepted();
}

CommandResult VirtioCcwDevice::SetInd(const Command& cmd, CcwData& data,
                                      bool config) {
  uint8_t addr[8];
  CommandResult result = CommandResult::Accepted();
  if (!ReadBlock(cmd, data, absl::MakeSpan(addr), &result)) return result;
  const uint64_t a = Be(addr, 8);
  if (!config && adapter_) return CommandResult::CommandReject();
  // Address 0 deregisters (Linux's virtio_ccw_drop_indicator on teardown).
  if (a != 0 && !memory_.Contains(a, 8)) return CommandResult::CommandReject();
  (config ? config_indicators_ : indicators_) = a;
  return CommandResult::Accepted();
}

CommandResult VirtioCcwDevice::SetIndAdapter(const Command& cmd,
                                             CcwData& data) {
  if (indicators_ != 0) return CommandResult::CommandReject();
  ThinintArea area;
  CommandResult result = CommandResult::Accepted();
  if (!ReadBlock(cmd, data, Bytes(area), &result)) return result;
  const uint64_t summary = Be(area.summary_indicator, 8);
  const uint64_t ind = Be(area.indicator, 8);
  const uint64_t bit_nr = Be(area.bit_nr, 8);
  const uint64_t nq = state_.num_queues();
  if (ind == 0) {
    // Deregistration (Linux's virtio_ccw_drop_indicator on teardown).
    adapter_ = false;
    summary_indicator_ = device_indicators_ = bit_nr_ = 0;
    return CommandResult::Accepted();
  }
  // Every queue's bit must be in guest memory: bits bit_nr .. bit_nr+nq-1.
  if (area.isc > 7 || summary == 0 || !memory_.Contains(summary, 1) ||
      bit_nr > (uint64_t{1} << 40) ||
      !memory_.Contains(ind, (bit_nr + nq + 7) / 8)) {
    return CommandResult::CommandReject();
  }
  adapter_ = true;
  summary_indicator_ = summary;
  device_indicators_ = ind;
  bit_nr_ = bit_nr;
  isc_ = area.isc;
  return CommandResult::Accepted();
}

CommandResult VirtioCcwDevice::ReadVqConf(const Command& cmd, CcwData& data) {
  uint8_t index_be[2];
  CommandResult result = CommandResult::Accepted();
  if (!ReadBlock(cmd, data, absl::MakeSpan(index_be), &result)) return result;
  const uint16_t index = static_cast<uint16_t>(Be(index_be, 2));
  if (index >= state_.num_queues()) return CommandResult::CommandReject();
  uint8_t max_be[2];
  PutBe(max_be, state_.queue_config(index).max_size(), 2);
  (void)data.CopyToGuest(max_be);
  return CommandResult::Accepted();
}

uint8_t VirtioCcwDevice::OrGuestByte(uint64_t addr, uint8_t bits) {
  uint8_t* p = memory_.HostPointer(addr, 1);
  if (p == nullptr) return 0xff;  // checked at setup; never raise on it
  // The guest clears indicator bits concurrently: an atomic OR.
  return __atomic_fetch_or(p, bits, __ATOMIC_SEQ_CST);
}

void VirtioCcwDevice::QueueInterrupt(uint16_t index) {
  if (interrupts_ == nullptr) return;
  if (adapter_) {
    const uint64_t bit = bit_nr_ + index;
    OrGuestByte(device_indicators_ + bit / 8,
                static_cast<uint8_t>(0x80 >> (bit % 8)));
    // The summary byte: an adapter interrupt only when it was clear.
    if (OrGuestByte(summary_indicator_, 0x01) == 0) {
      interrupts_->AdapterInterrupt(isc_);
    }
    return;
  }
  if (indicators_ == 0 || index >= 64) return;
  // A big-endian 64-bit word, bit n = 1 << n: byte 7 - n/8.
  OrGuestByte(indicators_ + 7 - index / 8,
              static_cast<uint8_t>(1u << (index % 8)));
  interrupts_->ClassicInterrupt();
}

void VirtioCcwDevice::ConfigInterrupt() {
  if (interrupts_ == nullptr || config_indicators_ == 0) return;
  OrGuestByte(config_indicators_ + 7, 0x01);
  interrupts_->ClassicInterrupt();
}

}  // namespace vmmkit::ccw
