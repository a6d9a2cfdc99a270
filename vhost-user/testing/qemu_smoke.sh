#!/usr/bin/env bash
# vhost-user/testing/qemu_smoke.sh: a manual smoke test of vmmkit-vhost-user
# against Debian's QEMU (TCG) and the Debian cloud kernel's real virtio
# drivers. Not part of the test suite (the interop tests are); it prints what
# the guest saw and exits non-zero if a check failed.
#
#   vhost-user/testing/qemu_smoke.sh [WORKDIR]        # default /tmp/vu-smoke
#
# Per mode (modern virtio-pci; transitional with virtio_pci.force_legacy=1):
# one blk daemon on a 32 MiB image and one rng daemon; the guest writes 256 KiB
# to /dev/vda, reads it back with O_DIRECT and compares, reads /dev/hwrng,
# then unbinds and rebinds virtio_blk (a device stop and restart through
# GET_VRING_BASE) and reads again. With VU_SMOKE_NET=1 (root: it creates a
# TAP) also a net daemon on TAP vutap0 (10.77.0.1) that the guest pings; its
# virtio-net-pci has vectors=0 because Debian's QEMU 7.2 segfaults under TCG
# in vhost_net_start -> msix_set_vector_notifiers with vhost-user net and
# MSI-X (the guest-notifier-mask path KVM's irqfds bypass), whatever the
# back end. Needs qemu-system-x86, busybox-static, cpio, and the network to
# `apt-get download` the kernel once.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
work="${1:-/tmp/vu-smoke}"
mkdir -p "$work" && cd "$work"

(cd "$root" && bazel build //vhost-user:vmmkit-vhost-user >/dev/null 2>&1)
bin="$work/vmmkit-vhost-user"
cp -f "$root/bazel-bin/vhost-user/vmmkit-vhost-user" "$bin"

if ! ls kernel/boot/vmlinuz-* >/dev/null 2>&1; then
  pkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image/ {print $2; exit}')
  apt-get download "$pkg" >/dev/null 2>&1
  dpkg-deb -x "$pkg"_*.deb kernel
fi
kernel=$(ls kernel/boot/vmlinuz-*)

rm -rf initrd && mkdir -p initrd/bin initrd/mods
cp "$(command -v busybox)" initrd/bin/
for m in virtio_pci_legacy_dev virtio_pci_modern_dev virtio_ring virtio virtio_pci virtio_blk virtio-rng failover net_failover virtio_net; do
  cp "$(find kernel/lib/modules -name "$m.ko*" | head -1)" initrd/mods/
done
cat > initrd/init <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev /tmp
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
FL=0; grep -q vu.legacy=1 /proc/cmdline && FL=1
for m in virtio_pci_legacy_dev virtio_pci_modern_dev virtio_ring virtio; do insmod /mods/$m.ko; done
insmod /mods/virtio_pci.ko force_legacy=$FL
insmod /mods/virtio_blk.ko; insmod /mods/virtio-rng.ko
if grep -q vu.net=1 /proc/cmdline; then
  insmod /mods/failover.ko; insmod /mods/net_failover.ko; insmod /mods/virtio_net.ko; sleep 1
  ip link set eth0 up; ip addr add 10.77.0.2/24 dev eth0
  ping -c 3 -W 2 10.77.0.1 >/dev/null && echo "VU: net ok"
  poweroff -f
fi
sleep 1
echo "VU: vda sectors $(cat /sys/block/vda/size)"
dd if=/dev/urandom of=/tmp/pat bs=4096 count=64 2>/dev/null
dd if=/tmp/pat of=/dev/vda bs=4096 seek=10 conv=fsync 2>/dev/null
dd if=/dev/vda of=/tmp/back bs=4096 skip=10 count=64 iflag=direct 2>/dev/null
cmp -s /tmp/pat /tmp/back && echo "VU: blk ok" || echo "VU: blk MISMATCH"
dd if=/dev/hwrng of=/tmp/r bs=64 count=4 2>/dev/null && [ "$(wc -c < /tmp/r)" = 256 ] && echo "VU: rng ok"
B=$(basename $(readlink /sys/block/vda/device))
echo $B > /sys/bus/virtio/drivers/virtio_blk/unbind; sleep 1
echo $B > /sys/bus/virtio/drivers/virtio_blk/bind; sleep 1
dd if=/dev/vda of=/tmp/back2 bs=4096 skip=10 count=64 iflag=direct 2>/dev/null
cmp -s /tmp/pat /tmp/back2 && echo "VU: rebind ok" || echo "VU: rebind MISMATCH"
poweroff -f
EOF
chmod +x initrd/init
(cd initrd && find . | cpio -o -H newc 2>/dev/null | gzip > ../initrd.gz)

failed=0
for mode in modern legacy; do
  rm -f blk.sock rng.sock; truncate -s 32M disk.img
  "$bin" --socket="$work/blk.sock" --device=blk --image="$work/disk.img" --once 2> blk.log &
  b=$!
  "$bin" --socket="$work/rng.sock" --device=rng --once 2> rng.log &
  r=$!
  while [ ! -S blk.sock ] || [ ! -S rng.sock ]; do sleep 0.1; done
  if [ $mode = legacy ]; then blk=vhost-user-blk-pci-transitional; app=vu.legacy=1; else blk=vhost-user-blk-pci; app=; fi
  out=$(timeout 180 qemu-system-x86_64 -accel tcg -m 256 -nographic -no-reboot \
    -object memory-backend-memfd,id=mem,size=256M,share=on -machine q35,memory-backend=mem \
    -kernel "$kernel" -initrd initrd.gz -append "console=ttyS0 panic=-1 quiet $app" \
    -chardev socket,id=c0,path="$work/blk.sock" -device $blk,chardev=c0 \
    -chardev socket,id=c1,path="$work/rng.sock" -device vhost-user-rng-pci,chardev=c1 2>&1 | tr -d '\r' | grep -a "VU:" || true)
  wait $b $r || failed=1
  echo "== $mode"; echo "$out"
  for want in "blk ok" "rng ok" "rebind ok"; do
    grep -q "VU: $want" <<<"$out" || { echo "FAILED: $want"; failed=1; }
  done
done
if [ "${VU_SMOKE_NET:-0}" = 1 ]; then
  rm -f net.sock
  "$bin" --socket="$work/net.sock" --device=net --tap=vutap0 --once 2> net.log &
  n=$!
  while [ ! -S net.sock ]; do sleep 0.1; done
  ip addr add 10.77.0.1/24 dev vutap0 2>/dev/null || true; ip link set vutap0 up
  out=$(timeout 180 qemu-system-x86_64 -accel tcg -m 256 -nographic -no-reboot \
    -object memory-backend-memfd,id=mem,size=256M,share=on -machine q35,memory-backend=mem \
    -kernel "$kernel" -initrd initrd.gz -append "console=ttyS0 panic=-1 quiet vu.net=1" \
    -chardev socket,id=c0,path="$work/net.sock" -netdev vhost-user,id=n0,chardev=c0 \
    -device virtio-net-pci,netdev=n0,romfile=,vectors=0 2>&1 | tr -d '\r' | grep -a "VU:" || true)
  wait $n || failed=1
  echo "== net"; echo "$out"
  grep -q "VU: net ok" <<<"$out" || { echo "FAILED: net ok"; failed=1; }
fi
exit $failed
