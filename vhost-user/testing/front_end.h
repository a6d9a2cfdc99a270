// vhost-user/testing/front_end.h: FakeFrontEnd, the front-end side of a
// vhost-user connection for tests: "guest" memory in a memfd, rings laid out
// by virtqueue::testing::DriverQueue, and the requests QEMU sends, in QEMU's
// order.
//
//   ASSERT_OK_AND_ASSIGN(auto fe, FakeFrontEnd::Create({}));
//   ASSERT_OK(backend->Attach(fe->TakeBackendSocket()));
//   fe->set_pump([&] { backend->OnConnectionReadable(); });  // same thread
//   ASSERT_OK(fe->Init());                 // GET_FEATURES .. SET_OWNER
//   ASSERT_OK(fe->Start(features, {{.size = 256, .desc = 0x10000, ...}}));
//   ASSERT_OK_AND_ASSIGN(uint16_t head, fe->ring(0).AddChain({...}));
//   fe->Kick(0); backend->OnKick(0);
//   EXPECT_TRUE(fe->CallSignalled(0));
//
// Over a socketpair the back end runs in the test's thread, so after every
// request the front-end calls the pump (which lets the back end read it)
// before it reads a reply. Against a separate process (the daemon) the pump
// is empty and replies are awaited with a timeout; use REPLY_ACK there so
// that every request is answered.
//
// Everything the back end sends is checked (REPLY flag, request code, size);
// a connection the back end closed reads as kUnavailable.
// Thread-compatible.
#ifndef VMMKIT_VHOST_USER_TESTING_FRONT_END_H_
#define VMMKIT_VHOST_USER_TESTING_FRONT_END_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "base/scoped_fd.h"
#include "vhost-user/message.h"
#include "virtqueue/guest_memory.h"
#include "virtqueue/testing/driver_queue.h"

namespace vmmkit::vhost_user::testing {

using virtqueue::testing::DriverQueue;

class FakeFrontEnd {
 public:
  struct Region {
    uint64_t guest_base = 0;
    uint64_t size = 0;  // a multiple of the page size
  };
  struct Options {
    // Guest memory: one memfd behind all regions, region i at the file
    // offset of the sizes before it.
    std::vector<Region> regions = {{0, 4 << 20}};
    // The front-end's "user address" of guest address g in region i is
    // user_base + g (the back end only translates them).
    uint64_t user_base = 0x7f0000000000;
    // Milliseconds to wait for a reply.
    int timeout_ms = 5000;
  };

  // A socketpair: TakeBackendSocket() is the back end's end.
  static absl::StatusOr<std::unique_ptr<FakeFrontEnd>> Create(Options options);
  // Connects to a listening back end at `path`.
  static absl::StatusOr<std::unique_ptr<FakeFrontEnd>> Connect(
      const std::string& path, Options options);

  ScopedFd TakeBackendSocket() { return std::move(backend_end_); }
  void set_pump(std::function<void()> pump) { pump_ = std::move(pump); }
  const virtqueue::GuestMemoryMmap& memory() const { return *memory_; }
  uint64_t UserAddr(uint64_t guest_addr) const {
    return options_.user_base + guest_addr;
  }
  // The memory table as SET_MEM_TABLE sends it.
  std::vector<MemRegion> MemTable() const;
  void Close() { socket_.reset(); }

  // ---- Raw messages.
  absl::Status Send(Request request, uint32_t flags,
                    absl::Span<const uint8_t> payload,
                    absl::Span<const int> fds = {});
  // Sends bytes as they are (a hostile front-end), with `fds`.
  absl::Status SendRaw(absl::Span<const uint8_t> bytes,
                       absl::Span<const int> fds = {});
  // The payload of the next reply, which must answer `request`.
  absl::StatusOr<std::vector<uint8_t>> ReceiveReply(Request request);
  // True once the back end has closed the connection (after pumping).
  bool BackEndClosed();

  // ---- Requests. Those without a reply of their own ask for an ack when
  // REPLY_ACK was negotiated and turn a non-zero ack into kAborted.
  absl::StatusOr<uint64_t> GetFeatures();
  absl::Status SetFeatures(uint64_t features);
  absl::StatusOr<uint64_t> GetProtocolFeatures();
  absl::Status SetProtocolFeatures(uint64_t features);
  absl::StatusOr<uint64_t> GetQueueNum();
  absl::Status SetOwner();
  absl::Status ResetDevice();
  absl::Status SetMemTable();
  absl::Status SetMemTable(absl::Span<const MemRegion> regions,
                           absl::Span<const int> fds);
  absl::Status SetVringNum(uint32_t index, uint32_t num);
  absl::Status SetVringBase(uint32_t index, uint32_t base);
  absl::Status SetVringAddr(uint32_t index, const DriverQueue::Layout& layout);
  absl::Status SetVringAddr(const VringAddr& addr);
  absl::StatusOr<uint32_t> GetVringBase(uint32_t index);
  // Creates an eventfd for the ring's kick (call, err) and sends it.
  absl::Status SetVringKick(uint32_t index);
  absl::Status SetVringCall(uint32_t index);
  absl::Status SetVringErr(uint32_t index);
  absl::Status SetVringEnable(uint32_t index, uint32_t enable);
  absl::StatusOr<std::vector<uint8_t>> GetConfig(uint32_t offset,
                                                 uint32_t size);
  absl::Status SetConfig(uint32_t offset, absl::Span<const uint8_t> data);

  // ---- QEMU's sequences.
  // Device realize: GET_FEATURES, GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES
  // (what is offered of `protocol`), GET_QUEUE_NUM if MQ, SET_OWNER.
  absl::Status Init(uint64_t protocol = (uint64_t{1} << kProtocolMq) |
                                        (uint64_t{1} << kProtocolReplyAck) |
                                        (uint64_t{1} << kProtocolConfig));
  // vhost_dev_start: SET_FEATURES (`features`, plus PROTOCOL_FEATURES when
  // `protocol_features_bit`), SET_MEM_TABLE, then per ring NUM, BASE 0,
  // ADDR, KICK, CALL, and SET_VRING_ENABLE 1 for each when the protocol
  // feature bit was sent. Makes a DriverQueue per ring.
  absl::Status Start(uint64_t features,
                     const std::vector<DriverQueue::Layout>& layouts,
                     bool protocol_features_bit = true);
  // vhost_dev_stop: SET_VRING_ENABLE 0 and GET_VRING_BASE per ring; the
  // bases returned.
  absl::StatusOr<std::vector<uint32_t>> Stop();

  DriverQueue& ring(uint32_t index) { return *rings_.at(index); }
  size_t ring_count() const { return rings_.size(); }
  // Signals ring `index`'s kick eventfd.
  void Kick(uint32_t index);
  // Reads (and clears) the ring's call / err eventfd: true if signalled.
  bool CallSignalled(uint32_t index);
  // Waits up to the reply timeout for the call eventfd (a back end in
  // another process), then reads it.
  bool WaitCall(uint32_t index);
  bool ErrSignalled(uint32_t index);
  int kick_fd(uint32_t index) const { return kick_.at(index).get(); }

  uint64_t negotiated_protocol_features() const { return protocol_; }

 private:
  FakeFrontEnd(Options options) : options_(std::move(options)) {}
  absl::Status MakeMemory();
  // Sends a request without an explicit reply, with NEED_REPLY when acks are
  // negotiated, and checks the ack.
  absl::Status Request0(Request request, absl::Span<const uint8_t> payload,
                        absl::Span<const int> fds = {});
  absl::StatusOr<uint64_t> GetU64(Request request);
  absl::Status SetVringFd(Request request, uint32_t index,
                          std::vector<ScopedFd>& fds);
  void Pump() {
    if (pump_) pump_();
  }
  bool acks() const { return (protocol_ >> kProtocolReplyAck) & 1; }

  Options options_;
  std::unique_ptr<virtqueue::GuestMemoryMmap> memory_;
  ScopedFd socket_;
  ScopedFd backend_end_;
  std::function<void()> pump_;
  uint64_t protocol_ = 0;
  std::vector<std::unique_ptr<DriverQueue>> rings_;
  std::vector<ScopedFd> kick_, call_, err_;
};

}  // namespace vmmkit::vhost_user::testing

#endif  // VMMKIT_VHOST_USER_TESTING_FRONT_END_H_
