// Fuzz target for the model loader (LinearModel::Load, apps/linear/model.h): the input is the
// model file's bytes, after one mode byte that helps the fuzzer past the cheap checks:
//   bit 0: set the weight count (offset 16) to what the file's size holds
//   bit 1: rewrite the checksum (the last 8 bytes) as XXH64 of the rest (file version 2)
//
// Beyond "no crash, no sanitizer report" it checks, trapping when one breaks:
//   - Load accepts or refuses with kCorruption naming the file;
//   - an accepted model has its weights sorted by feature, below num_features and finite;
//   - Save of an accepted model, loaded again, gives the same model.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "apps/linear/model.h"
#include "fuzz/fuzz_util.h"
#include "pserver/checksum.h"

using pserver::StatusCode;
using pserver::fuzz::Check;
namespace linear = pserver::linear;

namespace {

constexpr size_t kHeaderBytes = 24;  // magic, version, num_features, count
constexpr size_t kEntryBytes = 16;   // feature, weight

void PutU64(std::string& b, size_t at, uint64_t v) {
  for (int i = 0; i < 8; ++i) b[at + i] = static_cast<char>(v >> (8 * i));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t mode = data[0];
  std::string bytes(reinterpret_cast<const char*>(data + 1), size - 1);
  if ((mode & 1) && bytes.size() >= kHeaderBytes + 8) {
    PutU64(bytes, 16, (bytes.size() - kHeaderBytes - 8) / kEntryBytes);
  }
  if ((mode & 2) && bytes.size() >= 8) {
    PutU64(bytes, bytes.size() - 8, pserver::Checksum64(bytes.data(), bytes.size() - 8));
  }
  const pserver::fuzz::ScratchDir& dir = pserver::fuzz::ScratchDir::Get();
  const std::string path = dir.Path("model.bin");
  pserver::fuzz::WriteBytes(path, bytes);
  pserver::Result<linear::LinearModel> model = linear::LinearModel::Load(path);
  if (!model.ok()) {
    Check(model.status().code() == StatusCode::kCorruption);
    Check(model.status().message().find(path) != std::string::npos);
    return 0;
  }
  const auto& weights = model->weights();
  for (size_t i = 0; i < weights.size(); ++i) {
    Check(weights[i].first < model->num_features());
    Check(i == 0 || weights[i - 1].first < weights[i].first);
    Check(std::isfinite(weights[i].second));
  }
  const std::string again = dir.Path("model-again.bin");
  Check(model->Save(again).ok());
  pserver::Result<linear::LinearModel> reloaded = linear::LinearModel::Load(again);
  Check(reloaded.ok() && reloaded->num_features() == model->num_features() && reloaded->weights() == weights);
  return 0;
}
