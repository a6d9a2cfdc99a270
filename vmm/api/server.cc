#include "vmm/api/server.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "base/status.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/resource_quota.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"

namespace vmmkit::api {
namespace {

constexpr int kMaxServerThreads = 256;

// True if something accepts connections on the Unix socket at `path`.
bool SocketAnswers(const std::string& path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), path.size());
  bool ok = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  close(fd);
  return ok;
}

absl::Status PrepareUnixSocket(const std::string& path) {
  std::string dir = path.substr(0, path.rfind('/'));
  if (!dir.empty()) {
    struct stat st;
    if (stat(dir.c_str(), &st) != 0) {
      // Only the last component is created, 0700: a missing parent is the
      // caller's mistake.
      if (mkdir(dir.c_str(), 0700) != 0) {
        return ErrnoToStatus(errno, absl::StrCat("mkdir ", dir));
      }
    } else if (!S_ISDIR(st.st_mode)) {
      return absl::InvalidArgumentError(
          absl::StrCat(dir, " is not a directory"));
    }
  }
  struct stat st;
  if (lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return absl::AlreadyExistsError(
          absl::StrCat(path, " exists and is not a socket"));
    }
    if (SocketAnswers(path)) {
      return absl::AlreadyExistsError(
          absl::StrCat("a server already listens on ", path));
    }
    if (unlink(path.c_str()) != 0) {
      return ErrnoToStatus(errno, absl::StrCat("remove stale ", path));
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::string ListenAddress::GrpcTarget() const {
  return unix_socket ? absl::StrCat("unix:", path) : host_port;
}

std::string ListenAddress::ToString() const { return GrpcTarget(); }

absl::StatusOr<ListenAddress> ParseListenAddress(absl::string_view text) {
  ListenAddress a;
  if (absl::ConsumePrefix(&text, "unix:")) {
    absl::ConsumePrefix(&text, "//");  // unix:///path
    if (text.empty() || text[0] != '/') {
      return absl::InvalidArgumentError(
          absl::StrCat("unix socket path must be absolute: \"", text, "\""));
    }
    if (text.size() >= sizeof(sockaddr_un::sun_path)) {
      return absl::InvalidArgumentError(
          absl::StrCat("unix socket path is longer than ",
                       sizeof(sockaddr_un::sun_path) - 1, " bytes: ", text));
    }
    a.unix_socket = true;
    a.path = std::string(text);
    return a;
  }
  size_t colon = text.rfind(':');
  if (colon == absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "listen address \"", text,
        "\" is neither unix:PATH nor 127.0.0.1:PORT / [::1]:PORT"));
  }
  absl::string_view host = text.substr(0, colon);
  uint32_t port = 0;
  if (!absl::SimpleAtoi(text.substr(colon + 1), &port) || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad port in \"", text, "\""));
  }
  if (host != "127.0.0.1" && host != "[::1]" && host != "localhost") {
    return absl::InvalidArgumentError(absl::StrCat(
        "vmmd listens on loopback only (127.0.0.1, [::1], localhost), not \"",
        host, "\": the API has no authentication"));
  }
  a.unix_socket = false;
  a.host_port = std::string(text);
  return a;
}

absl::StatusOr<std::unique_ptr<grpc::Server>> StartServer(
    VmServiceImpl& service, const ListenAddress& address, int* bound_port) {
  if (address.unix_socket) {
    VMMKIT_RETURN_IF_ERROR(PrepareUnixSocket(address.path));
  }
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(address.GrpcTarget(),
                           grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  // Synchronous handlers run on server threads; a flood of calls waits for
  // one instead of growing the daemon without bound.
  grpc::ResourceQuota quota("vmmd");
  quota.SetMaxThreads(kMaxServerThreads);
  builder.SetResourceQuota(quota);
  // The socket is created by bind() with 0777 & ~umask: 0600 from the start
  // (the chmod below only makes sure).
  mode_t old_umask = umask(0177);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  umask(old_umask);
  if (server == nullptr || port == 0) {
    if (server != nullptr) server->Shutdown();
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", address.ToString()));
  }
  if (address.unix_socket && chmod(address.path.c_str(), 0600) != 0) {
    server->Shutdown();
    return ErrnoToStatus(errno, absl::StrCat("chmod ", address.path));
  }
  if (bound_port != nullptr) *bound_port = port;
  return server;
}

}  // namespace vmmkit::api
