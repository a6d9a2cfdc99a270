"""cc_grpc_library: C++ protobuf + gRPC code from one .proto with Debian's protoc.

    cc_grpc_library(
        name = "echo_cc_grpc",
        src = "echo.proto",
        grpc = True,          # False: messages only
    )

generates echo.pb.{h,cc} (and echo.grpc.pb.{h,cc}) with /usr/bin/protoc and
grpc_cpp_plugin, and wraps them in a cc_library linked against @system.
Include the headers by their workspace path: "tests/grpc/echo.grpc.pb.h".
Imports are resolved from the workspace root.
"""

load("@rules_cc//cc:defs.bzl", "cc_library")

def cc_grpc_library(name, src, grpc = True, deps = [], proto_deps = [], visibility = None, testonly = False):
    base = src[:-len(".proto")]
    outs = [base + ".pb.h", base + ".pb.cc"]
    if grpc:
        outs += [base + ".grpc.pb.h", base + ".grpc.pb.cc"]
    pkg = native.package_name()
    grpc_args = ""
    if grpc:
        grpc_args = "--grpc_out=$(GENDIR) --plugin=protoc-gen-grpc=$$(command -v grpc_cpp_plugin) "
    native.genrule(
        name = name + "_gen",
        srcs = [src] + proto_deps,
        outs = outs,
        cmd = ("protoc --proto_path=. --cpp_out=$(GENDIR) " + grpc_args +
               (pkg + "/" + src if pkg else src)),
        testonly = testonly,
        visibility = ["//visibility:private"],
    )
    cc_library(
        name = name,
        srcs = [o for o in outs if o.endswith(".cc")],
        hdrs = [o for o in outs if o.endswith(".h")],
        deps = deps + (["@system//:grpcxx"] if grpc else ["@system//:protobuf"]),
        visibility = visibility,
        testonly = testonly,
    )
