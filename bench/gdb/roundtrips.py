# roundtrips.py: gdb Python script for bench/gdb.sh. Measures four GDB remote round trips through
# stock gdb against whatever stub gdb is connected to, and prints one "<name> <value>" line each:
#   stepi_per_s        single steps (`stepi N`)
#   regread_per_s      register reads (register cache flushed before each `info registers rip`)
#   memread_MiB_per_s  reads of 16 KiB from 0x100000 on
#   bp_hits_per_s      `continue` to a hardware breakpoint inside the loop
# Each value is the median of REPEATS back-to-back batches (HV_BENCH_REPEATS, default 5): one
# batch of our stub lasts 10-100 ms, so a single stall of the shared host (a neighbour's burst, a
# descheduled vCPU of this VM) would otherwise decide a whole round, on either side.
# With HV_BENCH_PID set (the stub's process), each is followed by "<name>_ctxsw <n>": context
# switches of that process per operation, from /proc. With HV_BENCH_PACKETS set, by
# "<name>_packets <n>": remote packets gdb sent per operation (from `set debug remote`).
# Precondition: the target is stopped inside a tight loop that it keeps passing.
import os
import time

import gdb

PID = os.environ.get("HV_BENCH_PID")
# HV_BENCH_OPS: the measurements to take (comma-separated names as printed; default all).
OPS = os.environ.get("HV_BENCH_OPS")


def wanted(name):
    return not OPS or name in OPS.split(",")


def switches():
    if not PID:
        return 0
    total = 0
    for tid in os.listdir(f"/proc/{PID}/task"):
        try:
            with open(f"/proc/{PID}/task/{tid}/status") as status:
                for line in status:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


REPEATS = int(os.environ.get("HV_BENCH_REPEATS", "5"))


def measure(name, count, op, unit=None):
    """Runs `op` (`count` operations; returns the amount done in `unit` if given) REPEATS times
    and prints the median rate, and the context switches per operation over all batches."""
    before = switches()
    rates = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        amount = op()
        elapsed = time.perf_counter() - start
        rates.append((amount if unit else count) / elapsed)
    after = switches()
    print(f"{name} {sorted(rates)[len(rates) // 2]:.2f}")
    if PID:
        print(f"{name}_ctxsw {(after - before) / (count * REPEATS):.1f}")


def count_packets(*ops):
    """Remote packets gdb sends during `ops` (gdb commands: one operation), from its remote debug
    log (gdb 13 returns the log with a command's output when that is captured)."""
    gdb.execute("set debug remote 1", to_string=True)
    log = ""
    try:
        for op in ops:
            log += gdb.execute(op, to_string=True)
    finally:
        gdb.execute("set debug remote 0", to_string=True)
    return log.count("Sending packet:")


gdb.execute("set pagination off")
loop_pc = int(gdb.parse_and_eval("$pc"))
gdb.execute("delete", to_string=True)

STEPS = 500
if wanted("stepi_per_s"):
    measure("stepi_per_s", STEPS, lambda: gdb.execute(f"stepi {STEPS}", to_string=True))


def read_registers():
    for _ in range(REGREADS):
        gdb.execute("maintenance flush register-cache", to_string=True)
        gdb.execute("info registers rip", to_string=True)


REGREADS = 200
if wanted("regread_per_s"):
    measure("regread_per_s", REGREADS, read_registers)

inferior = gdb.selected_inferior()


def read_memory():
    total = 0
    for i in range(MEMREADS):
        total += len(inferior.read_memory(0x100000 + i * 16384, 16384))
    return total / 2**20


MEMREADS = 32
if wanted("memread_MiB_per_s"):
    measure("memread_MiB_per_s", MEMREADS, read_memory, unit="MiB")

HITS = 100


def hits():
    for _ in range(HITS):
        gdb.execute("continue", to_string=True)


if wanted("bp_hits_per_s"):
    gdb.execute(f"hbreak *{loop_pc}", to_string=True)
    measure("bp_hits_per_s", HITS, hits)

if os.environ.get("HV_BENCH_PACKETS"):
    gdb.execute(f"hbreak *{loop_pc}", to_string=True)
    print(f"stepi_per_s_packets {count_packets('stepi')}")
    print(f"bp_hits_per_s_packets {count_packets('continue')}")
    flush = "maintenance flush register-cache"
    print(f"regread_per_s_packets {count_packets(flush, 'info registers rip')}")
    read = "python gdb.selected_inferior().read_memory(0x100000, 16384)"
    print(f"memread_MiB_per_s_packets {count_packets(read)}")
