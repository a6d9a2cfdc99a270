#include "tests/vmm_guest/scenarios.h"
namespace vmmkit::tests::vmm_guest {
int RunBench(const Options&, DmaArena&) { return 1; }
}  // namespace vmmkit::tests::vmm_guest
