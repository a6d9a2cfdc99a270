// base/status_matchers.h: GoogleTest matchers for absl::Status and StatusOr.
//
//   EXPECT_THAT(queue.Validate(mem), IsOk());
//   EXPECT_THAT(mem.Translate(addr, 8),
//   StatusIs(absl::StatusCode::kOutOfRange)); EXPECT_THAT(Parse(x),
//   StatusIs(absl::StatusCode::kInvalidArgument,
//                                  HasSubstr("bad MAC")));
//   ASSERT_OK_AND_ASSIGN(auto dev, BlockDevice::Create(opts));
#ifndef VMMKIT_BASE_STATUS_MATCHERS_H_
#define VMMKIT_BASE_STATUS_MATCHERS_H_

#include <ostream>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vmmkit::testing {

inline const absl::Status& GetStatus(const absl::Status& status) {
  return status;
}
template <typename T>
const absl::Status& GetStatus(const absl::StatusOr<T>& status_or) {
  return status_or.status();
}

MATCHER(IsOk, "is OK") {
  const absl::Status& s = ::vmmkit::testing::GetStatus(arg);
  if (!s.ok()) *result_listener << "status is " << s;
  return s.ok();
}

MATCHER_P(StatusIs, code,
          std::string("has status code ") +
              absl::StatusCodeToString(static_cast<absl::StatusCode>(code))) {
  const absl::Status& s = ::vmmkit::testing::GetStatus(arg);
  *result_listener << "status is " << s;
  return s.code() == code;
}

MATCHER_P2(StatusIs, code, message_matcher,
           std::string("has status code ") +
               absl::StatusCodeToString(static_cast<absl::StatusCode>(code))) {
  const absl::Status& s = ::vmmkit::testing::GetStatus(arg);
  *result_listener << "status is " << s;
  return s.code() == code &&
         ::testing::ExplainMatchResult(
             message_matcher, std::string(s.message()), result_listener);
}

}  // namespace vmmkit::testing

#define VMMKIT_TESTING_CONCAT_INNER_(a, b) a##b
#define VMMKIT_TESTING_CONCAT_(a, b) VMMKIT_TESTING_CONCAT_INNER_(a, b)

#define ASSERT_OK(expr) ASSERT_THAT((expr), ::vmmkit::testing::IsOk())
#define EXPECT_OK(expr) EXPECT_THAT((expr), ::vmmkit::testing::IsOk())
#define ASSERT_OK_AND_ASSIGN(lhs, expr) \
  ASSERT_OK_AND_ASSIGN_IMPL_(           \
      VMMKIT_TESTING_CONCAT_(vmmkit_statusor_, __LINE__), lhs, expr)
#define ASSERT_OK_AND_ASSIGN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                               \
  ASSERT_TRUE(statusor.ok()) << statusor.status();      \
  lhs = *std::move(statusor)

#endif  // VMMKIT_BASE_STATUS_MATCHERS_H_
