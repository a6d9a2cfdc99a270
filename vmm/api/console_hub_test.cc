#include "vmm/api/console_hub.h"

#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace vmmkit::api {
namespace {

TEST(ConsoleHubTest, ReplayStartsAtTheOldestByteLiveAtTheEnd) {
  ConsoleHub hub(1024);
  hub.Append("boot ");
  uint64_t replay = hub.StartPosition(true);
  uint64_t live = hub.StartPosition(false);
  hub.Append("done");
  EXPECT_EQ(hub.Read(&replay, absl::ZeroDuration(), 100).data, "boot done");
  EXPECT_EQ(hub.Read(&live, absl::ZeroDuration(), 100).data, "done");
  EXPECT_EQ(replay, 9u);
  EXPECT_EQ(live, 9u);
  EXPECT_EQ(hub.end_position(), 9u);
}

TEST(ConsoleHubTest, ReadHonoursMaxBytesAndTimesOutEmpty) {
  ConsoleHub hub(1024);
  hub.Append("abcdef");
  uint64_t pos = 0;
  EXPECT_EQ(hub.Read(&pos, absl::ZeroDuration(), 4).data, "abcd");
  EXPECT_EQ(hub.Read(&pos, absl::ZeroDuration(), 4).data, "ef");
  absl::Time start = absl::Now();
  ConsoleHub::Chunk c = hub.Read(&pos, absl::Milliseconds(50), 4);
  EXPECT_TRUE(c.data.empty());
  EXPECT_FALSE(c.closed);
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(40));
}

TEST(ConsoleHubTest, AReaderThatFellBehindIsToldHowMuchItLost) {
  ConsoleHub hub(10);
  uint64_t pos = hub.StartPosition(true);
  std::string all;
  for (int i = 0; i < 10; ++i) {
    std::string part(5, static_cast<char>('a' + i));
    hub.Append(part);
    all += part;
  }
  ConsoleHub::Chunk c = hub.Read(&pos, absl::ZeroDuration(), 1000);
  // At least the last 10 bytes are kept, at most 20.
  EXPECT_GE(c.data.size(), 10u);
  EXPECT_LE(c.data.size(), 20u);
  EXPECT_EQ(c.dropped + c.data.size(), all.size());
  EXPECT_EQ(c.data, all.substr(c.dropped));
  EXPECT_EQ(pos, all.size());
}

TEST(ConsoleHubTest, CloseWakesAWaitingReaderAndEndsTheStream) {
  ConsoleHub hub(64);
  hub.Append("x");
  uint64_t pos = 0;
  std::thread closer([&hub] {
    absl::SleepFor(absl::Milliseconds(20));
    hub.Close();
  });
  EXPECT_EQ(hub.Read(&pos, absl::Seconds(10), 64).data, "x");
  absl::Time start = absl::Now();
  ConsoleHub::Chunk c = hub.Read(&pos, absl::Seconds(10), 64);
  closer.join();
  EXPECT_TRUE(c.closed);
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  hub.Append("after close");  // ignored
  EXPECT_EQ(hub.end_position(), 1u);
}

TEST(ConsoleHubTest, ConcurrentReadersEachSeeEveryByteInOrder) {
  ConsoleHub hub(1 << 20);
  constexpr int kReaders = 8;
  constexpr int kChunks = 2000;
  std::vector<std::string> seen(kReaders);
  std::vector<std::thread> readers;
  std::vector<uint64_t> starts;
  for (int r = 0; r < kReaders; ++r) starts.push_back(hub.StartPosition(true));
  for (int r = 0; r < kReaders; ++r) {
    readers.emplace_back([&, r] {
      uint64_t pos = starts[r];
      for (;;) {
        ConsoleHub::Chunk c = hub.Read(&pos, absl::Seconds(5), 333);
        seen[r] += c.data;
        if (c.closed) break;
      }
    });
  }
  std::string expected;
  for (int i = 0; i < kChunks; ++i) {
    std::string part = std::to_string(i) + ",";
    expected += part;
    hub.Append(part);
  }
  hub.Close();
  for (std::thread& t : readers) t.join();
  for (int r = 0; r < kReaders; ++r) EXPECT_EQ(seen[r], expected) << r;
}

TEST(ConsoleHubTest, APositionFromTheFutureIsClampedToTheEnd) {
  ConsoleHub hub(16);
  hub.Append("abc");
  uint64_t pos = 1000;
  ConsoleHub::Chunk c = hub.Read(&pos, absl::ZeroDuration(), 16);
  EXPECT_TRUE(c.data.empty());
  EXPECT_EQ(pos, 3u);
}

}  // namespace
}  // namespace vmmkit::api
