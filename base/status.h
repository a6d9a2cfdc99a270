// base/status.h: the Status helpers Debian's Abseil 20220623 does not ship.
//
//   absl::Status Open(...) {
//     int fd = open(path, O_RDONLY);
//     if (fd < 0) return vmmkit::ErrnoToStatus(errno, "open image");
//     ...
//   }
//   absl::StatusOr<int> Parse(...);
//   absl::Status Use() {
//     VMMKIT_ASSIGN_OR_RETURN(int v, Parse(...));
//     VMMKIT_RETURN_IF_ERROR(Check(v));
//     return absl::OkStatus();
//   }
//
// Abseil ships absl::ErrnoToStatus (re-exported here, so that an unqualified
// call is never ambiguous through argument-dependent lookup); newer Abseil also
// has the RETURN_IF_ERROR family, which these macros will then alias.
#ifndef VMMKIT_BASE_STATUS_H_
#define VMMKIT_BASE_STATUS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace vmmkit {

// Maps an errno value onto the closest absl::StatusCode, with
// "<message>: <strerror>" as the message.
using absl::ErrnoToStatus;

// Returns `status` with `context: ` prepended to its message (unchanged if ok).
absl::Status Annotate(const absl::Status& status, absl::string_view context);

}  // namespace vmmkit

#define VMMKIT_STATUS_CONCAT_INNER_(a, b) a##b
#define VMMKIT_STATUS_CONCAT_(a, b) VMMKIT_STATUS_CONCAT_INNER_(a, b)

// Returns from the current function if `expr` (an absl::Status) is not ok.
#define VMMKIT_RETURN_IF_ERROR(expr)                \
  do {                                              \
    if (absl::Status vmmkit_status_ = (expr);       \
        ABSL_PREDICT_FALSE(!vmmkit_status_.ok())) { \
      return vmmkit_status_;                        \
    }                                               \
  } while (0)

// `lhs = *expr` if `expr` (an absl::StatusOr) is ok; returns its status
// otherwise.
#define VMMKIT_ASSIGN_OR_RETURN(lhs, expr) \
  VMMKIT_ASSIGN_OR_RETURN_IMPL_(           \
      VMMKIT_STATUS_CONCAT_(vmmkit_statusor_, __LINE__), lhs, expr)
#define VMMKIT_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                                  \
  if (ABSL_PREDICT_FALSE(!statusor.ok())) {                \
    return std::move(statusor).status();                   \
  }                                                        \
  lhs = *std::move(statusor)

#endif  // VMMKIT_BASE_STATUS_H_
