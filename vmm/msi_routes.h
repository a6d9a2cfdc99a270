// vmm/msi_routes.h: MSI messages delivered through irqfds and KVM GSI
// routing, one route per MSI-X vector.
//
//   MsiRoutes routes(vm_fd);
//   VMMKIT_ASSIGN_OR_RETURN(int r, routes.Add());     // GSI >= 24 + irqfd
//   VMMKIT_RETURN_IF_ERROR(routes.Set(r, 0xfee00000, 0x41));  // guest wrote
//   routes.Trigger(r);                                 // eventfd write
//
// KVM_SET_GSI_ROUTING replaces the whole table, so this class owns it: the
// in-kernel irqchip's default entries (GSI 0..15 on the PIC and the IOAPIC,
// 16..23 on the IOAPIC, as KVM sets them up) and one MSI entry per route
// whose message is set. A route without a message (or with one cleared) has
// no entry, and triggering it does nothing; callers fall back to
// KVM_SIGNAL_MSI for messages they have no route for.
//
// Thread-safety: thread-safe. Trigger() takes no lock (an eventfd write).
#ifndef VMMKIT_VMM_MSI_ROUTES_H_
#define VMMKIT_VMM_MSI_ROUTES_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <optional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "vmm/kvm.h"

namespace vmmkit::vmm {

class MsiRoutes {
 public:
  static constexpr uint32_t kFirstMsiGsi = 24;
  static constexpr int kMaxRoutes = 1024;

  explicit MsiRoutes(VmFd* vm) : vm_(vm) {
    for (std::atomic<int>& fd : fds_) fd.store(-1);
  }
  ~MsiRoutes();
  MsiRoutes(const MsiRoutes&) = delete;
  MsiRoutes& operator=(const MsiRoutes&) = delete;

  // Writes the irqchip's default table (call once before any Add).
  absl::Status Init();
  // A new route with its own GSI and irqfd, not yet carrying a message.
  // kResourceExhausted beyond kMaxRoutes.
  absl::StatusOr<int> Add();
  // Sets (or with nullopt clears) the route's message and rewrites the table.
  absl::Status Set(int route, std::optional<std::pair<uint64_t, uint32_t>> msg);
  // Raises the route's GSI. False for an unknown route.
  bool Trigger(int route) const;
  uint32_t gsi(int route) const { return kFirstMsiGsi + route; }

 private:
  absl::Status Commit() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  VmFd* const vm_;
  mutable absl::Mutex mu_;
  struct Route {
    ScopedFd fd;
    std::optional<std::pair<uint64_t, uint32_t>> message;
  };
  std::vector<Route> routes_ ABSL_GUARDED_BY(mu_);
  // Event fds by route, readable without the lock (-1: none).
  std::array<std::atomic<int>, kMaxRoutes> fds_;
};

}  // namespace vmmkit::vmm

#endif  // VMMKIT_VMM_MSI_ROUTES_H_
