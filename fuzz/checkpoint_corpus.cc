// Writes checkpoint_fuzz's seeds (a checkpoint file, a manifest, and sealed-table descriptions)
// into DIR, with this build's writers:
//   build/fuzz/checkpoint_corpus fuzz/corpus/checkpoint_fuzz
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "cluster/checkpoint_manifest.h"
#include "kv/server/checkpoint_file.h"

namespace {

void Put(const std::filesystem::path& path, char mode, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.put(mode);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

template <typename T>
pserver::transport::Bytes BytesOf(std::vector<T> v) {
  return pserver::transport::AsBytes(pserver::SharedArray<T>(std::move(v)));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  const std::filesystem::path dir = argv[1];
  namespace kv = pserver::kv;
  std::vector<kv::CheckpointTable> tables(2);
  tables[0].spec.name = "w";
  tables[0].spec.updater = pserver::UpdaterSpec{"adagrad", {}};
  tables[0].rows.state_per_value = 1;
  tables[0].rows.width = 1;
  tables[0].rows.keys = pserver::SharedArray<pserver::Key>(std::vector<pserver::Key>{3, 9, 27});
  tables[0].rows.values = BytesOf(std::vector<float>{1, 2, 3});
  tables[0].rows.states = BytesOf(std::vector<float>{4, 5, 6});
  tables[1].spec.name = "lists";
  tables[1].spec.value_type = pserver::ValueType::kInt64;
  tables[1].spec.variable_length = true;
  tables[1].rows.value_type = pserver::ValueType::kInt64;
  tables[1].rows.width = 0;
  tables[1].rows.keys = pserver::SharedArray<pserver::Key>(std::vector<pserver::Key>{1, 2});
  tables[1].rows.lens = pserver::SharedArray<int32_t>(std::vector<int32_t>{1, 2});
  tables[1].rows.values = BytesOf(std::vector<int64_t>{7, 8, 9});
  const std::string file = (dir / "file.tmp").string();
  auto out = pserver::AtomicFileWriter::Open(file);
  auto info = out.ok() ? kv::WriteCheckpointFile(**out, tables) : out.status();
  if (!info.ok()) {
    std::fprintf(stderr, "checkpoint_corpus: %s\n", info.status().ToString().c_str());
    return 1;
  }
  std::ifstream in(file, std::ios::binary);
  Put(dir / "file", 0, std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()));
  std::filesystem::remove(file);
  pserver::cluster::CheckpointManifest m;
  m.epoch = 4;
  m.files = {{"server-0.psckpt", info->bytes, info->rows, info->checksum}, {"server-1.psckpt", 24, 0, 1}};
  Put(dir / "manifest", 1, pserver::cluster::EncodeManifest(m));
  // A sealed float32 table of 2 rows (mode 2) and an int64 variable-length one (mode 2 | 8).
  std::string layout(20, '\0');
  auto set = [&layout](size_t at, uint32_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) layout[at + static_cast<size_t>(i)] = static_cast<char>(v >> (8 * i));
  };
  set(0, 1, 4), set(4, 1, 4), set(8, 0, 4), set(12, 16, 2), set(14, 0, 2), set(16, 8, 2), set(18, 0, 2);
  Put(dir / "sealed-float", 2, layout + std::string("\x01\0\0\0\0\0\0\0\x02\0\0\0\0\0\0\0", 16) + std::string(8, '\x3f'));
  set(0, 4, 4), set(4, 0, 4), set(12, 16, 2), set(14, 8, 2), set(16, 16, 2);
  Put(dir / "sealed-lists", 2 | 8,
      layout + std::string("\x01\0\0\0\0\0\0\0\x02\0\0\0\0\0\0\0", 16) + std::string("\x01\0\0\0\x01\0\0\0", 8) +
          std::string(16, '\x05'));
  return 0;
}
