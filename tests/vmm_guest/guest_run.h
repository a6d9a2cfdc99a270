// tests/vmm_guest/guest_run.h: boots the test guest (//tests/vmm_guest:guest)
// in vmmkit's KVM VMM (//vmm:vm) and reads its serial report back.
//
//   GuestRun run;
//   ASSERT_OK(run.Boot({.vcpus = 1, .memory_mib = 64, .cmdline = "msix=0"},
//                      {blk_config, rng_config}, absl::Seconds(60)));
//   EXPECT_EQ(run.exit_code, 0);
//   const ReportLine* blk = run.Find({{"check", "blk"}});
//   EXPECT_EQ(blk->Get("result"), "ok");
//
// Serial lines "VMMKIT k=v k=\"quoted v\" ..." become ReportLines.
// Thread-compatible.
#ifndef VMMKIT_TESTS_VMM_GUEST_GUEST_RUN_H_
#define VMMKIT_TESTS_VMM_GUEST_GUEST_RUN_H_

#include <initializer_list>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "tests/vmm_guest/report.h"
#include "vmm/vm.h"

namespace vmmkit::tests::vmm_guest {

struct GuestRun {
  // Creates the VM, adds the devices, starts it, waits up to `timeout` for it
  // to stop, then collects everything below. The VM stays for inspection.
  absl::Status Boot(vmm::VmConfig config,
                    std::vector<vmm::DeviceConfig> devices,
                    absl::Duration timeout);
  // Starts only (for tests that interact with a running guest); Collect()
  // after WaitStopped.
  absl::Status Start(vmm::VmConfig config,
                     std::vector<vmm::DeviceConfig> devices);
  void Collect();

  const ReportLine* Find(
      std::initializer_list<std::pair<std::string, std::string>> match) const;
  std::vector<const ReportLine*> FindAll(
      std::initializer_list<std::pair<std::string, std::string>> match) const;
  const vmm::DeviceReport* Device(const std::string& id) const;

  std::unique_ptr<vmm::Vm> vm;
  std::string serial;
  std::vector<ReportLine> lines;
  std::optional<int> exit_code;
  std::vector<vmm::DeviceReport> devices;
  vmm::VmMetrics metrics;
  absl::Time started;
  absl::Duration elapsed;  // Start() to stopped
};

// A skip reason when this machine cannot run the guest; nullopt if it can.
std::optional<std::string> CannotRunGuests();

}  // namespace vmmkit::tests::vmm_guest

#endif  // VMMKIT_TESTS_VMM_GUEST_GUEST_RUN_H_
