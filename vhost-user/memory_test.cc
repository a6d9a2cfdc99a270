#include "vhost-user/memory.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "base/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vmmkit::vhost_user {
namespace {

using ::testing::HasSubstr;
using ::vmmkit::testing::StatusIs;

constexpr uint64_t kFileSize = 4 << 20;

// A memfd of kFileSize bytes, byte i = i * 3 (mod 256), and its own view.
class MemoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fd_.reset(memfd_create("vhost-user-memory-test", MFD_CLOEXEC));
    ASSERT_TRUE(fd_.valid());
    ASSERT_EQ(ftruncate(fd_.get(), kFileSize), 0);
    view_ = static_cast<uint8_t*>(mmap(
        nullptr, kFileSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd_.get(), 0));
    ASSERT_NE(view_, MAP_FAILED);
    for (uint64_t i = 0; i < kFileSize; ++i) view_[i] = i * 3;
  }
  void TearDown() override { munmap(view_, kFileSize); }

  std::vector<ScopedFd> Fds(size_t n) {
    std::vector<ScopedFd> fds;
    for (size_t i = 0; i < n; ++i) fds.emplace_back(dup(fd_.get()));
    return fds;
  }
  absl::StatusOr<std::unique_ptr<VhostUserMemory>> Map(
      const std::vector<MemRegion>& table) {
    std::vector<ScopedFd> fds = Fds(table.size());
    return VhostUserMemory::Map(table, fds);
  }

  ScopedFd fd_;
  uint8_t* view_ = nullptr;
};

TEST_F(MemoryTest, MapsRegionsAtTheirOffsetsAndTranslatesUserAddresses) {
  // Region 1 starts at an offset that is not page-aligned.
  const std::vector<MemRegion> table = {
      {.guest_addr = 0, .size = 1 << 20, .user_addr = 0x7f0000000000},
      {.guest_addr = 1ull << 32,
       .size = 1 << 20,
       .user_addr = 0x7f0000200000,
       .mmap_offset = (2 << 20) + 0x100}};
  ASSERT_OK_AND_ASSIGN(auto mem, Map(table));
  EXPECT_EQ(mem->regions().size(), 2u);
  EXPECT_EQ(mem->total_size(), 2u << 20);
  EXPECT_EQ(mem->table(), table);
  ASSERT_OK_AND_ASSIGN(uint8_t b0, mem->ReadObj<uint8_t>(0x1234));
  EXPECT_EQ(b0, static_cast<uint8_t>(0x1234 * 3));
  ASSERT_OK_AND_ASSIGN(uint8_t b1, mem->ReadObj<uint8_t>((1ull << 32) + 5));
  EXPECT_EQ(b1, static_cast<uint8_t>(((2 << 20) + 0x100 + 5) * 3));
  // Shared both ways.
  ASSERT_OK(mem->WriteObj<uint8_t>((1ull << 32) + 5, 0xaa));
  EXPECT_EQ(view_[(2 << 20) + 0x105], 0xaa);

  ASSERT_OK_AND_ASSIGN(uint64_t g, mem->UserToGuest(0x7f0000000010));
  EXPECT_EQ(g, 0x10u);
  ASSERT_OK_AND_ASSIGN(g, mem->UserToGuest(0x7f0000200000 + 0xfffff));
  EXPECT_EQ(g, (1ull << 32) + 0xfffff);
  EXPECT_THAT(mem->UserToGuest(0x7f0000100000),  // the gap
              StatusIs(absl::StatusCode::kOutOfRange,
                       HasSubstr("outside the memory table")));
  EXPECT_THAT(mem->UserToGuest(0x7f0000300000),
              StatusIs(absl::StatusCode::kOutOfRange));
  // Guest addresses outside the regions are outside guest memory.
  EXPECT_THAT(mem->Translate(1 << 20, 1),
              StatusIs(absl::StatusCode::kOutOfRange));
  // memfd_create without MFD_ALLOW_SEALING is sealed with F_SEAL_SEAL only.
  EXPECT_EQ(mem->sealed_regions(), 0u);
}

TEST_F(MemoryTest, HostAddressesKeepTheGuestAlignment) {
  // Offset and guest address both 8 past a 16-byte boundary: accepted, and
  // a 16-byte-aligned guest address is 16-byte aligned in the mapping.
  ASSERT_OK_AND_ASSIGN(
      auto mem,
      Map({{.guest_addr = 0x10008, .size = 8192, .mmap_offset = 0x1008}}));
  ASSERT_OK_AND_ASSIGN(absl::Span<uint8_t> span, mem->Translate(0x10010, 16));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(span.data()) % 16, 0u);
  EXPECT_EQ(span[0], static_cast<uint8_t>(0x1010 * 3));
}

TEST_F(MemoryTest, CountsSealedRegions) {
  ScopedFd sealed(memfd_create("sealed", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  ASSERT_EQ(ftruncate(sealed.get(), 1 << 20), 0);
  ASSERT_EQ(fcntl(sealed.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW), 0);
  std::vector<ScopedFd> fds;
  fds.push_back(std::move(sealed));
  ASSERT_OK_AND_ASSIGN(
      auto mem,
      VhostUserMemory::Map({{.guest_addr = 0, .size = 1 << 20}}, fds));
  EXPECT_EQ(mem->sealed_regions(), 1u);
}

TEST_F(MemoryTest, Refusals) {
  struct Case {
    std::vector<MemRegion> table;
    const char* error;
  };
  const Case cases[] = {
      {{}, "0 regions"},
      {std::vector<MemRegion>(9, {0, 4096, 0, 0}), "9 regions"},
      {{{.guest_addr = 0, .size = 0}}, "region 0 is empty"},
      {{{.guest_addr = ~0ull - 4095, .size = 8192}}, "wraps around"},
      {{{.guest_addr = 0, .size = 8192, .user_addr = ~0ull - 100}},
       "wraps around"},
      {{{.guest_addr = 0, .size = 8192, .mmap_offset = ~0ull - 100}},
       "wraps around"},
      {{{.guest_addr = 0, .size = 1 << 20, .user_addr = 0},
        {.guest_addr = 0xff000, .size = 4096, .user_addr = 1 << 21}},
       "regions 0 and 1 overlap in guest memory"},
      {{{.guest_addr = 0, .size = 1 << 20, .user_addr = 0x10000},
        {.guest_addr = 1 << 20, .size = 4096, .user_addr = 0x20000}},
       "regions 0 and 1 overlap in front-end address space"},
      {{{.guest_addr = 0, .size = kFileSize, .mmap_offset = 4096}},
       "extends beyond the end of its file"},
      {{{.guest_addr = 0, .size = 2 * kFileSize}}, "beyond the end"},
      // Guest-aligned ring indices would be misaligned in the host mapping
      // (atomic accesses to them undefined).
      {{{.guest_addr = 0, .size = 4096, .mmap_offset = 1}}, "differ modulo 16"},
      {{{.guest_addr = 0x1008, .size = 4096, .mmap_offset = 0x10}},
       "differ modulo 16"},
  };
  for (const Case& c : cases) {
    EXPECT_THAT(Map(c.table), StatusIs(absl::StatusCode::kInvalidArgument,
                                       HasSubstr(c.error)))
        << c.error;
  }
  // Fds: one per region, each valid.
  std::vector<ScopedFd> one = Fds(1);
  EXPECT_THAT(
      VhostUserMemory::Map({{0, 4096, 0, 0}, {8192, 4096, 8192, 0}}, one),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("2 regions and 1 fds")));
  std::vector<ScopedFd> none(1);
  EXPECT_THAT(VhostUserMemory::Map({{0, 4096, 0, 0}}, none),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("no file descriptor")));
  // An fd that cannot be mapped (a pipe).
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  std::vector<ScopedFd> pipe_fd;
  pipe_fd.emplace_back(p[0]);
  ScopedFd w(p[1]);
  EXPECT_FALSE(VhostUserMemory::Map({{0, 4096, 0, 0}}, pipe_fd).ok());
}

}  // namespace
}  // namespace vmmkit::vhost_user
