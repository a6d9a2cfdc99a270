// virtio-device/console.h: virtio-console (virtio 1.2 §5.3), a single port
// (no MULTIPORT) over a pair of file descriptors: stdin/stdout, a pty, a Unix
// socket (the same fd twice), or a file for output with no input.
//
//   VMMKIT_ASSIGN_OR_RETURN(
//       std::unique_ptr<ConsoleDevice> console,
//       ConsoleDevice::Create({.input_fd = 0, .output_fd = 1}));
//   DeviceState state(*console, memory);   // then a transport in front
//   // The VMM polls console->backend_fds() for input and, while
//   // console->output_pending(), console->output_fd() for POLLOUT; either
//   // way it calls console->ProcessBackend().
//   console->SetSize(132, 43);              // a terminal resize
//
// Polling: register the input fd edge-triggered (EPOLLET). Input that finds
// no receive buffers stays in the fd, which stays readable; the driver's
// kick (ProcessQueue(0)) resumes reading, and a level-triggered poller would
// spin meanwhile.
//
// Queues: receiveq 0 (input toward the driver), transmitq 1 (output).
// Configuration: cols and rows (VIRTIO_CONSOLE_F_SIZE), max_nr_ports (1),
// emerg_wr (VIRTIO_CONSOLE_F_EMERG_WRITE, if enabled).
//
// Output: the bytes of each transmit chain are written to the output fd; what
// the fd does not take at once (a partial write, EAGAIN) is kept, up to
// kMaxPendingOutput bytes, and written by later calls. A chain is completed
// once all its bytes are written or kept; when the pending bytes reach the
// limit the device stops taking transmit chains until the fd drains, so
// nothing is lost and a slow reader slows the guest. Bytes whose fd failed
// (EPIPE, EIO, ...) are dropped and counted; the guest goes on. Writing to a
// pipe whose reader is gone raises SIGPIPE unless the VMM ignores it (sockets
// are written with MSG_NOSIGNAL).
//
// Input: ProcessBackend() reads what the input fd has (non-blocking) straight
// into posted receive buffers; input that finds no buffers stays in the fd,
// and the device asks the driver for a kick when it posts buffers. End of
// input (or a read error) stops reading; input_closed() tells.
//
// Create() sets O_NONBLOCK on both fds (a file status flag, shared with
// every other user of the same open file: the caller restores it if needed).
// The fds are borrowed: they must stay open while the device lives.
// Thread-compatible: one thread at a time (see virtio_device.h).
#ifndef VMMKIT_VIRTIO_DEVICE_CONSOLE_H_
#define VMMKIT_VIRTIO_DEVICE_CONSOLE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "virtio-device/chain_io.h"
#include "virtio-device/config_space.h"
#include "virtio-device/virtio_device.h"

namespace vmmkit::virtio {

// Device-specific feature bits (§5.3.3).
inline constexpr unsigned kConsoleFSize = 0;
inline constexpr unsigned kConsoleFMultiport = 1;
inline constexpr unsigned kConsoleFEmergWrite = 2;

// struct virtio_console_config (§5.3.4), little-endian as stored.
struct VirtioConsoleConfig {
  uint16_t cols;
  uint16_t rows;
  uint32_t max_nr_ports;
  uint32_t emerg_wr;
};
static_assert(sizeof(VirtioConsoleConfig) == 12);
static_assert(offsetof(VirtioConsoleConfig, rows) == 2);
static_assert(offsetof(VirtioConsoleConfig, max_nr_ports) == 4);
static_assert(offsetof(VirtioConsoleConfig, emerg_wr) == 8);

struct ConsoleStats {
  uint64_t rx_bytes = 0;         // input delivered to the driver
  uint64_t tx_bytes = 0;         // guest output written to the output fd
  uint64_t rx_chains = 0;        // receive buffers filled and returned
  uint64_t tx_chains = 0;        // transmit buffers consumed and returned
  uint64_t tx_dropped = 0;       // output bytes lost to a failed or absent fd
  uint64_t emergency_bytes = 0;  // characters written through emerg_wr
  uint64_t partial_writes = 0;   // writes the fd took only part of
};

class ConsoleDevice final : public VirtioDevice {
 public:
  static constexpr uint16_t kReceiveQueue = 0;
  static constexpr uint16_t kTransmitQueue = 1;
  static constexpr uint16_t kDefaultQueueSize = 64;
  static constexpr size_t kMaxPendingOutput = 64 * 1024;

  struct Options {
    int input_fd = -1;   // -1: no input
    int output_fd = -1;  // -1: output discarded (counted as dropped)
    uint16_t cols = 80;
    uint16_t rows = 24;
    bool emergency_write = false;  // offer VIRTIO_CONSOLE_F_EMERG_WRITE
    uint16_t queue_size = kDefaultQueueSize;  // a power of two, 1..32768
  };

  // kInvalidArgument for a bad queue size; the errno of fcntl for a bad fd.
  static absl::StatusOr<std::unique_ptr<ConsoleDevice>> Create(
      const Options& options);

  DeviceType type() const override { return DeviceType::kConsole; }
  absl::Span<const uint16_t> queue_max_sizes() const override {
    return queue_sizes_;
  }
  Features offered_features() const override;
  uint32_t config_size() const override { return config_.size(); }
  void ReadConfig(uint32_t offset, absl::Span<uint8_t> data,
                  Endian endian) override;
  void WriteConfig(uint32_t offset, absl::Span<const uint8_t> data,
                   Endian endian) override;
  uint32_t config_generation() const override { return config_.generation(); }
  absl::Status Activate(DeviceContext& context) override;
  void Reset() override;
  void ProcessQueue(uint16_t index) override;
  // The input fd (none without input, or after its end).
  std::vector<int> backend_fds() const override;
  // Writes pending output, takes transmit chains held back by it, and reads
  // input into receive buffers.
  void ProcessBackend() override;

  // A terminal resize: updates cols/rows and, if the driver negotiated
  // VIRTIO_CONSOLE_F_SIZE, sends a configuration change notification
  // (§5.3.6: "a configuration change notification indicates that the updated
  // size can be read from the configuration fields").
  void SetSize(uint16_t cols, uint16_t rows);
  uint16_t cols() const;
  uint16_t rows() const;

  // Output bytes waiting for the output fd to take them.
  size_t output_pending() const { return out_.size() - out_head_; }
  int output_fd() const { return out_fd_; }
  bool input_closed() const { return input_closed_; }
  // Why output or input stopped (ok while they work).
  const absl::Status& output_status() const { return output_status_; }
  const absl::Status& input_status() const { return input_status_; }
  const ConsoleStats& stats() const { return stats_; }

 private:
  ConsoleDevice(const Options& options, bool out_is_socket);

  void ProcessTx();
  void ProcessRx();
  // Moves transmit chains into the output buffer: false once it is full.
  bool TakeTxChains(SplitQueue& q, bool& added);
  // Appends output (dropped if the buffer is full) and writes what the fd
  // takes.
  void QueueOutput(absl::Span<const uint8_t> bytes);
  // Writes pending output: true when none is left.
  bool FlushOutput();
  void Fail(const absl::Status& why);

  const uint16_t queue_sizes_[2];
  const int in_fd_;
  const int out_fd_;
  const bool out_is_socket_;
  const bool emergency_write_;
  ConfigSpace config_;
  DeviceContext* context_ = nullptr;
  bool size_negotiated_ = false;
  bool stopped_ = false;
  bool input_closed_ = false;
  absl::Status input_status_;
  absl::Status output_status_;
  // Output not yet written: out_[out_head_ ..].
  std::vector<uint8_t> out_;
  size_t out_head_ = 0;
  // A transmit chain whose bytes did not all fit the output buffer.
  std::optional<Request> tx_current_;
  ConsoleStats stats_;
};

}  // namespace vmmkit::virtio

#endif  // VMMKIT_VIRTIO_DEVICE_CONSOLE_H_
