// vmm/msi_routes.cc: see msi_routes.h.
#include "vmm/msi_routes.h"

#include <unistd.h>

#include <cstring>

#include "base/status.h"

namespace vmmkit::vmm {
namespace {

kvm_irq_routing_entry IrqchipEntry(uint32_t gsi, uint32_t chip, uint32_t pin) {
  kvm_irq_routing_entry e;
  std::memset(&e, 0, sizeof(e));
  e.gsi = gsi;
  e.type = KVM_IRQ_ROUTING_IRQCHIP;
  e.u.irqchip.irqchip = chip;
  e.u.irqchip.pin = pin;
  return e;
}

}  // namespace

MsiRoutes::~MsiRoutes() {
  absl::MutexLock l(&mu_);
  for (size_t i = 0; i < routes_.size(); ++i) {
    (void)vm_->Irqfd(routes_[i].fd.get(), gsi(static_cast<int>(i)),
                     std::nullopt, /*deassign=*/true);
  }
}

absl::Status MsiRoutes::Init() {
  absl::MutexLock l(&mu_);
  return Commit();
}

absl::Status MsiRoutes::Commit() {
  std::vector<kvm_irq_routing_entry> table;
  // KVM's default routing for the in-kernel irqchip: GSI 0..15 reach the
  // PIC (master 0..7, slave 8..15) and the IOAPIC pin of the same number,
  // 16..23 the IOAPIC only.
  for (uint32_t gsi = 0; gsi < 24; ++gsi) {
    if (gsi < 16) {
      table.push_back(IrqchipEntry(
          gsi, gsi < 8 ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE,
          gsi % 8));
    }
    table.push_back(IrqchipEntry(gsi, KVM_IRQCHIP_IOAPIC, gsi));
  }
  for (size_t i = 0; i < routes_.size(); ++i) {
    if (!routes_[i].message.has_value()) continue;
    kvm_irq_routing_entry e;
    std::memset(&e, 0, sizeof(e));
    e.gsi = gsi(static_cast<int>(i));
    e.type = KVM_IRQ_ROUTING_MSI;
    e.u.msi.address_lo = static_cast<uint32_t>(routes_[i].message->first);
    e.u.msi.address_hi = static_cast<uint32_t>(routes_[i].message->first >> 32);
    e.u.msi.data = routes_[i].message->second;
    table.push_back(e);
  }
  return vm_->SetGsiRouting(table);
}

absl::StatusOr<int> MsiRoutes::Add() {
  absl::MutexLock l(&mu_);
  if (routes_.size() >= kMaxRoutes) {
    return absl::ResourceExhaustedError("no MSI routes left");
  }
  VMMKIT_ASSIGN_OR_RETURN(ScopedFd fd, MakeEventFd());
  const int route = static_cast<int>(routes_.size());
  VMMKIT_RETURN_IF_ERROR(
      vm_->Irqfd(fd.get(), gsi(route), std::nullopt, /*deassign=*/false));
  fds_[route].store(fd.get(), std::memory_order_release);
  routes_.push_back({std::move(fd), std::nullopt});
  return route;
}

absl::Status MsiRoutes::Set(int route,
                            std::optional<std::pair<uint64_t, uint32_t>> msg) {
  absl::MutexLock l(&mu_);
  if (route < 0 || route >= static_cast<int>(routes_.size())) {
    return absl::NotFoundError("no such MSI route");
  }
  if (routes_[route].message == msg) return absl::OkStatus();
  routes_[route].message = msg;
  return Commit();
}

bool MsiRoutes::Trigger(int route) const {
  if (route < 0 || route >= kMaxRoutes) return false;
  const int fd = fds_[route].load(std::memory_order_acquire);
  if (fd < 0) return false;
  const uint64_t one = 1;
  return write(fd, &one, sizeof(one)) == sizeof(one);
}

}  // namespace vmmkit::vmm
