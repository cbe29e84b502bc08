#include "kv/server/row_frames.h"

#include <fmt/format.h>

namespace pserver::kv {

using transport::Bytes;

void AppendRowFrames(const RowBatch& rows, transport::Message* m) {
  m->header.value_type = rows.value_type;
  m->header.width = rows.width;
  m->header.aux = rows.state_per_value;
  m->frames.push_back(transport::AsBytes(rows.keys));
  m->frames.push_back(rows.values);
  m->frames.push_back(transport::AsBytes(rows.lens));
  m->frames.push_back(rows.states);
}

Result<RowBatch> RowFramesOf(const transport::Message& m, const char* what) {
  if (m.frames.size() < 4) return Status::Corruption(fmt::format("{} with {} frames", what, m.frames.size()));
  const Bytes& keys = m.frames[0];
  const Bytes& lens = m.frames[2];
  if (keys.size() % sizeof(Key) != 0 || lens.size() % sizeof(int32_t) != 0) {
    return Status::Corruption(fmt::format("{} with {} key bytes and {} length bytes", what, keys.size(), lens.size()));
  }
  if (m.header.aux > 64) return Status::Corruption(fmt::format("{} with {} state values per value", what, m.header.aux));
  RowBatch b;
  b.value_type = m.header.value_type;
  b.width = m.header.width;
  b.state_per_value = static_cast<uint32_t>(m.header.aux);
  b.keys = SharedArray<Key>(keys.owner(), reinterpret_cast<Key*>(keys.data()), keys.size() / sizeof(Key));
  b.lens = SharedArray<int32_t>(lens.owner(), reinterpret_cast<int32_t*>(lens.data()), lens.size() / sizeof(int32_t));
  b.values = m.frames[1];
  b.states = m.frames[3];
  return b;
}

RowBatch SliceRows(const RowBatch& all, size_t first, size_t last) {
  RowBatch b;
  b.value_type = all.value_type;
  b.width = all.width;
  b.state_per_value = all.state_per_value;
  const size_t elem = ValueTypeSize(all.value_type);
  size_t value_first = 0, value_count = 0;
  if (all.width == 0) {
    for (size_t i = 0; i < first; ++i) value_first += static_cast<size_t>(all.lens[i]);
    for (size_t i = first; i < last; ++i) value_count += static_cast<size_t>(all.lens[i]);
    b.lens = SharedArray<int32_t>(all.lens.owner(), all.lens.data() + first, last - first);
  } else {
    value_first = first * all.width;
    value_count = (last - first) * all.width;
  }
  b.keys = SharedArray<Key>(all.keys.owner(), all.keys.data() + first, last - first);
  b.values = Bytes(all.values.owner(), all.values.data() + value_first * elem, value_count * elem);
  const size_t spv = all.state_per_value;
  b.states = Bytes(all.states.owner(), all.states.data() + value_first * spv * elem, value_count * spv * elem);
  return b;
}

}  // namespace pserver::kv
