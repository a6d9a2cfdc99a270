// vmm/api/testing/subprocess.h: run the vmmd and vmmctl binaries from tests.
//
//   Result r = Run({Runfile("vmm/vmmctl/vmmctl"), "--socket", sock, "list"});
//   EXPECT_EQ(r.exit_code, 0) << r.err;
//   Daemon d = Daemon::Start({Runfile("vmm/vmmd/vmmd"), "--listen=unix:" + s});
//   ASSERT_TRUE(d.WaitForSocket(sock, absl::Seconds(10)));
//   EXPECT_EQ(d.Terminate(SIGTERM, absl::Seconds(30)), 0);
//
// Thread-compatible.
#ifndef VMMKIT_VMM_API_TESTING_SUBPROCESS_H_
#define VMMKIT_VMM_API_TESTING_SUBPROCESS_H_

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/time/time.h"

namespace vmmkit::api::testing {

// $TEST_SRCDIR/vmmkit/<path>.
std::string Runfile(const std::string& path);

struct Result {
  int exit_code = -1;  // 128 + signal if killed
  std::string out, err;
};
// Runs argv[0] with stdin from /dev/null (or `input`), waits, captures both
// outputs. Killed after `timeout`.
Result Run(const std::vector<std::string>& argv,
           absl::Duration timeout = absl::Seconds(60),
           const std::string& input = "");

class Daemon {
 public:
  static Daemon Start(const std::vector<std::string>& argv,
                      const std::string& stderr_path);
  Daemon(Daemon&& other) noexcept : pid_(other.pid_) { other.pid_ = -1; }
  Daemon& operator=(Daemon&&) = delete;
  ~Daemon();  // SIGKILL if still running
  bool WaitForSocket(const std::string& path, absl::Duration timeout);
  // Sends `sig` and waits; the exit code (128 + signal if killed by one), or
  // -1 if it did not exit in time (then it is killed).
  int Terminate(int sig, absl::Duration timeout);
  pid_t pid() const { return pid_; }

 private:
  explicit Daemon(pid_t pid) : pid_(pid) {}
  pid_t pid_;
};

}  // namespace vmmkit::api::testing

#endif  // VMMKIT_VMM_API_TESTING_SUBPROCESS_H_
