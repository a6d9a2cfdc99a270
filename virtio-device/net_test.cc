#include "virtio-device/net.h"

#include <arpa/inet.h>
#include <linux/ethtool.h>
#include <linux/if.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <linux/sockios.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "virtio-device/device_state.h"
#include "virtio-device/tap.h"
#include "virtio-device/testing/test_driver.h"

namespace vmmkit::virtio {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::vmmkit::testing::StatusIs;
using ::vmmkit::virtio::testing::TestDriver;
using ::vmmkit::virtqueue::GuestMemoryMmap;
using ::vmmkit::virtqueue::VirtqUsedElem;
using Buffer = ::vmmkit::virtqueue::testing::DriverQueue::Buffer;

constexpr uint64_t kMemSize = 16 << 20;
constexpr MacAddress kMac = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};

struct Mode {
  const char* name;
  bool legacy;
  Endian guest_endian;
};
void PrintTo(const Mode& mode, std::ostream* os) { *os << mode.name; }

std::vector<uint8_t> Frame(size_t n, uint8_t seed) {
  std::vector<uint8_t> f(n);
  for (size_t i = 0; i < n; ++i) f[i] = static_cast<uint8_t>(seed + i * 7);
  return f;
}

void Put16(uint8_t* p, uint16_t v, Endian e) {
  if (e == Endian::kLittle) {
    p[0] = static_cast<uint8_t>(v);
    p[1] = static_cast<uint8_t>(v >> 8);
  } else {
    p[0] = static_cast<uint8_t>(v >> 8);
    p[1] = static_cast<uint8_t>(v);
  }
}
uint16_t Get16(const uint8_t* p, Endian e) {
  return e == Endian::kLittle ? static_cast<uint16_t>(p[0] | p[1] << 8)
                              : static_cast<uint16_t>(p[0] << 8 | p[1]);
}

// A header with every field set, so that a byte-order mistake shows.
VirtioNetHdr SampleHdr() {
  return {.flags = kNetHdrFNeedsCsum,
          .gso_type = kNetHdrGsoTcpv4,
          .hdr_len = 0x0036,
          .gso_size = 0x05a8,
          .csum_start = 0x0022,
          .csum_offset = 0x0010,
          .num_buffers = 0};
}

// `h` encoded in `size` bytes with fields in `e` order.
std::vector<uint8_t> EncodeHdr(const VirtioNetHdr& h, size_t size, Endian e) {
  std::vector<uint8_t> b(size, 0);
  b[0] = h.flags;
  b[1] = h.gso_type;
  Put16(&b[2], h.hdr_len, e);
  Put16(&b[4], h.gso_size, e);
  Put16(&b[6], h.csum_start, e);
  Put16(&b[8], h.csum_offset, e);
  if (size == kNetHdrSize) Put16(&b[10], h.num_buffers, e);
  return b;
}

VirtioNetHdr DecodeHdr(absl::Span<const uint8_t> b, size_t size, Endian e) {
  VirtioNetHdr h{};
  h.flags = b[0];
  h.gso_type = b[1];
  h.hdr_len = Get16(&b[2], e);
  h.gso_size = Get16(&b[4], e);
  h.csum_start = Get16(&b[6], e);
  h.csum_offset = Get16(&b[8], e);
  if (size == kNetHdrSize) h.num_buffers = Get16(&b[10], e);
  return h;
}

void ExpectSameHdr(const VirtioNetHdr& got, const VirtioNetHdr& want) {
  EXPECT_EQ(got.flags, want.flags);
  EXPECT_EQ(got.gso_type, want.gso_type);
  EXPECT_EQ(got.hdr_len, want.hdr_len);
  EXPECT_EQ(got.gso_size, want.gso_size);
  EXPECT_EQ(got.csum_start, want.csum_start);
  EXPECT_EQ(got.csum_offset, want.csum_offset);
}

// One side of a net device: guest memory, state, driver.
struct Guest {
  Guest(NetDevice& net, const Mode& mode) {
    auto mem = GuestMemoryMmap::Create({{.guest_base = 0, .size = kMemSize}});
    EXPECT_OK(mem.status());
    memory = *std::move(mem);
    state = std::make_unique<DeviceState>(
        net, *memory, DeviceState::Options{.guest_endian = mode.guest_endian});
    driver = std::make_unique<TestDriver>(
        *state, *memory, TestDriver::Options{.legacy = mode.legacy});
  }
  // Posts one receive chain per entry of `sizes`; returns the buffers.
  std::vector<uint64_t> PostRx(std::initializer_list<uint32_t> sizes) {
    std::vector<uint64_t> addrs;
    for (uint32_t n : sizes) {
      const uint64_t a = driver->Alloc(n);
      EXPECT_OK(driver->queue(0).AddChain({{a, n, true}}).status());
      addrs.push_back(a);
    }
    return addrs;
  }
  // Posts a packet for transmission, cut into descriptors at `cuts`.
  void PostTx(absl::Span<const uint8_t> packet, std::vector<size_t> cuts) {
    const uint64_t a = driver->Alloc(packet.size());
    driver->Put(a, packet);
    std::vector<Buffer> bufs;
    size_t at = 0;
    cuts.push_back(packet.size());
    for (size_t cut : cuts) {
      bufs.push_back({a + at, static_cast<uint32_t>(cut - at), false});
      at = cut;
    }
    EXPECT_OK(driver->queue(1).AddChain(bufs).status());
  }

  std::unique_ptr<GuestMemoryMmap> memory;
  std::unique_ptr<DeviceState> state;
  std::unique_ptr<TestDriver> driver;
};

std::vector<uint8_t> Concat(absl::Span<const uint8_t> a,
                            absl::Span<const uint8_t> b) {
  std::vector<uint8_t> out(a.begin(), a.end());
  out.insert(out.end(), b.begin(), b.end());
  return out;
}

class NetTest : public ::testing::TestWithParam<Mode> {
 protected:
  void SetUp() override {
    auto pair = LoopbackNetBackend::CreatePair();
    ASSERT_OK(pair.status());
    backend_ = pair->first.get();
    peer_ = std::move(pair->second);
    auto net = NetDevice::Create(std::move(pair->first), {.mac = kMac});
    ASSERT_OK(net.status());
    net_ = *std::move(net);
    guest_ = std::make_unique<Guest>(*net_, GetParam());
  }

  TestDriver& drv() { return *guest_->driver; }
  DeviceState& state() { return *guest_->state; }
  Endian endian() const {
    return GetParam().legacy ? GetParam().guest_endian : Endian::kLittle;
  }
  // What the peer sends: a little-endian 12-byte header and `frame`.
  void PeerSend(const VirtioNetHdr& h, absl::Span<const uint8_t> frame) {
    std::vector<uint8_t> hdr = EncodeHdr(h, kNetHdrSize, Endian::kLittle);
    const iovec iov[] = {{hdr.data(), hdr.size()},
                         {const_cast<uint8_t*>(frame.data()), frame.size()}};
    ASSERT_OK(peer_->Send(iov));
  }
  // What the peer received, header included (12 bytes, little-endian).
  std::vector<uint8_t> PeerReceive() {
    std::vector<uint8_t> buf(kNetHdrSize + kMaxNetFrameSize);
    absl::StatusOr<size_t> n = peer_->Receive(absl::MakeSpan(buf));
    EXPECT_OK(n.status());
    buf.resize(n.ok() ? *n : 0);
    return buf;
  }

  LoopbackNetBackend* backend_ = nullptr;  // owned by net_
  std::unique_ptr<LoopbackNetBackend> peer_;
  std::unique_ptr<NetDevice> net_;
  std::unique_ptr<Guest> guest_;
};

TEST_P(NetTest, OffersFeaturesAndConfig) {
  const Features offered = net_->offered_features();
  for (unsigned bit : {kFVersion1, kFEventIdx, kFIndirectDesc, kNetFMac,
                       kNetFStatus, kNetFMrgRxbuf, kNetFCsum, kNetFGuestCsum,
                       kNetFHostTso4, kNetFGuestTso6, kNetFHostEcn}) {
    EXPECT_TRUE(offered.Has(bit)) << bit;
  }
  EXPECT_FALSE(offered.Has(kNetFMtu));  // no mtu option
  ASSERT_OK(drv().Start(Features::Of({kNetFMac, kNetFStatus})));
  EXPECT_THAT(drv().ReadConfig(0, 6), ElementsAreArray(kMac));
  EXPECT_EQ(drv().ReadConfigU16(6), kNetSLinkUp);
  EXPECT_EQ(drv().ReadConfigU16(8), 1);  // max_virtqueue_pairs
  // The raw bytes are in the driver's order.
  if (endian() == Endian::kBig) {
    EXPECT_THAT(drv().ReadConfig(6, 2), ElementsAre(0, 1));
  } else {
    EXPECT_THAT(drv().ReadConfig(6, 2), ElementsAre(1, 0));
  }
  EXPECT_EQ(net_->mac(), kMac);
}

TEST_P(NetTest, LinkStatusChangeRaisesConfigInterrupt) {
  ASSERT_OK(drv().Start(Features::Of({kNetFStatus})));
  const uint32_t gen = state().config_generation();
  net_->SetLinkUp(false);
  EXPECT_EQ(drv().ReadConfigU16(6), 0);
  EXPECT_EQ(drv().config_interrupts(), 1);
  EXPECT_NE(state().config_generation(), gen);
  net_->SetLinkUp(false);  // no change, no interrupt
  EXPECT_EQ(drv().config_interrupts(), 1);
  net_->SetLinkUp(true);
  EXPECT_EQ(drv().ReadConfigU16(6), kNetSLinkUp);
  EXPECT_EQ(drv().config_interrupts(), 2);
}

TEST_P(NetTest, MtuOfferedWhenSet) {
  auto pair = LoopbackNetBackend::CreatePair();
  ASSERT_OK(pair.status());
  ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<NetDevice> net,
      NetDevice::Create(std::move(pair->first), {.mac = kMac, .mtu = 9000}));
  EXPECT_TRUE(net->offered_features().Has(kNetFMtu));
  Guest g(*net, GetParam());
  ASSERT_OK(g.driver->Start(Features::Of({kNetFMtu})));
  EXPECT_EQ(g.driver->ReadConfigU16(10), 9000);
}

TEST_P(NetTest, RandomMacIsLocalUnicast) {
  auto pair = LoopbackNetBackend::CreatePair();
  ASSERT_OK(pair.status());
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<NetDevice> net,
                       NetDevice::Create(std::move(pair->first), {}));
  EXPECT_EQ(net->mac()[0] & 3, 2);
}

TEST_P(NetTest, CreateRejectsBadOptions) {
  auto pair = LoopbackNetBackend::CreatePair();
  ASSERT_OK(pair.status());
  EXPECT_THAT(NetDevice::Create(std::move(pair->first), {.queue_size = 100}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(NetDevice::Create(std::move(pair->second),
                                {.mac = MacAddress{1, 2, 3, 4, 5, 6}}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(NetDevice::Create(nullptr, {}),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_P(NetTest, OffloadsOnlyIfTheBackendHasThem) {
  auto pair = LoopbackNetBackend::CreatePair(
      Features::Of({kNetFGuestTso4, kNetFHostTso4, kNetFCsum}));
  ASSERT_OK(pair.status());
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<NetDevice> net,
                       NetDevice::Create(std::move(pair->first), {}));
  const Features offered = net->offered_features();
  EXPECT_TRUE(offered.Has(kNetFCsum));
  EXPECT_TRUE(offered.Has(kNetFHostTso4));
  // GUEST_TSO4 requires GUEST_CSUM, which the backend lacks.
  EXPECT_FALSE(offered.Has(kNetFGuestTso4));
  EXPECT_FALSE(offered.Has(kNetFGuestCsum));
  EXPECT_FALSE(offered.Has(kNetFHostTso6));
}

TEST_P(NetTest, RefusesFeaturesWithoutTheirRequirements) {
  EXPECT_THAT(net_->AcceptFeatures(Features::Of({kNetFGuestTso4})),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(net_->AcceptFeatures(Features::Of({kNetFCsum, kNetFHostEcn})),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_OK(net_->AcceptFeatures(
      Features::Of({kNetFCsum, kNetFHostTso6, kNetFHostEcn})));
  // Through the driver: FEATURES_OK refused (modern), or the legacy start
  // fails at DRIVER_OK.
  const absl::Status s = drv().Start(Features::Of({kNetFHostTso4}));
  EXPECT_THAT(
      s, StatusIs(GetParam().legacy ? absl::StatusCode::kInternal
                                    : absl::StatusCode::kFailedPrecondition));
}

TEST_P(NetTest, HeaderSizePerMode) {
  // Without MRG_RXBUF: 10 bytes for a legacy driver, 12 for a modern one.
  ASSERT_OK(drv().Start(Features()));
  const size_t want = GetParam().legacy ? kLegacyNetHdrSize : kNetHdrSize;
  EXPECT_EQ(net_->header_size(), want);
  EXPECT_EQ(backend_->hdr_size(), want);
  // With MRG_RXBUF: 12 for everyone.
  ASSERT_OK(drv().Start(Features::Of({kNetFMrgRxbuf})));
  EXPECT_EQ(net_->header_size(), kNetHdrSize);
  EXPECT_EQ(backend_->hdr_size(), kNetHdrSize);
  drv().Reset();
  EXPECT_EQ(net_->header_size(), 0u);
}

TEST_P(NetTest, TransmitHeaderAndFrameSplitAnyWay) {
  for (bool mrg : {false, true}) {
    SCOPED_TRACE(mrg ? "MRG_RXBUF" : "no MRG_RXBUF");
    ASSERT_OK(drv().Start(
        mrg ? Features::Of({kNetFMrgRxbuf, kNetFCsum, kNetFHostTso4})
            : Features::Of({kNetFCsum, kNetFHostTso4})));
    const size_t hs = net_->header_size();
    const std::vector<uint8_t> frame = Frame(1514, 3);
    const std::vector<uint8_t> packet =
        Concat(EncodeHdr(SampleHdr(), hs, endian()), frame);
    // Header alone; header split in three; header and frame in one; the
    // header's tail sharing a descriptor with the frame's start.
    // And 100 small pieces, more than one writev should carry.
    std::vector<std::vector<size_t>> layouts = {
        {hs}, {1, 5, hs + 100}, {}, {7, 600, 601}, {}};
    for (size_t cut = 3; cut < 1000; cut += 10) layouts.back().push_back(cut);
    for (const std::vector<size_t>& cuts : layouts) {
      guest_->PostTx(packet, cuts);
      drv().Kick(1);
      std::optional<VirtqUsedElem> used = drv().queue(1).PopUsed();
      ASSERT_TRUE(used.has_value());
      EXPECT_EQ(used->len, 0u);
      std::vector<uint8_t> got = PeerReceive();
      ASSERT_EQ(got.size(), kNetHdrSize + frame.size());
      ExpectSameHdr(DecodeHdr(got, kNetHdrSize, Endian::kLittle), SampleHdr());
      EXPECT_TRUE(
          std::equal(frame.begin(), frame.end(), got.begin() + kNetHdrSize));
    }
    EXPECT_EQ(drv().queue_interrupts(1), 5);
  }
  EXPECT_EQ(net_->stats().tx_frames, 10u);
  EXPECT_EQ(net_->stats().tx_bytes, 10u * 1514);
}

TEST_P(NetTest, IndirectChainsAndEmptyDescriptors) {
  ASSERT_OK(drv().Start(Features::Of({kFIndirectDesc})));
  const size_t hs = net_->header_size();
  const std::vector<uint8_t> frame = Frame(300, 4);
  const std::vector<uint8_t> packet =
      Concat(EncodeHdr(SampleHdr(), hs, endian()), frame);
  // Transmit: an indirect table with an empty descriptor between the header
  // and the frame.
  const uint64_t data = drv().Alloc(packet.size());
  drv().Put(data, packet);
  const uint64_t table = drv().Alloc(64);
  const Buffer tx[] = {{data, static_cast<uint32_t>(hs), false},
                       {data, 0, false},
                       {data + hs, static_cast<uint32_t>(frame.size()), false}};
  ASSERT_OK(drv().queue(1).AddIndirectChain(table, tx).status());
  drv().Kick(1);
  ASSERT_TRUE(drv().queue(1).PopUsed().has_value());
  const std::vector<uint8_t> sent = PeerReceive();
  ASSERT_EQ(sent.size(), kNetHdrSize + frame.size());
  EXPECT_TRUE(std::equal(frame.begin(), frame.end(), sent.begin() + 12));
  // Receive into an indirect chain, also with an empty descriptor.
  const uint64_t rx = drv().Alloc(2048);
  const uint64_t rx_table = drv().Alloc(64);
  const Buffer rxb[] = {{rx, 0, true}, {rx, 2048, true}};
  ASSERT_OK(drv().queue(0).AddIndirectChain(rx_table, rxb).status());
  drv().Kick(0);
  VirtioNetHdr h{};
  PeerSend(h, frame);
  net_->ProcessBackend();
  std::optional<VirtqUsedElem> used = drv().queue(0).PopUsed();
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(used->len, hs + frame.size());
  const std::vector<uint8_t> got = drv().Get(rx + hs, frame.size());
  EXPECT_EQ(got, frame);
}

TEST_P(NetTest, TransmitWithNotificationsSuppressed) {
  ASSERT_OK(drv().Start(Features::Of({kFEventIdx})));
  const size_t hs = net_->header_size();
  const std::vector<uint8_t> packet =
      Concat(EncodeHdr({}, hs, endian()), Frame(60, 1));
  guest_->PostTx(packet, {});
  guest_->PostTx(packet, {});
  drv().Kick(1);
  EXPECT_EQ(drv().queue(1).PendingUsed(), 2);
  EXPECT_EQ(backend_->queued(), 0u);
  EXPECT_EQ(peer_->queued(), 2u);
  // Notifications are back on after the device drained the queue.
  guest_->PostTx(packet, {});
  EXPECT_TRUE(drv().queue(1).ShouldNotify());
}

TEST_P(NetTest, OversizeFrameIsDroppedAndCompleted) {
  ASSERT_OK(drv().Start(Features()));
  const size_t hs = net_->header_size();
  const std::vector<uint8_t> packet = Concat(
      EncodeHdr({}, hs, endian()), Frame(NetDevice::kMaxFrameSize + 1, 0));
  guest_->PostTx(packet, {hs, 40000});
  drv().Kick(1);
  std::optional<VirtqUsedElem> used = drv().queue(1).PopUsed();
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(used->len, 0u);
  EXPECT_EQ(peer_->queued(), 0u);
  EXPECT_EQ(net_->stats().tx_dropped, 1u);
  EXPECT_FALSE(state().status() & kStatusNeedsReset);
  // The largest frame goes through.
  guest_->PostTx(
      Concat(EncodeHdr({}, hs, endian()), Frame(NetDevice::kMaxFrameSize, 0)),
      {hs});
  drv().Kick(1);
  EXPECT_EQ(peer_->queued(), 1u);
}

TEST_P(NetTest, TransmitShorterThanHeaderNeedsReset) {
  ASSERT_OK(drv().Start(Features::Of({kNetFMrgRxbuf})));
  guest_->PostTx(std::vector<uint8_t>(kLegacyNetHdrSize + 1, 0), {4});
  drv().Kick(1);
  EXPECT_TRUE(state().status() & kStatusNeedsReset);
  EXPECT_THAT(state().last_error(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(drv().config_interrupts(), 1);
  EXPECT_EQ(peer_->queued(), 0u);
}

TEST_P(NetTest, TransmitOutsideMemoryNeedsReset) {
  ASSERT_OK(drv().Start(Features()));
  drv().queue(1).WriteDesc(0, kMemSize - 8, 64, 0, 0);
  drv().queue(1).Publish(0);
  drv().Kick(1);
  EXPECT_TRUE(state().status() & kStatusNeedsReset);
  EXPECT_THAT(state().last_error(), StatusIs(absl::StatusCode::kOutOfRange));
  // A reset brings the device back.
  ASSERT_OK(drv().Start(Features()));
  guest_->PostTx(
      Concat(EncodeHdr({}, net_->header_size(), endian()), Frame(60, 0)), {});
  drv().Kick(1);
  EXPECT_EQ(peer_->queued(), 1u);
}

TEST_P(NetTest, ReceiveOneChainPerFrame) {
  ASSERT_OK(drv().Start(Features::Of({kNetFGuestCsum, kNetFGuestTso4})));
  const size_t hs = net_->header_size();
  const std::vector<uint8_t> frame = Frame(1000, 9);
  // One chain in two descriptors, the header's size not matching either.
  const uint64_t a = drv().Alloc(5);
  const uint64_t b = drv().Alloc(2000);
  ASSERT_OK(drv().queue(0).AddChain({{a, 5, true}, {b, 2000, true}}).status());
  drv().Kick(0);
  PeerSend(SampleHdr(), frame);
  net_->ProcessBackend();
  std::optional<VirtqUsedElem> used = drv().queue(0).PopUsed();
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(used->len, hs + frame.size());
  const std::vector<uint8_t> got =
      Concat(drv().Get(a, 5), drv().Get(b, used->len - 5));
  const VirtioNetHdr h = DecodeHdr(got, hs, endian());
  ExpectSameHdr(h, SampleHdr());
  if (hs == kNetHdrSize) EXPECT_EQ(h.num_buffers, 1);
  EXPECT_TRUE(std::equal(frame.begin(), frame.end(), got.begin() + hs));
  EXPECT_EQ(drv().queue_interrupts(0), 1);
  EXPECT_EQ(net_->stats().rx_frames, 1u);
  EXPECT_EQ(net_->stats().rx_bytes, 1000u);
}

TEST_P(NetTest, MergeableBuffersSpanFrames) {
  ASSERT_OK(drv().Start(
      Features::Of({kNetFMrgRxbuf, kNetFGuestCsum, kNetFGuestTso4})));
  ASSERT_EQ(net_->header_size(), kNetHdrSize);
  const std::vector<uint64_t> bufs = guest_->PostRx({1024, 1024, 1024, 1024});
  drv().Kick(0);
  const std::vector<uint8_t> frame = Frame(3000, 5);
  PeerSend(SampleHdr(), frame);
  PeerSend({}, Frame(100, 6));
  net_->ProcessBackend();
  // 3012 bytes over three buffers, the first two filled completely.
  std::vector<uint8_t> got;
  const uint32_t want_len[] = {1024, 1024, 3012 - 2048};
  for (int i = 0; i < 3; ++i) {
    std::optional<VirtqUsedElem> used = drv().queue(0).PopUsed();
    ASSERT_TRUE(used.has_value());
    EXPECT_EQ(used->len, want_len[i]);
    const std::vector<uint8_t> part = drv().Get(bufs[i], used->len);
    got.insert(got.end(), part.begin(), part.end());
  }
  const VirtioNetHdr h = DecodeHdr(got, kNetHdrSize, endian());
  EXPECT_EQ(h.num_buffers, 3);
  ExpectSameHdr(h, SampleHdr());
  EXPECT_TRUE(std::equal(frame.begin(), frame.end(), got.begin() + 12));
  // The second frame took the fourth buffer.
  std::optional<VirtqUsedElem> used = drv().queue(0).PopUsed();
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(used->len, 112u);
  EXPECT_EQ(DecodeHdr(drv().Get(bufs[3], 12), 12, endian()).num_buffers, 1);
  EXPECT_EQ(net_->stats().rx_buffers, 4u);
}

TEST_P(NetTest, ReceiveHidesOffloadsTheDriverDidNotTake) {
  ASSERT_OK(drv().Start(Features::Of({kNetFGuestCsum})));
  const size_t hs = net_->header_size();
  const std::vector<uint64_t> bufs = guest_->PostRx({2048, 2048});
  drv().Kick(0);
  PeerSend(SampleHdr(), Frame(1000, 1));  // TSOv4: not negotiated, dropped
  VirtioNetHdr csum_only{};
  csum_only.flags = kNetHdrFNeedsCsum;
  csum_only.csum_start = 34;
  csum_only.csum_offset = 16;
  PeerSend(csum_only, Frame(100, 2));
  net_->ProcessBackend();
  EXPECT_EQ(net_->stats().rx_dropped, 1u);
  std::optional<VirtqUsedElem> used = drv().queue(0).PopUsed();
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(used->len, hs + 100);
  EXPECT_EQ(DecodeHdr(drv().Get(bufs[0], hs), hs, endian()).flags,
            kNetHdrFNeedsCsum);
  // Without GUEST_CSUM the flags are cleared.
  ASSERT_OK(drv().Start(Features()));
  const std::vector<uint64_t> more = guest_->PostRx({2048});
  drv().Kick(0);
  PeerSend(csum_only, Frame(100, 3));
  net_->ProcessBackend();
  ASSERT_TRUE(drv().queue(0).PopUsed().has_value());
  EXPECT_EQ(drv().Get(more[0], 1)[0], 0);
}

// Random frame sizes against random buffer sizes, buffers posted before or
// after the frames arrive: every frame arrives whole and in order, and
// num_buffers always says how many buffers it took.
TEST_P(NetTest, MergeableRandomized) {
  ASSERT_OK(drv().Start(Features::Of({kNetFMrgRxbuf, kFEventIdx})));
  std::mt19937 rng(1234);
  std::deque<std::vector<uint8_t>> expected;
  std::map<uint16_t, std::pair<uint64_t, uint32_t>> posted;  // by head
  std::vector<uint8_t> assembling;
  int buffers_left = 0;  // of the frame being assembled
  size_t frames_done = 0;
  auto post = [&](int count) {
    for (int i = 0; i < count; ++i) {
      const uint32_t len = 64 + rng() % 4033;
      const uint64_t a = drv().Alloc(len);
      absl::StatusOr<uint16_t> head = drv().queue(0).AddChain({{a, len, true}});
      ASSERT_OK(head.status());
      posted[*head] = {a, len};
    }
    drv().Kick(0);
  };
  auto reap = [&] {
    while (std::optional<VirtqUsedElem> used = drv().queue(0).PopUsed()) {
      auto it = posted.find(static_cast<uint16_t>(used->id));
      ASSERT_NE(it, posted.end());
      ASSERT_LE(used->len, it->second.second);
      const uint32_t capacity = it->second.second;
      std::vector<uint8_t> part = drv().Get(it->second.first, used->len);
      posted.erase(it);
      if (buffers_left == 0) {
        ASSERT_GE(part.size(), kNetHdrSize);
        buffers_left = DecodeHdr(part, kNetHdrSize, endian()).num_buffers;
        ASSERT_GE(buffers_left, 1);
        part.erase(part.begin(), part.begin() + kNetHdrSize);
        assembling.clear();
      }
      assembling.insert(assembling.end(), part.begin(), part.end());
      if (--buffers_left == 0) {
        ASSERT_FALSE(expected.empty());
        EXPECT_EQ(assembling, expected.front());
        expected.pop_front();
        ++frames_done;
      } else {
        // All buffers but a frame's last are filled completely.
        EXPECT_EQ(used->len, capacity);
      }
    }
  };
  // Allocations come from a bump allocator: keep the total bounded.
  for (int step = 0; step < 300; ++step) {
    if (rng() % 2 && backend_->queued() < 100) {
      std::vector<uint8_t> frame =
          Frame(1 + rng() % 9000, static_cast<uint8_t>(step));
      PeerSend({}, frame);
      expected.push_back(std::move(frame));
    }
    if (rng() % 3 == 0 && posted.size() < 200) {
      post(1 + static_cast<int>(rng() % 4));
    } else {
      net_->ProcessBackend();
    }
    reap();
  }
  // Enough buffers for whatever is left.
  while (!expected.empty() && posted.size() < 200) {
    post(4);
    net_->ProcessBackend();
    reap();
  }
  EXPECT_TRUE(expected.empty());
  EXPECT_GT(frames_done, 50u);
  EXPECT_EQ(net_->stats().rx_dropped, 0u);
}

TEST_P(NetTest, MergeableFrameWaitsForEnoughBuffers) {
  ASSERT_OK(drv().Start(Features::Of({kNetFMrgRxbuf, kFEventIdx})));
  guest_->PostRx({1024});
  EXPECT_TRUE(drv().queue(0).ShouldNotify());
  drv().Kick(0);
  PeerSend({}, Frame(3000, 5));
  net_->ProcessBackend();
  EXPECT_EQ(drv().queue(0).PendingUsed(), 0);
  // The device asked for a kick: posting buffers must notify it.
  guest_->PostRx({1024, 1024});
  EXPECT_TRUE(drv().queue(0).ShouldNotify());
  drv().Kick(0);
  EXPECT_EQ(drv().queue(0).PendingUsed(), 3);
  EXPECT_EQ(net_->stats().rx_frames, 1u);
}

TEST_P(NetTest, MergeableDropKeepsBuffersForTheNextFrame) {
  // Queues of 4: four 100-byte buffers cannot hold a 1000-byte frame.
  auto pair = LoopbackNetBackend::CreatePair();
  ASSERT_OK(pair.status());
  std::unique_ptr<LoopbackNetBackend> peer = std::move(pair->second);
  ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<NetDevice> net,
      NetDevice::Create(std::move(pair->first), {.queue_size = 4}));
  Guest g(*net, GetParam());
  ASSERT_OK(g.driver->Start(Features::Of({kNetFMrgRxbuf})));
  g.PostRx({100, 100, 100, 100});
  g.driver->Kick(0);
  for (size_t n : {1000, 150}) {
    std::vector<uint8_t> packet(kNetHdrSize + n, 0);
    const iovec iov[] = {{packet.data(), packet.size()}};
    ASSERT_OK(peer->Send(iov));
  }
  net->ProcessBackend();
  EXPECT_EQ(net->stats().rx_dropped, 1u);
  // The 162-byte packet fills two buffers, and only two.
  std::optional<VirtqUsedElem> u1 = g.driver->queue(0).PopUsed();
  std::optional<VirtqUsedElem> u2 = g.driver->queue(0).PopUsed();
  ASSERT_TRUE(u1.has_value() && u2.has_value());
  EXPECT_EQ(u1->len, 100u);
  EXPECT_EQ(u2->len, 62u);
  EXPECT_FALSE(g.driver->queue(0).PopUsed().has_value());
  EXPECT_EQ(net->stats().rx_buffers, 2u);
  // The other two wait for the next frame.
  std::vector<uint8_t> packet(kNetHdrSize + 20, 0);
  const iovec iov[] = {{packet.data(), packet.size()}};
  ASSERT_OK(peer->Send(iov));
  net->ProcessBackend();
  std::optional<VirtqUsedElem> u3 = g.driver->queue(0).PopUsed();
  ASSERT_TRUE(u3.has_value());
  EXPECT_EQ(u3->len, 32u);
}

TEST_P(NetTest, FrameTooLargeForOneChainIsDroppedWithoutMergeable) {
  ASSERT_OK(drv().Start(Features()));
  const size_t hs = net_->header_size();
  guest_->PostRx({200});
  drv().Kick(0);
  PeerSend({}, Frame(500, 1));
  PeerSend({}, Frame(150, 2));
  net_->ProcessBackend();
  EXPECT_EQ(net_->stats().rx_dropped, 1u);
  // The chain stayed for the frame that fits.
  std::optional<VirtqUsedElem> used = drv().queue(0).PopUsed();
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(used->len, hs + 150);
  EXPECT_FALSE(drv().queue(0).PopUsed().has_value());
}

TEST_P(NetTest, ReceiveWithoutBuffersWaitsThenDelivers) {
  ASSERT_OK(drv().Start(Features::Of({kFEventIdx})));
  PeerSend({}, Frame(60, 1));
  PeerSend({}, Frame(61, 2));
  net_->ProcessBackend();
  net_->ProcessBackend();  // does not spin or lose anything
  // Nothing read: the frames wait in the backend, whose fd stays readable.
  EXPECT_EQ(backend_->queued(), 2u);
  EXPECT_EQ(drv().queue(0).PendingUsed(), 0);
  EXPECT_EQ(net_->stats().rx_dropped, 0u);
  // Posting a buffer is a notification the device asked for...
  guest_->PostRx({2048});
  EXPECT_TRUE(drv().queue(0).ShouldNotify());
  drv().Kick(0);
  // ...and it delivers the first frame; the second waits for the next.
  EXPECT_EQ(drv().queue(0).PendingUsed(), 1);
  EXPECT_EQ(backend_->queued(), 1u);
  guest_->PostRx({2048});
  EXPECT_TRUE(drv().queue(0).ShouldNotify());
  drv().Kick(0);
  EXPECT_EQ(drv().queue(0).PendingUsed(), 2);
  EXPECT_EQ(backend_->queued(), 0u);
  EXPECT_EQ(net_->stats().rx_frames, 2u);
}

TEST_P(NetTest, ReceiveChainWithoutWritableBufferNeedsReset) {
  ASSERT_OK(drv().Start(Features()));
  const uint64_t a = drv().Alloc(2048);
  ASSERT_OK(drv().queue(0).AddChain({{a, 2048, false}}).status());
  drv().Kick(0);
  PeerSend({}, Frame(60, 1));
  net_->ProcessBackend();
  EXPECT_TRUE(state().status() & kStatusNeedsReset);
  EXPECT_THAT(state().last_error(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(drv().queue(0).PendingUsed(), 0);
  // Stopped until reset: more input is left alone.
  PeerSend({}, Frame(60, 1));
  net_->ProcessBackend();
  EXPECT_EQ(drv().queue(0).PendingUsed(), 0);
}

TEST_P(NetTest, BrokenReceiveRingNeedsReset) {
  ASSERT_OK(drv().Start(Features()));
  drv().queue(0).SetAvailEntry(0, 999);  // head beyond the queue size
  drv().queue(0).SetAvailIdx(1);
  PeerSend({}, Frame(60, 1));
  net_->ProcessBackend();
  EXPECT_TRUE(state().status() & kStatusNeedsReset);
  EXPECT_THAT(state().last_error(), StatusIs(absl::StatusCode::kOutOfRange));
}

TEST_P(NetTest, ResetMidIoTouchesNothing) {
  ASSERT_OK(drv().Start(Features::Of({kNetFMrgRxbuf})));
  guest_->PostRx({1024});
  drv().Kick(0);
  PeerSend({}, Frame(3000, 5));  // needs three buffers: held in the device
  net_->ProcessBackend();
  guest_->PostTx(Concat(EncodeHdr({}, 12, endian()), Frame(60, 0)), {});
  drv().Reset();
  EXPECT_EQ(net_->stats().rx_dropped, 1u);  // the frame held at reset
  drv().Kick(1);
  drv().Kick(0);
  PeerSend({}, Frame(60, 5));
  net_->ProcessBackend();
  EXPECT_EQ(drv().queue(0).used_idx(), 0);
  EXPECT_EQ(drv().queue(1).used_idx(), 0);
  EXPECT_EQ(peer_->queued(), 0u);
  // The next driver gets the frame that waited in the backend.
  ASSERT_OK(drv().Start(Features()));
  guest_->PostRx({2048});
  drv().Kick(0);
  EXPECT_EQ(drv().queue(0).PendingUsed(), 1);
}

TEST_P(NetTest, LegacyDriverMayWriteMac) {
  ASSERT_OK(drv().Start(Features::Of({kNetFMac})));
  const uint8_t mac[] = {0x02, 0, 0, 0, 0, 9};
  state().WriteConfig(0, mac, drv().endian());
  if (GetParam().legacy) {
    EXPECT_EQ(net_->mac(), (MacAddress{0x02, 0, 0, 0, 0, 9}));
  } else {
    EXPECT_EQ(net_->mac(), kMac);
  }
  // Status is never driver-writable.
  const uint8_t zero[2] = {0, 0};
  state().WriteConfig(6, zero, drv().endian());
  EXPECT_TRUE(net_->link_up());
}

TEST_P(NetTest, BackendFdIsReadableWhileFramesWait) {
  ASSERT_OK(drv().Start(Features()));
  ASSERT_EQ(net_->backend_fds().size(), 1u);
  const int fd = net_->backend_fds()[0];
  uint64_t v;
  EXPECT_LT(read(fd, &v, sizeof(v)), 0);  // nothing waits
  PeerSend({}, Frame(60, 1));
  pollfd p = {.fd = fd, .events = POLLIN, .revents = 0};
  EXPECT_EQ(poll(&p, 1, 0), 1);
  guest_->PostRx({2048});
  drv().Kick(0);
  EXPECT_EQ(poll(&p, 1, 0), 0);
}

// Two devices wired back to back, each driven in this test's mode, and a
// third pairing a driver of this mode with a modern one.
TEST_P(NetTest, BackToBackExchange) {
  const Mode modern{"Modern", false, Endian::kLittle};
  for (const Mode& other : {GetParam(), modern}) {
    for (bool mrg : {false, true}) {
      SCOPED_TRACE(absl::StrCat(other.name, mrg ? " MRG_RXBUF" : ""));
      auto pair = LoopbackNetBackend::CreatePair();
      ASSERT_OK(pair.status());
      ASSERT_OK_AND_ASSIGN(std::unique_ptr<NetDevice> a,
                           NetDevice::Create(std::move(pair->first), {}));
      ASSERT_OK_AND_ASSIGN(std::unique_ptr<NetDevice> b,
                           NetDevice::Create(std::move(pair->second), {}));
      Guest ga(*a, GetParam());
      Guest gb(*b, other);
      const Features f =
          mrg ? Features::Of({kNetFMrgRxbuf, kNetFCsum, kNetFGuestCsum})
              : Features::Of({kNetFCsum, kNetFGuestCsum});
      ASSERT_OK(ga.driver->Start(f));
      ASSERT_OK(gb.driver->Start(f));
      struct Side {
        Guest* g;
        NetDevice* dev;
      };
      const Side sides[2] = {{&ga, a.get()}, {&gb, b.get()}};
      for (int dir = 0; dir < 2; ++dir) {
        const Side& tx = sides[dir];
        const Side& rx = sides[1 - dir];
        const Endian tx_e = tx.g->driver->endian();
        const Endian rx_e = rx.g->driver->endian();
        const size_t ths = tx.dev->header_size();
        const size_t rhs = rx.dev->header_size();
        const std::vector<uint64_t> bufs = rx.g->PostRx({2048, 2048});
        rx.g->driver->Kick(0);
        const std::vector<uint8_t> frame = Frame(1400 + dir, dir);
        VirtioNetHdr h{};
        h.flags = kNetHdrFNeedsCsum;
        h.csum_start = 34;
        h.csum_offset = 6;
        tx.g->PostTx(Concat(EncodeHdr(h, ths, tx_e), frame), {ths});
        tx.g->driver->Kick(1);
        EXPECT_TRUE(tx.g->driver->queue(1).PopUsed().has_value());
        rx.dev->ProcessBackend();  // the VMM saw rx_fd readable
        std::optional<VirtqUsedElem> used = rx.g->driver->queue(0).PopUsed();
        ASSERT_TRUE(used.has_value());
        ASSERT_EQ(used->len, rhs + frame.size());
        const std::vector<uint8_t> got = rx.g->driver->Get(bufs[0], used->len);
        const VirtioNetHdr rh = DecodeHdr(got, rhs, rx_e);
        ExpectSameHdr(rh, h);
        if (rhs == kNetHdrSize) EXPECT_EQ(rh.num_buffers, 1);
        EXPECT_TRUE(std::equal(frame.begin(), frame.end(), got.begin() + rhs));
      }
      EXPECT_EQ(a->stats().tx_frames, 1u);
      EXPECT_EQ(a->stats().rx_frames, 1u);
      EXPECT_EQ(b->stats().tx_frames, 1u);
      EXPECT_EQ(b->stats().rx_frames, 1u);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Modes, NetTest,
    ::testing::Values(Mode{"Modern", false, Endian::kLittle},
                      Mode{"LegacyLittleEndian", true, Endian::kLittle},
                      Mode{"LegacyBigEndian", true, Endian::kBig}),
    [](const ::testing::TestParamInfo<Mode>& info) { return info.param.name; });

// ---------------------------------------------------------------------------
// TAP: needs /dev/net/tun and CAP_NET_ADMIN; skipped without them.

absl::StatusOr<std::unique_ptr<TapBackend>> OpenTapOrSkipReason(
    std::string* reason) {
  absl::StatusOr<std::unique_ptr<TapBackend>> tap = TapBackend::Create("");
  if (!tap.ok() &&
      (tap.status().code() == absl::StatusCode::kNotFound ||
       tap.status().code() == absl::StatusCode::kPermissionDenied)) {
    *reason = std::string(tap.status().message());
  }
  return tap;
}

// ethtool's view of an interface feature (ETHTOOL_GTSO, ETHTOOL_GTXCSUM).
int EthtoolGet(const std::string& ifname, uint32_t cmd) {
  const int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (sock < 0) return -1;
  ethtool_value value = {.cmd = cmd, .data = 0};
  ifreq ifr;
  std::memset(&ifr, 0, sizeof(ifr));
  std::memcpy(ifr.ifr_name, ifname.data(), ifname.size());
  ifr.ifr_data = reinterpret_cast<char*>(&value);
  const int r = ioctl(sock, SIOCETHTOOL, &ifr);
  close(sock);
  return r < 0 ? -1 : static_cast<int>(value.data);
}

TEST(TapBackendTest, RejectsLongName) {
  EXPECT_THAT(TapBackend::Create("a-name-far-too-long-for-linux"),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(TapBackendTest, OpensTapWithVnetHeaderAndOffloads) {
  std::string reason;
  absl::StatusOr<std::unique_ptr<TapBackend>> tap =
      OpenTapOrSkipReason(&reason);
  if (!reason.empty()) GTEST_SKIP() << "no TAP here: " << reason;
  ASSERT_OK(tap.status());
  TapBackend* backend = tap->get();
  const std::string name = backend->name();
  EXPECT_FALSE(name.empty());
  ifreq ifr;
  std::memset(&ifr, 0, sizeof(ifr));
  ASSERT_EQ(ioctl(backend->fd(), TUNGETIFF, &ifr), 0);
  EXPECT_EQ(ifr.ifr_flags & (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR),
            IFF_TAP | IFF_NO_PI | IFF_VNET_HDR);
  EXPECT_EQ(std::string(ifr.ifr_name), name);
  // Nothing offloaded toward the guest before a driver starts.
  EXPECT_EQ(backend->tun_offloads(), 0u);
  EXPECT_EQ(EthtoolGet(name, ETHTOOL_GTSO), 0);
  // Non-blocking: nothing to read.
  std::vector<uint8_t> buf(kNetHdrSize + kMaxNetFrameSize);
  ASSERT_OK_AND_ASSIGN(size_t n, backend->Receive(absl::MakeSpan(buf)));
  EXPECT_EQ(n, 0u);

  ASSERT_OK_AND_ASSIGN(std::unique_ptr<NetDevice> net,
                       NetDevice::Create(std::move(*tap), {}));
  const Features offered = net->offered_features();
  EXPECT_TRUE(offered.Has(kNetFGuestTso4));
  EXPECT_TRUE(offered.Has(kNetFHostTso6));
  EXPECT_FALSE(offered.Has(kNetFHostUfo));

  for (const Mode& mode : {Mode{"Modern", false, Endian::kLittle},
                           Mode{"Legacy", true, Endian::kLittle}}) {
    SCOPED_TRACE(mode.name);
    Guest g(*net, mode);
    // Offloads on, MRG_RXBUF on: a 12-byte header.
    ASSERT_OK(g.driver->Start(
        Features::Of({kNetFMrgRxbuf, kNetFGuestCsum, kNetFGuestTso4,
                      kNetFGuestTso6, kNetFGuestEcn, kNetFCsum})));
    int size = 0;
    ASSERT_EQ(ioctl(backend->fd(), TUNGETVNETHDRSZ, &size), 0);
    EXPECT_EQ(size, 12);
    EXPECT_EQ(backend->tun_offloads(),
              unsigned{TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN});
    EXPECT_EQ(EthtoolGet(name, ETHTOOL_GTSO), 1);
    EXPECT_EQ(EthtoolGet(name, ETHTOOL_GTXCSUM), 1);
    // No offloads, no MRG_RXBUF: 10 bytes for legacy, 12 for modern.
    ASSERT_OK(g.driver->Start(Features()));
    ASSERT_EQ(ioctl(backend->fd(), TUNGETVNETHDRSZ, &size), 0);
    EXPECT_EQ(size, mode.legacy ? 10 : 12);
    EXPECT_EQ(backend->tun_offloads(), 0u);
    EXPECT_EQ(EthtoolGet(name, ETHTOOL_GTSO), 0);
    g.driver->Reset();
  }
}

// Sets IFF_UP on `ifname` (with IPv6 off, so the kernel sends nothing of its
// own). Returns errno, or 0.
int BringUp(const std::string& ifname) {
  if (FILE* f =
          fopen(("/proc/sys/net/ipv6/conf/" + ifname + "/disable_ipv6").c_str(),
                "w")) {
    fputs("1", f);
    fclose(f);
  }
  const int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (sock < 0) return errno;
  ifreq ifr;
  std::memset(&ifr, 0, sizeof(ifr));
  std::memcpy(ifr.ifr_name, ifname.data(), ifname.size());
  int error = 0;
  if (ioctl(sock, SIOCGIFFLAGS, &ifr) < 0) {
    error = errno;
  } else {
    ifr.ifr_flags |= IFF_UP;
    if (ioctl(sock, SIOCSIFFLAGS, &ifr) < 0) error = errno;
  }
  close(sock);
  return error;
}

// Frames through a real TAP: the guest's transmit reaches a packet socket on
// the interface, and what the packet socket sends reaches the guest.
TEST(TapBackendTest, FramesCrossTheTap) {
  std::string reason;
  absl::StatusOr<std::unique_ptr<TapBackend>> tap =
      OpenTapOrSkipReason(&reason);
  if (!reason.empty()) GTEST_SKIP() << "no TAP here: " << reason;
  ASSERT_OK(tap.status());
  const std::string name = (*tap)->name();
  if (const int error = BringUp(name); error != 0) {
    GTEST_SKIP() << "cannot bring " << name << " up: " << std::strerror(error);
  }
  constexpr uint16_t kEtherType = 0x88b5;  // IEEE local experimental
  const int ps = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(kEtherType));
  if (ps < 0) GTEST_SKIP() << "no packet socket: " << std::strerror(errno);
  sockaddr_ll sll = {};
  sll.sll_family = AF_PACKET;
  sll.sll_protocol = htons(kEtherType);
  ifreq ifr;
  std::memset(&ifr, 0, sizeof(ifr));
  std::memcpy(ifr.ifr_name, name.data(), name.size());
  ASSERT_EQ(ioctl(ps, SIOCGIFINDEX, &ifr), 0);
  sll.sll_ifindex = ifr.ifr_ifindex;
  ASSERT_EQ(bind(ps, reinterpret_cast<sockaddr*>(&sll), sizeof(sll)), 0);

  ASSERT_OK_AND_ASSIGN(std::unique_ptr<NetDevice> net,
                       NetDevice::Create(std::move(*tap), {.mac = kMac}));
  const Mode mode{"Legacy", true, Endian::kLittle};
  Guest g(*net, mode);
  ASSERT_OK(g.driver->Start(Features()));  // legacy, 10-byte header
  ASSERT_EQ(net->header_size(), kLegacyNetHdrSize);

  // Guest -> host.
  std::vector<uint8_t> frame(100, 0xab);
  const uint8_t dst[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  std::memcpy(frame.data(), dst, 6);
  std::memcpy(frame.data() + 6, kMac.data(), 6);
  frame[12] = kEtherType >> 8;
  frame[13] = kEtherType & 0xff;
  g.PostTx(Concat(std::vector<uint8_t>(kLegacyNetHdrSize, 0), frame), {10});
  g.driver->Kick(1);
  EXPECT_EQ(net->stats().tx_frames, 1u);
  pollfd p = {.fd = ps, .events = POLLIN, .revents = 0};
  ASSERT_EQ(poll(&p, 1, 2000), 1);
  std::vector<uint8_t> got(2048);
  const ssize_t n = recv(ps, got.data(), got.size(), 0);
  ASSERT_EQ(n, static_cast<ssize_t>(frame.size()));
  got.resize(static_cast<size_t>(n));
  EXPECT_EQ(got, frame);

  // Host -> guest.
  const std::vector<uint64_t> bufs = g.PostRx({2048, 2048, 2048, 2048});
  g.driver->Kick(0);
  std::vector<uint8_t> reply(80, 0xcd);
  std::memcpy(reply.data(), kMac.data(), 6);
  std::memset(reply.data() + 6, 0x02, 6);
  reply[12] = kEtherType >> 8;
  reply[13] = kEtherType & 0xff;
  ASSERT_EQ(send(ps, reply.data(), reply.size(), 0),
            static_cast<ssize_t>(reply.size()));
  pollfd t = {.fd = net->backend_fds()[0], .events = POLLIN, .revents = 0};
  ASSERT_EQ(poll(&t, 1, 2000), 1);
  net->ProcessBackend();
  bool found = false;
  for (int i = 0; i < 4 && !found; ++i) {
    std::optional<VirtqUsedElem> used = g.driver->queue(0).PopUsed();
    if (!used.has_value()) break;
    const std::vector<uint8_t> b = g.driver->Get(bufs[i], used->len);
    if (b.size() == kLegacyNetHdrSize + reply.size() &&
        std::equal(reply.begin(), reply.end(), b.begin() + kLegacyNetHdrSize)) {
      found = true;
    }
  }
  EXPECT_TRUE(found);
  close(ps);
  g.driver->Reset();
}

}  // namespace
}  // namespace vmmkit::virtio
