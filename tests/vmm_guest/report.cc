#include "tests/vmm_guest/report.h"

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"

namespace vmmkit::tests::vmm_guest {

std::string ReportLine::Get(const std::string& key) const {
  auto it = fields.find(key);
  return it == fields.end() ? "" : it->second;
}

uint64_t ReportLine::Number(const std::string& key) const {
  const std::string v = Get(key);
  uint64_t n = 0;
  if (v.size() > 2 && v[0] == '0' && v[1] == 'x') {
    return absl::SimpleHexAtoi(v.substr(2), &n) ? n : 0;
  }
  return absl::SimpleAtoi(v, &n) ? n : 0;
}

std::vector<ReportLine> ParseReport(absl::string_view serial) {
  std::vector<ReportLine> out;
  for (absl::string_view raw : absl::StrSplit(serial, '\n')) {
    const size_t at = raw.find("VMMKIT ");
    if (at == absl::string_view::npos) continue;
    ReportLine line;
    line.text = std::string(raw.substr(at));
    absl::string_view rest = raw.substr(at + 7);
    while (!rest.empty()) {
      while (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
      const size_t eq = rest.find('=');
      const size_t sp = rest.find(' ');
      if (eq == absl::string_view::npos ||
          (sp != absl::string_view::npos && sp < eq)) {
        // A bare word ("done", "stop requested"): a key with no value.
        const absl::string_view word = rest.substr(0, sp);
        if (!word.empty()) line.fields.emplace(std::string(word), "");
        rest.remove_prefix(sp == absl::string_view::npos ? rest.size() : sp);
        continue;
      }
      const std::string key(rest.substr(0, eq));
      rest.remove_prefix(eq + 1);
      std::string value;
      if (!rest.empty() && rest.front() == '"') {
        const size_t close = rest.find('"', 1);
        value = std::string(rest.substr(1, close == absl::string_view::npos
                                               ? absl::string_view::npos
                                               : close - 1));
        rest.remove_prefix(close == absl::string_view::npos ? rest.size()
                                                            : close + 1);
      } else {
        const size_t end = rest.find(' ');
        value = std::string(rest.substr(0, end));
        rest.remove_prefix(end == absl::string_view::npos ? rest.size() : end);
      }
      line.fields.emplace(key, value);
    }
    out.push_back(std::move(line));
  }
  return out;
}

std::string GuestImagePath() {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const char* workspace = std::getenv("TEST_WORKSPACE");
  if (srcdir != nullptr) {
    return absl::StrCat(srcdir, "/",
                        workspace != nullptr ? workspace : "vmmkit",
                        "/tests/vmm_guest/guest.elf");
  }
  return "tests/vmm_guest/guest.elf";
}

uint8_t BlkPattern(uint32_t i) {
  return static_cast<uint8_t>((i * 31u + (i >> 9)) ^ 0xa5u);
}

std::string MakeImage(const std::string& name, size_t bytes) {
  const std::string path = absl::StrCat(::testing::TempDir(), "/", name);
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  const std::vector<char> zeros(bytes, 0);
  f.write(zeros.data(), static_cast<std::streamsize>(zeros.size()));
  return path;
}

const ReportLine* FindLine(
    const std::vector<ReportLine>& lines,
    std::initializer_list<std::pair<std::string, std::string>> match) {
  for (const ReportLine& l : lines) {
    bool ok = true;
    for (const auto& [k, v] : match) ok = ok && l.Has(k) && l.Get(k) == v;
    if (ok) return &l;
  }
  return nullptr;
}

}  // namespace vmmkit::tests::vmm_guest
