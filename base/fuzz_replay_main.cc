// Runs a libFuzzer target over files and directories given on the command line
// (its checked-in corpus), so every fuzz target is also an ordinary test in
// builds without libFuzzer. Exits non-zero if no input was found.
#include <dirent.h>
#include <sys/stat.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

int RunFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)),
                          std::istreambuf_iterator<char>());
  LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(bytes.data()),
                         bytes.size());
  return 1;
}

int RunPath(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return 0;
  if (!S_ISDIR(st.st_mode)) return RunFile(path);
  int n = 0;
  DIR* dir = opendir(path.c_str());
  if (dir == nullptr) return 0;
  while (dirent* e = readdir(dir)) {
    std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    n += RunPath(path + "/" + name);
  }
  closedir(dir);
  return n;
}

}  // namespace

int main(int argc, char** argv) {
  int n = 0;
  for (int i = 1; i < argc; ++i) n += RunPath(argv[i]);
  // An empty input is always worth one run too.
  LLVMFuzzerTestOneInput(nullptr, 0);
  std::printf("replayed %d corpus inputs\n", n);
  return n > 0 ? 0 : 1;
}
