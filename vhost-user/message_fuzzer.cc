// Fuzzes vhost-user message decoding and the Backend's handling of what it
// decodes: a virtio-rng Backend over a socketpair is fed messages built from
// the input, with real file descriptors attached (a 1 MiB memfd that serves as
// guest memory, eventfds, a pipe), and its rings are kicked.
//
// The input is a stream of records (zeros past its end):
//   op byte: 0..3 one message: a byte of fd kinds (2 bits each for up to 3
//            fds: none/memfd/eventfd/pipe), then a u16 length and that many
//            bytes sent as they are (header and payload);
//            4 a well-formed SET_MEM_TABLE of the memfd (guest base and user
//            address from the input), so that rings can start;
//            5 a kick of ring (u8); 6 a reconnect (the old front-end goes).
// Properties: DecodeMessage never crashes and keeps exactly the fds the
// request carries; the Backend never crashes, never blocks, leaks no fd
// (checked at the end against /proc/self/fd), and every reply it sends has
// version 1 | REPLY and a payload within kMaxPayloadSize.
#include <dirent.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "vhost-user/backend.h"
#include "vhost-user/message.h"
#include "virtio-device/rng.h"

namespace {

using namespace vmmkit::vhost_user;  // NOLINT: a fuzz driver
using vmmkit::ScopedFd;

constexpr uint64_t kMemSize = 1 << 20;

class Stream {
 public:
  Stream(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool done() const { return pos_ >= size_; }
  uint8_t U8() { return pos_ < size_ ? data_[pos_++] : 0; }
  uint16_t U16() { return static_cast<uint16_t>(U8() | U8() << 8); }
  uint64_t U64() {
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= uint64_t{U8()} << (8 * i);
    return v;
  }
  std::vector<uint8_t> Bytes(size_t n) {
    std::vector<uint8_t> out;
    for (size_t i = 0; i < n && !done(); ++i) out.push_back(U8());
    return out;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

int OpenFdCount() {
  int n = 0;
  DIR* d = opendir("/proc/self/fd");
  if (d == nullptr) return -1;
  while (dirent* e = readdir(d)) n += e->d_name[0] != '.';
  closedir(d);
  return n;
}

// Reads everything the back end sent and checks each reply's header.
void DrainReplies(int fd) {
  uint8_t buf[8192];
  for (;;) {
    const ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n <= 0) return;
    // Replies are small and arrive whole; check the first header.
    if (n >= static_cast<ssize_t>(kHeaderSize)) {
      const WireHeader h = DecodeHeader(absl::MakeConstSpan(buf, n));
      if (h.flags != (kVersion1 | kFlagReply)) std::abort();
      if (h.size > kMaxPayloadSize) std::abort();
    }
  }
}

struct Fds {
  ScopedFd memfd;
  std::vector<ScopedFd> owned;  // eventfds and pipes handed out
  int Make(int kind) {
    switch (kind) {
      case 1:
        return memfd.get();
      case 2:
        owned.emplace_back(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
        return owned.back().get();
      default: {
        int p[2];
        if (pipe2(p, O_CLOEXEC | O_NONBLOCK) != 0) return -1;
        owned.emplace_back(p[0]);
        owned.emplace_back(p[1]);
        return p[0];
      }
    }
  }
};

void SendWithFds(int sock, absl::Span<const uint8_t> bytes,
                 const std::vector<int>& fds) {
  iovec iov{const_cast<uint8_t*>(bytes.data()), bytes.size()};
  msghdr mh{};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 4)];
  if (!fds.empty()) {
    mh.msg_control = control;
    mh.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  if (bytes.empty() && fds.empty()) return;
  (void)sendmsg(sock, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const int fds_before = OpenFdCount();
  {
    Stream in(data, size);
    Fds fds;
    fds.memfd.reset(memfd_create("fuzz-guest", MFD_CLOEXEC));
    if (!fds.memfd.valid() || ftruncate(fds.memfd.get(), kMemSize) != 0) {
      return 0;
    }
    vmmkit::virtio::RngDevice rng;
    std::unique_ptr<Backend> backend = *Backend::Create(rng);
    ScopedFd front;
    auto connect = [&] {
      int sv[2];
      if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        std::abort();
      }
      front.reset(sv[0]);
      backend->Disconnect(absl::OkStatus());
      if (!backend->Attach(ScopedFd(sv[1])).ok()) std::abort();
    };
    connect();

    for (int ops = 0; !in.done() && ops < 64; ++ops) {
      const uint8_t op = in.U8() % 7;
      if (op <= 3) {
        const uint8_t kinds = in.U8();
        std::vector<int> send_fds;
        for (int i = 0; i < 3; ++i) {
          const int kind = (kinds >> (2 * i)) & 3;
          if (kind != 0) send_fds.push_back(fds.Make(kind));
        }
        const std::vector<uint8_t> bytes = in.Bytes(in.U16() % 600);
        // The decoder on its own, with fds of its own.
        {
          std::vector<ScopedFd> own;
          for (int fd : send_fds) own.emplace_back(dup(fd));
          const size_t given = own.size();
          absl::StatusOr<Message> m = DecodeMessage(bytes, std::move(own));
          if (m.ok() && m->fds.size() > given) std::abort();
          if (m.ok() && m->regions.size() != 0 &&
              m->fds.size() != m->regions.size()) {
            std::abort();
          }
        }
        SendWithFds(front.get(), bytes, send_fds);
      } else if (op == 4) {
        const MemRegion r{.guest_addr = (in.U64() & 0xffff) << 12,
                          .size = kMemSize,
                          .user_addr = in.U64() & ~uint64_t{0xfff},
                          .mmap_offset = 0};
        const std::vector<uint8_t> msg =
            EncodeRequest(static_cast<uint32_t>(Request::kSetMemTable),
                          in.U8() & kFlagNeedReply, EncodeMemTable({&r, 1}));
        SendWithFds(front.get(), msg, {fds.memfd.get()});
      } else if (op == 5) {
        backend->OnKick(in.U8());
        continue;
      } else {
        connect();
        continue;
      }
      if (backend->connected()) backend->OnConnectionReadable();
      for (const Backend::Watch& w : backend->watches()) {
        if (w.source == Backend::Source::kKick) backend->OnReady(w);
      }
      DrainReplies(front.get());
      if (!backend->connected()) connect();
    }
    backend->Disconnect(absl::OkStatus());
  }
  // Everything the back end received was closed again.
  if (fds_before >= 0 && OpenFdCount() != fds_before) std::abort();
  return 0;
}
