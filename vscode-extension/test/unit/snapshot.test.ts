// Unit tests (node:test) of the pure helpers: batch snapshots, states in words, descriptions'
// partitions, the [system] rule, terminal text.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { toGuestInput, toTerminalText } from '../../src/consoleText';
import { describedPartitions, hasSystemTable, parseSnapshot, partitionDescription, vcpuStateText } from '../../src/snapshot';

const LINE = JSON.stringify({
  seq: 3,
  elapsed_ms: 3000,
  system: 'demo',
  stats: true,
  partitions: [
    { id: 0, name: 'control', state: 'running', state_text: 'running, blocked on sensor', vcpus: [{ index: 0, state: 'blocked_on_device', device: 'sensor', cpu_pct: 0 }], cpu_pct: 0, exits_per_s: 0, irqs_per_s: 0, hypercalls_per_s: 0, lost_records: 0 },
    { id: 3, name: 'sensor-model', state: 'stopped_in_debugger', state_text: 'stopped_in_debugger', vcpus: [{ index: 0, state: 'stopped_in_debugger', cpu_pct: null }], cpu_pct: null, exits_per_s: null, irqs_per_s: 998.6, hypercalls_per_s: null, lost_records: null },
  ],
  interrupts: [],
});

test('a batch line becomes a snapshot', () => {
  const s = parseSnapshot(LINE);
  assert.ok(s);
  assert.equal(s.system, 'demo');
  assert.deepEqual(s.partitions.map((p) => p.name), ['control', 'sensor-model']);
  assert.equal(s.partitions[0].vcpus[0].device, 'sensor');
  assert.equal(s.partitions[1].cpu_pct, null);
});

test('anything else is not a snapshot', () => {
  for (const line of ['', 'hv: error: no system', '{}', '[1,2]', '{"system":1,"partitions":[]}', '{"system":"x"}']) {
    assert.equal(parseSnapshot(line), undefined, line);
  }
  const odd = parseSnapshot('{"system":"x","partitions":[{"name":"p","vcpus":[{"index":0}]}, 5, {"id":1}]}');
  assert.ok(odd);
  assert.deepEqual(odd.partitions.map((p) => [p.name, p.state, p.vcpus[0]?.state]), [['p', 'unknown', 'unknown']]);
});

test('states in words', () => {
  const s = parseSnapshot(LINE)!;
  assert.equal(vcpuStateText(s.partitions[0].vcpus[0]), 'blocked on sensor');
  assert.equal(vcpuStateText(s.partitions[1].vcpus[0]), 'debug-stopped');
  assert.equal(vcpuStateText({ index: 0, state: 'out_of_window', cpu_pct: null }), 'outside its window');
  assert.equal(partitionDescription(s.partitions[0]), 'running, blocked on sensor · 1 vCPU · CPU 0.0% · IRQ 0/s');
  assert.equal(partitionDescription(s.partitions[1]), 'debug-stopped · 1 vCPU · CPU – · IRQ 999/s');
});

test('partitions of a description', () => {
  const toml = '[system]\nname = "demo"\n\n[[partition]] # first\nname = "control"\n\n[[partition]]\nname = "worker"\nvcpus = 2\n\n[[channel]]\nname = "telemetry"\n';
  assert.deepEqual(describedPartitions(toml), [
    { name: 'control', vcpus: 1 },
    { name: 'worker', vcpus: 2 },
  ]);
  assert.ok(hasSystemTable(toml));
  assert.ok(!hasSystemTable('[package]\nname = "hv"\n# [system]\n'));
});

test('terminal text', () => {
  assert.equal(toTerminalText('a\nb\r\nc'), 'a\r\nb\r\nc');
  assert.equal(toGuestInput('ls\r'), 'ls\n');
});
