#!/usr/bin/env bash
# benches/vhost_user_blk_e2e.sh: end-to-end block throughput of vmmkit's
# vhost-user-blk daemon against QEMU's built-in virtio-blk-pci, in one QEMU TCG
# guest (tools/guest-image), with the same guest workload on each disk:
#   read:  dd if=/dev/vdX of=/dev/null bs=1M count=MIB iflag=direct   (from byte 0)
#   write: dd if=/dev/zero of=/dev/vdX bs=1M count=MIB seek=MIB oflag=direct conv=fsync
# rounds times, the disks taking turns within a round (so drift in the host's
# load hits all of them alike). Disks, same size, pre-filled with random bytes:
#   00:04.0  vmmkit-vhost-user --device=blk          (vhost-user-blk-pci, 1 queue)
#   00:05.0  QEMU virtio-blk-pci cache=none          (O_DIRECT on the host, aio=threads)
#   00:06.0  QEMU virtio-blk-pci cache=writeback     (host page cache, aio=threads)
#   00:07.0  qemu-storage-daemon vhost-user-blk      (QEMU's libvhost-user back end,
#            cache.direct=on): the same vhost-user path with another back end
# cache=none is the reference the ratio uses; the writeback disk shows what the
# host page cache is worth, since the daemon's open flags (printed, from
# /proc/PID/fdinfo) decide which of the two it resembles.
#
#   benches/vhost_user_blk_e2e.sh [--mib=64] [--rounds=3] [--daemon=PATH] [--guest-dir=DIR]
#
# Prints MB/s (10^6 bytes per second; the guest clock is /proc/uptime, 10 ms
# resolution) per disk and operation: the median over the rounds, then every
# round, then the ratios vmmkit / QEMU. Guest time is TCG: the figures compare
# device paths under the same emulated CPU, they are not native throughput.
set -euo pipefail
source "$(dirname "$0")/../tools/lib/common.sh"
cd "$VMMKIT_ROOT"

mib=64; rounds=3; daemon=""; guest_dir="${VMMKIT_GUEST_DIR:-}"
for a in "$@"; do
  case "$a" in
    --mib=*) mib="${a#*=}" ;;
    --rounds=*) rounds="${a#*=}" ;;
    --daemon=*) daemon="${a#*=}" ;;
    --guest-dir=*) guest_dir="${a#*=}" ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "vhost_user_blk_e2e: unknown argument $a" >&2; exit 2 ;;
  esac
done

ensure_packages "${VMMKIT_INTEROP_PACKAGES[@]}" >&2
if [ -z "$daemon" ]; then
  ensure_build_deps >&2
  bazel build //vhost-user:vmmkit-vhost-user >&2
  daemon="$VMMKIT_ROOT/bazel-bin/vhost-user/vmmkit-vhost-user"
fi
[ -x "$daemon" ] || { echo "vhost_user_blk_e2e: no daemon at $daemon" >&2; exit 1; }
[ -n "$guest_dir" ] || guest_dir="$(tools/guest-image | tail -n 1)"

work="$(mktemp -d /tmp/vmmkit-bench.XXXXXX)"
daemon_pid=""; qsd_pid=""
cleanup() {
  [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
  [ -n "$qsd_pid" ] && kill "$qsd_pid" 2>/dev/null && wait "$qsd_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

size_mib=$((2 * mib))
for d in vmmkit qnone qwb qsd; do
  head -c $((size_mib << 20)) /dev/urandom >"$work/$d.img"
done

"$daemon" --once --socket="$work/blk.sock" --device=blk --image="$work/vmmkit.img" 2>"$work/daemon.log" &
daemon_pid=$!
for _ in $(seq 100); do grep -q "listening on" "$work/daemon.log" && break; sleep 0.1; done
grep -q "listening on" "$work/daemon.log" || { cat "$work/daemon.log" >&2; echo "vhost_user_blk_e2e: daemon not ready" >&2; exit 1; }

qemu-storage-daemon --blockdev driver=file,node-name=f0,filename="$work/qsd.img",cache.direct=on \
  --export type=vhost-user-blk,id=e0,node-name=f0,addr.type=unix,addr.path="$work/qsd.sock",writable=on \
  >"$work/qsd.log" 2>&1 &
qsd_pid=$!
for _ in $(seq 100); do [ -S "$work/qsd.sock" ] && break; sleep 0.1; done

echo "== guest: $guest_dir"
echo "== CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-), $(nproc) cores; QEMU $(qemu-system-x86_64 --version | head -n 1 | awk '{print $4}') TCG, -smp 1"
echo "== workload: $mib MiB O_DIRECT sequential read and write (1 MiB blocks), $rounds rounds"
timeout 900 qemu-system-x86_64 -accel tcg -m 512 -smp 1 \
  -object memory-backend-memfd,id=mem,size=512M,share=on -machine q35,memory-backend=mem \
  -kernel "$guest_dir/vmlinuz" -initrd "$guest_dir/initramfs.cpio.gz" \
  -append "console=ttyS0 quiet vmmkit.checks=bench vmmkit.bench_mib=$mib vmmkit.bench_rounds=$rounds" \
  -display none -serial "file:$work/console.log" -monitor none -no-reboot -nic none \
  -chardev socket,id=c0,path="$work/blk.sock" \
  -device vhost-user-blk-pci,chardev=c0,num-queues=1,addr=0x4 \
  -drive file="$work/qnone.img",if=none,id=d1,format=raw,cache=none,aio=threads \
  -device virtio-blk-pci,drive=d1,num-queues=1,addr=0x5 \
  -drive file="$work/qwb.img",if=none,id=d2,format=raw,cache=writeback,aio=threads \
  -device virtio-blk-pci,drive=d2,num-queues=1,addr=0x6 \
  -chardev socket,id=c3,path="$work/qsd.sock" \
  -device vhost-user-blk-pci,chardev=c3,num-queues=1,addr=0x7 &
qemu_pid=$!
# The daemon's image fd flags, while QEMU is up (O_DIRECT is octal 040000).
sleep 3
dflags="unknown"
for fd in /proc/"$daemon_pid"/fd/*; do
  if [ "$(readlink "$fd" 2>/dev/null)" = "$work/vmmkit.img" ]; then
    fl="$(awk '/^flags:/ {print $2}' "/proc/$daemon_pid/fdinfo/${fd##*/}")"
    if (( (8#$fl & 8#040000) != 0 )); then dflags="O_DIRECT (flags $fl)"; else dflags="page cache, no O_DIRECT (flags $fl)"; fi
  fi
done
# CPU time (user+sys, clock ticks) of the two vhost-user back ends, sampled
# every 0.2 s while QEMU runs (the --once daemon exits with QEMU); the last
# sample misses at most the final 0.2 s, when the guest is powering off.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || true; }
vmmkit_ticks=0; qsd_ticks=0
while kill -0 "$qemu_pid" 2>/dev/null; do
  t="$(cpu_ticks "$daemon_pid")"; [ -n "$t" ] && vmmkit_ticks="$t"
  t="$(cpu_ticks "$qsd_pid")"; [ -n "$t" ] && qsd_ticks="$t"
  sleep 0.2
done
wait "$qemu_pid" || { echo "vhost_user_blk_e2e: QEMU failed"; tail -n 20 "$work/console.log"; exit 1; }
for _ in $(seq 100); do kill -0 "$daemon_pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$daemon_pid" 2>/dev/null; then
  echo "vhost_user_blk_e2e: warning: the --once daemon still runs 10 s after QEMU exited; stopping it"
  kill "$daemon_pid"
fi
wait "$daemon_pid" || echo "vhost_user_blk_e2e: warning: the daemon exited with status $?"
daemon_pid=""
echo "== vmmkit daemon image fd: $dflags"
hz="$(getconf CLK_TCK)"
moved_gb="$(awk -v m="$mib" -v r="$rounds" 'BEGIN { printf "%.3f", 2 * m * r * 1048576 / 1e9 }')"
awk -v v="$vmmkit_ticks" -v q="$qsd_ticks" -v hz="$hz" -v gb="$moved_gb" 'BEGIN {
  printf "== back-end CPU (user+sys) per GB moved: vmmkit %.2f s, qemu-storage-daemon %.2f s (%s GB each)\n", v / hz / gb, q / hz / gb, gb }'

tr -d '\r' <"$work/console.log" | grep -q '^VMMKIT check=bench result=ok' ||
  { echo "vhost_user_blk_e2e: the guest did not finish the benchmark"; tr -d '\r' <"$work/console.log" | grep VMMKIT; exit 1; }

tr -d '\r' <"$work/console.log" | awk '
  function label(bdf) {
    if (bdf ~ /:04\.0$/) return "vmmkit vhost-user-blk"
    if (bdf ~ /:05\.0$/) return "qemu virtio-blk cache=none"
    if (bdf ~ /:06\.0$/) return "qemu virtio-blk cache=writeback"
    if (bdf ~ /:07\.0$/) return "qemu-storage-daemon vhost-user"
    return bdf
  }
  function median(key,   n, i, j, t, a) {
    n = cnt[key]
    for (i = 1; i <= n; i++) a[i] = v[key, i]
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  /^VMMKIT bench / {
    delete f
    for (i = 3; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
    l = label(f["bdf"]); op = f["op"]
    if (!(l in seen)) { seen[l] = 1; order[++nl] = l; lim[l] = f["max_sectors_kb"] " KiB x " f["max_segments"] " segs" }
    cs = f["centisecs"] > 0 ? f["centisecs"] : 1
    mbs = f["bytes"] / (cs / 100) / 1e6
    k = l SUBSEP op; cnt[k]++; v[k, cnt[k]] = mbs
    all[k] = all[k] sprintf(" %.0f", mbs)
  }
  END {
    printf "%-32s %10s %10s   %-30s %s\n", "device", "read MB/s", "write MB/s", "rounds read | write", "guest request limit"
    for (i = 1; i <= nl; i++) {
      l = order[i]
      med[l, "read"] = median(l SUBSEP "read"); med[l, "write"] = median(l SUBSEP "write")
      printf "%-32s %10.1f %10.1f   %-30s %s\n", l, med[l, "read"], med[l, "write"], substr(all[l SUBSEP "read"], 2) " |" all[l SUBSEP "write"], lim[l]
    }
    m = "vmmkit vhost-user-blk"
    nr = split("qemu virtio-blk cache=none,qemu virtio-blk cache=writeback,qemu-storage-daemon vhost-user", refs, ",")
    for (r = 1; r <= nr; r++) {
      q = refs[r]
      if ((m SUBSEP "read") in cnt && (q SUBSEP "read") in cnt)
        printf "ratio vmmkit / %-32s read %.2fx, write %.2fx\n", q ":", med[m, "read"] / med[q, "read"], med[m, "write"] / med[q, "write"]
    }
  }'
