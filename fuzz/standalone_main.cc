// A standalone driver for the fuzz targets, so that they build and run with any compiler (GCC
// has no libFuzzer): it feeds LLVMFuzzerTestOneInput every file of the given corpus folders,
// then mutated inputs -- bit flips, byte changes, inserted and deleted ranges, copied ranges,
// splices of two inputs, interesting integers and tokens -- drawn from a seeded generator, for a
// number of runs or until a time bound, whichever comes first. Without coverage feedback it
// finds less than libFuzzer (scripts/test.sh also runs the targets under libFuzzer with clang),
// but it runs the same properties on every build.
//
//   TARGET [--seed S] [--runs N] [--seconds T] [--max-len BYTES] CORPUS_DIR_OR_FILE...
//
// The seed defaults to PSERVER_TEST_SEED, else 1, and is printed: the same seed and runs give
// the same inputs. When an input crashes the target (a failed check traps), the driver writes
// it to ./crash-TARGET-SEED-RUN before dying, and says which run it was.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

// The input being run, for the crash handler (which may only make async-signal-safe calls).
const std::string* g_current = nullptr;
char g_crash_path[512];
char g_crash_note[640];

void OnCrash(int sig) {
  if (g_current != nullptr) {
    int fd = open(g_crash_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      ssize_t ignored = write(fd, g_current->data(), g_current->size());
      (void)ignored;
      close(fd);
    }
    ssize_t ignored = write(2, g_crash_note, strlen(g_crash_note));
    (void)ignored;
  }
  signal(sig, SIG_DFL);
  raise(sig);
}

std::vector<std::string> ReadCorpus(const std::vector<std::string>& paths) {
  std::vector<std::string> files;
  for (const std::string& p : paths) {
    if (std::filesystem::is_directory(p)) {
      for (const auto& e : std::filesystem::directory_iterator(p)) {
        if (e.is_regular_file()) files.push_back(e.path().string());
      }
    } else {
      files.push_back(p);
    }
  }
  std::sort(files.begin(), files.end());
  std::vector<std::string> inputs;
  for (const std::string& f : files) {
    std::ifstream in(f, std::ios::binary);
    if (!in) {
      std::fprintf(stderr, "cannot read %s\n", f.c_str());
      std::exit(2);
    }
    inputs.emplace_back(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  return inputs;
}

class Mutator {
 public:
  Mutator(uint64_t seed, size_t max_len) : rng_(seed), max_len_(max_len) {}

  // One to four mutations of `in`.
  std::string Mutate(std::string in, const std::vector<std::string>& corpus) {
    const int n = 1 + static_cast<int>(Below(4));
    for (int i = 0; i < n; ++i) MutateOnce(in, corpus);
    if (in.size() > max_len_) in.resize(max_len_);
    return in;
  }

  uint64_t Below(uint64_t n) { return n == 0 ? 0 : rng_() % n; }

 private:
  void MutateOnce(std::string& s, const std::vector<std::string>& corpus) {
    static const char* const kTokens[] = {" ",    ":",    "\n",     "\r\n", "\t",  "+1",   "-1",    "0",
                                          "1e309", "nan", "-inf",   "-0",   "1:",  "0:",   "#",     "\0",
                                          "18446744073709551615",   "18446744073709551616", "4294967296",
                                          "0x10", "1.5e-45", "9999999999999999999999"};
    static const uint64_t kInts[] = {0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF,
                                     uint64_t{1} << 32, uint64_t{1} << 40, uint64_t{1} << 63, ~uint64_t{0},
                                     ~uint64_t{0} - 1};
    const size_t pos = Below(s.size() + 1);
    switch (Below(9)) {
      case 0:  // flip a bit
        if (!s.empty()) s[pos % s.size()] ^= static_cast<char>(1u << Below(8));
        break;
      case 1:  // set a byte
        if (!s.empty()) s[pos % s.size()] = static_cast<char>(Below(256));
        break;
      case 2: {  // insert random bytes
        std::string add(1 + Below(8), '\0');
        for (char& c : add) c = static_cast<char>(Below(256));
        s.insert(pos, add);
        break;
      }
      case 3:  // delete a range
        if (!s.empty()) s.erase(pos % s.size(), 1 + Below(16));
        break;
      case 4: {  // copy a range elsewhere
        if (s.empty()) break;
        const size_t from = Below(s.size());
        const std::string part = s.substr(from, 1 + Below(32));
        s.insert(pos, part);
        break;
      }
      case 5: {  // splice: this input's head, another's tail
        const std::string& other = corpus[Below(corpus.size())];
        const size_t cut = Below(other.size() + 1);
        s = s.substr(0, pos) + other.substr(cut);
        break;
      }
      case 6: {  // an interesting integer, little-endian, over 1, 2, 4 or 8 bytes
        const uint64_t v = kInts[Below(std::size(kInts))];
        const size_t width = size_t{1} << Below(4);
        if (s.size() < width) break;
        const size_t at = Below(s.size() - width + 1);
        for (size_t i = 0; i < width; ++i) s[at + i] = static_cast<char>(v >> (8 * i));
        break;
      }
      case 7: {  // a token
        const char* t = kTokens[Below(std::size(kTokens))];
        s.insert(pos, t, std::max<size_t>(1, std::strlen(t)));
        break;
      }
      default: {  // add or subtract a small number to a byte
        if (s.empty()) break;
        char& c = s[pos % s.size()];
        c = static_cast<char>(c + static_cast<int>(Below(33)) - 16);
        break;
      }
    }
  }

  std::mt19937_64 rng_;
  const size_t max_len_;
};

[[noreturn]] void Usage(const char* argv0) {
  std::fprintf(stderr, "usage: %s [--seed S] [--runs N] [--seconds T] [--max-len BYTES] CORPUS_DIR_OR_FILE...\n",
               argv0);
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t seed = 1;
  if (const char* env = std::getenv("PSERVER_TEST_SEED"); env != nullptr && *env != '\0') {
    seed = std::strtoull(env, nullptr, 10);
  }
  uint64_t runs = 100000;
  double seconds = 25;
  size_t max_len = 1 << 16;
  std::vector<std::string> paths;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) Usage(argv[0]);
      return argv[++i];
    };
    if (a == "--seed") {
      seed = std::strtoull(value(), nullptr, 10);
    } else if (a == "--runs") {
      runs = std::strtoull(value(), nullptr, 10);
    } else if (a == "--seconds") {
      seconds = std::strtod(value(), nullptr);
    } else if (a == "--max-len") {
      max_len = std::strtoull(value(), nullptr, 10);
    } else if (a.rfind("--", 0) == 0) {
      Usage(argv[0]);
    } else {
      paths.push_back(a);
    }
  }
  if (paths.empty()) Usage(argv[0]);
  const std::string name = std::filesystem::path(argv[0]).filename().string();
  std::vector<std::string> corpus = ReadCorpus(paths);
  if (corpus.empty()) corpus.emplace_back();
  std::printf("%s: seed %llu (replay with --seed %llu), %zu corpus inputs, up to %llu mutated inputs or %.0f s\n",
              name.c_str(), static_cast<unsigned long long>(seed), static_cast<unsigned long long>(seed),
              corpus.size(), static_cast<unsigned long long>(runs), seconds);
  std::fflush(stdout);
  for (int sig : {SIGILL, SIGSEGV, SIGABRT, SIGFPE, SIGBUS, SIGTRAP}) signal(sig, OnCrash);

  auto run = [&](const std::string& input, const char* kind, uint64_t index) {
    std::snprintf(g_crash_path, sizeof(g_crash_path), "crash-%s-%llu-%s%llu", name.c_str(),
                  static_cast<unsigned long long>(seed), kind, static_cast<unsigned long long>(index));
    std::snprintf(g_crash_note, sizeof(g_crash_note), "%s: %s input %llu (seed %llu) crashed; it is in %s\n",
                  name.c_str(), kind, static_cast<unsigned long long>(index), static_cast<unsigned long long>(seed),
                  g_crash_path);
    g_current = &input;
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(input.data()), input.size());
    g_current = nullptr;
  };
  for (size_t i = 0; i < corpus.size(); ++i) run(corpus[i], "corpus", i);

  Mutator mutator(seed, max_len);
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                    std::chrono::duration<double>(seconds));
  std::string previous = corpus[0];
  uint64_t done = 0;
  for (; done < runs; ++done) {
    // The time bound keeps a slow machine within the test's budget; it is read every 256 runs.
    if (done % 256 == 0 && std::chrono::steady_clock::now() > deadline) break;
    // Mostly a corpus input, sometimes the last mutant again (deeper chains of mutations).
    const std::string& base = mutator.Below(4) == 0 ? previous : corpus[mutator.Below(corpus.size())];
    previous = mutator.Mutate(base, corpus);
    run(previous, "mutated", done);
  }
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("%s: passed: %zu corpus inputs and %llu mutated inputs (seed %llu) in %.1f s\n", name.c_str(),
              corpus.size(), static_cast<unsigned long long>(done), static_cast<unsigned long long>(seed), took);
  return 0;
}
