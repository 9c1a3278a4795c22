#!/usr/bin/env bash
# GDB round-trip benchmark: ../shared/bench/gdbbench.py through stock gdb against
#   (1) our stub, through the gdb bridge and the host link of `hv run`, on the `spin` guest, and
#   (2) QEMU+KVM's gdbstub (../shared/bench/qemu-peer.sh),
# in the same run, then prints our/QEMU ratios. Needs: qemu-system-x86, gdb, gcc, /dev/kvm.
# Run from the repository root: bench/gdb.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
shared="$root/../shared/bench"
cd "$root"
cargo build --release --quiet
work=$(mktemp -d)
hvpid=""  # set before the trap: under `set -u` the trap must not see it unset
trap 'if [ -n "$hvpid" ]; then kill "$hvpid" 2>/dev/null || true; fi; wait 2>/dev/null || true; rm -rf "$work"' EXIT
cat > "$work/spin.toml" <<TOML
[[partition]]
name = "spin"
image = "$root/target/guests/spin.elf"
TOML
base=${HV_GDB_BASE:-23333}
./target/release/hv run "$work/spin.toml" --quiet --gdb-port "$base" --link "unix:$work/link.sock" 2>"$work/hv.log" &
hvpid=$!
for _ in $(seq 100); do grep -q ":$base\|$base " "$work/hv.log" 2>/dev/null && break; sleep 0.1; done
# The loop's back edge: stop there first (gdbbench.py needs a stopped target inside the loop).
loop=$(gdb -q -batch -ex 'info line spin.c:19' target/guests/spin.elf | sed -n 's/.*starts at address \(0x[0-9a-f]*\).*/\1/p' | head -1)
gdb -q -batch -ex "target remote 127.0.0.1:$base" -ex "hbreak *$loop" -ex continue \
  -x "$shared/gdbbench.py" target/guests/spin.elf 2>&1 | sed -n 's/^\([a-zA-Z_]*_per_s\) /hv_\1 /p' | tee "$work/hv.txt"
kill "$hvpid"; wait "$hvpid" 2>/dev/null || true
bash "$shared/qemu-peer.sh" | tee "$work/qemu.txt"
for m in stepi_per_s regread_per_s memread_MiB_per_s bp_hits_per_s; do
  ours=$(sed -n "s/^hv_$m //p" "$work/hv.txt"); peer=$(sed -n "s/^qemu_$m //p" "$work/qemu.txt")
  awk -v m="$m" -v a="$ours" -v b="$peer" 'BEGIN { if (b > 0) printf "ratio_%s %.2f\n", m, a / b }'
done
echo "goals: >= 2x round trips (stepi, regread, bp_hits), >= 4x memread"
