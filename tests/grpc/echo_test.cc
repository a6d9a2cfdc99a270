// The generated Echo service, served in-process and called through a channel.
#include <memory>
#include <string>

#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/grpc/echo.grpc.pb.h"

namespace vmmkit::test {
namespace {

class EchoService final : public Echo::Service {
  grpc::Status Say(grpc::ServerContext*, const EchoRequest* request,
                   EchoReply* reply) override {
    if (request->text().empty()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "empty text");
    }
    reply->set_text(request->text());
    return grpc::Status::OK;
  }

  grpc::Status SayMany(grpc::ServerContext*, const EchoRequest* request,
                       grpc::ServerWriter<EchoReply>* writer) override {
    for (uint32_t i = 0; i < request->repeat(); ++i) {
      EchoReply reply;
      reply.set_text(request->text() + std::to_string(i));
      writer->Write(reply);
    }
    return grpc::Status::OK;
  }
};

TEST(EchoTest, UnaryAndStreamingCallsRoundTrip) {
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  EchoService service;
  grpc::ServerBuilder builder;
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  auto stub = Echo::NewStub(server->InProcessChannel(grpc::ChannelArguments()));

  {
    grpc::ClientContext ctx;
    EchoRequest req;
    req.set_text("virtio");
    EchoReply reply;
    ASSERT_TRUE(stub->Say(&ctx, req, &reply).ok());
    EXPECT_EQ(reply.text(), "virtio");
  }
  {
    grpc::ClientContext ctx;
    EchoReply reply;
    grpc::Status status = stub->Say(&ctx, EchoRequest(), &reply);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    grpc::ClientContext ctx;
    EchoRequest req;
    req.set_text("q");
    req.set_repeat(3);
    auto reader = stub->SayMany(&ctx, req);
    EchoReply reply;
    std::string all;
    while (reader->Read(&reply)) all += reply.text();
    EXPECT_TRUE(reader->Finish().ok());
    EXPECT_EQ(all, "q0q1q2");
  }
  server->Shutdown();
}

}  // namespace
}  // namespace vmmkit::test
