// vmm/api/service.h: vmmkit.v1.VmService over a VmManager.
//
//   VmManager manager({});
//   VmServiceImpl service(manager);
//   grpc::ServerBuilder builder;
//   builder.RegisterService(&service);
//
// The handlers are thin: convert the request (convert.h), call the manager,
// convert the reply, map the Status (status.h). StreamConsole runs one helper
// thread per stream for the client's input while the handler thread writes
// output.
//
// Thread-safety: thread-safe (gRPC calls the handlers concurrently).
#ifndef VMMKIT_VMM_API_SERVICE_H_
#define VMMKIT_VMM_API_SERVICE_H_

#include <atomic>

#include "vmm/api/vm_manager.h"
#include "vmm/api/vmmkit.grpc.pb.h"

namespace vmmkit::api {

class VmServiceImpl final : public v1::VmService::Service {
 public:
  // Console streams open at once; more are RESOURCE_EXHAUSTED.
  static constexpr int kMaxConsoleStreams = 64;

  explicit VmServiceImpl(VmManager& manager) : manager_(manager) {}

  grpc::Status CreateVm(grpc::ServerContext*, const v1::CreateVmRequest*,
                        v1::VmInfo*) override;
  grpc::Status AddDevice(grpc::ServerContext*, const v1::AddDeviceRequest*,
                         v1::VmInfo*) override;
  grpc::Status RemoveDevice(grpc::ServerContext*,
                            const v1::RemoveDeviceRequest*,
                            v1::VmInfo*) override;
  grpc::Status StartVm(grpc::ServerContext*, const v1::VmRequest*,
                       v1::VmInfo*) override;
  grpc::Status PauseVm(grpc::ServerContext*, const v1::VmRequest*,
                       v1::VmInfo*) override;
  grpc::Status ResumeVm(grpc::ServerContext*, const v1::VmRequest*,
                        v1::VmInfo*) override;
  grpc::Status StopVm(grpc::ServerContext*, const v1::StopVmRequest*,
                      v1::VmInfo*) override;
  grpc::Status WaitVm(grpc::ServerContext*, const v1::WaitVmRequest*,
                      v1::VmInfo*) override;
  grpc::Status DeleteVm(grpc::ServerContext*, const v1::DeleteVmRequest*,
                        v1::DeleteVmResponse*) override;
  grpc::Status GetVm(grpc::ServerContext*, const v1::VmRequest*,
                     v1::VmInfo*) override;
  grpc::Status ListVms(grpc::ServerContext*, const v1::ListVmsRequest*,
                       v1::ListVmsResponse*) override;
  grpc::Status StreamConsole(
      grpc::ServerContext*,
      grpc::ServerReaderWriter<v1::ConsoleChunk, v1::ConsoleRequest>*) override;
  grpc::Status GetMetrics(grpc::ServerContext*, const v1::VmRequest*,
                          v1::VmMetrics*) override;

 private:
  VmManager& manager_;
  std::atomic<int> console_streams_{0};
};

}  // namespace vmmkit::api

#endif  // VMMKIT_VMM_API_SERVICE_H_
