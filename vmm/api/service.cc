#include "vmm/api/service.h"

#include <string>
#include <thread>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "vmm/api/convert.h"
#include "vmm/api/status.h"

namespace vmmkit::api {
namespace {

// Longest graceful stop and wait a request may ask for.
constexpr uint32_t kMaxTimeoutMs = 10 * 60 * 1000;
// Output chunk size on StreamConsole.
constexpr size_t kConsoleChunkBytes = 64 << 10;
// How often a console stream looks at the VM state and the client.
constexpr absl::Duration kConsolePoll = absl::Milliseconds(100);
// After the last output, how long the client gets to close its side.
constexpr absl::Duration kConsoleCloseGrace = absl::Seconds(2);

grpc::Status Invalid(absl::string_view message) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, std::string(message));
}

grpc::Status CheckVmId(absl::string_view vm_id) {
  return ToGrpcStatus(ValidateName("vm_id", vm_id));
}

// Validates the id, runs `op` and converts its snapshot into `reply`.
template <typename Op>
grpc::Status Reply(absl::string_view vm_id, v1::VmInfo* reply, Op op) {
  if (grpc::Status s = CheckVmId(vm_id); !s.ok()) return s;
  absl::StatusOr<VmSnapshot> snapshot = op();
  if (!snapshot.ok()) return ToGrpcStatus(snapshot.status());
  *reply = ToProto(*snapshot);
  return grpc::Status::OK;
}

absl::Duration TimeoutFromMs(uint32_t ms) { return absl::Milliseconds(ms); }

}  // namespace

grpc::Status VmServiceImpl::CreateVm(grpc::ServerContext*,
                                     const v1::CreateVmRequest* request,
                                     v1::VmInfo* reply) {
  if (!request->vm_id().empty()) {
    if (grpc::Status s = CheckVmId(request->vm_id()); !s.ok()) return s;
  }
  if (!request->has_config())
    return Invalid("config (with kernel) is required");
  absl::StatusOr<vmm::VmConfig> config = ToVmConfig(request->config());
  if (!config.ok()) return ToGrpcStatus(config.status());
  absl::StatusOr<VmSnapshot> snapshot =
      manager_.Create(request->vm_id(), *std::move(config));
  if (!snapshot.ok()) return ToGrpcStatus(snapshot.status());
  *reply = ToProto(*snapshot);
  return grpc::Status::OK;
}

grpc::Status VmServiceImpl::AddDevice(grpc::ServerContext*,
                                      const v1::AddDeviceRequest* request,
                                      v1::VmInfo* reply) {
  if (grpc::Status s = CheckVmId(request->vm_id()); !s.ok()) return s;
  if (!request->has_device()) return Invalid("device is required");
  absl::StatusOr<vmm::DeviceConfig> device = ToDeviceConfig(request->device());
  if (!device.ok()) return ToGrpcStatus(device.status());
  return Reply(request->vm_id(), reply, [&] {
    return manager_.AddDevice(request->vm_id(), *std::move(device));
  });
}

grpc::Status VmServiceImpl::RemoveDevice(grpc::ServerContext*,
                                         const v1::RemoveDeviceRequest* request,
                                         v1::VmInfo* reply) {
  if (grpc::Status s =
          ToGrpcStatus(ValidateName("device_id", request->device_id()));
      !s.ok()) {
    return s;
  }
  return Reply(request->vm_id(), reply, [&] {
    return manager_.RemoveDevice(request->vm_id(), request->device_id());
  });
}

grpc::Status VmServiceImpl::StartVm(grpc::ServerContext*,
                                    const v1::VmRequest* request,
                                    v1::VmInfo* reply) {
  return Reply(request->vm_id(), reply,
               [&] { return manager_.Start(request->vm_id()); });
}

grpc::Status VmServiceImpl::PauseVm(grpc::ServerContext*,
                                    const v1::VmRequest* request,
                                    v1::VmInfo* reply) {
  return Reply(request->vm_id(), reply,
               [&] { return manager_.Pause(request->vm_id()); });
}

grpc::Status VmServiceImpl::ResumeVm(grpc::ServerContext*,
                                     const v1::VmRequest* request,
                                     v1::VmInfo* reply) {
  return Reply(request->vm_id(), reply,
               [&] { return manager_.Resume(request->vm_id()); });
}

grpc::Status VmServiceImpl::StopVm(grpc::ServerContext*,
                                   const v1::StopVmRequest* request,
                                   v1::VmInfo* reply) {
  if (request->graceful_timeout_ms() > kMaxTimeoutMs) {
    return Invalid(absl::StrCat("graceful_timeout_ms ",
                                request->graceful_timeout_ms(),
                                " is more than ", kMaxTimeoutMs));
  }
  return Reply(request->vm_id(), reply, [&] {
    return manager_.Stop(request->vm_id(),
                         TimeoutFromMs(request->graceful_timeout_ms()));
  });
}

grpc::Status VmServiceImpl::WaitVm(grpc::ServerContext* context,
                                   const v1::WaitVmRequest* request,
                                   v1::VmInfo* reply) {
  if (request->timeout_ms() > kMaxTimeoutMs) {
    return Invalid(absl::StrCat("timeout_ms ", request->timeout_ms(),
                                " is more than ", kMaxTimeoutMs));
  }
  absl::Duration timeout = TimeoutFromMs(request->timeout_ms());
  // Never wait past the client's own deadline.
  absl::Duration left = absl::FromChrono(context->deadline()) - absl::Now();
  if (left < timeout) timeout = std::max(left, absl::ZeroDuration());
  return Reply(request->vm_id(), reply,
               [&] { return manager_.Wait(request->vm_id(), timeout); });
}

grpc::Status VmServiceImpl::DeleteVm(grpc::ServerContext*,
                                     const v1::DeleteVmRequest* request,
                                     v1::DeleteVmResponse*) {
  if (grpc::Status s = CheckVmId(request->vm_id()); !s.ok()) return s;
  return ToGrpcStatus(manager_.Delete(request->vm_id(), request->force()));
}

grpc::Status VmServiceImpl::GetVm(grpc::ServerContext*,
                                  const v1::VmRequest* request,
                                  v1::VmInfo* reply) {
  return Reply(request->vm_id(), reply,
               [&] { return manager_.Get(request->vm_id()); });
}

grpc::Status VmServiceImpl::ListVms(grpc::ServerContext*,
                                    const v1::ListVmsRequest*,
                                    v1::ListVmsResponse* reply) {
  for (const VmSnapshot& s : manager_.List()) *reply->add_vms() = ToProto(s);
  return grpc::Status::OK;
}

grpc::Status VmServiceImpl::GetMetrics(grpc::ServerContext*,
                                       const v1::VmRequest* request,
                                       v1::VmMetrics* reply) {
  if (grpc::Status s = CheckVmId(request->vm_id()); !s.ok()) return s;
  absl::StatusOr<VmMetricsSnapshot> metrics =
      manager_.Metrics(request->vm_id());
  if (!metrics.ok()) return ToGrpcStatus(metrics.status());
  *reply = ToProto(*metrics);
  return grpc::Status::OK;
}

grpc::Status VmServiceImpl::StreamConsole(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<v1::ConsoleChunk, v1::ConsoleRequest>* stream) {
  v1::ConsoleRequest first;
  if (!stream->Read(&first)) {
    return Invalid("the first ConsoleRequest must name the VM");
  }
  const std::string vm_id = first.vm_id();
  if (grpc::Status s = CheckVmId(vm_id); !s.ok()) return s;
  absl::StatusOr<std::shared_ptr<ConsoleHub>> hub = manager_.Console(vm_id);
  if (!hub.ok()) return ToGrpcStatus(hub.status());
  // Each stream holds a handler thread and an input thread: bounded.
  if (console_streams_.fetch_add(1) >= kMaxConsoleStreams) {
    console_streams_.fetch_sub(1);
    return grpc::Status(
        grpc::StatusCode::RESOURCE_EXHAUSTED,
        absl::StrCat("at most ", kMaxConsoleStreams, " console streams"));
  }
  absl::Cleanup release = [this] { console_streams_.fetch_sub(1); };
  // The position is taken before the first input goes in, so that the
  // guest's answer to it is never missed.
  uint64_t position = (*hub)->StartPosition(first.replay());
  if (!first.input().empty()) {
    if (absl::Status s = manager_.WriteConsoleInput(vm_id, first.input());
        !s.ok()) {
      return ToGrpcStatus(s);
    }
  }

  // The client's input, on a thread of its own: the sync API allows one Read
  // and one Write at a time, each from any thread.
  absl::Mutex input_mu;
  absl::Status input_error;  // guarded by input_mu
  absl::Notification input_done;
  std::thread input([&] {
    v1::ConsoleRequest request;
    while (stream->Read(&request)) {
      if (request.input().empty()) continue;
      absl::Status s = manager_.WriteConsoleInput(vm_id, request.input());
      if (!s.ok()) {
        absl::MutexLock lock(&input_mu);
        input_error = s;
        break;
      }
    }
    input_done.Notify();
  });

  grpc::Status result = grpc::Status::OK;
  bool client_gone = false;
  for (;;) {
    if (context->IsCancelled()) {
      client_gone = true;
      break;
    }
    {
      absl::MutexLock lock(&input_mu);
      if (!input_error.ok()) {
        result = ToGrpcStatus(input_error);
        break;
      }
    }
    ConsoleHub::Chunk chunk =
        (*hub)->Read(&position, kConsolePoll, kConsoleChunkBytes);
    bool finished = chunk.closed;
    if (!finished && chunk.data.empty()) {
      // Nothing new: if the VM stopped, what is in the hub now is all.
      absl::StatusOr<bool> stopped = manager_.ConsoleFinished(vm_id);
      finished = !stopped.ok() || *stopped;
      if (finished) {
        chunk =
            (*hub)->Read(&position, absl::ZeroDuration(), kConsoleChunkBytes);
        finished = position == (*hub)->end_position();
      }
    }
    if (chunk.data.empty() && chunk.dropped == 0 && !finished) continue;
    v1::ConsoleChunk out;
    out.set_data(std::move(chunk.data));
    out.set_dropped_bytes(chunk.dropped);
    out.set_vm_stopped(finished);
    if (!stream->Write(out)) {
      client_gone = true;
      break;
    }
    if (finished) break;
  }

  // Let the input side end: a well-behaved client closes its side once it
  // saw vm_stopped; otherwise (or if it is gone) cancel the call.
  if (client_gone ||
      !input_done.WaitForNotificationWithTimeout(kConsoleCloseGrace)) {
    context->TryCancel();
  }
  input.join();
  if (client_gone) {
    return grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
  }
  return result;
}

}  // namespace vmmkit::api
