// The table catalog (kv/table_catalog.h): spec round trips in the documented encoding, that
// every truncated, extended or mutated spec from a peer either decodes or is refused with
// kCorruption (never crashes), the one check of a spec, and declaring through a node.
#include "kv/table_catalog.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "base/wire_io.h"
#include "cluster/cluster_test_util.h"
#include "kv/local_cluster.h"
#include "kv/node_access.h"
#include "pserver/node.h"
#include "testing/test_util.h"
#include "transport/transport_test_util.h"

namespace pserver::kv {
namespace {

using pserver::testing::StatusIs;
using transport::Bytes;

using transport::testing::ExactCopy;
using transport::testing::Text;

TableSpec SampleSpec() {
  TableSpec s;
  s.name = "embeddings";
  s.value_type = ValueType::kFloat64;
  s.width = 16;
  s.placement = KeyPlacement::kRange;
  s.key_range = {100, 200};
  s.updater.name = "adagrad";
  s.updater.params = {{"eps", 1e-6}, {"lr", 0.05}};
  s.initializer = {InitializerSpec::Kind::kUniform, 0.25, 42};
  s.filters = {{"zstd", {{"level", 3}, {"min_bytes", 64}}}, {"lz4", {}}};
  return s;
}

// SampleSpec stored densely over its range, for the prox rule (two values pushed per value).
TableSpec DenseSpec() {
  TableSpec s = SampleSpec();
  s.storage = StorageKind::kDense;
  s.updater = UpdaterSpec{"prox", {{"delta", 1}, {"l1", 0.5}, {"l2", 0}}};
  s.push_arity = 2;
  return s;
}

// ---------------------------------------------------------------------------------------------
// Encoding

TEST(TableCatalogTest, RoundTripsTableSpec) {
  std::vector<TableSpec> specs;
  for (ValueType vt : {ValueType::kFloat32, ValueType::kFloat64, ValueType::kInt32, ValueType::kInt64}) {
    for (KeyPlacement p : {KeyPlacement::kHashed, KeyPlacement::kRange, KeyPlacement::kIdentity}) {
      for (bool var : {false, true}) {
        TableSpec s = SampleSpec();
        s.value_type = vt;
        s.placement = p;
        s.variable_length = var;
        specs.push_back(s);
      }
    }
  }
  TableSpec extreme = SampleSpec();
  extreme.name = std::string(1024, 'n');  // the decoder's limit
  extreme.width = std::numeric_limits<uint32_t>::max();
  extreme.key_range = {0, std::numeric_limits<uint64_t>::max()};
  extreme.updater.name = std::string(1024, 'u');
  for (int i = 0; i < 40; ++i) extreme.updater.params[std::string(1 + i, 'p')] = -i * 1e300;
  extreme.updater.params[""] = std::numeric_limits<double>::quiet_NaN();  // bits travel as they are
  extreme.push_arity = std::numeric_limits<uint32_t>::max();
  extreme.initializer = {InitializerSpec::Kind::kUniform, std::numeric_limits<double>::infinity(),
                         std::numeric_limits<uint64_t>::max()};
  extreme.filters.assign(64, FilterSpec{std::string(1024, 'f'), {{"x", -1e300}}});  // the decoder's limits
  specs.push_back(extreme);
  specs.push_back(DenseSpec());
  TableSpec defaults;
  defaults.name = "d";
  specs.push_back(defaults);
  for (const TableSpec& s : specs) {
    Result<TableSpec> d = DecodeTableSpec(EncodeTableSpec(s));
    ASSERT_OK(d);
    if (s.updater.params.contains("")) {  // NaN != NaN: compare the bytes instead
      EXPECT_EQ(Text(EncodeTableSpec(*d)), Text(EncodeTableSpec(s)));
      continue;
    }
    EXPECT_EQ(*d, s);
  }
}

TEST(TableCatalogTest, EncodesTableSpecInTheDocumentedOrder) {
  TableSpec s;
  s.name = "t";
  s.value_type = ValueType::kInt32;
  s.width = 2;
  s.placement = KeyPlacement::kRange;
  s.key_range = {3, 4};
  s.storage = StorageKind::kDense;
  s.updater = UpdaterSpec{"sgd", {{"lr", 0.5}}};
  s.push_arity = 1;
  s.initializer = {InitializerSpec::Kind::kUniform, 2.0, 9};
  s.checkpointed = false;
  s.filters = {{"lz4", {{"min_bytes", 0.5}}}};
  base::WireWriter w;
  w.Str("t");
  w.U8(3);
  w.U32(2);
  w.U8(0);
  w.U8(1);
  w.U64(3);
  w.U64(4);
  w.U8(1);  // storage dense
  w.Str("sgd");
  w.U32(1);
  w.Str("lr");
  w.U64(0x3FE0000000000000);  // 0.5
  w.U32(1);                   // push_arity
  w.U8(1);                    // uniform
  w.U64(0x4000000000000000);  // 2.0
  w.U64(9);
  w.U8(0);  // not checkpointed
  w.U32(1);  // filters
  w.Str("lz4");
  w.U32(1);
  w.Str("min_bytes");
  w.U64(0x3FE0000000000000);  // 0.5
  EXPECT_EQ(Text(EncodeTableSpec(s)), w.Take());
}

// ---------------------------------------------------------------------------------------------
// Refusals

void ExpectRefused(const std::string& body, const std::string& why) {
  Result<TableSpec> d = DecodeTableSpec(ExactCopy(body));
  EXPECT_EQ(d.status().code(), StatusCode::kCorruption) << why << ": " << d.status();
  EXPECT_EQ(d.status().message(), "malformed table spec") << why;
}

std::vector<std::string> ValidSpecBodies() {
  TableSpec var = SampleSpec();
  var.variable_length = true;
  var.placement = KeyPlacement::kIdentity;
  var.updater = UpdaterSpec{};
  var.initializer = InitializerSpec{};
  return {Text(EncodeTableSpec(SampleSpec())), Text(EncodeTableSpec(var)), Text(EncodeTableSpec(DenseSpec()))};
}

TEST(TableCatalogTest, RefusesEveryTruncationAndTrailingBytes) {
  for (const std::string& body : ValidSpecBodies()) {
    for (size_t len = 0; len < body.size(); ++len) ExpectRefused(body.substr(0, len), "truncated to " + std::to_string(len));
    ExpectRefused(body + '\0', "one trailing byte");
    ExpectRefused(body + body, "doubled");
  }
}

TEST(TableCatalogTest, RefusesOutOfRangeValues) {
  auto body = [](auto fill) {
    base::WireWriter w;
    fill(w);
    return w.Take();
  };
  // The flags must be 0/1, the placement, storage and initializer kinds known,
  // the names bounded, the updater params in strictly ascending order and not too many.
  struct SpecBody {
    std::string name = "t";
    uint8_t var = 0;
    uint8_t placement = 0;
    uint8_t storage = 0;
    std::string updater = "add";
    std::vector<std::string> params;
    uint32_t declared_params = 0xFFFFFFFF;  // the count written; the number of params if left so
    uint8_t init_kind = 0;
    uint8_t checkpointed = 1;
    uint32_t filters = 0;                 // the count written; each named "f" without params
    std::vector<std::string> filter_params;  // params of the first filter
  };
  auto spec = [&](const std::function<void(SpecBody&)>& change) {
    SpecBody b;
    change(b);
    return body([&](auto& w) {
      w.Str(b.name);
      w.U8(1);
      w.U32(1);
      w.U8(b.var);
      w.U8(b.placement);
      w.U64(0);
      w.U64(10);
      w.U8(b.storage);
      w.Str(b.updater);
      w.U32(b.declared_params == 0xFFFFFFFF ? static_cast<uint32_t>(b.params.size()) : b.declared_params);
      for (const std::string& p : b.params) {
        w.Str(p);
        w.U64(0);
      }
      w.U32(1);
      w.U8(b.init_kind);
      w.U64(0);
      w.U64(0);
      w.U8(b.checkpointed);
      w.U32(b.filters);
      for (uint32_t i = 0; i < b.filters && i < 100; ++i) {
        w.Str("f");
        w.U32(i == 0 ? static_cast<uint32_t>(b.filter_params.size()) : 0);
        for (const std::string& p : i == 0 ? b.filter_params : std::vector<std::string>{}) {
          w.Str(p);
          w.U64(0);
        }
      }
    });
  };
  EXPECT_OK(DecodeTableSpec(ExactCopy(spec([](SpecBody& b) {
    b.var = 1;
    b.placement = 2;
    b.storage = 1;
    b.params = {"a", "b"};
    b.init_kind = 1;
    b.checkpointed = 0;
    b.filters = 64;
    b.filter_params = {"a", "b"};
  }))));
  ExpectRefused(spec([](SpecBody& b) { b.var = 2; }), "variable_length 2");
  ExpectRefused(spec([](SpecBody& b) { b.placement = 3; }), "placement 3");
  ExpectRefused(spec([](SpecBody& b) { b.name = std::string(1025, 'n'); }), "1025-byte name");
  ExpectRefused(spec([](SpecBody& b) { b.storage = 2; }), "storage 2");
  ExpectRefused(spec([](SpecBody& b) { b.updater = std::string(1025, 'u'); }), "1025-byte updater name");
  ExpectRefused(spec([](SpecBody& b) { b.params = {"b", "a"}; }), "params out of order");
  ExpectRefused(spec([](SpecBody& b) { b.params = {"a", "a"}; }), "a param twice");
  ExpectRefused(spec([](SpecBody& b) { b.params = {std::string(1025, 'p')}; }), "1025-byte param name");
  ExpectRefused(spec([](SpecBody& b) {
                  b.params = {"a"};
                  b.declared_params = 2;
                }), "fewer params than counted");
  ExpectRefused(spec([](SpecBody& b) {
                  b.params = {"a"};
                  b.declared_params = 0;
                }), "more params than counted");
  ExpectRefused(spec([](SpecBody& b) { b.declared_params = 0xFFFFFFFE; }), "a huge param count");
  ExpectRefused(spec([](SpecBody& b) { b.init_kind = 2; }), "initializer kind 2");
  ExpectRefused(spec([](SpecBody& b) { b.checkpointed = 2; }), "checkpointed 2");
  ExpectRefused(spec([](SpecBody& b) { b.filters = 65; }), "65 filters");
  ExpectRefused(spec([](SpecBody& b) {
                  b.filters = 1;
                  b.filter_params = {"b", "a"};
                }), "filter params out of order");
  // A version-1 body (without the fields added in version 2) is truncated.
  ExpectRefused(body([](auto& w) {
                  w.Str("t");
                  w.U8(1);
                  w.U32(1);
                  w.U8(0);
                  w.U8(0);
                  w.U64(0);
                  w.U64(10);
                }),
                "a version-1 body");
}

TEST(TableCatalogTest, DecodeTableSpecLeavesValueTypeToValidate) {
  // The decoder keeps any value-type byte; ValidateTableSpec (which every server runs on
  // an announced spec) is what refuses an unknown one.
  for (uint8_t vt : {uint8_t{0}, uint8_t{5}, uint8_t{255}}) {
    std::string body = Text(EncodeTableSpec(SampleSpec()));
    body[4 + SampleSpec().name.size()] = static_cast<char>(vt);
    Result<TableSpec> d = DecodeTableSpec(ExactCopy(body));
    if (!d.ok()) {
      EXPECT_EQ(d.status().code(), StatusCode::kCorruption);
      continue;
    }
    EXPECT_EQ(ValidateTableSpec(*d).code(), StatusCode::kInvalidArgument) << int{vt};
  }
}

// ---------------------------------------------------------------------------------------------
// Random mutations

TEST(TableCatalogTest, RandomMutationsNeverCrashAndDecodeOrRefuse) {
  const uint64_t seed = pserver::testing::TestSeed();
  std::mt19937_64 rng(seed);
  const std::vector<std::string> valid = ValidSpecBodies();
  int decoded = 0, refused = 0;
  for (int i = 0; i < 25000; ++i) {
    std::string body = valid[rng() % valid.size()];
    for (int m = 1 + static_cast<int>(rng() % 3); m > 0; --m) {
      switch (rng() % 4) {
        case 0:
          if (!body.empty()) body[rng() % body.size()] ^= static_cast<char>(1 << (rng() % 8));
          break;
        case 1:
          body.insert(body.begin() + static_cast<std::ptrdiff_t>(rng() % (body.size() + 1)), static_cast<char>(rng()));
          break;
        case 2:
          if (!body.empty()) body.erase(rng() % body.size(), 1);
          break;
        default:
          body.resize(rng() % (body.size() + 1));
      }
    }
    Result<TableSpec> d = DecodeTableSpec(ExactCopy(body));
    if (!d.ok()) {
      ++refused;
      ASSERT_EQ(d.status().code(), StatusCode::kCorruption) << "iteration " << i << ": " << d.status();
      continue;
    }
    ++decoded;
    (void)ValidateTableSpec(*d);
    // The encoding is canonical: what decodes re-encodes to exactly the bytes received.
    ASSERT_EQ(Text(EncodeTableSpec(*d)), body) << "iteration " << i;
  }
  std::printf("[ mutated  ] table spec: %d decoded, %d refused\n", decoded, refused);
  EXPECT_GT(refused, 0);
}

// ---------------------------------------------------------------------------------------------
// ValidateTableSpec

TEST(TableCatalogTest, ValidateTableSpecAcceptsSaneSpecs) {
  EXPECT_OK(ValidateTableSpec(SampleSpec()));
  TableSpec s;
  s.name = "w";
  EXPECT_OK(ValidateTableSpec(s));  // the defaults: float32, width 1, hashed
  s.name = std::string(128, 'n');
  EXPECT_OK(ValidateTableSpec(s));
  s.variable_length = true;
  s.width = 0;  // ignored for variable-length tables
  EXPECT_OK(ValidateTableSpec(s));
  TableSpec one_key = SampleSpec();
  one_key.key_range = {5, 5};
  EXPECT_OK(ValidateTableSpec(one_key));
  TableSpec hashed = SampleSpec();
  hashed.placement = KeyPlacement::kHashed;
  hashed.key_range = {10, 1};  // only used by kRange
  EXPECT_OK(ValidateTableSpec(hashed));
  EXPECT_OK(ValidateTableSpec(DenseSpec()));
  TableSpec widest = DenseSpec();
  widest.key_range = {7, 7 + 0xFFFFFFFFull};  // exactly 2^32 keys
  EXPECT_OK(ValidateTableSpec(widest));
  TableSpec top = DenseSpec();
  top.key_range = {~Key{0} - 0xFFFFFFFFull, ~Key{0}};  // 2^32 keys ending at the top of the key space
  EXPECT_OK(ValidateTableSpec(top));
  TableSpec most = SampleSpec();
  most.updater.name = std::string(64, 'u');
  most.updater.params.clear();
  for (int i = 0; i < 32; ++i) most.updater.params[std::string(64, static_cast<char>('A' + i))] = -i;
  most.initializer.scale = 0;
  EXPECT_OK(ValidateTableSpec(most));
}

TEST(TableCatalogTest, ValidateTableSpecRefusesBadSpecs) {
  struct Case {
    const char* why;
    std::function<void(TableSpec&)> change;
    const char* message_part;
  };
  const Case cases[] = {
      {"empty name", [](TableSpec& s) { s.name.clear(); }, "1 to 128 bytes, got 0"},
      {"long name", [](TableSpec& s) { s.name = std::string(129, 'n'); }, "1 to 128 bytes, got 129"},
      {"value type 0", [](TableSpec& s) { s.value_type = static_cast<ValueType>(0); }, "unknown value type 0"},
      {"value type 5", [](TableSpec& s) { s.value_type = static_cast<ValueType>(5); }, "unknown value type 5"},
      {"width 0", [](TableSpec& s) { s.width = 0; }, "width must be at least 1"},
      {"empty range", [](TableSpec& s) { s.key_range = {201, 200}; }, "key range [201, 200] is empty"},
      {"dense hashed",
       [](TableSpec& s) {
         s.storage = StorageKind::kDense;
         s.placement = KeyPlacement::kHashed;
       },
       "dense storage needs key placement kRange"},
      {"dense identity",
       [](TableSpec& s) {
         s.storage = StorageKind::kDense;
         s.placement = KeyPlacement::kIdentity;
       },
       "dense storage needs key placement kRange"},
      {"dense 2^32+1 keys",
       [](TableSpec& s) {
         s.storage = StorageKind::kDense;
         s.key_range = {0, Key{1} << 32};
       },
       "at most 2^32 keys"},
      {"dense whole key space",
       [](TableSpec& s) {
         s.storage = StorageKind::kDense;
         s.key_range = {0, ~Key{0}};
       },
       "at most 2^32 keys"},
      {"storage 2", [](TableSpec& s) { s.storage = static_cast<StorageKind>(2); }, "unknown storage kind 2"},
      {"push_arity 0", [](TableSpec& s) { s.push_arity = 0; }, "push_arity must be 1 or 2, got 0"},
      {"push_arity 3", [](TableSpec& s) { s.push_arity = 3; }, "push_arity must be 1 or 2, got 3"},
      {"no updater", [](TableSpec& s) { s.updater.name.clear(); }, "updater name must be 1 to 64 bytes, got 0"},
      {"long updater", [](TableSpec& s) { s.updater.name = std::string(65, 'u'); },
       "updater name must be 1 to 64 bytes, got 65"},
      {"33 params",
       [](TableSpec& s) {
         for (int i = 0; i < 33; ++i) s.updater.params[std::string(1 + i, 'p')] = 1;
       },
       "at most 32 allowed"},
      {"empty param name", [](TableSpec& s) { s.updater.params[""] = 1; }, "param names must be 1 to 64 bytes"},
      {"NaN param", [](TableSpec& s) { s.updater.params["lr"] = std::numeric_limits<double>::quiet_NaN(); },
       "param 'lr' is nan"},
      {"infinite param", [](TableSpec& s) { s.updater.params["lr"] = std::numeric_limits<double>::infinity(); },
       "not a finite number"},
      {"initializer kind 2", [](TableSpec& s) { s.initializer.kind = static_cast<InitializerSpec::Kind>(2); },
       "unknown initializer kind 2"},
      {"negative scale", [](TableSpec& s) { s.initializer.scale = -0.5; }, "scale must be finite and >= 0, got -0.5"},
      {"NaN scale", [](TableSpec& s) { s.initializer.scale = std::numeric_limits<double>::quiet_NaN(); },
       "scale must be finite"},
      {"infinite scale", [](TableSpec& s) { s.initializer.scale = std::numeric_limits<double>::infinity(); },
       "scale must be finite"},
  };
  for (const Case& c : cases) {
    TableSpec s = SampleSpec();
    c.change(s);
    Status st = ValidateTableSpec(s);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << c.why;
    EXPECT_NE(st.message().find(c.message_part), std::string::npos) << c.why << ": " << st;
  }
}

TEST(TableCatalogTest, SummaryNamesWhatAConflictingDeclarationIsToldAbout) {
  EXPECT_EQ(SummarizeTableSpec(SampleSpec()),
            "float64, width 16, fixed length, updater 'adagrad', push_arity 1, filters zstd lz4");
  TableSpec plain = SampleSpec();
  plain.filters.clear();
  EXPECT_EQ(SummarizeTableSpec(plain), "float64, width 16, fixed length, updater 'adagrad', push_arity 1");
}

// ---------------------------------------------------------------------------------------------
// Declaring through a node

TEST(TableCatalogTest, DeclaringChecksTheSpecAndFindsItById) {
  kv::LocalClusterOptions o;
  o.inproc = true;
  Result<std::unique_ptr<kv::LocalCluster>> cluster = kv::LocalCluster::Start(o);
  ASSERT_OK(cluster);
  Status s = (*cluster)->RunWorkers([](Node& worker) -> Status {
    TableSpec bad = SampleSpec();
    bad.name.clear();
    EXPECT_TRUE(StatusIs(worker.DeclareTable(bad).status(), StatusCode::kInvalidArgument, "1 to 128 bytes"));
    bad = SampleSpec();
    bad.value_type = static_cast<ValueType>(9);
    EXPECT_TRUE(StatusIs(worker.DeclareTable(bad).status(), StatusCode::kInvalidArgument, "unknown value type 9"));
    PSERVER_ASSIGN_OR_RETURN(TableId id, worker.DeclareTable(SampleSpec()));
    // Declared again, the same spec gets the same id; another spec of the name is refused,
    // and told what the first declared.
    EXPECT_EQ(*worker.DeclareTable(SampleSpec()), id);
    TableSpec other = SampleSpec();
    other.width = 3;
    EXPECT_TRUE(StatusIs(worker.DeclareTable(other).status(), StatusCode::kInvalidArgument,
                         "table 'embeddings' was already declared differently (float64, width 16"));
    TableCatalog catalog(internal::NodeAccess::Runtime(worker));
    PSERVER_ASSIGN_OR_RETURN(std::shared_ptr<const TableSpec> found, catalog.Find(id));
    EXPECT_EQ(*found, SampleSpec());
    EXPECT_EQ(found.get(), catalog.Find(id)->get());  // decoded once
    EXPECT_TRUE(StatusIs(catalog.Find(TableId(99)).status(), StatusCode::kNotFound));
    return Status::Ok();
  });
  EXPECT_OK(s);
}

}  // namespace
}  // namespace pserver::kv
