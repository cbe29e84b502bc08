#include "base/failpoint.h"

#include <gtest/gtest.h>

#include <cstdlib>

namespace pserver {
namespace {

TEST(FailpointTest, ListedNamesAreFoundAndOthersNot) {
  EXPECT_TRUE(FailpointListed("a", "a"));
  EXPECT_TRUE(FailpointListed("a,b", "b"));
  EXPECT_TRUE(FailpointListed(" a , b ", "b"));
  EXPECT_TRUE(FailpointListed(",,b,", "b"));
  EXPECT_FALSE(FailpointListed("", "a"));
  EXPECT_FALSE(FailpointListed("ab", "a"));
  EXPECT_FALSE(FailpointListed("a,b", "a,b"));
  EXPECT_FALSE(FailpointListed("a,b", ""));
  EXPECT_FALSE(FailpointListed(" , ", " "));
}

// The environment is read once, at the first check: this binary's first check is here.
TEST(FailpointTest, TheEnvironmentNamesTheActiveOnes) {
  ASSERT_EQ(::setenv("PSERVER_FAILPOINTS", "held-rows, other", 1), 0);
  EXPECT_TRUE(FailpointActive("held-rows"));
  EXPECT_TRUE(FailpointActive("other"));
  EXPECT_FALSE(FailpointActive("held"));
  ASSERT_EQ(::unsetenv("PSERVER_FAILPOINTS"), 0);
  EXPECT_TRUE(FailpointActive("other")) << "read once";
}

}  // namespace
}  // namespace pserver
