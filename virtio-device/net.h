// virtio-device/net.h: virtio-net (virtio 1.2 §5.1), one rx/tx queue pair,
// over a NetBackend: a TAP (tap.h) or, for tests, LoopbackNetBackend.
//
//   VMMKIT_ASSIGN_OR_RETURN(std::unique_ptr<TapBackend> tap,
//                           TapBackend::Create("vmtap0"));
//   VMMKIT_ASSIGN_OR_RETURN(std::unique_ptr<NetDevice> net,
//                           NetDevice::Create(std::move(tap), {.mac = mac}));
//   DeviceState state(*net, memory);     // then a transport in front
//   // The VMM polls net->backend_fds() and calls net->ProcessBackend() when
//   // one becomes readable; kicks arrive as ProcessQueue().
//
// Polling: register backend_fds() edge-triggered (EPOLLET). While the driver
// has no receive buffers posted, frames wait in the backend and its fd stays
// readable; the device then relies on the driver's kick (ProcessQueue(0))
// to resume, and a level-triggered poller would spin.
//
// Queues: receiveq 0, transmitq 1 (no control queue, no multiqueue).
// Configuration: mac, status (LINK_UP), max_virtqueue_pairs (1), mtu.
//
// The header. Every packet in either direction starts with a virtio_net_hdr:
// 12 bytes (with num_buffers) for a VERSION_1 driver or for a legacy driver
// that negotiated MRG_RXBUF, 10 bytes for a legacy driver without MRG_RXBUF
// (§5.1.6 "Legacy Interface": without that feature "the structure was 2 bytes
// shorter"). Its 16-bit fields are little-endian for a VERSION_1 driver and
// guest-native for a legacy one (the queue's byte order). Backends always see
// the header little-endian, in the size the driver uses (TapBackend sets the
// TAP to little-endian with TUNSETVNETLE; NetDevice converts).
//
// Receive: frames move from the backend into posted receive buffers. With
// MRG_RXBUF a frame may span several chains and num_buffers says how many;
// without it one chain holds one whole frame. A frame larger than the chain
// at the head of the queue (or, with MRG_RXBUF, than a queue's worth of
// chains) is dropped, and the chains stay for the next frame. Checksum and
// GSO fields the driver did not negotiate are cleared or the frame dropped
// (§5.1.6.4.1). A frame that finds no buffers waits: either in the backend or,
// if already read, in the device, and the device asks the driver for a kick
// (EnableNotification) so that posting buffers resumes delivery.
//
// Transmit: header and frame may be split across descriptors in any way
// (ANY_LAYOUT, implied by VERSION_1); a chain shorter than the header is a
// malformed request (DEVICE_NEEDS_RESET); frames larger than kMaxFrameSize
// and frames the backend refuses are dropped and completed (counted in
// stats()).
//
// Thread-compatible: one thread at a time (see virtio_device.h).
#ifndef VMMKIT_VIRTIO_DEVICE_NET_H_
#define VMMKIT_VIRTIO_DEVICE_NET_H_

#include <sys/uio.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "virtio-device/chain_io.h"
#include "virtio-device/config_space.h"
#include "virtio-device/virtio_device.h"

namespace vmmkit::virtio {

// Device-specific feature bits (§5.1.3).
inline constexpr unsigned kNetFCsum = 0;       // device takes partial csums
inline constexpr unsigned kNetFGuestCsum = 1;  // driver takes partial csums
inline constexpr unsigned kNetFMtu = 3;        // mtu in config
inline constexpr unsigned kNetFMac = 5;        // mac in config
inline constexpr unsigned kNetFGuestTso4 = 7;  // driver takes TSOv4
inline constexpr unsigned kNetFGuestTso6 = 8;  // driver takes TSOv6
inline constexpr unsigned kNetFGuestEcn = 9;   // driver takes TSO with ECN
inline constexpr unsigned kNetFGuestUfo = 10;  // driver takes UFO
inline constexpr unsigned kNetFHostTso4 = 11;  // device takes TSOv4
inline constexpr unsigned kNetFHostTso6 = 12;  // device takes TSOv6
inline constexpr unsigned kNetFHostEcn = 13;   // device takes TSO with ECN
inline constexpr unsigned kNetFHostUfo = 14;   // device takes UFO
inline constexpr unsigned kNetFMrgRxbuf = 15;  // mergeable receive buffers
inline constexpr unsigned kNetFStatus = 16;    // status in config

// The offload bits a backend may support (NetBackend::offload_features).
Features NetOffloadFeatures();

// struct virtio_net_hdr (§5.1.6). num_buffers is present only in the 12-byte
// form. Multi-byte fields are in the byte order of the holder: the driver's
// in guest memory, little-endian toward a backend.
struct VirtioNetHdr {
  uint8_t flags;
  uint8_t gso_type;
  uint16_t hdr_len;
  uint16_t gso_size;
  uint16_t csum_start;
  uint16_t csum_offset;
  uint16_t num_buffers;
};
static_assert(sizeof(VirtioNetHdr) == 12);
static_assert(offsetof(VirtioNetHdr, hdr_len) == 2);
static_assert(offsetof(VirtioNetHdr, csum_offset) == 8);
static_assert(offsetof(VirtioNetHdr, num_buffers) == 10);
inline constexpr size_t kNetHdrSize = 12;        // VERSION_1 or MRG_RXBUF
inline constexpr size_t kLegacyNetHdrSize = 10;  // legacy without MRG_RXBUF

inline constexpr uint8_t kNetHdrFNeedsCsum = 1;
inline constexpr uint8_t kNetHdrFDataValid = 2;
inline constexpr uint8_t kNetHdrGsoNone = 0;
inline constexpr uint8_t kNetHdrGsoTcpv4 = 1;
inline constexpr uint8_t kNetHdrGsoUdp = 3;
inline constexpr uint8_t kNetHdrGsoTcpv6 = 4;
inline constexpr uint8_t kNetHdrGsoEcn = 0x80;

// struct virtio_net_config (§5.1.4), little-endian as stored.
struct VirtioNetConfig {
  uint8_t mac[6];
  uint16_t status;
  uint16_t max_virtqueue_pairs;
  uint16_t mtu;
};
static_assert(sizeof(VirtioNetConfig) == 12);
static_assert(offsetof(VirtioNetConfig, status) == 6);
static_assert(offsetof(VirtioNetConfig, max_virtqueue_pairs) == 8);
static_assert(offsetof(VirtioNetConfig, mtu) == 10);
inline constexpr uint16_t kNetSLinkUp = 1;

using MacAddress = std::array<uint8_t, 6>;

// Largest frame (without header) a NetDevice transmits and a backend is
// expected to deliver: 64 KiB of GSO payload plus Ethernet and VLAN headers.
inline constexpr size_t kMaxNetFrameSize = 65550;

// Where frames go and come from. Packets cross this interface as one
// virtio-net header (hdr_size bytes, little-endian fields) followed by the
// Ethernet frame. Thread-compatible.
class NetBackend {
 public:
  virtual ~NetBackend() = default;

  // The offload features (a subset of NetOffloadFeatures()) this backend can
  // honour; NetDevice offers no others.
  virtual Features offload_features() const = 0;
  // A driver started the device with `features` negotiated: from now on
  // headers are `hdr_size` bytes (10 or 12) in both directions, and frames
  // sent toward the driver may use the GUEST_* offloads it accepted.
  virtual absl::Status Configure(const Features& features, size_t hdr_size) = 0;
  // Sends one packet gathered from `iov` (the header first). An error means
  // this packet was dropped; the device goes on.
  virtual absl::Status Send(absl::Span<const iovec> iov) = 0;
  // A file descriptor that becomes readable when Receive() may return a
  // packet, or -1.
  virtual int rx_fd() const = 0;
  // Reads one packet into `buffer` without blocking: its length, or 0 when
  // none is waiting. An error is a backend failure.
  virtual absl::StatusOr<size_t> Receive(absl::Span<uint8_t> buffer) = 0;
};

// Two in-process backends wired back to back: what one sends, the other
// receives (up to kMaxQueued packets wait; more are refused). Each side's
// rx_fd() is an eventfd that is readable exactly while packets wait. Headers
// are carried in their 10-byte form, so the two sides may use different
// header sizes. A side not attached to a device serves a test as a packet
// source and sink (Send / Receive directly). Thread-compatible (both sides
// together).
class LoopbackNetBackend final : public NetBackend {
 public:
  static constexpr size_t kMaxQueued = 256;

  // Both sides offer `offloads` (all offload bits by default).
  static absl::StatusOr<std::pair<std::unique_ptr<LoopbackNetBackend>,
                                  std::unique_ptr<LoopbackNetBackend>>>
  CreatePair(Features offloads = NetOffloadFeatures());
  ~LoopbackNetBackend() override;

  Features offload_features() const override { return offloads_; }
  absl::Status Configure(const Features& features, size_t hdr_size) override;
  absl::Status Send(absl::Span<const iovec> iov) override;
  int rx_fd() const override { return event_fd_; }
  absl::StatusOr<size_t> Receive(absl::Span<uint8_t> buffer) override;

  size_t hdr_size() const { return hdr_size_; }
  const Features& configured_features() const { return features_; }
  size_t queued() const { return inbox_.size(); }
  uint64_t configure_calls() const { return configure_calls_; }

 private:
  LoopbackNetBackend(int event_fd, Features offloads)
      : event_fd_(event_fd), offloads_(offloads) {}
  void Deliver(std::vector<uint8_t> packet);  // into this side's inbox

  int event_fd_;
  Features offloads_;
  Features features_;
  size_t hdr_size_ = kNetHdrSize;
  uint64_t configure_calls_ = 0;
  LoopbackNetBackend* peer_ = nullptr;
  // Packets waiting, each a 10-byte header then the frame.
  std::deque<std::vector<uint8_t>> inbox_;
};

struct NetStats {
  uint64_t tx_frames = 0;
  uint64_t tx_bytes = 0;    // frame bytes, headers not counted
  uint64_t tx_dropped = 0;  // oversize, or refused by the backend
  uint64_t rx_frames = 0;
  uint64_t rx_bytes = 0;
  // Frames that did not fit the buffers they may use, carried an offload
  // the driver did not negotiate, or were held at a reset.
  uint64_t rx_dropped = 0;
  uint64_t rx_buffers = 0;  // chains used for receiving
};

class NetDevice final : public VirtioDevice {
 public:
  static constexpr uint16_t kRxQueue = 0;
  static constexpr uint16_t kTxQueue = 1;
  static constexpr uint16_t kDefaultQueueSize = 256;
  static constexpr size_t kMaxFrameSize = kMaxNetFrameSize;

  struct Options {
    // Absent: a random, locally administered unicast address.
    std::optional<MacAddress> mac;
    // Non-zero: offered as VIRTIO_NET_F_MTU.
    uint16_t mtu = 0;
    // Both queues; a power of two in 1..32768.
    uint16_t queue_size = kDefaultQueueSize;
  };

  // kInvalidArgument for a bad queue size or a multicast MAC.
  static absl::StatusOr<std::unique_ptr<NetDevice>> Create(
      std::unique_ptr<NetBackend> backend, Options options);

  DeviceType type() const override { return DeviceType::kNet; }
  absl::Span<const uint16_t> queue_max_sizes() const override {
    return queue_sizes_;
  }
  Features offered_features() const override;
  absl::Status AcceptFeatures(const Features& features) override;
  uint32_t config_size() const override { return config_.size(); }
  void ReadConfig(uint32_t offset, absl::Span<uint8_t> data,
                  Endian endian) override;
  void WriteConfig(uint32_t offset, absl::Span<const uint8_t> data,
                   Endian endian) override;
  uint32_t config_generation() const override { return config_.generation(); }
  absl::Status Activate(DeviceContext& context) override;
  void Reset() override;
  void ProcessQueue(uint16_t index) override;
  std::vector<int> backend_fds() const override;
  void ProcessBackend() override;

  MacAddress mac() const;
  bool link_up() const;
  // Changes the link status; with VIRTIO_NET_F_STATUS negotiated the driver
  // gets a configuration change notification.
  void SetLinkUp(bool up);
  // Header size of the active driver (10 or 12), 0 while not active.
  size_t header_size() const { return context_ ? hdr_size_ : 0; }
  NetBackend& backend() { return *backend_; }
  const NetStats& stats() const { return stats_; }

 private:
  NetDevice(std::unique_ptr<NetBackend> backend, const Options& options,
            const MacAddress& mac);

  void ProcessTx();
  void ProcessRx();
  // Delivers the pending frame into receive buffers: true if it was
  // delivered (or dropped), false if it must wait for buffers (or the device
  // stopped).
  bool DeliverPending(SplitQueue& q);
  // Clears what the driver did not negotiate from a received header (in
  // little-endian): false if the frame cannot be given to it at all.
  bool SanitizeRxHeader(uint8_t* hdr) const;
  // Header fields between little-endian and the driver's order.
  void SwapHeader(uint8_t* hdr) const;
  // A driver error or backend failure: DEVICE_NEEDS_RESET, and no more
  // processing until Reset().
  void Fail(const absl::Status& why);

  std::unique_ptr<NetBackend> backend_;
  const uint16_t queue_sizes_[2];
  ConfigSpace config_;
  Features accepted_;
  DeviceContext* context_ = nullptr;
  size_t hdr_size_ = kNetHdrSize;
  bool mergeable_ = false;
  bool swap_ = false;  // legacy big-endian driver: header fields swapped
  bool stopped_ = false;
  // A frame read from the backend that found no buffers yet.
  std::vector<uint8_t> rx_buffer_;
  size_t pending_ = 0;  // bytes of rx_buffer_ in use (0: none)
  // Receive chains taken for the pending frame (or kept after a drop), and
  // the device-writable bytes they hold.
  std::vector<Request> rx_chains_;
  uint64_t rx_room_ = 0;
  // Frames gathered from more pieces than a writev takes are copied here.
  std::vector<uint8_t> tx_scratch_;
  NetStats stats_;
};

}  // namespace vmmkit::virtio

#endif  // VMMKIT_VIRTIO_DEVICE_NET_H_
