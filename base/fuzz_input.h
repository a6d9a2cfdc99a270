// base/fuzz_input.h: what every vmmkit fuzz target shares: FuzzInput, which
// hands out the fuzzer's bytes as little-endian integers (0 once they run
// out), and VMMKIT_FUZZ_CHECK, which aborts with the failed invariant (what
// libFuzzer reports as a crash).
//
//   extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
//     vmmkit::FuzzInput in(data, size);
//     while (!in.done()) Step(in.U8(), in.U32());
//     VMMKIT_FUZZ_CHECK(canary_intact);
//     return 0;
//   }
//
// Thread-compatible.
#ifndef VMMKIT_BASE_FUZZ_INPUT_H_
#define VMMKIT_BASE_FUZZ_INPUT_H_

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#define VMMKIT_FUZZ_CHECK(cond)                                       \
  do {                                                                \
    if (!(cond)) {                                                    \
      std::fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, \
                   __LINE__, #cond);                                  \
      std::abort();                                                   \
    }                                                                 \
  } while (0)

namespace vmmkit {

class FuzzInput {
 public:
  FuzzInput(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool done() const { return pos_ >= size_; }
  uint8_t U8() { return pos_ < size_ ? data_[pos_++] : 0; }
  uint16_t U16() { return static_cast<uint16_t>(U8() | (U8() << 8)); }
  uint32_t U32() { return U16() | (uint32_t{U16()} << 16); }
  uint64_t U64() { return U32() | (uint64_t{U32()} << 32); }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

}  // namespace vmmkit

#endif  // VMMKIT_BASE_FUZZ_INPUT_H_
