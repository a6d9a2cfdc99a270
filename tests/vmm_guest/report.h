// tests/vmm_guest/report.h: the test guest's serial report as data, and the
// host-side facts its checks leave behind (the blk pattern).
//
//   std::vector<ReportLine> lines = ParseReport(serial);
//   for (const ReportLine& l : lines)
//     if (l.Get("check") == "blk") EXPECT_EQ(l.Get("result"), "ok");
//
// A line "VMMKIT done failures=0" has fields {done: "", failures: "0"}:
// key=value pairs, "quoted values" with spaces, bare words as keys with an
// empty value. Thread-compatible.
#ifndef VMMKIT_TESTS_VMM_GUEST_REPORT_H_
#define VMMKIT_TESTS_VMM_GUEST_REPORT_H_

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"

namespace vmmkit::tests::vmm_guest {

struct ReportLine {
  std::string text;
  std::map<std::string, std::string> fields;
  bool Has(const std::string& key) const { return fields.count(key) != 0; }
  // "" when absent.
  std::string Get(const std::string& key) const;
  // Hex ("0x...") or decimal; 0 when absent or malformed.
  uint64_t Number(const std::string& key) const;
};

// The "VMMKIT ..." lines of a serial log, in order.
std::vector<ReportLine> ParseReport(absl::string_view serial);

// Where the guest image is in the test's runfiles.
std::string GuestImagePath();

// The byte at offset i of the pattern the guest's blk check writes at byte
// 4096 of the image (devices.cc computes the same).
uint8_t BlkPattern(uint32_t i);

// Creates a zero-filled image of `bytes` in the test's temp directory.
std::string MakeImage(const std::string& name, size_t bytes);

// The first line that has every key with the given value; nullptr if none.
const ReportLine* FindLine(
    const std::vector<ReportLine>& lines,
    std::initializer_list<std::pair<std::string, std::string>> match);

}  // namespace vmmkit::tests::vmm_guest

#endif  // VMMKIT_TESTS_VMM_GUEST_REPORT_H_
