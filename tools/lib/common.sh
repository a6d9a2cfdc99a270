# Shared by the tools/ scripts: install what is missing, find the repo root.
# shellcheck shell=bash

VMMKIT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

# Debian packages every build needs (Bazel 4, clang, the libraries vmmkit links).
VMMKIT_BUILD_PACKAGES=(
  bazel-bootstrap clang libclang-rt-14-dev pkg-config
  libabsl-dev libprotobuf-dev protobuf-compiler libgrpc++-dev protobuf-compiler-grpc
  libgtest-dev libgmock-dev libbenchmark-dev
  acpica-tools
)

# tools/guest-image: the test guest's initramfs (the kernel is downloaded with
# apt-get download, not installed; kmod's modinfo checks the load order; gcc
# and libc6-dev build tools/guest/randread.c static).
VMMKIT_GUEST_IMAGE_PACKAGES=(busybox-static cpio kmod gcc libc6-dev)
# tools/qemu-interop and benches/vhost_user_blk_e2e.sh: QEMU (TCG), ip netns for
# the net test, busybox nc as the TCP peer.
VMMKIT_INTEROP_PACKAGES=(qemu-system-x86 iproute2 busybox-static)

_vmmkit_apt_updated=0

# apt_update: apt-get update, once per process.
apt_update() {
  [ "$_vmmkit_apt_updated" -eq 0 ] || return 0
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq || return 1
  _vmmkit_apt_updated=1
}

# ensure_packages PKG...: installs the Debian packages that are not installed yet
# (apt-get update once, then apt-get install -y), as root or through sudo.
ensure_packages() {
  # Inside tools/nested-kvm's guest: no dpkg, no apt; what is needed was copied.
  [ "${VMMKIT_SKIP_INSTALL:-0}" = 1 ] && return 0
  local missing=()
  local p
  for p in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$p")
    fi
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  echo "== installing: ${missing[*]}"
  apt_update || return 1
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/tmp/vmmkit-apt.log 2>&1 || {
      tail -n 30 /tmp/vmmkit-apt.log
      return 1
    }
}

ensure_build_deps() {
  ensure_packages "${VMMKIT_BUILD_PACKAGES[@]}"
}
