// Fuzz target for the checkpoint readers (docs/durability.md): a server's checkpoint file
// (kv::ReadCheckpointFile) and a checkpoint's manifest (cluster::ParseManifest). The first input
// byte is a mode:
//   bit 0 set: the rest is a manifest's text;
//   else bit 1 set: the rest describes one table that is written with valid checksums (so that
//     the fuzzer reaches the checks behind them): a u32 value type, u32 width, u32 state values
//     per value, four u16 array sizes (keys, lengths, values, states; in bytes), then the
//     arrays' bytes; bits 2-3 pick the table's spec;
//   else: the rest is a checkpoint file's bytes.
//
// Beyond "no crash, no sanitizer report" it checks, trapping when one breaks:
//   - a refused file is kCorruption naming the file; a refused manifest is kCorruption;
//   - an accepted file, written again, gives the same bytes; every table's arrays fit its layout;
//   - an accepted manifest, encoded and parsed again, is the same manifest.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>

#include "cluster/checkpoint_manifest.h"
#include "fuzz/fuzz_util.h"
#include "kv/server/checkpoint_file.h"

using pserver::StatusCode;
using pserver::fuzz::Check;
namespace kv = pserver::kv;

namespace {

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

uint32_t Get(const std::string& b, size_t at, int bytes) {
  uint32_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(b[at + static_cast<size_t>(i)]);
  return v;
}

pserver::transport::Bytes Take(const std::string& b, size_t* at, size_t n) {
  n = std::min(n, b.size() - *at);
  pserver::transport::Bytes out = pserver::transport::Bytes::Uninitialized(n);
  if (n > 0) std::memcpy(out.data(), b.data() + *at, n);
  *at += n;
  return out;
}

pserver::TableSpec SpecOf(int pick) {
  pserver::TableSpec s;
  s.name = "t";
  switch (pick) {
    case 1: s.value_type = pserver::ValueType::kFloat64; s.width = 3; break;
    case 2: s.value_type = pserver::ValueType::kInt64; s.variable_length = true; break;
    case 3: s.updater = pserver::UpdaterSpec{"adagrad", {}}; break;
    default: break;
  }
  return s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t mode = data[0];
  const std::string bytes(reinterpret_cast<const char*>(data + 1), size - 1);
  if (mode & 1) {
    pserver::Result<pserver::cluster::CheckpointManifest> m = pserver::cluster::ParseManifest(bytes, "M");
    if (!m.ok()) {
      Check(m.status().code() == StatusCode::kCorruption);
      return 0;
    }
    pserver::Result<pserver::cluster::CheckpointManifest> again =
        pserver::cluster::ParseManifest(pserver::cluster::EncodeManifest(*m), "M");
    Check(again.ok() && *again == *m);
    return 0;
  }
  const pserver::fuzz::ScratchDir& dir = pserver::fuzz::ScratchDir::Get();
  const std::string path = dir.Path("checkpoint.psckpt");
  if (mode & 2) {
    constexpr size_t kLayout = 20;
    if (bytes.size() < kLayout) return 0;
    kv::CheckpointTable t;
    t.spec = SpecOf((mode >> 2) & 3);
    t.rows.value_type = static_cast<pserver::ValueType>(Get(bytes, 0, 4) % 6);
    t.rows.width = Get(bytes, 4, 4) % 8;
    t.rows.state_per_value = Get(bytes, 8, 4) % 4;
    size_t at = kLayout;
    pserver::transport::Bytes keys = Take(bytes, &at, Get(bytes, 12, 2) / 8 * 8);
    pserver::transport::Bytes lens = Take(bytes, &at, Get(bytes, 14, 2) / 4 * 4);
    t.rows.values = Take(bytes, &at, Get(bytes, 16, 2));
    t.rows.states = Take(bytes, &at, Get(bytes, 18, 2));
    t.rows.keys = pserver::SharedArray<pserver::Key>(keys.owner(), reinterpret_cast<pserver::Key*>(keys.data()),
                                                     keys.size() / 8);
    t.rows.lens = pserver::SharedArray<int32_t>(lens.owner(), reinterpret_cast<int32_t*>(lens.data()), lens.size() / 4);
    auto out = pserver::AtomicFileWriter::Open(path);
    Check(out.ok());
    Check(kv::WriteCheckpointFile(**out, {t}).ok());
  } else {
    pserver::fuzz::WriteBytes(path, bytes);
  }
  kv::CheckpointFileInfo info;
  pserver::Result<std::vector<kv::CheckpointTable>> tables = kv::ReadCheckpointFile(path, &info);
  if (!tables.ok()) {
    Check(tables.status().code() == StatusCode::kCorruption);
    Check(tables.status().message().find(path) != std::string::npos);
    return 0;
  }
  for (const kv::CheckpointTable& t : *tables) {
    const size_t elem = pserver::ValueTypeSize(t.rows.value_type);
    size_t values = 0;
    for (size_t i = 0; i < t.rows.lens.size(); ++i) values += static_cast<size_t>(t.rows.lens[i]);
    if (t.rows.width > 0) values = t.rows.keys.size() * t.rows.width;
    Check(t.rows.values.size() == values * elem && t.rows.states.size() == values * elem * t.rows.state_per_value);
  }
  const std::string again = dir.Path("checkpoint-again.psckpt");
  auto out = pserver::AtomicFileWriter::Open(again);
  Check(out.ok());
  pserver::Result<kv::CheckpointFileInfo> rewritten = kv::WriteCheckpointFile(**out, *tables);
  Check(rewritten.ok() && rewritten->checksum == info.checksum && ReadAll(again) == ReadAll(path));
  return 0;
}
