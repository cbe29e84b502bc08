#include "kv/filter/filter.h"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>

#include "absl/strings/numbers.h"

#include "kv/filter/compress_filter.h"
#include "kv/filter/key_cache_filter.h"
#include "kv/filter/quantize_filter.h"
#include "kv/filter/significant_filter.h"

namespace pserver::kv {

Status FilterChain::Encode(transport::Message& msg) const {
  if (filters_.empty()) return Status::Ok();
  if (msg.header.flags & transport::kFlagFiltered) {
    return Status::Internal(fmt::format("table '{}': a message was filtered twice", table_));
  }
  // Set whatever the frames' filters do: a worker without a copy must never go unheard.
  if (fills_replies_ && msg.header.type == transport::MessageType::kPull && !msg.header.is_reply()) {
    for (const auto& f : filters_) {
      if (f->fills_replies() && !f->HoldsCopyOf(msg.header.receiver)) msg.header.aux |= transport::kPullHoldsNoCopy;
    }
  }
  // On a copy of the frames (shared, not copied): a filter that fails leaves the message as it
  // was, never half changed.
  transport::Frames frames = msg.frames;
  std::string trailer;
  for (const auto& f : filters_) {
    Result<uint8_t> mask = f->Encode(msg.header, frames);
    if (!mask.ok()) return mask.status().WithContext(fmt::format("table '{}': filter '{}'", table_, f->name()));
    if (*mask == 0) continue;
    trailer.push_back(static_cast<char>(f->code()));
    trailer.push_back(static_cast<char>(*mask));
  }
  if (trailer.empty()) return Status::Ok();
  msg.frames = std::move(frames);
  msg.header.flags |= transport::kFlagFiltered;
  msg.frames.push_back(transport::BytesFromString(std::move(trailer)));
  return Status::Ok();
}

Status FilterChain::Decode(transport::Message& msg) const {
  PSERVER_RETURN_IF_ERROR(Undo(msg));
  for (const auto& f : filters_) f->Received(msg.header, msg.frames);
  return Status::Ok();
}

Status FilterChain::Round(Rounding& r) const {
  if (!(r.reply ? rounds_replies_ : rounds_pushes_)) return Status::Ok();
  // Each filter on what the one before it made; on an error the caller's values stand, but a
  // filter before the failing one has fed back already -- so every filter checks first.
  for (const auto& f : filters_) {
    if (!(r.reply ? f->rounds_replies() : f->rounds_pushes())) continue;
    if (Status s = f->Round(r); !s.ok()) return s.WithContext(fmt::format("table '{}': filter '{}'", table_, f->name()));
  }
  // A plain push only: a push-pull's reply must hold the rows of the keys asked for, no others.
  if (!r.reply && r.may_drop &&
      std::any_of(filters_.begin(), filters_.end(), [](const auto& f) { return f->over_bound(); })) {
    return r.value_type == ValueType::kFloat64 ? AddHeld<double>(r) : AddHeld<float>(r);
  }
  return Status::Ok();
}

template <typename T>
Status FilterChain::AddHeld(Rounding& r) const {
  std::map<Key, std::vector<double>> held = TakeHeld();
  if (held.empty()) return Status::Ok();
  const size_t c = r.columns;
  const T* in = reinterpret_cast<const T*>(r.vals.data());
  std::vector<Key> keys;
  std::vector<T> vals;
  keys.reserve(r.keys.size() + held.size());
  vals.reserve(keys.capacity() * c);
  auto it = held.begin();
  auto add_held = [&](const std::vector<double>& row, T* to) {
    constexpr double kMax = std::numeric_limits<T>::max();  // what the type cannot hold is dropped
    for (size_t j = 0; j < c; ++j) to[j] = static_cast<T>(std::clamp(static_cast<double>(to[j]) + row[j], -kMax, kMax));
  };
  for (size_t i = 0; i <= r.keys.size(); ++i) {
    for (; it != held.end() && (i == r.keys.size() || it->first < r.keys[i]); ++it) {  // held keys before it
      keys.push_back(it->first);
      vals.resize(vals.size() + c, T(0));
      add_held(it->second, &vals[vals.size() - c]);
    }
    if (i == r.keys.size()) break;
    keys.push_back(r.keys[i]);
    vals.insert(vals.end(), in + i * c, in + (i + 1) * c);
    if (it != held.end() && it->first == r.keys[i]) add_held((it++)->second, &vals[vals.size() - c]);
  }
  r.keys = SharedArray<Key>(std::move(keys));
  r.vals = transport::AsBytes(SharedArray<T>(std::move(vals)));
  return Status::Ok();
}

std::map<Key, std::vector<double>> FilterChain::TakeHeld() const {
  std::map<Key, std::vector<double>> held;
  for (const auto& f : filters_) f->TakeHeld(&held);
  return held;
}

void FilterChain::Forget(NodeId peer) const {
  for (const auto& f : filters_) f->Forget(peer);
}

Status FilterChain::Fill(const transport::Header& h, const SharedArray<Key>& keys, transport::Frames& frames) const {
  if (!fills_replies_ && !frames.empty() && !frames[0].empty()) {
    return Status::Corruption(fmt::format("table '{}': a pull reply carries a copy frame of {} bytes, and no filter "
                                          "of the table leaves keys out of replies",
                                          table_, frames[0].size()));
  }
  for (const auto& f : filters_) {
    if (!f->fills_replies()) continue;
    if (Status s = f->Fill(h, keys, frames); !s.ok()) {
      return s.WithContext(fmt::format("table '{}': filter '{}'", table_, f->name()));
    }
  }
  return Status::Ok();
}

Status FilterChain::Undo(transport::Message& msg) const {
  if (!(msg.header.flags & transport::kFlagFiltered)) return Status::Ok();
  auto refuse = [&](const std::string& why) {
    return Status::Corruption(fmt::format("table '{}': a filtered message {}", table_, why));
  };
  if (msg.frames.empty()) return refuse("has no filter trailer");
  const transport::Bytes trailer = msg.frames.back();
  msg.frames.pop_back();
  if (trailer.empty() || trailer.size() % 2 != 0 || trailer.size() > 2 * kMaxFilters) {
    return refuse(fmt::format("has a filter trailer of {} bytes (2 a filter, at most {} filters)", trailer.size(),
                              kMaxFilters));
  }
  // Each entry names a filter of the chain, each once and in the chain's order.
  std::vector<const Filter*> applied;
  size_t next = 0;  // the first filter of the chain the next entry may name
  for (size_t at = 0; at < trailer.size(); at += 2) {
    const auto code = std::to_integer<uint8_t>(trailer[at]);
    size_t i = next;
    while (i < filters_.size() && static_cast<uint8_t>(filters_[i]->code()) != code) ++i;
    if (i == filters_.size()) {
      return refuse(fmt::format("went through filter code {}, which the table does not declare{}{}", code,
                                filters_.empty() ? " (it has no filters)" : "",
                                next > 0 ? " after the filters before it in the trailer" : ""));
    }
    applied.push_back(filters_[i].get());
    next = i + 1;
  }
  // Undone in the reverse order of application.
  for (size_t at = trailer.size(); at > 0; at -= 2) {
    const auto mask = std::to_integer<uint8_t>(trailer[at - 1]);
    const Filter* filter = applied[at / 2 - 1];
    if (mask == 0 || std::bit_width(mask) > msg.frames.size()) {
      return refuse(fmt::format("names frames {:#04x} for filter '{}', but has {} frames", mask, filter->name(),
                                msg.frames.size()));
    }
    Status s = filter->Decode(msg.header, mask, msg.frames);
    if (!s.ok()) return s.WithContext(fmt::format("table '{}': filter '{}'", table_, filter->name()));
  }
  msg.header.flags &= static_cast<uint8_t>(~transport::kFlagFiltered);
  return Status::Ok();
}

namespace {

// `table`: null when the filters are checked without one (ParseFilters).
Result<std::shared_ptr<const Filter>> MakeFilter(const FilterSpec& fs, const TableSpec* table) {
  if (fs.name == "zstd") return MakeCompressFilter(Codec::kZstd, fs);
  if (fs.name == "lz4") return MakeCompressFilter(Codec::kLz4, fs);
  if (fs.name == "keycache") return MakeKeyCacheFilter(fs);
  if (fs.name == "fp16") return MakeQuantizeFilter(Precision::kFp16, fs, table);
  if (fs.name == "q8") return MakeQuantizeFilter(Precision::kQ8, fs, table);
  if (fs.name == "sigmod") return MakeSignificantFilter(fs, table);
  return Status::InvalidArgument(fmt::format("unknown filter '{}' (this node knows: {})", fs.name, KnownFilters()));
}

bool IsCompressor(const Filter& f) { return f.code() == FilterCode::kZstd || f.code() == FilterCode::kLz4; }
bool IsQuantizer(const Filter& f) { return f.code() == FilterCode::kFp16 || f.code() == FilterCode::kQ8; }

// The chain of `specs`, errors without the table's name.
Status AddFilters(const std::vector<FilterSpec>& specs, const TableSpec* table,
                  std::vector<std::shared_ptr<const Filter>>* out) {
  if (specs.size() > kMaxFilters) {
    return Status::InvalidArgument(fmt::format("{} filters, at most {} allowed", specs.size(), kMaxFilters));
  }
  for (const FilterSpec& fs : specs) {
    PSERVER_ASSIGN_OR_RETURN(std::shared_ptr<const Filter> filter, MakeFilter(fs, table));
    for (const auto& f : *out) {
      if (f->code() == filter->code()) return Status::InvalidArgument(fmt::format("filter '{}' is named twice", fs.name));
      // A compressor's output is bytes no other filter can read: compressors come last.
      if (IsCompressor(*f) && !IsCompressor(*filter)) {
        return Status::InvalidArgument(fmt::format("filter '{}' must come before '{}'", fs.name, f->name()));
      }
      // What sigmod sends and keeps back is off a quantiser's grid: it goes first.
      if (IsQuantizer(*f) && filter->code() == FilterCode::kSignificant) {
        return Status::InvalidArgument(fmt::format("filter 'sigmod' must come before '{}'", f->name()));
      }
      if (IsQuantizer(*f) && IsQuantizer(*filter)) {
        return Status::InvalidArgument(
            fmt::format("filters '{}' and '{}' both quantise values: choose one", f->name(), fs.name));
      }
    }
    out->push_back(std::move(filter));
  }
  return Status::Ok();
}

}  // namespace

Result<FilterChain> MakeFilterChain(const TableSpec& spec) {
  FilterChain chain;
  chain.table_ = spec.name;
  if (Status s = AddFilters(spec.filters, &spec, &chain.filters_); !s.ok()) {
    return s.WithContext(fmt::format("table '{}'", spec.name));
  }
  for (const auto& f : chain.filters_) {
    chain.rounds_pushes_ = chain.rounds_pushes_ || f->rounds_pushes();
    chain.rounds_replies_ = chain.rounds_replies_ || f->rounds_replies();
    chain.fills_replies_ = chain.fills_replies_ || f->fills_replies();
  }
  return chain;
}

std::string_view KnownFilters() { return "keycache, zstd, lz4, fp16, q8, sigmod"; }

}  // namespace pserver::kv

namespace pserver {
namespace {

std::vector<std::string_view> Split(std::string_view text, char sep) {
  std::vector<std::string_view> parts;
  for (size_t at = 0;;) {
    const size_t end = text.find(sep, at);
    parts.push_back(text.substr(at, end == std::string_view::npos ? std::string_view::npos : end - at));
    if (end == std::string_view::npos) return parts;
    at = end + 1;
  }
}

}  // namespace

Result<std::vector<FilterSpec>> ParseFilters(std::string_view text) {
  std::vector<FilterSpec> specs;
  if (text.empty() || text == "none") return specs;
  for (std::string_view item : Split(text, ',')) {
    std::vector<std::string_view> parts = Split(item, ':');
    FilterSpec& f = specs.emplace_back();
    f.name = std::string(parts[0]);
    if (f.name.empty()) return Status::InvalidArgument(fmt::format("filters '{}': an empty filter name", text));
    for (size_t i = 1; i < parts.size(); ++i) {
      const size_t eq = parts[i].find('=');
      double value = 0;
      if (eq == std::string_view::npos || eq == 0 || !absl::SimpleAtod(absl::string_view(parts[i].data() + eq + 1, parts[i].size() - eq - 1), &value) ||
          !std::isfinite(value)) {
        return Status::InvalidArgument(
            fmt::format("filters '{}': '{}' of filter '{}' is not param=number", text, parts[i], f.name));
      }
      f.params[std::string(parts[i].substr(0, eq))] = value;
    }
  }
  std::vector<std::shared_ptr<const kv::Filter>> chain;
  if (Status s = kv::AddFilters(specs, nullptr, &chain); !s.ok()) return s.WithContext(fmt::format("filters '{}'", text));
  return specs;
}

}  // namespace pserver
