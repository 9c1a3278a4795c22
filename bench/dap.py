#!/usr/bin/env python3
"""hv dap benchmark: `next` in the device model through `hv dap` against the same `next` in gdb
batch mode on the same stub, ratio printed; and launch-to-first-stop with its parts.

Both sides debug `sensor-model` of the demo system (examples/demo.toml) on one `hv run`: gdb
batch through the gdb bridge's port for sensor-model, hv dap on the same partition's stub
through its own host-link channel. Each round stops in sensor_write_ctrl (control writes the
sensor once a second) and times NEXTS `next`s: gdb from the command to its prompt (gdb's
Python API), hv dap from the request to the `stopped` event. Rounds alternate between the two; medians, then the ratio.

Needs: /dev/kvm, gdb, python3. Run from the repository root: bench/dap.py [--rounds N]
(builds the release binary first unless --no-build).
"""

import argparse
import json
import os
import queue
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HV = os.path.join(ROOT, "target", "release", "hv")
DEMO = os.path.join(ROOT, "examples", "demo.toml")
IMAGE = os.path.join(ROOT, "target", "guests", "sensor-model.elf")
NEXTS = 4
PATIENCE = 300


class Dap:
    """A minimal DAP client over `hv dap`'s stdio."""

    def __init__(self):
        self.p = subprocess.Popen([HV, "dap"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.q = queue.Queue()
        self.seq = 1
        self.events = []
        self.output = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        f = self.p.stdout
        while True:
            length = None
            while True:
                line = f.readline()
                if not line:
                    self.q.put(None)
                    return
                line = line.strip()
                if not line:
                    break
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            self.q.put((time.perf_counter(), json.loads(f.read(length))))

    def _next(self):
        item = self.q.get(timeout=PATIENCE)
        if item is None:
            raise RuntimeError("hv dap exited; output:\n" + "".join(self.output))
        t, m = item
        if m.get("type") == "event":
            if m["event"] == "output":
                self.output.append(m["body"].get("output", ""))
            self.events.append((t, m))
        return t, m

    def request(self, command, arguments=None):
        seq = self.seq
        self.seq += 1
        body = json.dumps({"seq": seq, "type": "request", "command": command,
                           "arguments": arguments or {}}).encode()
        self.p.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.p.stdin.flush()
        while True:
            t, m = self._next()
            if m.get("type") == "response" and m["request_seq"] == seq:
                if not m["success"]:
                    raise RuntimeError(f"{command}: {m.get('message')}")
                return t, m.get("body", {})

    def event(self, name):
        while True:
            for i, (t, m) in enumerate(self.events):
                if m["event"] == name:
                    del self.events[i]
                    return t, m["body"]
            self._next()

    def close(self):
        try:
            self.request("disconnect", {"terminateDebuggee": True})
        except Exception:
            pass
        try:
            self.p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.p.kill()


def free_base():
    """A base port whose demo port plan (4 partitions, worker with 2 vCPUs) is free."""
    for base in range(24000, 31000, 211):
        ports = [base + k for k in range(4)] + [base + 100 + 16 * k + j
                                                for k, n in enumerate([1, 1, 2, 1])
                                                for j in range(n)]
        ok = True
        for p in ports:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free gdb port range")


GDB_SCRIPT = """
import gdb, time
gdb.execute("set pagination off")
gdb.execute("set confirm off")
gdb.execute("target remote 127.0.0.1:%(port)d")
gdb.execute("break sensor_write_ctrl")
times = []
for round in range(%(rounds)d):
    gdb.execute("continue", to_string=True)
    for i in range(%(nexts)d):
        t = time.perf_counter()
        gdb.execute("next", to_string=True)
        times.append(time.perf_counter() - t)
gdb.execute("delete")
gdb.execute("detach")
print("GDB_NEXT_TIMES " + " ".join("%%.6f" %% x for x in times))
"""


def gdb_batch_nexts(port, rounds):
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(GDB_SCRIPT % {"port": port, "rounds": rounds, "nexts": NEXTS})
        script = f.name
    try:
        out = subprocess.run(["timeout", "600", "gdb", "-nx", "-q", "-batch", "-x", script, IMAGE],
                             capture_output=True, text=True, check=False)
    finally:
        os.unlink(script)
    for line in out.stdout.splitlines():
        if line.startswith("GDB_NEXT_TIMES "):
            return [float(x) for x in line.split()[1:]]
    raise RuntimeError("gdb batch failed:\n" + out.stdout + out.stderr)


def dap_nexts(link, rounds):
    dap = Dap()
    try:
        dap.request("initialize", {"adapterID": "hv"})
        dap.request("attach", {"type": "hv", "request": "attach", "partition": "sensor-model",
                               "link": link})
        dap.event("initialized")
        dap.request("setFunctionBreakpoints", {"breakpoints": [{"name": "sensor_write_ctrl"}]})
        dap.request("configurationDone")
        times, with_ui = [], []
        for r in range(rounds):
            if r > 0:
                dap.request("continue", {"threadId": thread})
            _, stopped = dap.event("stopped")
            thread = stopped["threadId"]
            for _ in range(NEXTS):
                t0 = time.perf_counter()
                dap.request("next", {"threadId": thread})
                t1, _ = dap.event("stopped")
                times.append(t1 - t0)
                # What VS Code asks after every stop: the stack, the scopes, the locals.
                _, st = dap.request("stackTrace", {"threadId": thread, "levels": 20})
                _, sc = dap.request("scopes", {"frameId": st["stackFrames"][0]["id"]})
                locals_ref = [s for s in sc["scopes"] if s["name"] == "Locals"][0]
                t2, _ = dap.request("variables",
                                    {"variablesReference": locals_ref["variablesReference"]})
                with_ui.append(t2 - t0)
        dap.request("setFunctionBreakpoints", {"breakpoints": []})
        return times, with_ui
    finally:
        dap.request("disconnect", {"terminateDebuggee": False})
        dap.p.wait(timeout=60)


def launch_to_first_stop():
    dap = Dap()
    try:
        t0 = time.perf_counter()
        dap.request("initialize", {"adapterID": "hv"})
        t_launch, _ = dap.request("launch", {"type": "hv", "request": "launch", "system": DEMO,
                                             "partition": "sensor-model"})
        dap.event("initialized")
        dap.request("setFunctionBreakpoints", {"breakpoints": [{"name": "sensor_write_ctrl"}]})
        t_conf, _ = dap.request("configurationDone")
        t_stop, _ = dap.event("stopped")
        parts = {}
        for line in dap.output:
            if "hv dap: timing" in line:
                for kv in line.split("timing", 1)[1].split(","):
                    k, _, v = kv.strip().partition(" ")
                    parts[k] = v.strip()
        return t_launch - t0, t_conf - t_launch, t_stop - t_conf, parts
    finally:
        dap.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-build", action="store_true")
    args = ap.parse_args()
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp()
    link = "unix:" + os.path.join(work, "link.sock")
    base = free_base()
    port = base + 3  # sensor-model is partition 3 of the demo
    hv = subprocess.Popen([HV, "run", DEMO, "--no-console", "--quiet", "--gdb-port", str(base),
                           "--link", link], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
    try:
        deadline = time.time() + PATIENCE
        while True:
            line = hv.stderr.readline()
            if not line or time.time() > deadline:
                raise RuntimeError("hv run did not print its port table")
            if str(port) in line:
                break
        threading.Thread(target=lambda: hv.stderr.read(), daemon=True).start()
        # Alternate the two (gdb, dap, gdb, dap, …) so that load from elsewhere on the host
        # falls on both alike.
        gdb_times, dap_times, ui_times = [], [], []
        for _ in range(args.rounds):
            gdb_times += gdb_batch_nexts(port, 1)
            d, u = dap_nexts(link, 1)
            dap_times += d
            ui_times += u
    finally:
        hv.terminate()
        hv.wait(timeout=60)
    g = statistics.median(gdb_times)
    d = statistics.median(dap_times)
    u = statistics.median(ui_times)
    print(f"gdb_batch_next_ms {g * 1000:.2f}  (median of {len(gdb_times)})")
    print(f"hv_dap_next_ms {d * 1000:.2f}  (median of {len(dap_times)}; request to stopped event)")
    print(f"hv_dap_next_with_stack_scopes_locals_ms {u * 1000:.2f}  (what VS Code asks per step)")
    print(f"ratio_dap_over_gdb_next {d / g:.2f}  (goal <= 1.3)")
    launch, conf, stop, parts = launch_to_first_stop()
    print(f"launch_to_first_stop_ms {(launch + conf + stop) * 1000:.0f}")
    print(f"  launch_request_ms {launch * 1000:.0f}  (of it: "
          + ", ".join(f"{k} {v}" for k, v in parts.items()) + ")")
    print(f"  configuration_ms {conf * 1000:.0f}  (breakpoint set, guest resumed)")
    print(f"  run_to_breakpoint_ms {stop * 1000:.0f}  (control writes the sensor once a second)")


if __name__ == "__main__":
    sys.exit(main())
