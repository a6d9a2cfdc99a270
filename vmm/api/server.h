// vmm/api/server.h: where vmmd listens, and a running gRPC server with the
// VmService and server reflection.
//
//   VMMKIT_ASSIGN_OR_RETURN(ListenAddress addr,
//                           ParseListenAddress("unix:/run/vmmkit/vmmd.sock"));
//   VmManager manager({});
//   VmServiceImpl service(manager);
//   VMMKIT_ASSIGN_OR_RETURN(std::unique_ptr<grpc::Server> server,
//                           StartServer(service, addr));
//   ...
//   server->Shutdown();
//
// Addresses: "unix:PATH" (the default, see DefaultSocketPath) or a loopback
// TCP address "127.0.0.1:PORT", "[::1]:PORT", "localhost:PORT" (PORT 0 picks
// one). Anything else is kInvalidArgument: the API has no authentication, so
// it is only offered to local users (the Unix socket is 0600 in a 0700
// directory).
//
// Thread-compatible (call from one thread; the server itself is thread-safe).
#ifndef VMMKIT_VMM_API_SERVER_H_
#define VMMKIT_VMM_API_SERVER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "grpcpp/server.h"
#include "vmm/api/service.h"
#include "vmm/api/socket_path.h"

namespace vmmkit::api {

struct ListenAddress {
  bool unix_socket = true;
  std::string path;       // unix: the socket path (absolute)
  std::string host_port;  // tcp: "127.0.0.1:1234"
  // What grpc::ServerBuilder / grpc::CreateChannel take.
  std::string GrpcTarget() const;
  std::string ToString() const;
};

absl::StatusOr<ListenAddress> ParseListenAddress(absl::string_view text);

// For a Unix socket: creates the socket's directory (0700) if missing,
// refuses a path where a server already answers (kAlreadyExists), removes a
// stale socket, and leaves the new socket 0600. For TCP, *bound_port (if not
// null) receives the port.
absl::StatusOr<std::unique_ptr<grpc::Server>> StartServer(
    VmServiceImpl& service, const ListenAddress& address,
    int* bound_port = nullptr);

}  // namespace vmmkit::api

#endif  // VMMKIT_VMM_API_SERVER_H_
