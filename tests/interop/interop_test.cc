// Interop tests: real Linux virtio drivers (the Debian cloud kernel in a QEMU
// TCG guest built by tools/guest-image) against vmmkit's vhost-user back ends,
// and against QEMU's built-in devices as the reference that validates the guest
// image and the harness.
//
// Each case runs `tools/qemu-interop CASE`, which boots the guest, checks the
// guest's "VMMKIT" report and the host side, and prints one
// "qemu-interop: CASE: check NAME: ok|FAIL ..." line per check. This test
// asserts the script's verdict and, so that no check can silently go missing,
// that every check the case must make was made and passed.
//
// Environment: VMMKIT_GUEST_DIR (a built guest) if set; otherwise the suite
// runs tools/guest-image once, with the cache in the invoking user's
// ~/.cache/vmmkit (Bazel points HOME at the test's temporary directory, which
// would rebuild the image every run). Needs qemu-system-x86 (tools/test
// installs it), and CAP_NET_ADMIN + /dev/net/tun for the net cases (skipped
// with the reason otherwise). Tagged `local`: it needs the real /dev and netns.
//
// Thread-compatible; cases run one after another.

#include <pwd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace {

struct Case {
  std::string name;                 // tools/qemu-interop case
  std::vector<std::string> checks;  // checks that must be reported "ok"
};

std::ostream& operator<<(std::ostream& os, const Case& c) {
  return os << c.name;
}

struct RunResult {
  int exit_status = -1;
  std::string output;
};

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr ? "" : v;
}

// The workspace's runfiles root, where tools/ is reachable.
std::string RunfilesRoot() {
  std::string srcdir = Env("TEST_SRCDIR");
  std::string ws = Env("TEST_WORKSPACE");
  if (srcdir.empty()) return ".";
  return absl::StrCat(srcdir, "/", ws.empty() ? "__main__" : ws);
}

// Single-quotes `s` for /bin/sh.
std::string ShellQuote(absl::string_view s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  out += "'";
  return out;
}

RunResult RunScript(const std::string& command) {
  RunResult r;
  FILE* p = popen(command.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) {
    r.output.append(buf, n);
    std::cout.write(buf, static_cast<std::streamsize>(n));
    std::cout.flush();
  }
  int status = pclose(p);
  r.exit_status =
      WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

// Checks the script reported for `case_name` with the given verdict word.
std::set<std::string> ChecksWith(const std::string& output,
                                 const std::string& case_name,
                                 absl::string_view verdict) {
  std::set<std::string> names;
  const std::string prefix =
      absl::StrCat("qemu-interop: ", case_name, ": check ");
  for (absl::string_view line : absl::StrSplit(output, '\n')) {
    if (!absl::ConsumePrefix(&line, prefix)) continue;
    std::vector<absl::string_view> parts =
        absl::StrSplit(line, absl::MaxSplits(": ", 1));
    if (parts.size() == 2 && absl::StartsWith(parts[1], verdict)) {
      names.emplace(parts[0]);
    }
  }
  return names;
}

// The environment prefix for tools/qemu-interop and tools/guest-image: where
// the guest-image cache is when neither VMMKIT_GUEST_DIR nor VMMKIT_CACHE is
// set.
std::string CacheEnv() {
  if (!Env("VMMKIT_GUEST_DIR").empty() || !Env("VMMKIT_CACHE").empty())
    return "";
  const passwd* pw = getpwuid(getuid());
  if (pw == nullptr || pw->pw_dir == nullptr) return "";
  return absl::StrCat(
      "VMMKIT_CACHE=", ShellQuote(absl::StrCat(pw->pw_dir, "/.cache/vmmkit")),
      " ");
}

class InteropTest : public testing::TestWithParam<Case> {
 protected:
  // Builds (or finds) the guest once for all cases; each case then gets
  // VMMKIT_GUEST_DIR instead of re-checking the package versions.
  static void SetUpTestSuite() {
    if (!Env("VMMKIT_GUEST_DIR").empty()) {
      *guest_dir_ = Env("VMMKIT_GUEST_DIR");
      return;
    }
    RunResult r = RunScript(absl::StrCat(
        CacheEnv(), ShellQuote(RunfilesRoot() + "/tools/guest-image"),
        " 2>&1 | tail -n 1"));
    std::string dir(absl::StripAsciiWhitespace(r.output));
    if (r.exit_status == 0 && absl::StartsWith(dir, "/")) *guest_dir_ = dir;
  }
  static std::string* guest_dir_;
};
std::string* InteropTest::guest_dir_ = new std::string;

TEST_P(InteropTest, GuestDriverAgainstDevice) {
  const Case& c = GetParam();
  const std::string root = RunfilesRoot();
  // Without a guest from SetUpTestSuite the script builds one itself (and
  // reports why that fails).
  std::string env =
      guest_dir_->empty()
          ? CacheEnv()
          : absl::StrCat("VMMKIT_GUEST_DIR=", ShellQuote(*guest_dir_), " ");
  std::string daemon = absl::StrCat(root, "/vhost-user/vmmkit-vhost-user");
  std::string args = absl::StrCat(" --daemon=", ShellQuote(daemon));
  if (std::string out = Env("TEST_UNDECLARED_OUTPUTS_DIR"); !out.empty()) {
    absl::StrAppend(&args, " --log-dir=", ShellQuote(out));
  }
  RunResult r =
      RunScript(absl::StrCat(env, ShellQuote(root + "/tools/qemu-interop"),
                             args, " ", c.name, " 2>&1"));
  ASSERT_NE(r.exit_status, -1) << "could not run tools/qemu-interop";
  const std::string skip_prefix =
      absl::StrCat("qemu-interop: ", c.name, ": SKIP ");
  if (r.exit_status == 77) {
    for (absl::string_view line : absl::StrSplit(r.output, '\n')) {
      if (absl::ConsumePrefix(&line, skip_prefix)) GTEST_SKIP() << line;
    }
    FAIL() << "exit status 77 without a SKIP line";
  }
  EXPECT_EQ(r.exit_status, 0)
      << "tools/qemu-interop failed; the FAIL lines above say why";
  EXPECT_TRUE(absl::StrContains(
      r.output, absl::StrCat("qemu-interop: ", c.name, ": PASS")));
  std::set<std::string> failed = ChecksWith(r.output, c.name, "FAIL");
  EXPECT_THAT(failed, testing::IsEmpty());
  std::set<std::string> ok = ChecksWith(r.output, c.name, "ok");
  for (const std::string& want : c.checks) {
    EXPECT_TRUE(ok.count(want) == 1)
        << "check '" << want << "' was not reported ok";
  }
  std::cout << "== " << c.name << ": " << ok.size()
            << " checks ok: " << absl::StrJoin(ok, " ") << "\n";
}

// What every booted guest must show about its one device.
std::vector<std::string> DeviceChecks(std::vector<std::string> more) {
  std::vector<std::string> v = {"qemu",   "guest-done", "driver-bound",
                                "pci-id", "interface",  "version_1",
                                "irq"};
  v.insert(v.end(), more.begin(), more.end());
  return v;
}

const std::vector<std::string> kBlkChecks = {
    "feature-flush",      "guest-blk",           "capacity-sectors",
    "host-image-pattern", "guest-rand-readback", "host-image-random",
    "host-image-rest"};

std::vector<std::string> Plus(std::vector<std::string> a,
                              const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

std::string CaseName(const testing::TestParamInfo<Case>& info) {
  std::string n = info.param.name;
  for (char& ch : n) {
    if (ch == '-') ch = '_';
  }
  return n;
}

#ifdef VMMKIT_INTEROP_VHOST_USER
INSTANTIATE_TEST_SUITE_P(
    VhostUser, InteropTest,
    testing::Values(
        Case{"blk-modern", DeviceChecks(Plus(kBlkChecks, {"daemon-exit"}))},
        Case{"blk-transitional",
             DeviceChecks(Plus(kBlkChecks, {"daemon-exit"}))},
        Case{"blk-legacy", DeviceChecks(Plus(kBlkChecks, {"legacy-features",
                                                          "daemon-exit"}))},
        Case{"blk-mq",
             DeviceChecks(Plus(kBlkChecks, {"feature-mq", "hw-queues",
                                            "queues-used", "daemon-exit"}))},
        Case{"blk-mq-1cpu",
             DeviceChecks(Plus(kBlkChecks,
                               {"feature-mq", "hw-queues", "daemon-exit"}))},
        Case{"blk-readonly",
             DeviceChecks({"feature-ro", "guest-blk-ro", "host-image-untouched",
                           "daemon-exit"})},
        Case{"rng", DeviceChecks({"guest-rng", "daemon-exit"})},
        Case{"net", DeviceChecks({"guest-net", "guest-mac", "host-peer-payload",
                                  "daemon-exit"})}),
    CaseName);
#else
// QEMU's own devices, and QEMU's own vhost-user-blk back end
// (qemu-storage-daemon; libvhost-user refuses legacy drivers, so no
// qsd-blk-legacy).
INSTANTIATE_TEST_SUITE_P(
    QemuReference, InteropTest,
    testing::Values(Case{"builtin-blk-modern", DeviceChecks(kBlkChecks)},
                    Case{"builtin-blk-transitional", DeviceChecks(kBlkChecks)},
                    Case{"builtin-blk-legacy",
                         DeviceChecks(Plus(kBlkChecks, {"legacy-features"}))},
                    Case{"builtin-blk-readonly",
                         DeviceChecks({"feature-ro", "guest-blk-ro",
                                       "host-image-untouched"})},
                    Case{"builtin-rng", DeviceChecks({"guest-rng"})},
                    Case{"builtin-console",
                         DeviceChecks({"guest-console", "host-console-file"})},
                    Case{"qsd-blk-modern", DeviceChecks(kBlkChecks)},
                    Case{"qsd-blk-transitional", DeviceChecks(kBlkChecks)},
                    Case{"builtin-net", DeviceChecks({"guest-net", "guest-mac",
                                                      "host-peer-payload"})}),
    CaseName);
#endif

}  // namespace
