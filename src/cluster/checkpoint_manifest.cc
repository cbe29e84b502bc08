#include "cluster/checkpoint_manifest.h"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>
#include <system_error>

#include "base/logging.h"
#include "pserver/checksum.h"

namespace pserver::cluster {
namespace {

constexpr std::string_view kFirstLine = "pserver checkpoint 1";
constexpr std::string_view kDirPrefix = "ckpt-";

bool ParseU64(std::string_view s, uint64_t* out, int base = 10) {
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), *out, base);
  return ec == std::errc() && end == s.data() + s.size() && !s.empty();
}

}  // namespace

std::string EncodeManifest(const CheckpointManifest& m) {
  std::string text = fmt::format("{}\nepoch {}\n", kFirstLine, m.epoch);
  for (const CheckpointManifest::File& f : m.files) {
    text += fmt::format("file {} bytes {} rows {} checksum {:016x}\n", f.name, f.bytes, f.rows, f.checksum);
  }
  text += fmt::format("end {:016x}\n", Checksum64(text.data(), text.size()));
  return text;
}

Result<CheckpointManifest> ParseManifest(const std::string& text, const std::string& where) {
  auto bad = [&](size_t line, const std::string& what) {
    return Status::Corruption(fmt::format("checkpoint manifest {}: line {}: {}", where, line, what));
  };
  const size_t end_at = text.rfind("end ");
  if (end_at == std::string::npos || (end_at > 0 && text[end_at - 1] != '\n')) {
    return Status::Corruption(fmt::format("checkpoint manifest {}: no end line: the manifest is cut short", where));
  }
  uint64_t stored = 0;
  std::string_view end_line(text.data() + end_at + 4, text.size() - end_at - 4);
  if (!end_line.empty() && end_line.back() == '\n') end_line.remove_suffix(1);
  if (!ParseU64(end_line, &stored, 16) || Checksum64(text.data(), end_at) != stored) {
    return Status::Corruption(fmt::format("checkpoint manifest {}: its checksum does not match: it is corrupt", where));
  }
  std::istringstream in(text.substr(0, end_at));
  std::string line;
  size_t n = 0;
  CheckpointManifest m;
  std::set<std::string> names;
  while (std::getline(in, line)) {
    ++n;
    std::istringstream words(line);
    std::string key;
    words >> key;
    if (n == 1) {
      if (line != kFirstLine) return bad(n, fmt::format("'{}' where '{}' was expected", line, kFirstLine));
      continue;
    }
    if (key == "epoch" && n == 2) {
      std::string v;
      if (!(words >> v) || !ParseU64(v, &m.epoch)) return bad(n, "a malformed epoch");
      continue;
    }
    if (key != "file" || n < 3) return bad(n, fmt::format("unexpected '{}'", line));
    CheckpointManifest::File f;
    std::string w1, v1, w2, v2, w3, v3, rest;
    if (!(words >> f.name >> w1 >> v1 >> w2 >> v2 >> w3 >> v3) || (words >> rest) || w1 != "bytes" ||
        w2 != "rows" || w3 != "checksum" || !ParseU64(v1, &f.bytes) || !ParseU64(v2, &f.rows) ||
        !ParseU64(v3, &f.checksum, 16)) {
      return bad(n, fmt::format("a malformed file line '{}'", line));
    }
    if (f.name.find('/') != std::string::npos || f.name == "." || f.name == "..") {
      return bad(n, fmt::format("the file name '{}' is not a name within the checkpoint's directory", f.name));
    }
    if (!names.insert(f.name).second) return bad(n, fmt::format("the file {} is listed twice", f.name));
    m.files.push_back(std::move(f));
  }
  if (n < 2) return bad(n + 1, "no epoch line");
  return m;
}

std::string CheckpointDirectory(const std::string& dir, uint64_t n) {
  return (std::filesystem::path(dir) / fmt::format("{}{:06}", kDirPrefix, n)).string();
}

Result<std::vector<uint64_t>> ListCheckpoints(const std::string& dir) {
  std::error_code ec;
  std::vector<uint64_t> found;
  if (!std::filesystem::exists(dir, ec)) return found;
  for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    uint64_t n = 0;
    // Only the names CheckpointDirectory makes (ckpt-000007, not ckpt-7).
    if (name.starts_with(kDirPrefix) && ParseU64(std::string_view(name).substr(kDirPrefix.size()), &n) &&
        name == fmt::format("{}{:06}", kDirPrefix, n)) {
      found.push_back(n);
    }
  }
  if (ec) return Status::Unavailable(fmt::format("cannot list the checkpoints in {}: {}", dir, ec.message()));
  std::sort(found.begin(), found.end());
  return found;
}

Result<FoundCheckpoint> LatestCheckpoint(const std::string& dir) {
  PSERVER_ASSIGN_OR_RETURN(std::vector<uint64_t> numbers, ListCheckpoints(dir));
  for (auto it = numbers.rbegin(); it != numbers.rend(); ++it) {
    const std::string directory = CheckpointDirectory(dir, *it);
    const std::string path = (std::filesystem::path(directory) / kManifestName).string();
    std::error_code ec;
    if (!std::filesystem::exists(path, ec) && !ec) {
      PSERVER_LOG_INFO("checkpoint {} has no manifest (it was not completed); passed over", directory);
      continue;
    }
    std::ifstream in(path, std::ios::binary);
    if (ec || !in) {
      return Status::Unavailable(fmt::format("cannot read the checkpoint manifest {}: {}", path,
                                             ec ? ec.message() : std::strerror(errno)));
    }
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    PSERVER_ASSIGN_OR_RETURN(CheckpointManifest manifest, ParseManifest(text, path));
    return FoundCheckpoint{directory, std::move(manifest)};
  }
  return Status::NotFound(fmt::format("no complete checkpoint in {}", dir));
}

}  // namespace pserver::cluster
