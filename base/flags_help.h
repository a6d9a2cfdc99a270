// base/flags_help.h: makes --help list the flags defined in one source file.
// Abseil's default lists the flags of files named after the program, which a
// binary named vmm-run (flags in vmm_run.cc) or one built from main.cc never
// matches: its --help then says "No flags matched".
//
//   absl::SetProgramUsageMessage("...");
//   vmmkit::HelpListsFlagsOf("vmm/vmmd/main.cc");
//   absl::ParseCommandLine(argc, argv);
#ifndef VMMKIT_BASE_FLAGS_HELP_H_
#define VMMKIT_BASE_FLAGS_HELP_H_

#include <string>

#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/string_view.h"

namespace vmmkit {

// `source_file`: the path of the defining file as the build names it, or a
// suffix of it. Call before absl::ParseCommandLine.
inline void HelpListsFlagsOf(absl::string_view source_file) {
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags =
      [file = std::string(source_file)](absl::string_view defined_in) {
        return absl::EndsWith(defined_in, file);
      };
  absl::SetFlagsUsageConfig(usage);
}

}  // namespace vmmkit

#endif  // VMMKIT_BASE_FLAGS_HELP_H_
