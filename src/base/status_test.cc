// Status, Result<T> and SharedArray<T>: the value types every layer passes around.
#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <numeric>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "pserver/result.h"
#include "pserver/shared_array.h"
#include "pserver/status.h"
#include "testing/test_util.h"

namespace pserver {
namespace {

// ---------------------------------------------------------------------------------------------
// Status

TEST(StatusTest, DefaultIsOk) {
  Status s;
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kOk);
  EXPECT_EQ(s.message(), "");
  EXPECT_EQ(s.ToString(), "OK");
  EXPECT_EQ(s, Status::Ok());
}

TEST(StatusTest, FactoriesSetCodeAndMessage) {
  struct Case {
    Status status;
    StatusCode code;
    const char* name;
  };
  const Case cases[] = {
      {Status::InvalidArgument("m"), StatusCode::kInvalidArgument, "InvalidArgument"},
      {Status::NotFound("m"), StatusCode::kNotFound, "NotFound"},
      {Status::DeadlineExceeded("m"), StatusCode::kDeadlineExceeded, "DeadlineExceeded"},
      {Status::Unavailable("m"), StatusCode::kUnavailable, "Unavailable"},
      {Status::Corruption("m"), StatusCode::kCorruption, "Corruption"},
      {Status::Aborted("m"), StatusCode::kAborted, "Aborted"},
      {Status::Internal("m"), StatusCode::kInternal, "Internal"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    EXPECT_FALSE(c.status.ok());
    EXPECT_EQ(c.status.code(), c.code);
    EXPECT_EQ(c.status.message(), "m");
    EXPECT_EQ(StatusCodeName(c.code), c.name);
    EXPECT_EQ(c.status.ToString(), std::string(c.name) + ": m");
  }
}

TEST(StatusTest, CodeNameOfUnknownCodeIsUnknown) {
  EXPECT_EQ(StatusCodeName(StatusCode::kOk), "OK");
  EXPECT_EQ(StatusCodeName(static_cast<StatusCode>(200)), "Unknown");
}

TEST(StatusTest, WithContextPrefixesMessageAndKeepsCode) {
  Status s = Status::NotFound("table 7").WithContext("pull").WithContext("worker 1");
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_EQ(s.message(), "worker 1: pull: table 7");
  EXPECT_EQ(s.ToString(), "NotFound: worker 1: pull: table 7");
}

TEST(StatusTest, WithContextOnOkStaysOk) {
  Status s = Status::Ok().WithContext("anything");
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.message(), "");
}

TEST(StatusTest, EqualityComparesCodeAndMessage) {
  EXPECT_EQ(Status::Aborted("x"), Status::Aborted("x"));
  EXPECT_FALSE(Status::Aborted("x") == Status::Aborted("y"));
  EXPECT_FALSE(Status::Aborted("x") == Status::Internal("x"));
  EXPECT_FALSE(Status::Aborted("") == Status::Ok());
}

TEST(StatusTest, StreamsAsToString) {
  std::ostringstream os;
  os << Status::Corruption("bad magic");
  EXPECT_EQ(os.str(), "Corruption: bad magic");
}

Status FailIf(bool fail, int* reached) {
  PSERVER_RETURN_IF_ERROR(fail ? Status::Unavailable("gone") : Status::Ok());
  ++*reached;
  return Status::Ok();
}

TEST(StatusTest, ReturnIfErrorReturnsOnlyErrors) {
  int reached = 0;
  EXPECT_OK(FailIf(false, &reached));
  EXPECT_EQ(reached, 1);
  Status s = FailIf(true, &reached);
  EXPECT_EQ(s, Status::Unavailable("gone"));
  EXPECT_EQ(reached, 1);
}

// ---------------------------------------------------------------------------------------------
// Result

TEST(ResultTest, HoldsValue) {
  Result<int> r = 42;
  ASSERT_TRUE(r.ok());
  EXPECT_OK(r);
  EXPECT_TRUE(r.status().ok());
  EXPECT_EQ(r.value(), 42);
  EXPECT_EQ(*r, 42);
  *r = 43;
  EXPECT_EQ(r.value(), 43);
}

TEST(ResultTest, HoldsError) {
  Result<int> r = Status::DeadlineExceeded("no answer from node 3");
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.status(), Status::DeadlineExceeded("no answer from node 3"));
}

TEST(ResultTest, ArrowReachesMembers) {
  Result<std::string> r = std::string("hello");
  EXPECT_EQ(r->size(), 5u);
  const Result<std::string>& cr = r;
  EXPECT_EQ(cr->front(), 'h');
}

TEST(ResultTest, MovesOutMoveOnlyValue) {
  Result<std::unique_ptr<int>> r = std::make_unique<int>(7);
  ASSERT_TRUE(r.ok());
  int* raw = r->get();
  std::unique_ptr<int> p = std::move(r).value();
  EXPECT_EQ(p.get(), raw);
  EXPECT_EQ(*p, 7);
}

Result<std::unique_ptr<int>> MakeInt(bool fail, int v) {
  if (fail) return Status::InvalidArgument("asked to fail");
  return std::make_unique<int>(v);
}

Result<int> Doubled(bool fail, int v) {
  PSERVER_ASSIGN_OR_RETURN(std::unique_ptr<int> p, MakeInt(fail, v));
  return *p * 2;
}

Status AssignTwice(int* out) {
  // Two uses in one scope must not collide (the temporary is named after the line).
  PSERVER_ASSIGN_OR_RETURN(std::unique_ptr<int> a, MakeInt(false, 1));
  PSERVER_ASSIGN_OR_RETURN(std::unique_ptr<int> b, MakeInt(false, 2));
  *out = *a + *b;
  return Status::Ok();
}

Status AssignToExisting(bool fail, int* out) {
  std::unique_ptr<int> p;
  PSERVER_ASSIGN_OR_RETURN(p, MakeInt(fail, 5));
  *out = *p;
  return Status::Ok();
}

TEST(ResultTest, AssignOrReturnPassesValueThrough) {
  Result<int> r = Doubled(false, 21);
  ASSERT_OK(r);
  EXPECT_EQ(*r, 42);
  int sum = 0;
  EXPECT_OK(AssignTwice(&sum));
  EXPECT_EQ(sum, 3);
  int v = 0;
  EXPECT_OK(AssignToExisting(false, &v));
  EXPECT_EQ(v, 5);
}

TEST(ResultTest, AssignOrReturnPropagatesError) {
  Result<int> r = Doubled(true, 21);
  EXPECT_EQ(r.status(), Status::InvalidArgument("asked to fail"));
  int v = -1;
  EXPECT_EQ(AssignToExisting(true, &v), Status::InvalidArgument("asked to fail"));
  EXPECT_EQ(v, -1);
}

// ---------------------------------------------------------------------------------------------
// SharedArray

TEST(SharedArrayTest, DefaultIsEmpty) {
  SharedArray<float> a;
  EXPECT_TRUE(a.empty());
  EXPECT_EQ(a.size(), 0u);
  EXPECT_EQ(a.size_bytes(), 0u);
  EXPECT_EQ(a.data(), nullptr);
  EXPECT_EQ(a.owner(), nullptr);
  EXPECT_EQ(a.begin(), a.end());
}

TEST(SharedArrayTest, SizedConstructorZeroesAndAligns) {
  SharedArray<double> a(1000);
  ASSERT_EQ(a.size(), 1000u);
  EXPECT_EQ(a.size_bytes(), 8000u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a.data()) % 64, 0u);
  for (double v : a) EXPECT_EQ(v, 0.0);
  EXPECT_NE(a.owner(), nullptr);
  SharedArray<double> none(0);
  EXPECT_TRUE(none.empty());
  EXPECT_EQ(none.data(), nullptr);
}

TEST(SharedArrayTest, VectorMoveIsZeroCopy) {
  std::vector<int64_t> v(1 << 16);
  std::iota(v.begin(), v.end(), 0);
  const int64_t* before = v.data();
  SharedArray<int64_t> a(std::move(v));
  EXPECT_EQ(a.data(), before);  // the vector's buffer itself, not a copy
  ASSERT_EQ(a.size(), size_t{1} << 16);
  EXPECT_EQ(a[12345], 12345);
  EXPECT_EQ(a.span().size(), a.size());
}

TEST(SharedArrayTest, SliceSharesOwner) {
  SharedArray<int32_t> a(std::vector<int32_t>{0, 1, 2, 3, 4, 5, 6, 7});
  long uses = a.owner().use_count();
  SharedArray<int32_t> s = a.Slice(2, 6);
  EXPECT_EQ(s.owner(), a.owner());
  EXPECT_EQ(a.owner().use_count(), uses + 1);
  EXPECT_EQ(s.data(), a.data() + 2);
  ASSERT_EQ(s.size(), 4u);
  EXPECT_EQ(s[0], 2);
  EXPECT_EQ(s[3], 5);
  s[0] = 20;  // aliases: a write through the slice is seen by the array
  EXPECT_EQ(a[2], 20);
  EXPECT_TRUE(a.Slice(3, 3).empty());
  SharedArray<int32_t> whole = a.Slice(0, a.size());
  EXPECT_EQ(whole.data(), a.data());
  EXPECT_EQ(whole.size(), a.size());
}

TEST(SharedArrayTest, SliceKeepsBufferAliveAfterOriginalIsGone) {
  bool freed = false;
  std::shared_ptr<void> owner(new int[4]{1, 2, 3, 4}, [&freed](void* p) {
    delete[] static_cast<int*>(p);
    freed = true;
  });
  int* data = static_cast<int*>(owner.get());
  SharedArray<int> slice;
  {
    SharedArray<int> a(std::move(owner), data, 4);
    slice = a.Slice(1, 3);
  }
  EXPECT_FALSE(freed);
  EXPECT_EQ(slice[0], 2);
  EXPECT_EQ(slice[1], 3);
  slice.Clear();
  EXPECT_TRUE(freed);
  EXPECT_TRUE(slice.empty());
}

TEST(SharedArrayTest, AliasWithNullOwner) {
  int storage[3] = {7, 8, 9};
  SharedArray<int> a(nullptr, storage, 3);
  EXPECT_EQ(a.data(), storage);
  EXPECT_EQ(a.owner(), nullptr);
  EXPECT_EQ(a.Slice(1, 2)[0], 8);
}

TEST(SharedArrayTest, CopyOfCopies) {
  std::vector<float> src = {1.5f, -2.5f, 3.25f};
  SharedArray<float> a = SharedArray<float>::CopyOf(src);
  ASSERT_EQ(a.size(), 3u);
  EXPECT_NE(a.data(), src.data());
  EXPECT_EQ(std::vector<float>(a.begin(), a.end()), src);
  src[0] = 100;  // independent of the source
  EXPECT_EQ(a[0], 1.5f);
  SharedArray<float> b = SharedArray<float>::CopyOf(a.span());
  EXPECT_NE(b.data(), a.data());
  EXPECT_NE(b.owner(), a.owner());
  EXPECT_TRUE(SharedArray<float>::CopyOf({}).empty());
}

TEST(SharedArrayTest, CopiesShareElements) {
  SharedArray<int> a(2);
  SharedArray<int> b = a;
  b[1] = 9;
  EXPECT_EQ(a[1], 9);
  EXPECT_EQ(a.owner(), b.owner());
  SharedArray<int> c = std::move(b);
  EXPECT_EQ(c.data(), a.data());
  a.Clear();
  EXPECT_TRUE(a.empty());
  EXPECT_EQ(c[1], 9);
}

}  // namespace
}  // namespace pserver
