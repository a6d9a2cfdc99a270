#include "tests/vmm_guest/report.h"

#include "gtest/gtest.h"

namespace vmmkit::tests::vmm_guest {
namespace {

TEST(ParseReportTest, FieldsQuotesAndBareWords) {
  const std::vector<ReportLine> lines = ParseReport(
      "SeaBIOS noise\r\n"
      "VMMKIT guest start cmdline=\"mode=legacy msix=0\"\n"
      "junk VMMKIT device=00:01.0 type=2 features=0x120000244 qsize=16\n"
      "VMMKIT done failures=0");
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0].Get("cmdline"), "mode=legacy msix=0");
  EXPECT_TRUE(lines[0].Has("guest"));
  EXPECT_TRUE(lines[0].Has("start"));
  EXPECT_EQ(lines[1].Get("device"), "00:01.0");
  EXPECT_EQ(lines[1].Number("features"), 0x120000244u);
  EXPECT_EQ(lines[1].Number("qsize"), 16u);
  EXPECT_EQ(lines[1].Number("absent"), 0u);
  EXPECT_EQ(lines[1].text,
            "VMMKIT device=00:01.0 type=2 features=0x120000244 qsize=16");
  EXPECT_NE(FindLine(lines, {{"done", ""}, {"failures", "0"}}), nullptr);
  EXPECT_EQ(FindLine(lines, {{"done", ""}, {"failures", "1"}}), nullptr);
}

TEST(ParseReportTest, UnterminatedQuoteAndEmpty) {
  const std::vector<ReportLine> lines =
      ParseReport("VMMKIT console input=\"abc\nVMMKIT \n");
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0].Get("input"), "abc");
  EXPECT_TRUE(lines[1].fields.empty());
}

TEST(BlkPatternTest, MatchesTheGuestsFormula) {
  EXPECT_EQ(BlkPattern(0), 0xa5);
  EXPECT_EQ(BlkPattern(1), (31 ^ 0xa5) & 0xff);
  EXPECT_EQ(BlkPattern(512), ((512 * 31 + 1) ^ 0xa5) & 0xff);
}

}  // namespace
}  // namespace vmmkit::tests::vmm_guest
