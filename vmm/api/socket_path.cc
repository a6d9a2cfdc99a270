#include "vmm/api/socket_path.h"

#include <unistd.h>

#include <cstdlib>

#include "absl/strings/str_cat.h"

namespace vmmkit::api {

std::string DefaultSocketPath() {
  if (geteuid() == 0) return "/run/vmmkit/vmmd.sock";
  const char* xdg = std::getenv("XDG_RUNTIME_DIR");
  if (xdg != nullptr && xdg[0] == '/') {
    return absl::StrCat(xdg, "/vmmkit/vmmd.sock");
  }
  return absl::StrCat("/tmp/vmmkit-", geteuid(), "/vmmd.sock");
}

}  // namespace vmmkit::api
