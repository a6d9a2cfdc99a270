// The cost of one request through the vhost-user Backend, in one thread:
// the front-end posts a chain and writes the kick eventfd, the Backend reads
// the kick and runs the device (which signals the call eventfd), the
// front-end reads the call and reaps the used entry. So each iteration holds
// three eventfd syscalls besides the device's own work.
//
//   bazel run -c opt //vhost-user:backend_benchmark
//
// BM_RngKickToCall/N: N chains of 64 bytes per kick.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <memory>

#include "vhost-user/backend.h"
#include "vhost-user/testing/front_end.h"
#include "virtio-device/rng.h"

namespace {

using vmmkit::vhost_user::Backend;
using vmmkit::vhost_user::testing::FakeFrontEnd;

void BM_RngKickToCall(benchmark::State& state) {
  const int batch = static_cast<int>(state.range(0));
  vmmkit::virtio::RngDevice rng;
  std::unique_ptr<Backend> backend = *Backend::Create(rng);
  std::unique_ptr<FakeFrontEnd> fe = *FakeFrontEnd::Create({});
  if (!backend->Attach(fe->TakeBackendSocket()).ok()) std::abort();
  fe->set_pump([&] { backend->OnConnectionReadable(); });
  if (!fe->Init().ok() || !fe->Start(uint64_t{1} << 32, {{.size = 256,
                                                          .desc = 0x10000,
                                                          .avail = 0x11000,
                                                          .used = 0x12000}})
                               .ok()) {
    std::abort();
  }
  for (auto _ : state) {
    for (int i = 0; i < batch; ++i) {
      if (!fe->ring(0).AddChain({{0x100000 + 64u * i, 64, true}}).ok()) {
        std::abort();
      }
    }
    fe->Kick(0);
    backend->OnKick(0);
    if (!fe->CallSignalled(0)) std::abort();
    for (int i = 0; i < batch; ++i) {
      if (!fe->ring(0).PopUsed()) std::abort();
    }
  }
  state.SetItemsProcessed(state.iterations() * batch);
}
BENCHMARK(BM_RngKickToCall)->Arg(1)->Arg(32);

}  // namespace

BENCHMARK_MAIN();
