// VmService through a real gRPC server (in-process channel) over a real
// VmManager and vmm::Vm: error codes, the life cycle with a guest, many
// concurrent clients, and console streams that go away.
#include "vmm/api/service.h"

#include <atomic>
#include <fstream>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "vmm/api/testing/subprocess.h"
#include "vmm/api/testing/tiny_guest.h"
#include "vmm/api/vmmkit.grpc.pb.h"
#include "vmm/vm.h"

namespace vmmkit::api {
namespace {

using ::testing::HasSubstr;

// Skips the test, printing why, when /dev/kvm cannot run a VM here.
#define REQUIRE_KVM()                                             \
  do {                                                            \
    std::string why_not;                                          \
    if (!vmm::KvmUsable(&why_not)) {                              \
      GTEST_SKIP() << "/dev/kvm is not usable here: " << why_not; \
    }                                                             \
  } while (0)

class ServiceTest : public ::testing::Test {
 protected:
  explicit ServiceTest(int max_vms = 64)
      : manager_({.max_vms = max_vms, .console_history = 1 << 20}),
        service_(manager_) {}

  void SetUp() override {
    grpc::ServerBuilder builder;
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    channel_ = server_->InProcessChannel(grpc::ChannelArguments());
    stub_ = v1::VmService::NewStub(channel_);
    tiny_ = testing::WriteTinyGuest(::testing::TempDir() + "/tiny.elf");
  }
  void TearDown() override {
    if (server_) server_->Shutdown(std::chrono::system_clock::now());
  }

  std::unique_ptr<v1::VmService::Stub> NewStub() {
    return v1::VmService::NewStub(channel_);
  }

  static std::unique_ptr<grpc::ClientContext> Ctx(
      absl::Duration d = absl::Seconds(60)) {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->set_deadline(absl::ToChronoTime(absl::Now() + d));
    return ctx;
  }

  grpc::Status Create(const std::string& id, const std::string& kernel,
                      v1::VmInfo* out = nullptr,
                      const std::string& cmdline = "",
                      v1::VmService::Stub* stub = nullptr) {
    v1::CreateVmRequest req;
    req.set_vm_id(id);
    req.mutable_config()->set_kernel(kernel);
    req.mutable_config()->set_memory_mib(16);
    req.mutable_config()->set_cmdline(cmdline);
    v1::VmInfo reply;
    grpc::Status s = (stub ? stub : stub_.get())
                         ->CreateVm(Ctx().get(), req, out ? out : &reply);
    return s;
  }

  grpc::Status Add(const std::string& vm, v1::DeviceSpec spec,
                   v1::VmInfo* out = nullptr,
                   v1::VmService::Stub* stub = nullptr) {
    v1::AddDeviceRequest req;
    req.set_vm_id(vm);
    *req.mutable_device() = std::move(spec);
    v1::VmInfo reply;
    return (stub ? stub : stub_.get())
        ->AddDevice(Ctx().get(), req, out ? out : &reply);
  }

  static v1::DeviceSpec Rng(const std::string& id = "") {
    v1::DeviceSpec d;
    d.set_id(id);
    d.set_type(v1::DEVICE_TYPE_RNG);
    return d;
  }

  // VmRequest-style calls.
  using Unary = grpc::Status (v1::VmService::Stub::*)(grpc::ClientContext*,
                                                      const v1::VmRequest&,
                                                      v1::VmInfo*);
  grpc::Status Call(Unary rpc, const std::string& vm, v1::VmInfo* out = nullptr,
                    v1::VmService::Stub* stub = nullptr) {
    v1::VmRequest req;
    req.set_vm_id(vm);
    v1::VmInfo reply;
    return ((stub ? stub : stub_.get())->*rpc)(Ctx().get(), req,
                                               out ? out : &reply);
  }

  grpc::Status Stop(const std::string& vm, uint32_t graceful_ms,
                    v1::VmInfo* out = nullptr) {
    v1::StopVmRequest req;
    req.set_vm_id(vm);
    req.set_graceful_timeout_ms(graceful_ms);
    v1::VmInfo reply;
    return stub_->StopVm(Ctx().get(), req, out ? out : &reply);
  }

  grpc::Status Wait(const std::string& vm, uint32_t ms,
                    v1::VmInfo* out = nullptr) {
    v1::WaitVmRequest req;
    req.set_vm_id(vm);
    req.set_timeout_ms(ms);
    v1::VmInfo reply;
    return stub_->WaitVm(Ctx().get(), req, out ? out : &reply);
  }

  grpc::Status Delete(const std::string& vm, bool force = false,
                      v1::VmService::Stub* stub = nullptr) {
    v1::DeleteVmRequest req;
    req.set_vm_id(vm);
    req.set_force(force);
    v1::DeleteVmResponse reply;
    return (stub ? stub : stub_.get())->DeleteVm(Ctx().get(), req, &reply);
  }

  // Reads console chunks until `text` was seen (or the stream ended / the
  // deadline passed); returns everything read.
  static std::string ReadUntil(
      grpc::ClientReaderWriter<v1::ConsoleRequest, v1::ConsoleChunk>* stream,
      const std::string& text, bool* stopped = nullptr) {
    std::string all;
    v1::ConsoleChunk chunk;
    while (!absl::StrContains(all, text) && stream->Read(&chunk)) {
      all += chunk.data();
      if (chunk.vm_stopped()) {
        if (stopped) *stopped = true;
        break;
      }
    }
    return all;
  }

  VmManager manager_;
  VmServiceImpl service_;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::VmService::Stub> stub_;
  std::string tiny_;
};

// ---- errors that need no VM -----------------------------------------------

TEST_F(ServiceTest, UnknownVmsAreNotFoundEverywhere) {
  EXPECT_EQ(Call(&v1::VmService::Stub::GetVm, "nope").error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Call(&v1::VmService::Stub::StartVm, "nope").error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Call(&v1::VmService::Stub::PauseVm, "nope").error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Call(&v1::VmService::Stub::ResumeVm, "nope").error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Stop("nope", 0).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Wait("nope", 0).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Delete("nope").error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Add("nope", Rng()).error_code(), grpc::StatusCode::NOT_FOUND);
  v1::RemoveDeviceRequest rm;
  rm.set_vm_id("nope");
  rm.set_device_id("rng0");
  v1::VmInfo info;
  EXPECT_EQ(stub_->RemoveDevice(Ctx().get(), rm, &info).error_code(),
            grpc::StatusCode::NOT_FOUND);
  v1::VmRequest req;
  req.set_vm_id("nope");
  v1::VmMetrics metrics;
  grpc::Status s = stub_->GetMetrics(Ctx().get(), req, &metrics);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(s.error_message(), HasSubstr("nope"));

  auto ctx = Ctx();
  auto stream = stub_->StreamConsole(ctx.get());
  v1::ConsoleRequest first;
  first.set_vm_id("nope");
  stream->Write(first);
  stream->WritesDone();
  v1::ConsoleChunk chunk;
  EXPECT_FALSE(stream->Read(&chunk));
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::NOT_FOUND);

  v1::ListVmsResponse list;
  ASSERT_TRUE(stub_->ListVms(Ctx().get(), {}, &list).ok());
  EXPECT_EQ(list.vms_size(), 0);
}

TEST_F(ServiceTest, MalformedRequestsAreInvalidArguments) {
  v1::CreateVmRequest no_config;
  no_config.set_vm_id("a");
  v1::VmInfo info;
  EXPECT_EQ(stub_->CreateVm(Ctx().get(), no_config, &info).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  grpc::Status missing = Create("a", "/nonexistent/vmlinuz");
  EXPECT_EQ(missing.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(missing.error_message(), HasSubstr("/nonexistent/vmlinuz"));
  EXPECT_EQ(Create("", "").error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Create("a/../b", tiny_).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Call(&v1::VmService::Stub::GetVm, "").error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(
      Call(&v1::VmService::Stub::GetVm, std::string(100, 'x')).error_code(),
      grpc::StatusCode::INVALID_ARGUMENT);

  v1::DeviceSpec bad_mac;
  bad_mac.set_type(v1::DEVICE_TYPE_NET);
  bad_mac.mutable_net()->set_mac("52:54:00:00:00");
  grpc::Status s = Add("a", bad_mac);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("MAC"));
  v1::DeviceSpec untyped;
  EXPECT_EQ(Add("a", untyped).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  v1::AddDeviceRequest no_device;
  no_device.set_vm_id("a");
  EXPECT_EQ(stub_->AddDevice(Ctx().get(), no_device, &info).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  v1::DeviceSpec no_image;
  no_image.set_type(v1::DEVICE_TYPE_BLOCK);
  no_image.mutable_block()->set_image_path("/nonexistent/disk.img");
  EXPECT_EQ(Add("a", no_image).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Stop("a", 24 * 3600 * 1000).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  auto ctx = Ctx();
  auto stream = stub_->StreamConsole(ctx.get());
  stream->WritesDone();  // no first message
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

// ---- with KVM ---------------------------------------------------------------

TEST_F(ServiceTest, ErrorCodesOnARealVm) {
  REQUIRE_KVM();
  v1::VmInfo info;
  ASSERT_TRUE(Create("a", tiny_, &info).ok());
  EXPECT_EQ(info.vm_id(), "a");
  EXPECT_EQ(info.state(), v1::VM_STATE_CREATED);
  EXPECT_EQ(info.config().memory_mib(), 16u);
  EXPECT_EQ(info.config().vcpus(), 1u);  // the default
  EXPECT_EQ(Create("a", tiny_).error_code(), grpc::StatusCode::ALREADY_EXISTS);

  // A file that is neither ELF64 nor bzImage.
  std::string text = ::testing::TempDir() + "/not-a-kernel";
  std::ofstream(text) << "hello";
  EXPECT_EQ(Create("b", text).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  ASSERT_TRUE(Add("a", Rng("r"), &info).ok());
  ASSERT_EQ(info.devices_size(), 1);
  EXPECT_EQ(info.devices(0).spec().id(), "r");
  EXPECT_EQ(info.devices(0).spec().transport(), v1::TRANSPORT_PCI_TRANSITIONAL);
  EXPECT_EQ(Add("a", Rng("r")).error_code(), grpc::StatusCode::ALREADY_EXISTS);
  v1::DeviceSpec odd_queue = Rng("q");
  odd_queue.set_queue_size(100);  // not a power of two
  EXPECT_EQ(Add("a", odd_queue).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  v1::RemoveDeviceRequest rm;
  rm.set_vm_id("a");
  rm.set_device_id("zz");
  EXPECT_EQ(stub_->RemoveDevice(Ctx().get(), rm, &info).error_code(),
            grpc::StatusCode::NOT_FOUND);

  // Wrong states before start.
  EXPECT_EQ(Call(&v1::VmService::Stub::PauseVm, "a").error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(Call(&v1::VmService::Stub::ResumeVm, "a").error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(Stop("a", 0).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(Wait("a", 0).error_code(), grpc::StatusCode::FAILED_PRECONDITION);

  ASSERT_TRUE(Call(&v1::VmService::Stub::StartVm, "a", &info).ok());
  EXPECT_EQ(info.state(), v1::VM_STATE_RUNNING);
  // Wrong states after start.
  EXPECT_EQ(Add("a", Rng("late")).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  rm.set_device_id("r");
  EXPECT_EQ(stub_->RemoveDevice(Ctx().get(), rm, &info).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(Call(&v1::VmService::Stub::StartVm, "a").error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(Call(&v1::VmService::Stub::ResumeVm, "a").error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(Wait("a", 50).error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  grpc::Status del = Delete("a");
  EXPECT_EQ(del.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(del.error_message(), HasSubstr("running"));
  // The bad calls changed nothing.
  ASSERT_TRUE(Call(&v1::VmService::Stub::GetVm, "a", &info).ok());
  EXPECT_EQ(info.state(), v1::VM_STATE_RUNNING);
  EXPECT_EQ(info.devices_size(), 1);

  EXPECT_TRUE(Delete("a", /*force=*/true).ok());
  EXPECT_EQ(Call(&v1::VmService::Stub::GetVm, "a").error_code(),
            grpc::StatusCode::NOT_FOUND);
}

TEST_F(ServiceTest, RemoveDeviceAndServerAssignedNames) {
  REQUIRE_KVM();
  v1::VmInfo info;
  ASSERT_TRUE(Create("", tiny_, &info).ok());
  const std::string id = info.vm_id();
  EXPECT_TRUE(absl::StartsWith(id, "vm-")) << id;
  ASSERT_TRUE(Add(id, Rng()).ok());
  v1::DeviceSpec console;
  console.set_type(v1::DEVICE_TYPE_CONSOLE);
  ASSERT_TRUE(Add(id, console).ok());
  ASSERT_TRUE(Add(id, Rng(), &info).ok());
  ASSERT_EQ(info.devices_size(), 3);
  EXPECT_EQ(info.devices(0).spec().id(), "rng0");
  EXPECT_EQ(info.devices(1).spec().id(), "console0");
  EXPECT_EQ(info.devices(2).spec().id(), "rng1");
  v1::RemoveDeviceRequest rm;
  rm.set_vm_id(id);
  rm.set_device_id("rng0");
  ASSERT_TRUE(stub_->RemoveDevice(Ctx().get(), rm, &info).ok());
  ASSERT_EQ(info.devices_size(), 2);
  EXPECT_EQ(info.devices(0).spec().id(), "console0");
  ASSERT_TRUE(Add(id, Rng(), &info).ok());  // the freed name is reused
  EXPECT_EQ(info.devices(2).spec().id(), "rng0");
  v1::VmInfo second;
  ASSERT_TRUE(Create("", tiny_, &second).ok());
  EXPECT_NE(second.vm_id(), id);
  EXPECT_TRUE(Delete(id).ok());  // created: no force needed
  EXPECT_TRUE(Delete(second.vm_id()).ok());
}

class SmallServiceTest : public ServiceTest {
 protected:
  SmallServiceTest() : ServiceTest(/*max_vms=*/2) {}
};

TEST_F(SmallServiceTest, TheVmLimitIsResourceExhausted) {
  REQUIRE_KVM();
  ASSERT_TRUE(Create("one", tiny_).ok());
  ASSERT_TRUE(Create("two", tiny_).ok());
  grpc::Status s = Create("three", tiny_);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  ASSERT_TRUE(Delete("one").ok());
  EXPECT_TRUE(Create("three", tiny_).ok());
}

TEST_F(ServiceTest, LifeCycleWithConsoleBothWays) {
  REQUIRE_KVM();
  v1::VmInfo info;
  ASSERT_TRUE(Create("life", tiny_, &info).ok());
  ASSERT_TRUE(Add("life", Rng()).ok());
  // Attach the console before the start: nothing is missed.
  auto ctx = Ctx();
  auto stream = stub_->StreamConsole(ctx.get());
  v1::ConsoleRequest first;
  first.set_vm_id("life");
  first.set_replay(true);
  ASSERT_TRUE(stream->Write(first));

  ASSERT_TRUE(Call(&v1::VmService::Stub::StartVm, "life", &info).ok());
  EXPECT_EQ(info.state(), v1::VM_STATE_RUNNING);
  EXPECT_GT(info.started_unix_ms(), 0);
  std::string out = ReadUntil(stream.get(), testing::kTinyGuestBanner);
  EXPECT_EQ(out, testing::kTinyGuestBanner);

  // Input reaches the UART and comes back through the guest's echo.
  v1::ConsoleRequest input;
  input.set_input("ping 123");
  ASSERT_TRUE(stream->Write(input));
  EXPECT_EQ(ReadUntil(stream.get(), "ping 123"), "ping 123");

  ASSERT_TRUE(Call(&v1::VmService::Stub::PauseVm, "life", &info).ok());
  EXPECT_EQ(info.state(), v1::VM_STATE_PAUSED);
  EXPECT_EQ(Call(&v1::VmService::Stub::PauseVm, "life").error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  ASSERT_TRUE(Call(&v1::VmService::Stub::ResumeVm, "life", &info).ok());
  EXPECT_EQ(info.state(), v1::VM_STATE_RUNNING);
  input.set_input("again");
  ASSERT_TRUE(stream->Write(input));
  EXPECT_EQ(ReadUntil(stream.get(), "again"), "again");

  v1::VmRequest req;
  req.set_vm_id("life");
  v1::VmMetrics metrics;
  ASSERT_TRUE(stub_->GetMetrics(Ctx().get(), req, &metrics).ok());
  EXPECT_EQ(metrics.vm_id(), "life");
  // Banner, echoes and the polling loop are all port I/O.
  EXPECT_GT(metrics.exits_io(), 14u + 8u + 5u);
  ASSERT_EQ(metrics.devices_size(), 1);
  EXPECT_EQ(metrics.devices(0).id(), "rng0");

  // A graceful stop: the tiny guest sees port 0x502 and exits with 0.
  ASSERT_TRUE(Stop("life", 10000, &info).ok());
  EXPECT_EQ(info.state(), v1::VM_STATE_STOPPED);
  EXPECT_TRUE(info.has_exit_code());
  EXPECT_EQ(info.exit_code(), testing::kTinyGuestStopCode);
  EXPECT_GT(info.run_time_ms(), 0);
  EXPECT_GE(info.stopped_unix_ms(), info.started_unix_ms());
  bool stopped = false;
  ReadUntil(stream.get(), "never printed", &stopped);
  EXPECT_TRUE(stopped);
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());

  // Stopping again is fine, starting again is not.
  EXPECT_TRUE(Stop("life", 0).ok());
  EXPECT_EQ(Call(&v1::VmService::Stub::StartVm, "life").error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_TRUE(Delete("life").ok());
}

TEST_F(ServiceTest, GuestThatExitsByItselfReportsItsCode) {
  REQUIRE_KVM();
  v1::VmInfo info;
  ASSERT_TRUE(Create("quick", tiny_, &info, "exit").ok());
  ASSERT_TRUE(Call(&v1::VmService::Stub::StartVm, "quick").ok());
  ASSERT_TRUE(Wait("quick", 30000, &info).ok());
  EXPECT_EQ(info.state(), v1::VM_STATE_STOPPED);
  EXPECT_TRUE(info.has_exit_code());
  EXPECT_EQ(info.exit_code(), testing::kTinyGuestExitCmdlineCode);
  // A console opened afterwards replays the output and ends at once.
  auto ctx = Ctx();
  auto stream = stub_->StreamConsole(ctx.get());
  v1::ConsoleRequest first;
  first.set_vm_id("quick");
  first.set_replay(true);
  ASSERT_TRUE(stream->Write(first));
  bool stopped = false;
  EXPECT_EQ(ReadUntil(stream.get(), "never printed", &stopped),
            testing::kTinyGuestBanner);
  EXPECT_TRUE(stopped);
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());

  // 'q' on the UART ends the other guest with 7.
  ASSERT_TRUE(Create("q", tiny_).ok());
  auto qctx = Ctx();
  auto qstream = stub_->StreamConsole(qctx.get());
  v1::ConsoleRequest qfirst;
  qfirst.set_vm_id("q");
  ASSERT_TRUE(qstream->Write(qfirst));
  ASSERT_TRUE(Call(&v1::VmService::Stub::StartVm, "q").ok());
  ReadUntil(qstream.get(), testing::kTinyGuestBanner);
  v1::ConsoleRequest quit;
  quit.set_input("q");
  ASSERT_TRUE(qstream->Write(quit));
  ASSERT_TRUE(Wait("q", 30000, &info).ok());
  EXPECT_EQ(info.exit_code(), testing::kTinyGuestQuitCode);
  bool qstopped = false;
  ReadUntil(qstream.get(), "never printed", &qstopped);
  EXPECT_TRUE(qstopped);
  qstream->WritesDone();
  EXPECT_TRUE(qstream->Finish().ok());
}

TEST_F(ServiceTest, AConsoleClientThatDisconnectsHarmsNothing) {
  REQUIRE_KVM();
  ASSERT_TRUE(Create("c", tiny_).ok());
  ASSERT_TRUE(Call(&v1::VmService::Stub::StartVm, "c").ok());
  for (int round = 0; round < 3; ++round) {
    grpc::ClientContext ctx;
    auto stream = stub_->StreamConsole(&ctx);
    v1::ConsoleRequest first;
    first.set_vm_id("c");
    first.set_replay(true);
    ASSERT_TRUE(stream->Write(first));
    EXPECT_EQ(ReadUntil(stream.get(), testing::kTinyGuestBanner),
              testing::kTinyGuestBanner);
    ctx.TryCancel();  // mid-stream, with the input side still open
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  // A stream whose client vanishes without reading (destroyed mid-call).
  {
    auto ctx = std::make_unique<grpc::ClientContext>();
    auto stream = stub_->StreamConsole(ctx.get());
    v1::ConsoleRequest first;
    first.set_vm_id("c");
    ASSERT_TRUE(stream->Write(first));
    ctx->TryCancel();
    stream->Finish();
  }
  // The VM and the server are fine; another console still works both ways.
  v1::VmInfo info;
  ASSERT_TRUE(Call(&v1::VmService::Stub::GetVm, "c", &info).ok());
  EXPECT_EQ(info.state(), v1::VM_STATE_RUNNING);
  auto ctx = Ctx();
  auto stream = stub_->StreamConsole(ctx.get());
  v1::ConsoleRequest first;
  first.set_vm_id("c");
  first.set_input("still here");
  ASSERT_TRUE(stream->Write(first));
  EXPECT_EQ(ReadUntil(stream.get(), "still here"), "still here");
  ASSERT_TRUE(Stop("c", 10000, &info).ok());
  EXPECT_EQ(info.exit_code(), 0);
  bool stopped = false;
  ReadUntil(stream.get(), "never printed", &stopped);
  EXPECT_TRUE(stopped);
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
}

TEST_F(ServiceTest, DeletingAVmEndsItsConsoleStreams) {
  REQUIRE_KVM();
  ASSERT_TRUE(Create("d", tiny_).ok());
  auto ctx = Ctx();
  auto stream = stub_->StreamConsole(ctx.get());
  v1::ConsoleRequest first;
  first.set_vm_id("d");
  ASSERT_TRUE(stream->Write(first));
  ASSERT_TRUE(Delete("d").ok());
  bool stopped = false;
  ReadUntil(stream.get(), "never printed", &stopped);
  EXPECT_TRUE(stopped);
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
}

TEST_F(ServiceTest, ConsoleStreamsAreBounded) {
  REQUIRE_KVM();
  ASSERT_TRUE(Create("many", tiny_).ok());
  struct Open {
    std::unique_ptr<grpc::ClientContext> ctx;
    std::unique_ptr<
        grpc::ClientReaderWriter<v1::ConsoleRequest, v1::ConsoleChunk>>
        stream;
  };
  std::vector<Open> open;
  auto start = [this]() {
    Open o;
    o.ctx = Ctx();
    o.stream = stub_->StreamConsole(o.ctx.get());
    v1::ConsoleRequest first;
    first.set_vm_id("many");
    o.stream->Write(first);
    return o;
  };
  for (int i = 0; i < VmServiceImpl::kMaxConsoleStreams; ++i) {
    open.push_back(start());
  }
  // Wait until the server holds all of them (each sends nothing until the
  // guest prints, so probe with GetVm round trips).
  for (int i = 0; i < 50; ++i) {
    ASSERT_TRUE(Call(&v1::VmService::Stub::GetVm, "many").ok());
    absl::SleepFor(absl::Milliseconds(20));
  }
  Open extra = start();
  v1::ConsoleChunk chunk;
  EXPECT_FALSE(extra.stream->Read(&chunk));
  EXPECT_EQ(extra.stream->Finish().error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  // Deleting the VM ends every stream; the slots come back.
  ASSERT_TRUE(Delete("many").ok());
  for (Open& o : open) {
    bool stopped = false;
    ReadUntil(o.stream.get(), "never printed", &stopped);
    EXPECT_TRUE(stopped);
    o.stream->WritesDone();
    EXPECT_TRUE(o.stream->Finish().ok());
  }
  ASSERT_TRUE(Create("again", tiny_).ok());
  auto ctx = Ctx();
  auto stream = stub_->StreamConsole(ctx.get());
  v1::ConsoleRequest first;
  first.set_vm_id("again");
  ASSERT_TRUE(stream->Write(first));
  ASSERT_TRUE(Delete("again").ok());
  bool stopped = false;
  ReadUntil(stream.get(), "never printed", &stopped);
  EXPECT_TRUE(stopped);
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
}

TEST_F(ServiceTest, SixteenConcurrentClientsLoseAndCrossNothing) {
  REQUIRE_KVM();
  constexpr int kClients = 16;
  constexpr int kRounds = 3;
  absl::Mutex mu;
  std::vector<std::string> failures;
  auto fail = [&](const std::string& what) {
    absl::MutexLock lock(&mu);
    failures.push_back(what);
  };
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      auto stub = NewStub();  // each client its own stub on the channel
      for (int round = 0; round < kRounds; ++round) {
        const std::string vm = absl::StrCat("client", c, "-", round);
        v1::VmInfo info;
        grpc::Status s = Create(vm, tiny_, &info, "", stub.get());
        if (!s.ok() || info.vm_id() != vm) {
          fail(absl::StrCat(vm, ": create ", s.error_message()));
          continue;
        }
        // Two devices named after the VM, so a crossed reply shows.
        for (const char* kind : {"a", "b"}) {
          s = Add(vm, Rng(absl::StrCat(vm, "-", kind)), &info, stub.get());
          if (!s.ok()) fail(absl::StrCat(vm, ": add ", s.error_message()));
        }
        // A duplicate from this client must fail and change nothing.
        s = Add(vm, Rng(absl::StrCat(vm, "-a")), nullptr, stub.get());
        if (s.error_code() != grpc::StatusCode::ALREADY_EXISTS) {
          fail(absl::StrCat(vm, ": duplicate device gave ", s.error_code()));
        }
        s = Call(&v1::VmService::Stub::GetVm, vm, &info, stub.get());
        if (!s.ok() || info.vm_id() != vm || info.devices_size() != 2 ||
            info.devices(0).spec().id() != vm + "-a" ||
            info.devices(1).spec().id() != vm + "-b") {
          fail(absl::StrCat(vm, ": get ", info.ShortDebugString()));
        }
        v1::ListVmsResponse list;
        s = stub->ListVms(Ctx().get(), {}, &list);
        bool listed = false;
        for (const v1::VmInfo& other : list.vms()) {
          listed = listed || other.vm_id() == vm;
          for (const v1::DeviceInfo& d : other.devices()) {
            if (!absl::StartsWith(d.spec().id(), other.vm_id() + "-")) {
              fail(absl::StrCat("crossed device ", d.spec().id(), " in ",
                                other.vm_id()));
            }
          }
        }
        if (!s.ok() || !listed) fail(absl::StrCat(vm, ": not listed"));
        // Every fourth client also runs its guest for a moment.
        if (c % 4 == 0 && round == 0) {
          s = Call(&v1::VmService::Stub::StartVm, vm, &info, stub.get());
          if (!s.ok()) fail(absl::StrCat(vm, ": start ", s.error_message()));
          v1::StopVmRequest stop;
          stop.set_vm_id(vm);
          stop.set_graceful_timeout_ms(10000);
          s = stub->StopVm(Ctx().get(), stop, &info);
          if (!s.ok() || info.state() != v1::VM_STATE_STOPPED) {
            fail(absl::StrCat(vm, ": stop ", s.error_message()));
          }
        }
        s = Delete(vm, false, stub.get());
        if (!s.ok()) fail(absl::StrCat(vm, ": delete ", s.error_message()));
        s = Call(&v1::VmService::Stub::GetVm, vm, nullptr, stub.get());
        if (s.error_code() != grpc::StatusCode::NOT_FOUND) {
          fail(absl::StrCat(vm, ": still there after delete"));
        }
      }
    });
  }
  for (std::thread& t : clients) t.join();
  EXPECT_THAT(failures, ::testing::IsEmpty());
  v1::ListVmsResponse list;
  ASSERT_TRUE(stub_->ListVms(Ctx().get(), {}, &list).ok());
  EXPECT_EQ(list.vms_size(), 0);
}

TEST_F(ServiceTest, ConcurrentCreatesOfOneNameLetExactlyOneWin) {
  REQUIRE_KVM();
  constexpr int kClients = 16;
  std::atomic<int> created{0}, exists{0}, other{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&] {
      grpc::Status s = Create("contested", tiny_);
      if (s.ok()) {
        ++created;
      } else if (s.error_code() == grpc::StatusCode::ALREADY_EXISTS) {
        ++exists;
      } else {
        ++other;
      }
    });
  }
  for (std::thread& t : clients) t.join();
  EXPECT_EQ(created.load(), 1);
  EXPECT_EQ(exists.load(), kClients - 1);
  EXPECT_EQ(other.load(), 0);
}

// The test guest from tests/vmm_guest drives every device through Linux-like
// virtio-pci drivers; GetVm then reports what the drivers did.
TEST_F(ServiceTest, TestGuestDrivesEveryDeviceAndGetVmReportsIt) {
  REQUIRE_KVM();
  const std::string guest = testing::Runfile("tests/vmm_guest/guest.elf");
  const std::string disk = ::testing::TempDir() + "/disk.img";
  {
    std::ofstream f(disk, std::ios::binary);
    f << std::string(1 << 20, '\0');
  }
  for (const char* mode : {"modern", "legacy"}) {
    SCOPED_TRACE(mode);
    const std::string vm = absl::StrCat("tg-", mode);
    v1::VmInfo info;
    ASSERT_TRUE(Create(vm, guest, &info, absl::StrCat("mode=", mode)).ok());
    v1::DeviceSpec blk;
    blk.set_type(v1::DEVICE_TYPE_BLOCK);
    blk.mutable_block()->set_image_path(disk);
    ASSERT_TRUE(Add(vm, blk).ok());
    ASSERT_TRUE(Add(vm, Rng()).ok());
    v1::DeviceSpec console;
    console.set_type(v1::DEVICE_TYPE_CONSOLE);
    ASSERT_TRUE(Add(vm, console).ok());
    v1::DeviceSpec net;
    net.set_type(v1::DEVICE_TYPE_NET);
    net.mutable_net()->set_mac("52:54:00:00:00:02");
    ASSERT_TRUE(Add(vm, net).ok());
    ASSERT_TRUE(Call(&v1::VmService::Stub::StartVm, vm).ok());
    ASSERT_TRUE(Wait(vm, 120000, &info).ok());
    auto ctx = Ctx();
    auto stream = stub_->StreamConsole(ctx.get());
    v1::ConsoleRequest first;
    first.set_vm_id(vm);
    first.set_replay(true);
    ASSERT_TRUE(stream->Write(first));
    const std::string out = ReadUntil(stream.get(), "never printed");
    stream->WritesDone();
    EXPECT_TRUE(stream->Finish().ok());
    EXPECT_THAT(out, HasSubstr("VMMKIT done failures=0"));
    EXPECT_TRUE(info.has_exit_code());
    EXPECT_EQ(info.exit_code(), 0) << "guest console:\n" << out;
    ASSERT_EQ(info.devices_size(), 4);
    for (const v1::DeviceInfo& d : info.devices()) {
      SCOPED_TRACE(d.spec().id());
      EXPECT_NE(d.status() & 4, 0u) << "DRIVER_OK never set";
      EXPECT_EQ(d.driver_legacy(), std::string(mode) == "legacy");
      EXPECT_GT(d.queue_sizes_size(), 0);
      EXPECT_GT(d.pci_slot(), 0u);
      EXPECT_GT(d.counters().notifications(), 0u);
      if (d.spec().type() == v1::DEVICE_TYPE_CONSOLE) {
        // What the guest's driver wrote to the virtio console port.
        EXPECT_EQ(d.console_output().size(), d.counters().bytes());
        EXPECT_FALSE(d.console_output().empty());
      }
    }
    EXPECT_TRUE(Delete(vm).ok());
  }
}

// Per-device transports: under a modern-first driver, a legacy-only device
// is driven through its legacy interface and a modern-only one through its
// capabilities, and GetVm says so per device.
TEST_F(ServiceTest, GetVmTellsLegacyFromModernDriversPerDevice) {
  REQUIRE_KVM();
  const std::string guest = testing::Runfile("tests/vmm_guest/guest.elf");
  const std::string disk = ::testing::TempDir() + "/mixed.img";
  {
    std::ofstream f(disk, std::ios::binary);
    f << std::string(1 << 20, '\0');
  }
  v1::VmInfo info;
  ASSERT_TRUE(Create("mixed", guest, &info, "mode=modern").ok());
  v1::DeviceSpec blk;
  blk.set_id("old-disk");
  blk.set_type(v1::DEVICE_TYPE_BLOCK);
  blk.set_transport(v1::TRANSPORT_PCI_LEGACY);
  blk.mutable_block()->set_image_path(disk);
  ASSERT_TRUE(Add("mixed", blk).ok());
  v1::DeviceSpec rng = Rng("new-rng");
  rng.set_transport(v1::TRANSPORT_PCI_MODERN);
  ASSERT_TRUE(Add("mixed", rng).ok());
  ASSERT_TRUE(Call(&v1::VmService::Stub::StartVm, "mixed").ok());
  ASSERT_TRUE(Wait("mixed", 120000, &info).ok());
  EXPECT_EQ(info.exit_code(), 0);
  ASSERT_EQ(info.devices_size(), 2);
  const v1::DeviceInfo& old_disk = info.devices(0);
  const v1::DeviceInfo& new_rng = info.devices(1);
  EXPECT_EQ(old_disk.spec().id(), "old-disk");
  EXPECT_TRUE(old_disk.driver_legacy());
  EXPECT_EQ(old_disk.negotiated_features() >> 32, 0u);  // no VERSION_1
  EXPECT_EQ(new_rng.spec().id(), "new-rng");
  EXPECT_FALSE(new_rng.driver_legacy());
  EXPECT_NE(new_rng.negotiated_features() & (uint64_t{1} << 32), 0u);
  EXPECT_EQ(old_disk.pci_slot(), 1u);
  EXPECT_EQ(new_rng.pci_slot(), 2u);
  // A legacy driver has no FEATURES_OK step (virtio 1.2 §2.1.2 "Legacy
  // Interface"): ACKNOWLEDGE|DRIVER|DRIVER_OK; the modern one all four.
  EXPECT_EQ(old_disk.status(), 7u);
  EXPECT_EQ(new_rng.status(), 15u);
  for (const v1::DeviceInfo& d : info.devices()) {
    EXPECT_GT(d.counters().requests(), 0u) << d.spec().id();
  }
  EXPECT_TRUE(Delete("mixed").ok());
}

}  // namespace
}  // namespace vmmkit::api
