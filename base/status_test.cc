#include "base/status.h"

#include <cerrno>

#include "base/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vmmkit {
namespace {

using ::testing::HasSubstr;
using ::vmmkit::testing::IsOk;
using ::vmmkit::testing::StatusIs;

TEST(ErrnoToStatusTest, MapsCommonErrnos) {
  EXPECT_THAT(
      ErrnoToStatus(ENOENT, "open disk.img"),
      StatusIs(absl::StatusCode::kNotFound, HasSubstr("open disk.img")));
  EXPECT_THAT(ErrnoToStatus(EINVAL, "x"),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ErrnoToStatus(EACCES, "x"),
              StatusIs(absl::StatusCode::kPermissionDenied));
  EXPECT_THAT(ErrnoToStatus(ENOMEM, "x"),
              StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_THAT(ErrnoToStatus(EIO, "x"), StatusIs(absl::StatusCode::kUnknown));
  EXPECT_THAT(ErrnoToStatus(EAGAIN, "x"),
              StatusIs(absl::StatusCode::kUnavailable));
}

TEST(ErrnoToStatusTest, MessageCarriesStrerror) {
  EXPECT_THAT(ErrnoToStatus(ENOENT, "open"),
              StatusIs(absl::StatusCode::kNotFound,
                       HasSubstr("No such file or directory")));
}

absl::StatusOr<int> Half(int x) {
  if (x % 2 != 0) return absl::InvalidArgumentError("odd");
  return x / 2;
}

absl::Status Quarter(int x, int* out) {
  VMMKIT_ASSIGN_OR_RETURN(int h, Half(x));
  VMMKIT_ASSIGN_OR_RETURN(*out, Half(h));
  return absl::OkStatus();
}

absl::Status CheckEven(int x) {
  VMMKIT_RETURN_IF_ERROR(Half(x).status());
  return absl::OkStatus();
}

TEST(StatusMacrosTest, AssignOrReturn) {
  int q = 0;
  EXPECT_THAT(Quarter(8, &q), IsOk());
  EXPECT_EQ(q, 2);
  EXPECT_THAT(Quarter(6, &q), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(StatusMacrosTest, ReturnIfError) {
  EXPECT_THAT(CheckEven(4), IsOk());
  EXPECT_THAT(CheckEven(5),
              StatusIs(absl::StatusCode::kInvalidArgument, "odd"));
}

TEST(AnnotateTest, PrependsContext) {
  EXPECT_THAT(Annotate(absl::NotFoundError("gone"), "disk"),
              StatusIs(absl::StatusCode::kNotFound, "disk: gone"));
  EXPECT_THAT(Annotate(absl::OkStatus(), "disk"), IsOk());
}

}  // namespace
}  // namespace vmmkit
