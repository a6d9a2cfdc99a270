// vmm/api/socket_path.h: where vmmd listens and vmmctl connects by default.
//
//   std::string path = vmmkit::api::DefaultSocketPath();
//   // root: /run/vmmkit/vmmd.sock; others: $XDG_RUNTIME_DIR/vmmkit/vmmd.sock,
//   // or /tmp/vmmkit-<uid>/vmmd.sock without XDG_RUNTIME_DIR.
//
// Thread-safe (reads the environment).
#ifndef VMMKIT_VMM_API_SOCKET_PATH_H_
#define VMMKIT_VMM_API_SOCKET_PATH_H_

#include <string>

namespace vmmkit::api {

std::string DefaultSocketPath();

}  // namespace vmmkit::api

#endif  // VMMKIT_VMM_API_SOCKET_PATH_H_
