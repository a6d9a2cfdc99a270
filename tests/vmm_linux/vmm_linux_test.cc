// Boots the Debian guest image under vmmkit's VMM and checks what its init
// reports (tools/guest/init documents the lines):
//  - BootsAndDrivesDevices: blk (pattern written, flushed, read back O_DIRECT;
//    afterwards the host image file holds the pattern), rng (/dev/hwrng is
//    virtio), console output (a line through /dev/hvc0) and console input (the
//    test writes a word through Vm::WriteVirtioConsoleInput, the init reads it
//    from /dev/hvc0 and prints it), with every device in one transport mode:
//    modern, transitional, transitional with virtio_pci.force_legacy=1 and
//    legacy-only, and through the admin-command legacy shim
//    (pci-legacy-via-admin) with and without force_legacy; MSI-X, and INTx
//    with pci=nomsi; on 1 and 2 vCPUs.
//  - NetOverTap: virtio-net on a TAP in a network namespace the test creates
//    (and deletes); the guest pings the host end and exchanges a TCP payload
//    with a busybox nc peer there. Skipped without CAP_NET_ADMIN.
//  - HostileGuest: the init's hostile check unbinds the blk device and pokes
//    bad values into its modern common config; the VMM keeps running and the
//    device answers as the virtio spec says; rebound, the disk works again.
// The init ends with "VMMKIT done" and poweroff -f (ACPI S5) or reboot -f
// (the FADT reset register), either of which stops the VM. Every test skips,
// with the reason, without usable /dev/kvm, under PVM (stock Linux cannot
// boot there; vmm_linux_nested_test runs this binary inside tools/nested-kvm
// instead) or without the image.
#include <fcntl.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "base/status_matchers.h"
#include "gtest/gtest.h"
#include "vmm/vm.h"

namespace vmmkit::vmm {
namespace {

bool Exists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

// The "VMMKIT <prefix>..." line of the serial output, or "".
std::string GuestLine(const std::string& out, absl::string_view prefix) {
  for (absl::string_view l : absl::StrSplit(out, '\n')) {
    absl::ConsumeSuffix(&l, "\r");
    if (absl::StartsWith(l, absl::StrCat("VMMKIT ", prefix)))
      return std::string(l);
  }
  return "";
}

// The value of key=... in a VMMKIT line, or "".
std::string Field(const std::string& line, absl::string_view key) {
  for (absl::string_view w : absl::StrSplit(line, ' ')) {
    if (absl::ConsumePrefix(&w, absl::StrCat(key, "="))) return std::string(w);
  }
  return "";
}

// The init's blk pattern for bytes [offset, offset + len) (see
// tools/guest/init).
std::string Pattern(const std::string& seed, uint64_t offset, uint64_t len) {
  std::string p;
  for (uint64_t i = offset / 32; i < (offset + len) / 32; ++i)
    p += absl::StrFormat("%-15.15s %015d\n", seed.substr(0, 15), i);
  return p;
}

std::string ReadFileRange(const std::string& path, uint64_t offset,
                          uint64_t len) {
  std::ifstream f(path, std::ios::binary);
  f.seekg(static_cast<std::streamoff>(offset));
  std::string s(len, '\0');
  f.read(s.data(), static_cast<std::streamsize>(len));
  s.resize(static_cast<size_t>(f.gcount()));
  return s;
}

void MakeDisk(const std::string& path) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.seekp((16 << 20) - 1);
  f.put(0);
}

// Waits until the VM stops, forcing it after `timeout`; returns the serial
// output.
std::string RunToEnd(Vm& vm, absl::Duration timeout, absl::Status* status) {
  *status = vm.WaitStopped(timeout);
  if (!status->ok()) (void)vm.Stop(absl::ZeroDuration());
  return vm.ConsoleOutput();
}

class LinuxGuest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!KvmUsable(&why)) GTEST_SKIP() << "KVM unusable: " << why;
    if (IsPvm()) {
      GTEST_SKIP() << "PVM detected (/sys/module/kvm_pvm): stock Linux cannot "
                      "boot here";
    }
    const char* dir = std::getenv("VMMKIT_GUEST_DIR");
    if (dir == nullptr || *dir == '\0') {
      GTEST_SKIP() << "VMMKIT_GUEST_DIR is not set (run tools/guest-image and "
                      "pass --test_env=VMMKIT_GUEST_DIR=<its last line>)";
    }
    kernel_ = absl::StrCat(dir, "/vmlinuz");
    initrd_ = absl::StrCat(dir, "/initramfs.cpio.gz");
    if (!Exists(kernel_) || !Exists(initrd_)) {
      GTEST_SKIP() << "no vmlinuz/initramfs.cpio.gz in " << dir;
    }
  }
  absl::StatusOr<std::unique_ptr<Vm>> Create(int vcpus,
                                             const std::string& cmdline) {
    return Vm::Create(
        {.vcpus = vcpus,
         .memory_mib = 512,
         .kernel = kernel_,
         .initrd = initrd_,
         // The init ends with poweroff -f (ACPI S5 through PM1a_CNT) on one
         // vCPU and with reboot -f (the FADT reset register, 0xCF9) on two:
         // both must stop the VM.
         .cmdline = absl::StrCat("console=ttyS0 panic=-1 ",
                                 vcpus == 1 ? "" : "vmmkit.poweroff=reboot ",
                                 cmdline)});
  }
  std::string kernel_, initrd_;
};

struct Mode {
  const char* name;
  int vcpus;
  Transport transport;
  bool force_legacy;  // virtio_pci.force_legacy=1 on the command line
  bool nomsi;         // pci=nomsi: INTx only
  bool legacy() const {
    // A transitional function, native or the admin-command shim in front of
    // a modern-only member, is driven through its legacy interface only
    // with force_legacy.
    return transport == Transport::kPciLegacy ||
           ((transport == Transport::kPciTransitional ||
             transport == Transport::kPciLegacyViaAdmin) &&
            force_legacy);
  }
};

class VmmLinuxTest : public LinuxGuest,
                     public ::testing::WithParamInterface<Mode> {};

TEST_P(VmmLinuxTest, BootsAndDrivesDevices) {
  const Mode m = GetParam();
  const std::string disk = absl::StrCat(::testing::TempDir(), "/linux.img");
  MakeDisk(disk);
  const std::string seed = "vmmlinux";
  const std::string input_word = absl::StrCat("hostin", m.name);
  std::string cmdline =
      "vmmkit.checks=blk,rng,console,console_in vmmkit.blk_dev=vda "
      "vmmkit.blk_offset=0 vmmkit.blk_len=1048576 vmmkit.blk_seed=vmmlinux "
      "vmmkit.console_seed=hvc";
  if (m.force_legacy) cmdline += " virtio_pci.force_legacy=1";
  if (m.nomsi) cmdline += " pci=nomsi";
  absl::StatusOr<std::unique_ptr<Vm>> vm = Create(m.vcpus, cmdline);
  ASSERT_OK(vm.status());
  ASSERT_OK((*vm)->AddDevice({.id = "vda",
                              .type = virtio::DeviceType::kBlock,
                              .transport = m.transport,
                              .params = BlkParams{.path = disk}}));
  ASSERT_OK((*vm)->AddDevice({.id = "rng",
                              .type = virtio::DeviceType::kRng,
                              .transport = m.transport,
                              .params = RngParams{}}));
  ASSERT_OK((*vm)->AddDevice({.id = "hvc",
                              .type = virtio::DeviceType::kConsole,
                              .transport = m.transport,
                              .params = ConsoleParams{}}));
  ASSERT_OK((*vm)->Start());
  // The init says when it holds /dev/hvc0 open for reading; then the host's
  // input goes in.
  const absl::Time deadline = absl::Now() + absl::Seconds(120);
  while (absl::Now() < deadline && (*vm)->state() == VmState::kRunning &&
         GuestLine((*vm)->ConsoleOutput(), "console_in=ready").empty()) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_OK((*vm)->WriteVirtioConsoleInput("hvc", input_word + "\n"));
  absl::Status s;
  const std::string out = RunToEnd(**vm, deadline - absl::Now(), &s);
  ASSERT_OK(s) << out;
  EXPECT_OK((*vm)->stop_reason());
  EXPECT_EQ((*vm)->exit_code(), 0) << "poweroff -f or reboot -f ends the run";
  EXPECT_EQ(Field(GuestLine(out, "check=blk "), "result"), "ok") << out;
  EXPECT_EQ(Field(GuestLine(out, "check=rng "), "result"), "ok") << out;
  EXPECT_EQ(Field(GuestLine(out, "check=console "), "result"), "ok") << out;
  const std::string in_line = GuestLine(out, "check=console_in ");
  EXPECT_EQ(Field(in_line, "result"), "ok") << out;
  EXPECT_EQ(Field(in_line, "got"), input_word) << out;
  EXPECT_FALSE(GuestLine(out, "done").empty()) << out;
  // The kernel found every vCPU and the ACPI tables (the Debian kernel has no
  // MP-table parser).
  const std::string boot = GuestLine(out, "boot ");
  EXPECT_EQ(Field(boot, "cpus"), absl::StrCat(m.vcpus)) << boot;
  EXPECT_EQ(Field(boot, "acpi"), "1") << boot;
  int devices = 0;
  for (absl::string_view l : absl::StrSplit(out, '\n')) {
    if (!absl::StartsWith(l, "VMMKIT device=")) continue;
    ++devices;
    const std::string line(absl::StripSuffix(l, "\r"));
    EXPECT_EQ(Field(line, "interface"), m.legacy() ? "legacy" : "modern")
        << line;
    EXPECT_EQ(Field(line, "version_1"), m.legacy() ? "0" : "1") << line;
    EXPECT_EQ(Field(line, "irq"), m.nomsi ? "intx" : "msix") << line;
  }
  EXPECT_EQ(devices, 3) << out;
  EXPECT_TRUE(absl::StrContains((*vm)->VirtioConsoleOutput("hvc"),
                                "VMMKIT-CONSOLE hvc"));
  for (const DeviceReport& r : (*vm)->Devices()) {
    EXPECT_EQ(r.driver_legacy, m.legacy()) << r.id;
    EXPECT_GE(r.driver_starts, 1u) << r.id;
    EXPECT_GT(r.requests, 0u) << r.id;
    EXPECT_GT(r.interrupts, 0u) << r.id;
  }
  // The host's image file holds what the guest wrote (Stop flushed it).
  EXPECT_TRUE(ReadFileRange(disk, 0, 1 << 20) == Pattern(seed, 0, 1 << 20))
      << "the image's first MiB is not the guest's pattern";
}

INSTANTIATE_TEST_SUITE_P(
    Modes, VmmLinuxTest,
    ::testing::Values(
        Mode{"1vcpu_modern", 1, Transport::kPciModern, false, false},
        Mode{"1vcpu_transitional", 1, Transport::kPciTransitional, false,
             false},
        Mode{"1vcpu_transitional_force_legacy", 1, Transport::kPciTransitional,
             true, false},
        Mode{"1vcpu_legacy", 1, Transport::kPciLegacy, false, false},
        Mode{"1vcpu_modern_nomsi", 1, Transport::kPciModern, false, true},
        Mode{"1vcpu_transitional_force_legacy_nomsi", 1,
             Transport::kPciTransitional, true, true},
        Mode{"1vcpu_legacy_nomsi", 1, Transport::kPciLegacy, false, true},
        Mode{"2vcpu_modern", 2, Transport::kPciModern, false, false},
        Mode{"2vcpu_transitional", 2, Transport::kPciTransitional, false,
             false},
        Mode{"2vcpu_transitional_force_legacy", 2, Transport::kPciTransitional,
             true, false},
        Mode{"2vcpu_legacy", 2, Transport::kPciLegacy, false, false},
        Mode{"2vcpu_modern_nomsi", 2, Transport::kPciModern, false, true},
        // Through admin-command legacy shims (issue 9): Linux's legacy
        // driver, and its default (modern) driver on the same functions.
        Mode{"1vcpu_via_admin_force_legacy", 1, Transport::kPciLegacyViaAdmin,
             true, false},
        Mode{"1vcpu_via_admin_force_legacy_nomsi", 1,
             Transport::kPciLegacyViaAdmin, true, true},
        Mode{"2vcpu_via_admin_force_legacy", 2, Transport::kPciLegacyViaAdmin,
             true, false},
        Mode{"1vcpu_via_admin", 1, Transport::kPciLegacyViaAdmin, false,
             false}),
    [](const ::testing::TestParamInfo<Mode>& info) {
      return std::string(info.param.name);
    });

// Runs a shell command; true if it exited 0.
bool Sh(const std::string& cmd) { return std::system(cmd.c_str()) == 0; }

// A network namespace with a TAP whose host end is 10.0.2.1/24; deleted by
// the destructor.
class NetNs {
 public:
  explicit NetNs(std::string name) : name_(std::move(name)) {}
  ~NetNs() {
    if (created_) Sh(absl::StrCat("ip netns del ", name_, " 2>/dev/null"));
  }
  // "" on success, else why not.
  std::string Create(const std::string& tap, const std::string& errfile) {
    if (!Sh(absl::StrCat("ip netns add ", name_, " 2>", errfile)))
      return "cannot create a network namespace (needs CAP_NET_ADMIN)";
    created_ = true;
    if (!Sh(absl::StrCat("ip -n ", name_, " link set lo up && ip -n ", name_,
                         " tuntap add dev ", tap,
                         " mode tap vnet_hdr && ip -n ", name_,
                         " addr add 10.0.2.1/24 dev ", tap, " && ip -n ", name_,
                         " link set ", tap, " up 2>", errfile)))
      return "cannot create a TAP in the namespace";
    return "";
  }
  const std::string& name() const { return name_; }

 private:
  std::string name_;
  bool created_ = false;
};

// Runs the calling thread in another network namespace until destroyed.
class InNetNs {
 public:
  explicit InNetNs(const std::string& ns) {
    self_ = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    const int fd =
        open(absl::StrCat("/run/netns/", ns).c_str(), O_RDONLY | O_CLOEXEC);
    ok_ = self_ >= 0 && fd >= 0 && setns(fd, CLONE_NEWNET) == 0;
    if (fd >= 0) close(fd);
  }
  ~InNetNs() {
    if (self_ >= 0) {
      if (ok_) (void)setns(self_, CLONE_NEWNET);
      close(self_);
    }
  }
  bool ok() const { return ok_; }

 private:
  int self_ = -1;
  bool ok_ = false;
};

using VmmLinuxNetTest = LinuxGuest;

TEST_F(VmmLinuxNetTest, NetOverTap) {
  if (!Exists("/dev/net/tun")) GTEST_SKIP() << "no /dev/net/tun";
  const std::string dir = ::testing::TempDir();
  NetNs ns(absl::StrCat("vmmkit-linux-", getpid()));
  const std::string tap = "vmmkit-tap0";
  const std::string why = ns.Create(tap, dir + "/netns.err");
  if (!why.empty()) GTEST_SKIP() << why;
  // The TCP peer: one connection, keeps the line, answers with its md5.
  const std::string peer = dir + "/peer.sh";
  {
    std::ofstream f(peer);
    f << "#!/bin/sh\nread -r line\nprintf '%s\\n' \"$line\" >" << dir
      << "/peer.got\necho \"reply:$(printf '%s\\n' \"$line\" | md5sum | cut "
         "-d' ' -f1)\"\n";
  }
  chmod(peer.c_str(), 0755);
  ASSERT_TRUE(Sh(absl::StrCat("ip netns exec ", ns.name(),
                              " timeout 150 busybox nc -l -p 7777 -e ", peer,
                              " >/dev/null 2>&1 &")));
  const std::string seed = absl::StrCat("net", getpid());
  absl::StatusOr<std::unique_ptr<Vm>> vm =
      Create(1, absl::StrCat("vmmkit.checks=net vmmkit.ip=10.0.2.15/24 "
                             "vmmkit.peer=10.0.2.1 vmmkit.port=7777 "
                             "vmmkit.net_seed=",
                             seed));
  ASSERT_OK(vm.status());
  {
    // The TAP lives in the namespace: open it from there.
    InNetNs in(ns.name());
    ASSERT_TRUE(in.ok()) << "setns into " << ns.name();
    ASSERT_OK((*vm)->AddDevice(
        {.id = "net0",
         .type = virtio::DeviceType::kNet,
         .transport = Transport::kPciModern,
         .params = NetParams{
             .tap = tap,
             .mac = std::array<uint8_t, 6>{0x52, 0x54, 0, 0x12, 0x34, 0x56}}}));
  }
  ASSERT_OK((*vm)->Start());
  absl::Status s;
  const std::string out = RunToEnd(**vm, absl::Seconds(120), &s);
  ASSERT_OK(s) << out;
  const std::string line = GuestLine(out, "check=net ");
  EXPECT_EQ(Field(line, "result"), "ok") << out;
  EXPECT_EQ(Field(line, "mac"), "52:54:00:12:34:56") << line;
  EXPECT_NE(Field(line, "ping_received"), "0") << line;
  std::string payload;
  while (payload.size() < 4000) payload += seed + "-";
  payload.resize(4000);
  std::ifstream got(dir + "/peer.got");
  std::stringstream ss;
  ss << got.rdbuf();
  EXPECT_EQ(ss.str(), payload + "\n") << "what the host's TCP peer received";
  const std::vector<DeviceReport> devs = (*vm)->Devices();
  ASSERT_EQ(devs.size(), 1u);
  EXPECT_GT(devs[0].requests, 0u);
}

using VmmLinuxHostileTest = LinuxGuest;

TEST_F(VmmLinuxHostileTest, HostileGuestLeavesVmmAndDeviceSane) {
  const std::string disk = absl::StrCat(::testing::TempDir(), "/hostile.img");
  MakeDisk(disk);
  absl::StatusOr<std::unique_ptr<Vm>> vm =
      Create(1,
             "vmmkit.checks=hostile,blk vmmkit.blk_dev=vda vmmkit.blk_offset=0 "
             "vmmkit.blk_len=65536 vmmkit.blk_seed=afterhostile");
  ASSERT_OK(vm.status());
  ASSERT_OK((*vm)->AddDevice({.id = "vda",
                              .type = virtio::DeviceType::kBlock,
                              .transport = Transport::kPciModern,
                              .params = BlkParams{.path = disk}}));
  ASSERT_OK((*vm)->Start());
  absl::Status s;
  const std::string out = RunToEnd(**vm, absl::Seconds(120), &s);
  ASSERT_OK(s) << out;
  EXPECT_OK((*vm)->stop_reason()) << "the VMM kept running";
  EXPECT_EQ((*vm)->exit_code(), 0);
  const std::string h = GuestLine(out, "check=hostile ");
  ASSERT_FALSE(h.empty()) << out;
  // Status values as read back by the guest (2 hex digits); what vmmkit's
  // DeviceState does (virtio 1.2 §2.1, §3.1.1). QEMU is laxer here.
  auto status = [&h](absl::string_view key) {
    const std::string v = Field(h, key);
    EXPECT_FALSE(v.empty()) << key << " missing: " << h;
    return static_cast<unsigned>(std::strtoul(v.c_str(), nullptr, 16));
  };
  // FEATURES_OK with a feature the device did not offer (bit 63): refused.
  EXPECT_EQ(status("status_bad_features"), 0x03u) << h;
  // DRIVER_OK without FEATURES_OK: the device needs a reset.
  EXPECT_EQ(status("status_driver_ok_no_features"), 0x47u) << h;
  // Queue size 3 (not a power of two) at DRIVER_OK: NEEDS_RESET.
  EXPECT_EQ(status("status_bad_qsize"), 0x4fu) << h;
  // A descriptor table outside RAM: NEEDS_RESET, at DRIVER_OK or the kick.
  EXPECT_NE(status("status_after_kick") & 0x40u, 0u) << h;
  // Reset reads 0.
  EXPECT_EQ(Field(h, "status_after_reset"), "00") << h;
  EXPECT_EQ(Field(h, "rebound"), "1") << h;
  // Rebound, the disk works.
  EXPECT_EQ(Field(GuestLine(out, "check=blk "), "result"), "ok") << out;
  EXPECT_TRUE(ReadFileRange(disk, 0, 65536) ==
              Pattern("afterhostile", 0, 65536));
}

}  // namespace
}  // namespace vmmkit::vmm
