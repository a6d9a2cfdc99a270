// Server reflection on vmmd's server: a generic client, as grpcurl would,
// lists the services through grpc.reflection.v1alpha.ServerReflection and
// finds vmmkit.v1.VmService.
//
// Debian ships the reflection plugin but not the generated reflection
// messages, so the two messages used here are encoded by hand
// (grpc/reflection/v1alpha/reflection.proto):
//   ServerReflectionRequest  { string list_services = 7; }
//   ServerReflectionResponse { ListServiceResponse list_services_response = 6;
//   } ListServiceResponse      { repeated ServiceResponse service = 1; }
//   ServiceResponse          { string name = 1; }
#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/byte_buffer.h"
#include "gtest/gtest.h"
#include "vmm/api/server.h"
#include "vmm/api/service.h"
#include "vmm/api/vm_manager.h"

namespace vmmkit::api {
namespace {

// Waits for `tag` on `cq` and returns its ok bit.
bool Await(grpc::CompletionQueue& cq, intptr_t tag) {
  void* got = nullptr;
  bool ok = false;
  if (!cq.Next(&got, &ok)) return false;
  EXPECT_EQ(got, reinterpret_cast<void*>(tag));
  return ok;
}

// Reads a length-delimited field's bytes at data[*pos] (after its tag).
std::string ReadLengthDelimited(const std::string& data, size_t* pos) {
  uint64_t len = 0;
  for (int shift = 0; *pos < data.size() && shift < 64; shift += 7) {
    const uint8_t b = static_cast<uint8_t>(data[(*pos)++]);
    len |= uint64_t{b & 0x7fu} << shift;
    if ((b & 0x80) == 0) break;
  }
  if (len > data.size() - *pos) len = data.size() - *pos;
  std::string out = data.substr(*pos, len);
  *pos += len;
  return out;
}

// The service names in a ServerReflectionResponse's list_services_response.
std::vector<std::string> ServiceNames(const std::string& response) {
  std::vector<std::string> names;
  size_t pos = 0;
  while (pos < response.size()) {
    const uint8_t tag = static_cast<uint8_t>(response[pos++]);
    if ((tag & 7) != 2) break;  // every field of this message is a string/msg
    const std::string field = ReadLengthDelimited(response, &pos);
    if (tag >> 3 != 6) continue;
    for (size_t p = 0; p < field.size();) {
      const uint8_t t = static_cast<uint8_t>(field[p++]);
      if (t != 0x0a) break;  // ServiceResponse service = 1
      const std::string service = ReadLengthDelimited(field, &p);
      if (!service.empty() && service[0] == 0x0a) {
        size_t q = 1;
        names.push_back(ReadLengthDelimited(service, &q));
      }
    }
  }
  return names;
}

TEST(ReflectionTest, ListsTheVmService) {
  VmManager manager({});
  VmServiceImpl service(manager);
  absl::StatusOr<ListenAddress> address = ParseListenAddress("127.0.0.1:0");
  ASSERT_TRUE(address.ok()) << address.status();
  int port = 0;
  absl::StatusOr<std::unique_ptr<grpc::Server>> server =
      StartServer(service, *address, &port);
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_GT(port, 0);

  grpc::GenericStub stub(grpc::CreateChannel(
      absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  grpc::CompletionQueue cq;
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call = stub.PrepareCall(
      &context,
      "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  call->StartCall(reinterpret_cast<void*>(1));
  ASSERT_TRUE(Await(cq, 1));

  const std::string request("\x3a\x01*", 3);  // list_services: "*"
  grpc::Slice slice(request);
  grpc::ByteBuffer out(&slice, 1);
  call->Write(out, reinterpret_cast<void*>(2));
  ASSERT_TRUE(Await(cq, 2));
  grpc::ByteBuffer in;
  call->Read(&in, reinterpret_cast<void*>(3));
  ASSERT_TRUE(Await(cq, 3));
  call->WritesDone(reinterpret_cast<void*>(4));
  ASSERT_TRUE(Await(cq, 4));
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  ASSERT_TRUE(Await(cq, 5));
  EXPECT_TRUE(status.ok()) << status.error_message();

  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(in.Dump(&slices).ok());
  std::string response;
  for (const grpc::Slice& s : slices) {
    response.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  const std::vector<std::string> names = ServiceNames(response);
  EXPECT_NE(std::find(names.begin(), names.end(), "vmmkit.v1.VmService"),
            names.end())
      << "services listed: " << names.size();
  EXPECT_NE(std::find(names.begin(), names.end(),
                      "grpc.reflection.v1alpha.ServerReflection"),
            names.end());

  (*server)->Shutdown();
  cq.Shutdown();
  void* tag;
  bool ok;
  while (cq.Next(&tag, &ok)) {
  }
}

}  // namespace
}  // namespace vmmkit::api
