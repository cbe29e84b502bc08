#include "apps/linear/model.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>

#include "apps/linear/logistic.h"
#include "pserver/atomic_file.h"
#include "pserver/checksum.h"

namespace pserver::linear {
namespace {

constexpr char kMagic[4] = {'P', 'S', 'L', 'M'};
// Version 1 had an FNV-1a 64 checksum; version 2 (written now) has XXH64. Both are read.
constexpr uint32_t kVersionFnv = 1;
constexpr uint32_t kVersion = 2;
constexpr size_t kHeaderBytes = 4 + 4 + 8 + 8;
constexpr size_t kEntryBytes = 16;

uint64_t Fnv1a(const char* data, size_t n) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (size_t i = 0; i < n; ++i) {
    h ^= static_cast<unsigned char>(data[i]);
    h *= 0x100000001b3ULL;
  }
  return h;
}

template <typename T>
void Put(std::string& out, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out.append(b, sizeof(T));
}

template <typename T>
T Get(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

}  // namespace

LinearModel::LinearModel(uint64_t num_features, std::vector<std::pair<uint64_t, double>> weights)
    : num_features_(num_features), weights_(std::move(weights)) {}

double LinearModel::Weight(uint64_t feature) const {
  auto it = std::lower_bound(weights_.begin(), weights_.end(), std::make_pair(feature, -1e308));
  return it != weights_.end() && it->first == feature ? it->second : 0.0;
}

Result<std::unique_ptr<AtomicFileWriter>> LinearModel::Stage(const std::string& path) const {
  for (const auto& [f, w] : weights_) {
    if (!std::isfinite(w)) {
      return Status::InvalidArgument(
          fmt::format("model file {}: refusing to write the non-finite weight {} of feature {}", path, w, f));
    }
  }
  std::string bytes(kMagic, 4);
  Put<uint32_t>(bytes, kVersion);
  Put<uint64_t>(bytes, num_features_);
  Put<uint64_t>(bytes, weights_.size());
  for (const auto& [f, w] : weights_) {
    Put<uint64_t>(bytes, f);
    Put<double>(bytes, w);
  }
  Put<uint64_t>(bytes, Checksum64(bytes.data(), bytes.size()));
  PSERVER_ASSIGN_OR_RETURN(std::unique_ptr<AtomicFileWriter> out, AtomicFileWriter::Open(path));
  PSERVER_RETURN_IF_ERROR(out->Append(bytes));
  PSERVER_RETURN_IF_ERROR(out->Sync());
  return out;
}

Status LinearModel::Save(const std::string& path) const {
  PSERVER_ASSIGN_OR_RETURN(std::unique_ptr<AtomicFileWriter> out, Stage(path));
  return out->Commit();
}

namespace {

// The bytes of the model file at `path`. A directory or a file that is not regular (a device
// such as /dev/zero would never end) is refused by its kind, without reading it.
Result<std::string> ReadModelFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    const std::string msg = fmt::format("cannot open model file {}: {}", path, std::strerror(err));
    return err == ENOENT ? Status::NotFound(msg) : Status::Unavailable(msg);
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    return Status::Unavailable(fmt::format("cannot stat model file {}: {}", path, std::strerror(errno)));
  }
  if (S_ISDIR(st.st_mode)) return Status::InvalidArgument(fmt::format("{}: is a directory, not a model file", path));
  if (!S_ISREG(st.st_mode)) {
    return Status::InvalidArgument(fmt::format("{}: not a regular file, so not a model file", path));
  }
  // The size must be what the header announces before the file is read whole: a sparse or
  // foreign file of a terabyte is refused here, not allocated.
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size >= kHeaderBytes + 8) {
    char header[kHeaderBytes];
    if (::pread(fd, header, kHeaderBytes, 0) != static_cast<ssize_t>(kHeaderBytes)) {
      return Status::Unavailable(fmt::format("cannot read model file {}: {}", path, std::strerror(errno)));
    }
    const uint64_t count = Get<uint64_t>(header + 16);
    if (count > (size - kHeaderBytes) / kEntryBytes || size != kHeaderBytes + count * kEntryBytes + 8) {
      return Status::Corruption(
          fmt::format("model file {}: {} bytes do not hold the {} weights the header announces", path, size, count));
    }
  }
  std::string bytes(static_cast<size_t>(size), '\0');
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::read(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::Unavailable(fmt::format("cannot read model file {}: {}", path, std::strerror(errno)));
    if (n == 0) break;  // shrank while read: the checks below see a short file
    done += static_cast<size_t>(n);
  }
  bytes.resize(done);
  return bytes;
}

}  // namespace

Result<LinearModel> LinearModel::Load(const std::string& path) {
  PSERVER_ASSIGN_OR_RETURN(std::string bytes, ReadModelFile(path));
  auto bad = [&](const std::string& what) {
    return Status::Corruption(fmt::format("model file {}: {}", path, what));
  };
  if (bytes.size() < kHeaderBytes + 8) return bad(fmt::format("truncated ({} bytes)", bytes.size()));
  if (std::memcmp(bytes.data(), kMagic, 4) != 0) return bad("not a pserver model (bad magic)");
  const uint32_t version = Get<uint32_t>(bytes.data() + 4);
  if (version != kVersion && version != kVersionFnv) {
    return bad(fmt::format("version {} (this build reads {} and {})", version, kVersionFnv, kVersion));
  }
  const uint64_t num_features = Get<uint64_t>(bytes.data() + 8);
  const uint64_t count = Get<uint64_t>(bytes.data() + 16);
  if (count > (bytes.size() - kHeaderBytes - 8) / kEntryBytes ||
      bytes.size() != kHeaderBytes + count * kEntryBytes + 8) {
    return bad(fmt::format("{} bytes do not hold the {} weights the header announces", bytes.size(), count));
  }
  const size_t body = bytes.size() - 8;
  const uint64_t checksum = version == kVersionFnv ? Fnv1a(bytes.data(), body) : Checksum64(bytes.data(), body);
  if (Get<uint64_t>(bytes.data() + body) != checksum) return bad("checksum mismatch");
  std::vector<std::pair<uint64_t, double>> weights(count);
  for (uint64_t i = 0; i < count; ++i) {
    const char* p = bytes.data() + kHeaderBytes + i * kEntryBytes;
    weights[i] = {Get<uint64_t>(p), Get<double>(p + 8)};
    if (weights[i].first >= num_features || (i > 0 && weights[i].first <= weights[i - 1].first)) {
      return bad(fmt::format("weight {} has feature {} out of order or range", i, weights[i].first));
    }
    if (!std::isfinite(weights[i].second)) {
      return bad(fmt::format("weight {} (feature {}) is {}, not a finite number", i, weights[i].first,
                             weights[i].second));
    }
  }
  return LinearModel(num_features, std::move(weights));
}

std::vector<double> LinearModel::Scores(const Dataset& data) const {
  std::vector<double> scores(data.num_rows(), 0.0);
  for (size_t r = 0; r < data.num_rows(); ++r) {
    const RowView row = data.row(r);
    // Both sides sorted by feature: merge.
    auto w = weights_.begin();
    double s = 0;
    for (size_t k = 0; k < row.feature_ids.size() && w != weights_.end(); ++k) {
      while (w != weights_.end() && w->first < row.feature_ids[k]) ++w;
      if (w != weights_.end() && w->first == row.feature_ids[k]) s += w->second * row.values[k];
    }
    scores[r] = s;
  }
  return scores;
}

Metrics Evaluate(const std::vector<double>& scores, const std::vector<float>& labels) {
  Metrics m;
  m.rows = scores.size();
  if (m.rows == 0) return m;
  double loss = 0;
  size_t correct = 0;
  for (size_t i = 0; i < m.rows; ++i) {
    loss += Log1pExp(-labels[i] * scores[i]);
    correct += (scores[i] > 0 ? 1.0f : -1.0f) == labels[i] ? 1 : 0;
  }
  m.log_loss = loss / static_cast<double>(m.rows);
  m.accuracy = static_cast<double>(correct) / static_cast<double>(m.rows);
  // AUC by the rank-sum of the positives, ties sharing their mean rank.
  std::vector<size_t> order(m.rows);
  for (size_t i = 0; i < m.rows; ++i) order[i] = i;
  // A NaN score (from a model or data that overflowed) ranks below every number and ties with
  // the other NaNs: the comparator must be a strict weak ordering, and `<` is none with NaNs.
  auto less = [&](size_t a, size_t b) {
    const bool a_nan = std::isnan(scores[a]), b_nan = std::isnan(scores[b]);
    if (a_nan || b_nan) return a_nan && !b_nan;
    return scores[a] < scores[b];
  };
  std::sort(order.begin(), order.end(), less);
  double positives = 0, rank_sum = 0;
  for (size_t i = 0; i < m.rows;) {
    size_t j = i + 1;
    while (j < m.rows && !less(order[i], order[j])) ++j;
    const double mean_rank = (static_cast<double>(i) + static_cast<double>(j) + 1) / 2;  // 1-based
    for (size_t k = i; k < j; ++k) {
      if (labels[order[k]] > 0) {
        positives += 1;
        rank_sum += mean_rank;
      }
    }
    i = j;
  }
  const double negatives = static_cast<double>(m.rows) - positives;
  m.auc = positives == 0 || negatives == 0 ? 0.5 : (rank_sum - positives * (positives + 1) / 2) / (positives * negatives);
  return m;
}

}  // namespace pserver::linear
