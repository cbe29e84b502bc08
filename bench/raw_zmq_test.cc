// Sanity tests for the raw ZeroMQ bound and the benchmark report. Durations are tiny and
// nothing is asserted about speed.
#include "raw_zmq.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "bench_report.h"

namespace pserver::bench {
namespace {

using std::chrono::milliseconds;

RawZmqOptions TinyOptions(Shape shape, size_t bytes) {
  RawZmqOptions o;
  o.shape = shape;
  o.bytes = bytes;
  o.window = 8;
  o.min_duration = milliseconds(50);
  o.warmup_requests = 4;
  return o;
}

class RawZmqThroughputTest : public ::testing::TestWithParam<Shape> {};

TEST_P(RawZmqThroughputTest, CompletesRequestsWithOneServerAndOneClient) {
  const RawZmqOptions o = TinyOptions(GetParam(), 4096);
  Result<ThroughputResult> r = MeasureRawZmqThroughput(o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_GT(r->requests, 0u);
  EXPECT_GT(r->seconds, 0.0);
  EXPECT_GT(r->requests_per_sec, 0.0);
  EXPECT_DOUBLE_EQ(r->requests_per_sec, static_cast<double>(r->requests) / r->seconds);
  // The payload a request of each shape moves, written out: 4 KiB one way for push and pull
  // (the 16-byte ack or request frame is not payload), 4 KiB each way for push-pull.
  const double bytes_per_request = GetParam() == Shape::kPushPull ? 8192 : 4096;
  EXPECT_DOUBLE_EQ(r->bytes_per_sec, r->requests_per_sec * bytes_per_request);
}

TEST_P(RawZmqThroughputTest, CompletesRequestsWithTwoServersAndTwoClients) {
  RawZmqOptions o = TinyOptions(GetParam(), 64 << 10);
  o.num_servers = 2;
  o.num_clients = 2;
  Result<ThroughputResult> r = MeasureRawZmqThroughput(o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_GT(r->requests, 0u);
  EXPECT_GT(r->requests_per_sec, 0.0);
}

INSTANTIATE_TEST_SUITE_P(Shapes, RawZmqThroughputTest,
                         ::testing::Values(Shape::kPush, Shape::kPull, Shape::kPushPull),
                         [](const ::testing::TestParamInfo<Shape>& info) {
                           return std::string(ShapeName(info.param));
                         });

TEST(PayloadBytesPerRequestTest, CountsThePayloadOfEachDirectionThatCarriesOne) {
  EXPECT_EQ(PayloadBytesPerRequest(Shape::kPush, 4096), 4096u);
  EXPECT_EQ(PayloadBytesPerRequest(Shape::kPull, 4096), 4096u);
  EXPECT_EQ(PayloadBytesPerRequest(Shape::kPushPull, 4096), 8192u);
  EXPECT_EQ(PayloadBytesPerRequest(Shape::kPushPull, 0), 0u);
  EXPECT_EQ(PayloadBytesPerRequest(Shape::kPushPull, kMaxPayloadBytes), uint64_t{1} << 31);
}

TEST(RawZmqThroughputTest, HandlesEmptyPayloadAndZeroWarmup) {
  RawZmqOptions o = TinyOptions(Shape::kPushPull, 0);
  o.warmup_requests = 0;
  Result<ThroughputResult> r = MeasureRawZmqThroughput(o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->bytes_per_sec, 0.0);
}

TEST(RawZmqThroughputTest, RejectsBadOptions) {
  RawZmqOptions o = TinyOptions(Shape::kPush, 4096);
  o.window = 0;
  EXPECT_EQ(MeasureRawZmqThroughput(o).status().code(), StatusCode::kInvalidArgument);
  o = TinyOptions(Shape::kPush, kMaxPayloadBytes + 1);
  EXPECT_EQ(MeasureRawZmqThroughput(o).status().code(), StatusCode::kInvalidArgument);
  o = TinyOptions(Shape::kPush, 4096);
  o.num_servers = 0;
  EXPECT_EQ(MeasureRawZmqThroughput(o).status().code(), StatusCode::kInvalidArgument);
  o = TinyOptions(Shape::kPush, 4096);
  o.timeout = milliseconds(0);
  EXPECT_EQ(MeasureRawZmqThroughput(o).status().code(), StatusCode::kInvalidArgument);
}

// The arithmetic bound (BoundWork::kSum), with verify: after the run every key of every server
// is pulled, and the rows must hold, element by element, the sum of everything pushed -- the
// closed form pushes_sent * kPushedValue -- so a server that skipped the arithmetic (or stored
// only part of a row) fails here.
struct ArithCell {
  Shape shape;
  int servers;
  int clients;
  size_t bytes;
};

class RawZmqArithmeticTest : public ::testing::TestWithParam<ArithCell> {};

TEST_P(RawZmqArithmeticTest, PulledRowsAreTheSumsOfThePushes) {
  const ArithCell cell = GetParam();
  RawZmqOptions o = TinyOptions(cell.shape, cell.bytes);
  o.work = BoundWork::kSum;
  o.verify = true;
  o.num_servers = cell.servers;
  o.num_clients = cell.clients;
  Result<ThroughputResult> r = MeasureRawZmqThroughput(o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_GT(r->requests, 0u);
  const size_t width = cell.bytes / sizeof(float);
  ASSERT_EQ(r->pulled_rows.size(), static_cast<size_t>(cell.servers * cell.servers));  // keys 0..S-1 per server
  if (cell.shape == Shape::kPull) {
    // Only the initial pushes: each client pushed each of its keys once.
    EXPECT_EQ(r->pushes_sent, static_cast<uint64_t>(cell.servers * cell.clients));
  } else {
    EXPECT_GE(r->pushes_sent, r->requests + static_cast<uint64_t>(o.warmup_requests));
  }
  std::vector<double> sums(width, 0.0);
  for (const std::vector<float>& row : r->pulled_rows) {
    ASSERT_EQ(row.size(), width);
    for (size_t j = 0; j < width; ++j) sums[j] += row[j];
  }
  const double expected = static_cast<double>(r->pushes_sent) * kPushedValue;
  for (size_t j = 0; j < width; ++j) ASSERT_EQ(sums[j], expected) << "float " << j;
}

INSTANTIATE_TEST_SUITE_P(Cells, RawZmqArithmeticTest,
                         ::testing::Values(ArithCell{Shape::kPush, 1, 1, 4096}, ArithCell{Shape::kPull, 1, 1, 4096},
                                           ArithCell{Shape::kPushPull, 1, 1, 4096},
                                           ArithCell{Shape::kPush, 2, 2, 64 << 10},
                                           ArithCell{Shape::kPull, 2, 2, 64 << 10},
                                           ArithCell{Shape::kPushPull, 2, 2, 64 << 10},
                                           ArithCell{Shape::kPushPull, 2, 1, 12}),
                         [](const ::testing::TestParamInfo<ArithCell>& info) {
                           const ArithCell& c = info.param;
                           return std::string(ShapeName(c.shape)) + "_" + std::to_string(c.servers) + "s" +
                                  std::to_string(c.clients) + "w_" + std::to_string(c.bytes) + "B";
                         });

TEST(RawZmqArithmeticTest, MovesThePayloadOfThePlainBound) {
  RawZmqOptions o = TinyOptions(Shape::kPushPull, 4096);
  o.work = BoundWork::kSum;
  Result<ThroughputResult> r = MeasureRawZmqThroughput(o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_DOUBLE_EQ(r->bytes_per_sec, r->requests_per_sec * 8192);
  EXPECT_EQ(r->pushes_sent, 0u);  // counted with verify only
  EXPECT_TRUE(r->pulled_rows.empty());
}

TEST(RawZmqArithmeticTest, RejectsRowsThatAreNotWholeFloats) {
  RawZmqOptions o = TinyOptions(Shape::kPush, 4097);
  o.work = BoundWork::kSum;
  EXPECT_EQ(MeasureRawZmqThroughput(o).status().code(), StatusCode::kInvalidArgument);
  o.bytes = 0;
  EXPECT_EQ(MeasureRawZmqThroughput(o).status().code(), StatusCode::kInvalidArgument);
  o.work = BoundWork::kNone;  // the plain bound takes any size
  EXPECT_TRUE(MeasureRawZmqThroughput(o).ok());
}

TEST(BoundNameTest, NamesBothBounds) {
  EXPECT_EQ(BoundName(BoundWork::kNone), "raw_zmq");
  EXPECT_EQ(BoundName(BoundWork::kSum), "raw_zmq_arith");
}

TEST(RawZmqRoundTripTest, P50IsAtMostP99) {
  Result<LatencyResult> r = MeasureRawZmqRoundTrip(4096, milliseconds(50), 10);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_GT(r->samples, 0u);
  EXPECT_GT(r->p50_us, 0.0);
  EXPECT_LE(r->p50_us, r->p99_us);
  EXPECT_GT(r->mean_us, 0.0);
}

TEST(RawZmqRoundTripTest, TakesOneSampleWithZeroDuration) {
  Result<LatencyResult> r = MeasureRawZmqRoundTrip(16, milliseconds(0), 0);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->samples, 1u);
  EXPECT_EQ(r->p50_us, r->p99_us);
}

TEST(RawZmqRoundTripTest, RejectsNegativeWarmup) {
  EXPECT_EQ(MeasureRawZmqRoundTrip(16, milliseconds(10), -1).status().code(),
            StatusCode::kInvalidArgument);
}

TEST(SummarizeTest, TakesMedianMinAndMax) {
  const Summary odd = Summarize({3, 1, 2});
  EXPECT_EQ(odd.median, 2);
  EXPECT_EQ(odd.min, 1);
  EXPECT_EQ(odd.max, 3);
  const Summary even = Summarize({4, 1, 3, 2});
  EXPECT_EQ(even.median, 2.5);
  const Summary empty = Summarize({});
  EXPECT_EQ(empty.median, 0);
}

TEST(PercentileTest, UsesNearestRank) {
  std::vector<double> v;
  for (int i = 100; i >= 1; --i) v.push_back(i);
  EXPECT_EQ(Percentile(v, 50), 50);
  EXPECT_EQ(Percentile(v, 99), 99);
  EXPECT_EQ(Percentile(v, 100), 100);
  EXPECT_EQ(Percentile(v, 0), 1);
  std::vector<double> one = {7};
  EXPECT_EQ(Percentile(one, 99), 7);
}

TEST(ComputeRatioTest, IsFractionOfBoundInBothDirections) {
  EXPECT_DOUBLE_EQ(ComputeRatio(50, 100, /*higher_is_better=*/true), 0.5);
  EXPECT_DOUBLE_EQ(ComputeRatio(200, 100, /*higher_is_better=*/false), 0.5);  // latency
  EXPECT_EQ(ComputeRatio(50, 0, true), 0);
  EXPECT_EQ(ComputeRatio(0, 10, false), 0);
}

std::vector<BenchResult> SampleResults() {
  std::vector<BenchResult> results = {
      MakeBenchResult("push/4KiB/1s1w", "req/s", {900, 1000, 1100}, 2000, "raw_zmq", true),
      MakeBenchResult("rtt/4KiB/1s1w/p99", "us", {40, 50}, 25, "raw_zmq", false),
      MakeBenchResult("no_bound \"quoted\"", "MiB/s", {1}, 0, "", true)};
  results[0].cpu_us = 14.25;
  results[0].bound_cpu_us = 8.5;
  SetArithmeticBound(&results[0], {1200, 1250, 1300}, "raw_zmq_arith", 11.75);
  return results;
}

TEST(SetArithmeticBoundTest, TakesMedianRangeAndRatio) {
  BenchResult r = MakeBenchResult("push/4KiB/1s1w", "req/s", {900, 1000, 1100}, 2000, "raw_zmq", true);
  SetArithmeticBound(&r, {1300, 1200, 1250, 1400}, "raw_zmq_arith", 9.5);
  EXPECT_DOUBLE_EQ(r.arith_bound, 1275);
  EXPECT_DOUBLE_EQ(r.arith_bound_min, 1200);
  EXPECT_DOUBLE_EQ(r.arith_bound_max, 1400);
  EXPECT_DOUBLE_EQ(r.arith_ratio, 1000.0 / 1275);
  EXPECT_EQ(r.arith_bound_name, "raw_zmq_arith");
  EXPECT_DOUBLE_EQ(r.arith_bound_cpu_us, 9.5);
  EXPECT_DOUBLE_EQ(r.ratio, 0.5);  // the first bound's ratio is left alone
}

// A fresh directory under the test's temporary directory, removed by the test.
std::string MakeTempDir() {
  std::string tmpl = ::testing::TempDir() + "raw_zmq_test_XXXXXX";
  char* dir = ::mkdtemp(tmpl.data());
  return dir == nullptr ? std::string() : std::string(dir);
}

TEST(WriteJsonTest, RoundTripsThroughParse) {
  const std::string dir = MakeTempDir();
  ASSERT_FALSE(dir.empty());
  const std::string path = dir + "/results.json";
  const std::vector<BenchResult> results = SampleResults();
  ASSERT_TRUE(WriteJson(results, path).ok());

  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  const nlohmann::json j = nlohmann::json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(j.is_discarded()) << text.str();
  ASSERT_TRUE(j.is_array());
  ASSERT_EQ(j.size(), results.size());
  for (size_t i = 0; i < results.size(); ++i) {
    EXPECT_EQ(j[i].value("name", ""), results[i].name);
    EXPECT_EQ(j[i].value("unit", ""), results[i].unit);
    EXPECT_DOUBLE_EQ(j[i].value("value", -1.0), results[i].value);
    EXPECT_DOUBLE_EQ(j[i].value("bound", -1.0), results[i].bound);
    EXPECT_DOUBLE_EQ(j[i].value("ratio", -1.0), results[i].ratio);
    EXPECT_DOUBLE_EQ(j[i].value("min", -1.0), results[i].min);
    EXPECT_DOUBLE_EQ(j[i].value("max", -1.0), results[i].max);
    EXPECT_EQ(j[i].value("repetitions", -1), results[i].repetitions);
    EXPECT_EQ(j[i].value("bound_name", "?"), results[i].bound_name);
    EXPECT_DOUBLE_EQ(j[i].value("cpu_us", -1.0), results[i].cpu_us);
    EXPECT_DOUBLE_EQ(j[i].value("bound_cpu_us", -1.0), results[i].bound_cpu_us);
    EXPECT_EQ(j[i].value("higher_is_better", !results[i].higher_is_better),
              results[i].higher_is_better);
    EXPECT_DOUBLE_EQ(j[i].value("arith_bound", -1.0), results[i].arith_bound);
    EXPECT_DOUBLE_EQ(j[i].value("arith_bound_min", -1.0), results[i].arith_bound_min);
    EXPECT_DOUBLE_EQ(j[i].value("arith_bound_max", -1.0), results[i].arith_bound_max);
    EXPECT_DOUBLE_EQ(j[i].value("arith_ratio", -1.0), results[i].arith_ratio);
    EXPECT_EQ(j[i].value("arith_bound_name", "?"), results[i].arith_bound_name);
    EXPECT_DOUBLE_EQ(j[i].value("arith_bound_cpu_us", -1.0), results[i].arith_bound_cpu_us);
  }
  EXPECT_DOUBLE_EQ(j[0].value("arith_ratio", 0.0), 0.8);  // 1000 / 1250
  EXPECT_EQ(j[1].value("arith_bound_name", "?"), "");     // no second bound
  EXPECT_DOUBLE_EQ(j[0].value("ratio", 0.0), 0.5);          // 1000 / 2000
  EXPECT_DOUBLE_EQ(j[1].value("ratio", 0.0), 25.0 / 45.0);  // bound / median latency
  EXPECT_NE(::access((path + ".tmp").c_str(), F_OK), 0) << "temporary file left behind";
  std::remove(path.c_str());
  ::rmdir(dir.c_str());
}

TEST(WriteJsonTest, MissingDirectoryGivesNotFoundNamingThePath) {
  const std::string path = ::testing::TempDir() + "no_such_dir_for_raw_zmq_test/out.json";
  const Status s = WriteJson(SampleResults(), path);
  EXPECT_EQ(s.code(), StatusCode::kNotFound) << s;
  EXPECT_NE(s.message().find(path), std::string::npos) << s;
}

TEST(WriteJsonTest, InvalidUtf8GivesInvalidArgument) {
  std::vector<BenchResult> results = SampleResults();
  results[0].name = "bad\xff";
  const Status s = WriteJson(results, ::testing::TempDir() + "unused.json");
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s;
}

TEST(PrintTableTest, PrintsEveryResultAndMarksMissingBound) {
  std::FILE* f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  PrintTable(SampleResults(), f);
  std::rewind(f);
  std::string text;
  char buf[256];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) text.append(buf, n);
  std::fclose(f);
  EXPECT_NE(text.find("name"), std::string::npos) << text;
  EXPECT_NE(text.find("push/4KiB/1s1w"), std::string::npos) << text;
  EXPECT_NE(text.find("0.50x"), std::string::npos) << text;
  EXPECT_NE(text.find("[900.0, 1100]"), std::string::npos) << text;
  EXPECT_NE(text.find("cpu_us/req"), std::string::npos) << text;
  EXPECT_NE(text.find("14.2"), std::string::npos) << text;  // CPU per request, ours and the bound's
  EXPECT_NE(text.find("8.5"), std::string::npos) << text;
  EXPECT_NE(text.find("arith_ratio"), std::string::npos) << text;
  EXPECT_NE(text.find("0.80x"), std::string::npos) << text;  // 1000 / 1250, the second bound
  EXPECT_NE(text.find("1250"), std::string::npos) << text;
  EXPECT_NE(text.find("11.8"), std::string::npos) << text;  // the second bound's CPU per request
  EXPECT_NE(text.find(" - "), std::string::npos) << text;
}

}  // namespace
}  // namespace pserver::bench
