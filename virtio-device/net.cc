#include "virtio-device/net.h"

#include <sys/eventfd.h>
#include <sys/random.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/container/inlined_vector.h"
#include "absl/strings/str_format.h"
#include "base/status.h"

namespace vmmkit::virtio {

namespace {

constexpr uint32_t kConfigMac = offsetof(VirtioNetConfig, mac);
constexpr uint32_t kConfigStatus = offsetof(VirtioNetConfig, status);
constexpr uint32_t kConfigPairs =
    offsetof(VirtioNetConfig, max_virtqueue_pairs);
constexpr uint32_t kConfigMtu = offsetof(VirtioNetConfig, mtu);

// More pieces than this and a frame is copied before it is sent (writev
// takes at most IOV_MAX, and a long gather list costs more than a copy).
constexpr size_t kMaxIov = 64;

// §5.1.3.1 "Feature bit requirements" ("VIRTIO_NET_F_GUEST_TSO4 Requires
// VIRTIO_NET_F_GUEST_CSUM", ...): `bit` needs at least one of `any_of`.
struct Dependency {
  unsigned bit;
  unsigned any_of[2];
  const char* name;
};
constexpr Dependency kDependencies[] = {
    {kNetFGuestTso4, {kNetFGuestCsum, kNetFGuestCsum}, "GUEST_TSO4"},
    {kNetFGuestTso6, {kNetFGuestCsum, kNetFGuestCsum}, "GUEST_TSO6"},
    {kNetFGuestUfo, {kNetFGuestCsum, kNetFGuestCsum}, "GUEST_UFO"},
    {kNetFGuestEcn, {kNetFGuestTso4, kNetFGuestTso6}, "GUEST_ECN"},
    {kNetFHostTso4, {kNetFCsum, kNetFCsum}, "HOST_TSO4"},
    {kNetFHostTso6, {kNetFCsum, kNetFCsum}, "HOST_TSO6"},
    {kNetFHostUfo, {kNetFCsum, kNetFCsum}, "HOST_UFO"},
    {kNetFHostEcn, {kNetFHostTso4, kNetFHostTso6}, "HOST_ECN"},
};

bool Satisfied(const Features& f, const Dependency& d) {
  return !f.Has(d.bit) || f.Has(d.any_of[0]) || f.Has(d.any_of[1]);
}

// §2.2.1: "The device SHOULD NOT offer a feature which requires another
// feature which was not offered." Drops such bits (in dependency order, so a
// dropped TSO also drops the ECN that needed it).
Features DropUnmet(Features f) {
  for (const Dependency& d : kDependencies) {
    if (!Satisfied(f, d)) f.Set(d.bit, false);
  }
  return f;
}

void Swap16At(uint8_t* p) { std::swap(p[0], p[1]); }

}  // namespace

Features NetOffloadFeatures() {
  return Features::Of({kNetFCsum, kNetFGuestCsum, kNetFGuestTso4,
                       kNetFGuestTso6, kNetFGuestEcn, kNetFGuestUfo,
                       kNetFHostTso4, kNetFHostTso6, kNetFHostEcn,
                       kNetFHostUfo});
}

// ---------------------------------------------------------------------------
// LoopbackNetBackend

absl::StatusOr<std::pair<std::unique_ptr<LoopbackNetBackend>,
                         std::unique_ptr<LoopbackNetBackend>>>
LoopbackNetBackend::CreatePair(Features offloads) {
  offloads = offloads & NetOffloadFeatures();
  const int a = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (a < 0) return vmmkit::ErrnoToStatus(errno, "eventfd");
  const int b = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (b < 0) {
    const int error = errno;
    close(a);
    return vmmkit::ErrnoToStatus(error, "eventfd");
  }
  std::unique_ptr<LoopbackNetBackend> first(
      new LoopbackNetBackend(a, offloads));
  std::unique_ptr<LoopbackNetBackend> second(
      new LoopbackNetBackend(b, offloads));
  first->peer_ = second.get();
  second->peer_ = first.get();
  return std::make_pair(std::move(first), std::move(second));
}

LoopbackNetBackend::~LoopbackNetBackend() {
  if (peer_ != nullptr) peer_->peer_ = nullptr;
  close(event_fd_);
}

absl::Status LoopbackNetBackend::Configure(const Features& features,
                                           size_t hdr_size) {
  if (hdr_size != kNetHdrSize && hdr_size != kLegacyNetHdrSize) {
    return absl::InvalidArgumentError(
        absl::StrFormat("virtio-net header of %u bytes", hdr_size));
  }
  features_ = features;
  hdr_size_ = hdr_size;
  ++configure_calls_;
  return absl::OkStatus();
}

absl::Status LoopbackNetBackend::Send(absl::Span<const iovec> iov) {
  if (peer_ == nullptr) {
    return absl::FailedPreconditionError("loopback peer is gone");
  }
  size_t total = 0;
  for (const iovec& v : iov) total += v.iov_len;
  if (total < hdr_size_) {
    return absl::InvalidArgumentError("packet shorter than its header");
  }
  if (total - hdr_size_ > kMaxNetFrameSize) {
    return absl::InvalidArgumentError("frame too large");
  }
  if (peer_->inbox_.size() >= kMaxQueued) {
    return absl::ResourceExhaustedError("loopback peer's queue is full");
  }
  std::vector<uint8_t> packet;
  packet.reserve(total);
  for (const iovec& v : iov) {
    const uint8_t* p = static_cast<const uint8_t*>(v.iov_base);
    packet.insert(packet.end(), p, p + v.iov_len);
  }
  // Carried with the 10-byte header: num_buffers means nothing in transit.
  packet.erase(packet.begin() + kLegacyNetHdrSize,
               packet.begin() + static_cast<ptrdiff_t>(hdr_size_));
  peer_->Deliver(std::move(packet));
  return absl::OkStatus();
}

void LoopbackNetBackend::Deliver(std::vector<uint8_t> packet) {
  inbox_.push_back(std::move(packet));
  if (inbox_.size() == 1) {
    const uint64_t one = 1;
    // Cannot fail: the counter is 0 whenever the inbox is empty.
    (void)!write(event_fd_, &one, sizeof(one));
  }
}

absl::StatusOr<size_t> LoopbackNetBackend::Receive(absl::Span<uint8_t> buffer) {
  if (inbox_.empty()) return 0;
  std::vector<uint8_t> packet = std::move(inbox_.front());
  inbox_.pop_front();
  if (inbox_.empty()) {
    uint64_t count;
    (void)!read(event_fd_, &count, sizeof(count));  // now unreadable
  }
  const size_t frame = packet.size() - kLegacyNetHdrSize;
  const size_t length = hdr_size_ + frame;
  if (length > buffer.size()) {
    return absl::OutOfRangeError(absl::StrFormat(
        "packet of %u bytes in a %u-byte buffer", length, buffer.size()));
  }
  std::memcpy(buffer.data(), packet.data(), kLegacyNetHdrSize);
  std::memset(buffer.data() + kLegacyNetHdrSize, 0,
              hdr_size_ - kLegacyNetHdrSize);
  std::memcpy(buffer.data() + hdr_size_, packet.data() + kLegacyNetHdrSize,
              frame);
  return length;
}

// ---------------------------------------------------------------------------
// NetDevice

absl::StatusOr<std::unique_ptr<NetDevice>> NetDevice::Create(
    std::unique_ptr<NetBackend> backend, Options options) {
  if (backend == nullptr) {
    return absl::InvalidArgumentError("virtio-net needs a backend");
  }
  const uint16_t qs = options.queue_size;
  if (qs == 0 || qs > SplitQueue::kMaxQueueSize || (qs & (qs - 1)) != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("queue size %u is not a power of two in 1..32768", qs));
  }
  MacAddress mac;
  if (options.mac.has_value()) {
    mac = *options.mac;
    if (mac[0] & 1) {
      return absl::InvalidArgumentError("multicast MAC address for a NIC");
    }
  } else {
    if (getrandom(mac.data(), mac.size(), 0) !=
        static_cast<ssize_t>(mac.size())) {
      return vmmkit::ErrnoToStatus(errno, "getrandom for a MAC address");
    }
    mac[0] = static_cast<uint8_t>((mac[0] & ~1u) | 2u);  // local, unicast
  }
  return std::unique_ptr<NetDevice>(
      new NetDevice(std::move(backend), options, mac));
}

NetDevice::NetDevice(std::unique_ptr<NetBackend> backend,
                     const Options& options, const MacAddress& mac)
    : backend_(std::move(backend)),
      queue_sizes_{options.queue_size, options.queue_size},
      config_(sizeof(VirtioNetConfig)),
      rx_buffer_(kNetHdrSize + kMaxNetFrameSize) {
  config_.DeclareField(kConfigStatus, 2);
  config_.DeclareField(kConfigPairs, 2);
  config_.DeclareField(kConfigMtu, 2);
  config_.SetBytes(kConfigMac, mac);
  config_.SetU16(kConfigStatus, kNetSLinkUp);
  config_.SetU16(kConfigPairs, 1);
  config_.SetU16(kConfigMtu, options.mtu);
}

Features NetDevice::offered_features() const {
  Features f =
      Features::Of({kFVersion1, kFEventIdx, kFIndirectDesc, kFAnyLayout,
                    kNetFMac, kNetFStatus, kNetFMrgRxbuf});
  if (config_.U16(kConfigMtu) != 0) f.Set(kNetFMtu);
  return f | DropUnmet(backend_->offload_features() & NetOffloadFeatures());
}

absl::Status NetDevice::AcceptFeatures(const Features& features) {
  for (const Dependency& d : kDependencies) {
    if (!Satisfied(features, d)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "VIRTIO_NET_F_%s accepted without the feature it requires", d.name));
    }
  }
  accepted_ = features;
  return absl::OkStatus();
}

void NetDevice::ReadConfig(uint32_t offset, absl::Span<uint8_t> data,
                           Endian endian) {
  config_.Read(offset, data, endian);
}

void NetDevice::WriteConfig(uint32_t offset, absl::Span<const uint8_t> data,
                            Endian endian) {
  // The configuration is read-only, except for the MAC address of a legacy
  // driver (§5.1.4.3: "When using the legacy interface, mac is
  // driver-writable which provided a way for drivers to update the MAC
  // without negotiating VIRTIO_NET_F_CTRL_MAC_ADDR").
  if (accepted_.Has(kFVersion1)) return;
  absl::InlinedVector<uint8_t, 16> bytes(data.size());
  config_.DecodeWrite(offset, data, endian, absl::MakeSpan(bytes));
  for (size_t i = 0; i < bytes.size(); ++i) {
    if (offset + i < kConfigMac + 6) {
      config_.SetU8(static_cast<uint32_t>(offset + i), bytes[i]);
    }
  }
}

MacAddress NetDevice::mac() const {
  MacAddress mac;
  for (uint32_t i = 0; i < 6; ++i) mac[i] = config_.U8(kConfigMac + i);
  return mac;
}

bool NetDevice::link_up() const {
  return (config_.U16(kConfigStatus) & kNetSLinkUp) != 0;
}

void NetDevice::SetLinkUp(bool up) {
  if (up == link_up()) return;
  config_.SetU16(kConfigStatus, up ? kNetSLinkUp : 0);
  if (context_ != nullptr && accepted_.Has(kNetFStatus)) {
    context_->NotifyConfigChange();
  }
}

absl::Status NetDevice::Activate(DeviceContext& context) {
  const Features& f = context.features();
  // §5.1.6.1: "The legacy driver only presented num_buffers in the struct
  // virtio_net_hdr when VIRTIO_NET_F_MRG_RXBUF was negotiated; without that
  // feature the structure was 2 bytes shorter." VERSION_1 always has it.
  hdr_size_ = (f.Has(kFVersion1) || f.Has(kNetFMrgRxbuf)) ? kNetHdrSize
                                                          : kLegacyNetHdrSize;
  mergeable_ = f.Has(kNetFMrgRxbuf);
  accepted_ = f;
  // The header's fields are in the driver's byte order, which is the queues'
  // (little-endian for VERSION_1, guest-native for legacy).
  SplitQueue* q = context.queue(kRxQueue);
  if (q == nullptr) q = context.queue(kTxQueue);
  swap_ = q != nullptr && q->endian() == Endian::kBig;
  VMMKIT_RETURN_IF_ERROR(
      Annotate(backend_->Configure(f, hdr_size_), "virtio-net backend"));
  context_ = &context;
  stopped_ = false;
  pending_ = 0;
  rx_chains_.clear();
  rx_room_ = 0;
  // Frames may have waited in the backend while no driver was there.
  ProcessRx();
  return absl::OkStatus();
}

void NetDevice::Reset() {
  context_ = nullptr;
  stopped_ = false;
  if (pending_ != 0) ++stats_.rx_dropped;
  pending_ = 0;
  rx_chains_.clear();
  rx_room_ = 0;
  accepted_ = Features();
}

void NetDevice::Fail(const absl::Status& why) {
  stopped_ = true;
  if (context_ != nullptr) context_->MarkNeedsReset(why);
}

void NetDevice::SwapHeader(uint8_t* hdr) const {
  for (size_t off = offsetof(VirtioNetHdr, hdr_len); off + 2 <= hdr_size_;
       off += 2) {
    Swap16At(hdr + off);
  }
}

void NetDevice::ProcessQueue(uint16_t index) {
  if (context_ == nullptr || stopped_) return;
  if (index == kRxQueue) {
    // The driver posted receive buffers: frames may be waiting for them.
    ProcessRx();
  } else if (index == kTxQueue) {
    ProcessTx();
  }
}

std::vector<int> NetDevice::backend_fds() const {
  const int fd = backend_->rx_fd();
  if (fd < 0) return {};
  return {fd};
}

void NetDevice::ProcessBackend() {
  if (context_ == nullptr || stopped_) return;
  ProcessRx();
}

void NetDevice::ProcessTx() {
  SplitQueue* q = context_->queue(kTxQueue);
  if (q == nullptr) return;
  bool added = false;
  // Each round takes what the driver has published; the driver is asked not
  // to notify meanwhile, and EnableNotification() tells whether chains came
  // in between (which no notification will announce).
  do {
    q->DisableNotification();
    while (std::optional<DescriptorChain> chain = q->Pop()) {
      absl::StatusOr<Request> req =
          Request::Collect(*chain, context_->memory());
      if (!req.ok()) {
        Fail(Annotate(req.status(), "virtio-net transmit chain"));
        break;
      }
      ChainReader& in = req->reader();
      // §5.1.6.2: every packet starts with the header.
      if (in.remaining() < hdr_size_) {
        Fail(absl::InvalidArgumentError(absl::StrFormat(
            "virtio-net transmit chain of %u bytes, shorter than the %u-byte "
            "header",
            in.remaining(), hdr_size_)));
        break;
      }
      uint8_t hdr[kNetHdrSize] = {};
      absl::Status s = in.Read(absl::MakeSpan(hdr, hdr_size_));
      const uint64_t frame_len = in.remaining();
      if (s.ok() && frame_len > kMaxFrameSize) {
        ++stats_.tx_dropped;
      } else if (s.ok()) {
        if (swap_) SwapHeader(hdr);
        absl::InlinedVector<iovec, 16> iov;
        iov.push_back({hdr, hdr_size_});
        s = in.ForEachSpan(frame_len, [&](absl::Span<uint8_t> piece) {
          if (!piece.empty()) iov.push_back({piece.data(), piece.size()});
        });
        if (s.ok() && iov.size() > kMaxIov) {
          tx_scratch_.resize(frame_len);
          size_t at = 0;
          for (size_t i = 1; i < iov.size(); ++i) {
            std::memcpy(tx_scratch_.data() + at, iov[i].iov_base,
                        iov[i].iov_len);
            at += iov[i].iov_len;
          }
          iov.resize(1);
          iov.push_back({tx_scratch_.data(), frame_len});
        }
        if (s.ok()) {
          if (backend_->Send(iov).ok()) {
            ++stats_.tx_frames;
            stats_.tx_bytes += frame_len;
          } else {
            ++stats_.tx_dropped;
          }
        }
      }
      if (!s.ok()) {
        Fail(Annotate(s, "virtio-net transmit chain"));
        break;
      }
      // §5.1.6.2: the device writes nothing into a transmit buffer.
      q->PushUsed(req->head(), 0);
      added = true;
    }
    if (!stopped_ && q->broken()) Fail(q->status());
  } while (!stopped_ && q->EnableNotification());
  if (added) {
    q->PublishUsed();
    context_->NotifyUsed(kTxQueue);
  }
}

void NetDevice::ProcessRx() {
  SplitQueue* q = context_->queue(kRxQueue);
  if (q == nullptr) return;
  const uint64_t used_before = stats_.rx_buffers;
  while (!stopped_) {
    if (pending_ == 0) {
      // Read from the backend only when there is somewhere to put it, so
      // that frames wait in the backend rather than here.
      if (rx_chains_.empty() && !q->HasAvailable()) {
        if (q->broken()) {
          Fail(q->status());
          break;
        }
        // Ask for a kick when buffers are posted; chains that came in the
        // meantime are served now.
        if (!q->EnableNotification()) break;
        continue;
      }
      absl::StatusOr<size_t> n = backend_->Receive(absl::MakeSpan(rx_buffer_));
      if (!n.ok()) {
        Fail(Annotate(n.status(), "virtio-net backend receive"));
        break;
      }
      if (*n == 0) break;  // nothing more waiting
      if (*n < hdr_size_) {
        ++stats_.rx_dropped;  // a runt from the backend
        continue;
      }
      if (!SanitizeRxHeader(rx_buffer_.data())) {
        ++stats_.rx_dropped;  // an offload the driver cannot take
        continue;
      }
      pending_ = *n;
    }
    if (!DeliverPending(*q)) {
      if (stopped_) break;
      // Out of buffers with a frame in hand: it waits for a kick, unless
      // buffers were posted before notifications were back on.
      if (!q->EnableNotification()) break;
    }
  }
  if (stats_.rx_buffers != used_before) {
    q->PublishUsed();
    context_->NotifyUsed(kRxQueue);
  }
}

bool NetDevice::SanitizeRxHeader(uint8_t* hdr) const {
  // §5.1.6.4.1: "If VIRTIO_NET_F_GUEST_CSUM is not negotiated, the device
  // MUST set flags to zero", and it "MUST NOT set gso_type to
  // VIRTIO_NET_HDR_GSO_TCPV4" without GUEST_TSO4 (likewise TCPV6, UDP).
  // A backend that segments for us (a TAP told by TUNSETOFFLOAD) never
  // sends such frames; the loopback backend may.
  if (!accepted_.Has(kNetFGuestCsum)) hdr[offsetof(VirtioNetHdr, flags)] = 0;
  const uint8_t gso = hdr[offsetof(VirtioNetHdr, gso_type)];
  if (gso == kNetHdrGsoNone) return true;
  if ((gso & kNetHdrGsoEcn) && !accepted_.Has(kNetFGuestEcn)) return false;
  switch (gso & ~kNetHdrGsoEcn) {
    case kNetHdrGsoTcpv4:
      return accepted_.Has(kNetFGuestTso4);
    case kNetHdrGsoTcpv6:
      return accepted_.Has(kNetFGuestTso6);
    case kNetHdrGsoUdp:
      return accepted_.Has(kNetFGuestUfo);
    default:
      return false;
  }
}

bool NetDevice::DeliverPending(SplitQueue& q) {
  // §5.1.6.3.2: "The device MUST use only a single descriptor if
  // VIRTIO_NET_F_MRG_RXBUF was not negotiated" (one chain per packet); with
  // it, as many chains as the packet needs.
  const size_t max_chains = mergeable_ ? q.size() : 1;
  while (rx_room_ < pending_ && rx_chains_.size() < max_chains) {
    std::optional<DescriptorChain> chain = q.Pop();
    if (!chain.has_value()) {
      if (q.broken()) Fail(q.status());
      return false;
    }
    absl::StatusOr<Request> req = Request::Collect(*chain, context_->memory());
    if (!req.ok()) {
      Fail(Annotate(req.status(), "virtio-net receive chain"));
      return false;
    }
    if (req->writable_bytes() == 0) {
      Fail(absl::InvalidArgumentError(
          "virtio-net receive chain without device-writable buffers"));
      return false;
    }
    rx_room_ += req->writable_bytes();
    rx_chains_.push_back(*std::move(req));
  }
  if (rx_room_ < pending_) {
    // The frame does not fit even the most buffers it may use: dropped. The
    // chains stay for the next frame.
    ++stats_.rx_dropped;
    pending_ = 0;
    return true;
  }
  // Chains kept from a dropped frame may be more than this one needs: use
  // only as many as it fills, "all buffers but the last ... completely"
  // (§5.1.6.4.1), and keep the rest.
  size_t used = 0;
  for (uint64_t room = 0; room < pending_; ++used) {
    room += rx_chains_[used].writable_bytes();
  }
  uint8_t* hdr = rx_buffer_.data();
  if (hdr_size_ == kNetHdrSize) {
    // §5.1.6.4.1: "If VIRTIO_NET_F_MRG_RXBUF has been negotiated, the device
    // MUST set num_buffers to indicate the number of buffers the packet
    // (including the header) is spread over" (and 1 without it).
    const uint16_t num = static_cast<uint16_t>(used);
    hdr[offsetof(VirtioNetHdr, num_buffers)] = static_cast<uint8_t>(num);
    hdr[offsetof(VirtioNetHdr, num_buffers) + 1] =
        static_cast<uint8_t>(num >> 8);
  }
  if (swap_) SwapHeader(hdr);
  size_t at = 0;
  for (size_t i = 0; i < used; ++i) {
    Request& req = rx_chains_[i];
    const size_t take =
        std::min<uint64_t>(req.writer().remaining(), pending_ - at);
    if (absl::Status s = req.writer().Write(
            absl::MakeConstSpan(rx_buffer_.data() + at, take));
        !s.ok()) {
      Fail(Annotate(s, "virtio-net receive chain"));
      return false;
    }
    q.PushUsed(req.head(), static_cast<uint32_t>(take));
    rx_room_ -= req.writable_bytes();
    at += take;
  }
  rx_chains_.erase(rx_chains_.begin(),
                   rx_chains_.begin() + static_cast<ptrdiff_t>(used));
  ++stats_.rx_frames;
  stats_.rx_bytes += pending_ - hdr_size_;
  stats_.rx_buffers += used;
  pending_ = 0;
  return true;
}

}  // namespace vmmkit::virtio
