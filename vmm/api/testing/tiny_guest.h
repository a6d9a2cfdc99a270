// vmm/api/testing/tiny_guest.h: a 96-byte ELF64 test guest for the API tests,
// written to a file on demand (no toolchain needed).
//
//   std::string path = WriteTinyGuest(::testing::TempDir() + "/tiny.elf");
//   // CreateVm(kernel = path, cmdline = "" or "exit")
//
// What it does (vmm boot contract A: entered in long mode, RDI = cmdline):
// prints "tiny guest up\n" on the 8250 (0x3f8), then
//   - cmdline starting with 'e': exits at once with code 5 (port 0x501);
//   - otherwise loops: a byte received on the UART (LSR bit 0) is echoed
//     back, except 'q' which exits with code 7; once port 0x502 reads non-zero
//     (a graceful stop request) it exits with code 0.
// The loop polls with port reads, so a running tiny guest keeps its vCPU busy.
#ifndef VMMKIT_VMM_API_TESTING_TINY_GUEST_H_
#define VMMKIT_VMM_API_TESTING_TINY_GUEST_H_

#include <string>

namespace vmmkit::api::testing {

inline constexpr char kTinyGuestBanner[] = "tiny guest up\n";
inline constexpr int kTinyGuestExitCmdlineCode = 5;  // cmdline "e..."
inline constexpr int kTinyGuestQuitCode = 7;         // 'q' on the UART
inline constexpr int kTinyGuestStopCode = 0;         // port 0x502 set

// Writes the image to `path` (mode 0644) and returns `path`; aborts the test
// binary if it cannot (a test setup error, not guest input).
std::string WriteTinyGuest(const std::string& path);

}  // namespace vmmkit::api::testing

#endif  // VMMKIT_VMM_API_TESTING_TINY_GUEST_H_
