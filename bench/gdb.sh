#!/usr/bin/env bash
# GDB round-trip benchmark: stock gdb running bench/gdb/roundtrips.py against
#   (1) our stub, through the gdb bridge and host link of `hv run`, on the `spin` guest, and
#   (2) the peer: QEMU+KVM's gdbstub on a tiny real-mode guest (bench/gdb/peer-guest.S),
# in the same run, each operation on both stubs back to back, in alternating order (this machine
# is shared and noisy: only same-run ratios mean anything). Within a round, each stub's value is
# the median of 5 short batches (bench/gdb/roundtrips.py; HV_BENCH_REPEATS). Prints, per
# operation, our/QEMU ratio per round, the median and the worst round, then the packets gdb sends per operation
# (ours and QEMU's) and our context switches (of the hv process) per operation.
# Needs: qemu-system-x86 (Debian package), gdb, gcc, /dev/kvm. Run from anywhere: bench/gdb.sh
# ROUNDS (default 5) sets the number of rounds.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
here="$root/bench/gdb"
rounds=${ROUNDS:-5}
command -v qemu-system-x86_64 >/dev/null || { echo "bench/gdb.sh: needs qemu-system-x86_64 (apt-get install qemu-system-x86)" >&2; exit 2; }
cd "$root"
cargo build --release --quiet
work=$(mktemp -d)
hvpid="" qpid=""
trap 'for p in $hvpid $qpid; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"' EXIT

# Ours: the spin guest under hv run.
cat > "$work/spin.toml" <<TOML
[[partition]]
name = "spin"
image = "$root/target/guests/spin.elf"
TOML
base=${HV_GDB_BASE:-23333}
./target/release/hv run "$work/spin.toml" --quiet --no-console --gdb-port "$base" --link "unix:$work/link.sock" 2>"$work/hv.log" &
hvpid=$!
for _ in $(seq 300); do grep -q "$base " "$work/hv.log" 2>/dev/null && break; sleep 0.1; done
loop=$(gdb -q -batch -ex 'info line spin.c:19' target/guests/spin.elf | sed -n 's/.*starts at address \(0x[0-9a-f]*\).*/\1/p' | head -1)

# The peer: QEMU+KVM on the boot sector.
gcc -c -m32 "$here/peer-guest.S" -o "$work/peer.o"
ld -m elf_i386 -Ttext 0x7c00 --oformat binary "$work/peer.o" -o "$work/peer.bin"
qport=${QEMU_GDB_PORT:-12345}
qemu-system-x86_64 -enable-kvm -m 64 -display none -serial none -monitor none \
  -drive format=raw,file="$work/peer.bin" -gdb "tcp:127.0.0.1:$qport" 2>"$work/qemu.log" &
qpid=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$qport") 2>/dev/null && break; sleep 0.1; done

# ours [packets] / peer [packets]: one gdb session; HV_BENCH_OPS picks the measurements.
ours() {
  HV_BENCH_PID=$hvpid HV_BENCH_PACKETS=${1:-} gdb -q -batch -ex "target remote 127.0.0.1:$base" \
    -ex "hbreak *$loop" -ex continue -x "$here/roundtrips.py" -ex detach target/guests/spin.elf 2>&1 |
    grep -E '^[a-zA-Z_]+ [0-9.]+$'
}
peer() {
  # 0x7c05: the first instruction of the peer guest's loop.
  HV_BENCH_PACKETS=${1:-} gdb -q -batch -ex 'set architecture i386:x86-64' -ex "target remote 127.0.0.1:$qport" \
    -ex 'hbreak *0x7c05' -ex continue -x "$here/roundtrips.py" -ex detach 2>&1 |
    grep -E '^[a-zA-Z_]+ [0-9.]+$'
}

metrics="stepi_per_s regread_per_s memread_MiB_per_s bp_hits_per_s"
# Before round 1, one session on each stub that measures nothing: it returns only once that
# guest reached its loop, so every round runs with both guests spinning between their sessions.
# (QEMU's firmware takes seconds to reach the boot sector; until then this VM has an idle core,
# and a wake-up on an idle vCPU of this VM costs far more than on a busy one: round 1 of ours used
# to run at half the speed of the others.)
HV_BENCH_OPS=none ours >/dev/null || true
HV_BENCH_OPS=none peer >/dev/null || true
# Each operation is measured on both stubs back to back (in alternating order), so that the
# host's load, which drifts over seconds, falls on both sides of each ratio alike.
for r in $(seq "$rounds"); do
  line="round $r:"
  for m in $metrics; do
    if ((r % 2)); then
      HV_BENCH_OPS=$m ours >>"$work/ours.$r"
      HV_BENCH_OPS=$m peer >>"$work/peer.$r"
    else
      HV_BENCH_OPS=$m peer >>"$work/peer.$r"
      HV_BENCH_OPS=$m ours >>"$work/ours.$r"
    fi
    a=$(sed -n "s/^$m //p" "$work/ours.$r"); b=$(sed -n "s/^$m //p" "$work/peer.$r")
    line+=$(awk -v m="$m" -v a="$a" -v b="$b" 'BEGIN { printf " %s %.2fx (%.0f vs %.0f)", m, a / b, a, b }')
    echo "$m $(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.3f", a / b }')" >>"$work/ratios"
  done
  echo "$line"
done
HV_BENCH_OPS=none ours packets >"$work/ours.packets"
HV_BENCH_OPS=none peer packets >"$work/peer.packets"
echo
printf '%-20s %8s %8s %14s %12s\n' operation median worst "packets(QEMU)" "ctx-switches"
for m in $metrics; do
  sorted=$(sed -n "s/^$m //p" "$work/ratios" | sort -g)
  median=$(echo "$sorted" | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
  worst=$(echo "$sorted" | head -1)
  packets="$(sed -n "s/^${m}_packets //p" "$work/ours.packets")($(sed -n "s/^${m}_packets //p" "$work/peer.packets"))"
  ctxsw=$(sed -n "s/^${m}_ctxsw //p" "$work"/ours.* | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
  printf '%-20s %7.2fx %7.2fx %14s %12s\n' "$m" "$median" "$worst" "$packets" "${ctxsw:-?}"
done
echo "ratios: ours / QEMU+KVM gdbstub, higher is better (memread per 16 KiB read); packets gdb sends"
echo "per operation, ours (QEMU's); context switches of the hv process per operation. Goals (issue 13): stepi, bp_hits >= 3x, memread >= 6x,"
echo "regread >= 1.4x, worst round >= 2x."
