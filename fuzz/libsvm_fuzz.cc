// Fuzz target for the libsvm reader (apps/linear/libsvm_reader.h): the input is the text.
//
// Beyond "no crash, no sanitizer report" it checks, trapping when one breaks:
//   - ParseLibsvm accepts or refuses with kInvalidArgument or kCorruption, and a refusal names
//     the source it was given;
//   - an accepted data set keeps the Dataset invariants (rebuilding it from its arrays with
//     Dataset::FromArrays succeeds and gives the same data set);
//   - ReadLibsvm of the same bytes as a file, read in small chunks so that lines straddle chunk
//     boundaries, agrees with ParseLibsvm: both accept with equal data sets, or both refuse.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "apps/linear/dataset.h"
#include "apps/linear/libsvm_reader.h"
#include "fuzz/fuzz_util.h"

using pserver::StatusCode;
using pserver::fuzz::Check;
namespace linear = pserver::linear;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  pserver::Result<linear::Dataset> parsed = linear::ParseLibsvm(text, "fuzz-input", 1);
  if (parsed.ok()) {
    const linear::Dataset& d = *parsed;
    pserver::Result<linear::Dataset> rebuilt =
        linear::Dataset::FromArrays(d.labels(), d.offsets(), d.feature_ids(), d.values());
    Check(rebuilt.ok() && pserver::fuzz::SameData(*rebuilt, d));
  } else {
    const StatusCode code = parsed.status().code();
    Check(code == StatusCode::kInvalidArgument || code == StatusCode::kCorruption);
    Check(parsed.status().message().find("fuzz-input") != std::string::npos);
  }

  const std::string path = pserver::fuzz::ScratchDir::Get().Path("input.libsvm");
  pserver::fuzz::WriteBytes(path, text);
  linear::LibsvmReadOptions options;
  options.chunk_bytes = 1 + size % 17;
  pserver::Result<linear::Dataset> read = linear::ReadLibsvm(path, options);
  Check(read.ok() == parsed.ok());
  if (read.ok()) Check(pserver::fuzz::SameData(*read, *parsed));
  return 0;
}
