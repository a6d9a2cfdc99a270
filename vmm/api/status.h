// vmm/api/status.h: the one place where absl::Status becomes grpc::Status.
//
//   grpc::Status Handler(...) {
//     absl::Status s = vm->Start();
//     if (!s.ok()) return vmmkit::api::ToGrpcStatus(s);
//   }
//
// The codes map one to one (absl::StatusCode and grpc::StatusCode share the
// canonical numbering); the message is kept. Thread-safe (pure functions).
#ifndef VMMKIT_VMM_API_STATUS_H_
#define VMMKIT_VMM_API_STATUS_H_

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace vmmkit::api {

// absl -> gRPC: same code, same message. An absl code outside the canonical
// set (there is none today) becomes UNKNOWN.
grpc::Status ToGrpcStatus(const absl::Status& status);

// gRPC -> absl (for clients and tests): same code, same message.
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace vmmkit::api

#endif  // VMMKIT_VMM_API_STATUS_H_
