// vhost-user/backend.h: Backend, the vhost-user back end that serves one
// vmmkit::virtio::VirtioDevice to a front-end (QEMU, Cloud Hypervisor,
// crosvm) over a Unix socket.
//
//   VMMKIT_ASSIGN_OR_RETURN(std::unique_ptr<Backend> backend,
//                           Backend::Create(*blk, {}));
//   VMMKIT_RETURN_IF_ERROR(backend->Listen("/run/vmmkit-blk.sock"));
//   EventLoop loop;                       // or the VMM's own epoll loop:
//   for (;;) {                            //   poll backend->watches(),
//     VMMKIT_RETURN_IF_ERROR(loop.RunOnce(*backend, -1));  // call OnReady()
//   }
//
// No threads and no blocking: the Backend lists the fds to poll (watches():
// the listening socket while no front-end is connected, the connection, each
// started ring's kick eventfd, the device's backend fds) and is told when one
// is readable (OnReady()). Every socket and vring fd is non-blocking, so a
// front-end that stalls mid-message or hands over a pipe for a kick fd cannot
// hang the caller. One front-end is served at a time; others wait in the
// listen backlog until it disconnects.
//
// Protocol (vhost-user.rst). Offered: the device's features (low 64 bits) and
// VHOST_USER_F_PROTOCOL_FEATURES; protocol features MQ, REPLY_ACK, CONFIG,
// RESET_DEVICE. Not offered, so their requests are refused: LOG_SHMFD
// (SET_LOG_BASE/FD), CONFIGURE_MEM_SLOTS, STATUS, INFLIGHT_SHMFD, BACKEND_REQ
// (so configuration change notifications cannot reach the front-end; they
// are counted), CROSS_ENDIAN, and polling rings (a kick with NOFD).
//
// Rings. A ring starts once it has a memory table, a size (SET_VRING_NUM), its
// addresses (SET_VRING_ADDR, front-end user addresses translated through the
// table) and a kick fd, and is enabled: without VHOST_USER_F_PROTOCOL_FEATURES
// in SET_FEATURES rings are enabled from the start; with it, by
// SET_VRING_ENABLE 1. Starting takes the avail index from SET_VRING_BASE and
// the used index from the used ring itself. The device is activated (its
// DeviceContext is this Backend) when every ring that has been configured
// is started, and rings that start later join it; each ring is processed once
// when it starts (buffers may have been posted before the back end took
// over). GET_VRING_BASE stops a ring, closes its kick fd (a stopped ring
// starts again only with a new SET_VRING_KICK) and answers its next avail
// index; when no ring is left started the device is reset. A disconnect stops
// everything, flushes and resets the device, unmaps memory, closes every fd,
// and the back end accepts the next front-end.
//
// Legacy: a front-end that does not set VERSION_1 drives a legacy driver's
// device: rings and config in the guest's native order (Options::guest_endian),
// features cut to 32 bits, DeviceContext::legacy() true.
//
// Errors. Every request is checked (decoding: message.h; then state: ring
// index < queue count, num a power of two within the device maximum,
// SET_VRING_* addresses before SET_MEM_TABLE, addresses outside the table,
// features not offered, ...). A refused request is answered with a non-zero
// u64 when the front-end asked for an ack (REPLY_ACK negotiated and
// NEED_REPLY set); GET_CONFIG is answered with an empty payload; any other
// refused request closes the connection, since the front-end would not learn
// of the failure and would run on a state the back end does not have.
// Unknown requests follow the same rule. A new SET_MEM_TABLE while a ring is
// started is refused unless it is identical to the current table: the
// device's in-flight requests hold addresses into the old mapping.
//
// Device errors (DeviceContext::MarkNeedsReset, a ring the driver broke):
// the device is no longer served (kicks are drained and ignored), every
// ring's error eventfd is signalled, and last_error() says why; the front-end
// recovers by stopping the rings (or disconnecting).
//
// Thread-compatible: one thread calls all methods (the event loop's).
#ifndef VMMKIT_VHOST_USER_BACKEND_H_
#define VMMKIT_VHOST_USER_BACKEND_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/scoped_fd.h"
#include "vhost-user/memory.h"
#include "vhost-user/message.h"
#include "virtio-device/virtio_device.h"

namespace vmmkit::vhost_user {

using virtio::DeviceContext;
using virtio::Endian;
using virtio::Features;
using virtio::SplitQueue;
using virtio::VirtioDevice;

// Protocol features the back end offers.
inline constexpr uint64_t kSupportedProtocolFeatures =
    (uint64_t{1} << kProtocolMq) | (uint64_t{1} << kProtocolReplyAck) |
    (uint64_t{1} << kProtocolConfig) | (uint64_t{1} << kProtocolResetDevice);

struct BackendStats {
  uint64_t connections = 0;
  uint64_t disconnects = 0;
  uint64_t messages = 0;
  uint64_t refused = 0;           // requests answered with an error
  uint64_t kicks = 0;             // kick eventfd reads that reached a device
  uint64_t ignored_kicks = 0;     // kicks for stopped/disabled rings
  uint64_t calls = 0;             // call eventfd signals
  uint64_t suppressed_calls = 0;  // NotifyUsed the driver did not want
  uint64_t config_changes = 0;    // NotifyConfigChange (not deliverable)
  uint64_t activations = 0;       // device Activate() calls that succeeded
};

class Backend final : public DeviceContext {
 public:
  struct Options {
    // The guest's native byte order, used for a legacy (no VERSION_1) driver.
    Endian guest_endian = Endian::kLittle;
    // Told about refused requests, disconnects and device errors, one line
    // each (the daemon prints them); may be empty.
    std::function<void(const std::string&)> log;
  };

  // What to poll, and for what (see EventLoop).
  enum class Source : uint8_t { kListen, kConnection, kKick, kDevice };
  struct Watch {
    int fd = -1;
    Source source = Source::kConnection;
    uint16_t queue = 0;           // for kKick
    bool edge_triggered = false;  // kDevice fds are (see virtio_device.h)
    bool operator==(const Watch&) const = default;
  };

  // `device` must outlive the Backend. kInvalidArgument if the device has no
  // queues or more than 256 (a vring index is 8 bits).
  static absl::StatusOr<std::unique_ptr<Backend>> Create(VirtioDevice& device,
                                                         Options options);
  static absl::StatusOr<std::unique_ptr<Backend>> Create(VirtioDevice& device) {
    return Create(device, Options());
  }
  ~Backend() override;
  Backend(const Backend&) = delete;
  Backend& operator=(const Backend&) = delete;

  // Creates a listening Unix socket at `path`, replacing a stale socket file
  // (anything else at `path` is left alone: kAlreadyExists). The file
  // appears only once the socket listens (it is bound under a temporary name
  // and renamed), so waiting for the file is enough before connecting.
  absl::Status Listen(const std::string& path);
  // The listening socket, or -1.
  int listen_fd() const { return listen_fd_.get(); }
  // Serves an already connected stream socket (a socketpair in tests).
  // kFailedPrecondition if a front-end is connected.
  absl::Status Attach(ScopedFd connection);
  bool connected() const { return conn_.valid(); }

  // The fds to poll now. Changes after OnReady() calls; watch_generation()
  // changes whenever an fd in the list was closed or replaced, so that a
  // poller re-registers (an fd number may be reused).
  std::vector<Watch> watches() const;
  uint64_t watch_generation() const { return generation_; }
  // `watch` (from watches()) is readable.
  void OnReady(const Watch& watch);

  // The individual handlers OnReady() dispatches to.
  void OnListenReadable();
  void OnConnectionReadable();
  void OnKick(uint16_t queue);
  void OnDeviceReadable();

  // Drops the front-end (if any) as if it had disconnected.
  void Disconnect(const absl::Status& why);

  // Why the last connection closed or the device stopped (ok if it did not).
  const absl::Status& last_error() const { return last_error_; }
  const BackendStats& stats() const { return stats_; }
  bool device_active() const { return device_active_; }
  VirtioDevice& device() { return device_; }

  // ---- DeviceContext, for the device.
  const virtqueue::GuestMemory& memory() const override { return *memory_; }
  SplitQueue* queue(uint16_t index) override;
  const Features& features() const override { return features_; }
  bool legacy() const override { return !features_.Has(virtio::kFVersion1); }
  void NotifyUsed(uint16_t index) override;
  void NotifyConfigChange() override;
  void MarkNeedsReset(const absl::Status& why) override;

 private:
  struct Ring {
    explicit Ring(uint16_t max) : queue(max) {}
    SplitQueue queue;
    uint16_t num = 0;  // 0: not set
    bool addr_set = false;
    VringAddr addr;
    uint16_t base = 0;
    ScopedFd kick, call, err;
    bool enable_flag = false;  // SET_VRING_ENABLE
    bool started = false;
  };
  // The reply to a request, if it has one.
  struct Reply {
    bool send = false;
    std::vector<uint8_t> bytes;
  };

  Backend(VirtioDevice& device, Options options);

  // One complete message in rx_; then resets the reader.
  void HandleMessage();
  // Handles a decoded request: its explicit reply in `reply`, or an error.
  absl::Status Handle(Message& msg, Reply& reply);
  absl::Status SetFeatures(uint64_t value);
  absl::Status SetMemTable(Message& msg);
  absl::Status SetVringFd(Message& msg);
  absl::Status GetConfig(const Message& msg, Reply& reply);
  absl::Status SetConfig(const Message& msg);
  absl::StatusOr<Ring*> RingAt(uint32_t index);
  absl::Status CheckRingStopped(uint32_t index) const;

  bool RingEnabled(const Ring& ring) const;
  // Starts ring `index` if it has all it needs; activates the device.
  absl::Status MaybeStart(uint16_t index);
  absl::Status StartRing(uint16_t index);
  // Stops ring `index`; the device is reset once no ring is left started.
  void StopRing(uint16_t index);
  void StopAll();
  // RESET_OWNER / RESET_DEVICE / disconnect: back to a fresh connection's
  // state (memory unmapped, ring fds closed).
  void ResetState();
  absl::Status SendReply(absl::Span<const uint8_t> bytes);
  void CloseConnection(const absl::Status& why);
  void Log(const std::string& line) const {
    if (options_.log) options_.log(line);
  }
  // Runs the device on ring `index` (active device, started enabled ring).
  void Process(uint16_t index);
  Endian ring_endian() const {
    return legacy() ? options_.guest_endian : Endian::kLittle;
  }

  VirtioDevice& device_;
  const Options options_;
  const uint64_t offered_;  // GET_FEATURES

  ScopedFd listen_fd_;
  std::string listen_path_;
  ScopedFd conn_;
  // The message being read: header, then payload; fds that came with it.
  std::vector<uint8_t> rx_;
  size_t rx_need_ = kHeaderSize;
  size_t rx_received_ = 0;
  bool rx_have_header_ = false;
  std::vector<ScopedFd> rx_fds_;

  bool owner_ = false;
  uint64_t acked_ = 0;  // SET_FEATURES as sent (bit 30 included)
  Features features_;   // the device's share of it
  uint64_t protocol_features_ = 0;
  std::unique_ptr<VhostUserMemory> memory_;
  std::vector<Ring> rings_;
  bool device_active_ = false;
  bool needs_reset_ = false;

  uint64_t generation_ = 0;
  absl::Status last_error_;
  BackendStats stats_;
};

}  // namespace vmmkit::vhost_user

#endif  // VMMKIT_VHOST_USER_BACKEND_H_
