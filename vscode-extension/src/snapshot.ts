// The snapshots `hv console --batch --format json` prints (one JSON object per line), and the
// pure helpers that turn them into what the Partitions view and the quick pick show.

/** One vCPU of a partition. `state` is hv-link's VcpuState in snake_case. */
export interface VcpuRow {
  index: number;
  state: string;
  device?: string;
  cpu_pct: number | null;
}

/** One partition of the partitions table. */
export interface PartitionRow {
  id: number;
  name: string;
  state: string;
  state_text: string;
  vcpus: VcpuRow[];
  cpu_pct: number | null;
  exits_per_s: number | null;
  irqs_per_s: number | null;
  hypercalls_per_s: number | null;
  lost_records: number | null;
}

/** One snapshot of a running system. */
export interface Snapshot {
  seq: number;
  elapsed_ms: number;
  system: string;
  stats: boolean;
  partitions: PartitionRow[];
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function numOrNull(v: unknown): number | null {
  return typeof v === 'number' && Number.isFinite(v) ? v : null;
}

/** Parses one line of `hv console --batch --format json`; undefined when it is not a snapshot. */
export function parseSnapshot(line: string): Snapshot | undefined {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (!isObject(v) || typeof v.system !== 'string' || !Array.isArray(v.partitions)) {
    return undefined;
  }
  const partitions: PartitionRow[] = [];
  for (const p of v.partitions) {
    if (!isObject(p) || typeof p.name !== 'string') {
      continue;
    }
    const vcpus: VcpuRow[] = [];
    if (Array.isArray(p.vcpus)) {
      for (const c of p.vcpus) {
        if (isObject(c) && typeof c.index === 'number') {
          vcpus.push({
            index: c.index,
            state: typeof c.state === 'string' ? c.state : 'unknown',
            ...(typeof c.device === 'string' ? { device: c.device } : {}),
            cpu_pct: numOrNull(c.cpu_pct),
          });
        }
      }
    }
    partitions.push({
      id: typeof p.id === 'number' ? p.id : partitions.length,
      name: p.name,
      state: typeof p.state === 'string' ? p.state : 'unknown',
      state_text: typeof p.state_text === 'string' ? p.state_text : String(p.state ?? 'unknown'),
      vcpus,
      cpu_pct: numOrNull(p.cpu_pct),
      exits_per_s: numOrNull(p.exits_per_s),
      irqs_per_s: numOrNull(p.irqs_per_s),
      hypercalls_per_s: numOrNull(p.hypercalls_per_s),
      lost_records: numOrNull(p.lost_records),
    });
  }
  return {
    seq: typeof v.seq === 'number' ? v.seq : 0,
    elapsed_ms: typeof v.elapsed_ms === 'number' ? v.elapsed_ms : 0,
    system: v.system,
    stats: v.stats === true,
    partitions,
  };
}

/** Human words for a vCPU state (`stopped_in_debugger` → `stopped in debugger`). */
export function vcpuStateText(v: VcpuRow): string {
  switch (v.state) {
    case 'blocked_on_device':
      return `blocked on ${v.device ?? 'a device'}`;
    case 'stopped_in_debugger':
      return 'debug-stopped';
    case 'out_of_window':
      return 'outside its window';
    default:
      return v.state.replace(/_/g, ' ');
  }
}

/** `12.3%`, or `–` when unknown. */
export function pct(v: number | null): string {
  return v === null ? '–' : `${v.toFixed(1)}%`;
}

/** `1000/s`, or `–` when unknown. */
export function perSecond(v: number | null): string {
  return v === null ? '–' : `${Math.round(v)}/s`;
}

/** A partition's state in words (`stopped_in_debugger` → `debug-stopped`), with its detail. */
export function partitionStateText(p: PartitionRow): string {
  return p.state_text.replace(/^stopped_in_debugger/, 'debug-stopped').replace(/_/g, ' ');
}

/** The one-line description of a partition in the tree: state, vCPUs, CPU, IRQs/s. */
export function partitionDescription(p: PartitionRow): string {
  const vcpus = `${p.vcpus.length} vCPU${p.vcpus.length === 1 ? '' : 's'}`;
  return `${partitionStateText(p)} · ${vcpus} · CPU ${pct(p.cpu_pct)} · IRQ ${perSecond(p.irqs_per_s)}`;
}

/** A partition named in a system description (TOML), for launch configurations. */
export interface DescribedPartition {
  name: string;
  vcpus: number;
}

/**
 * The partitions of a system description: every `[[partition]]` table's `name` and `vcpus`
 * (default 1). A light line scan, enough for a quick pick; `hv run` and `hv lsp` do the checking.
 */
export function describedPartitions(toml: string): DescribedPartition[] {
  const out: DescribedPartition[] = [];
  let current: DescribedPartition | undefined;
  for (const raw of toml.split(/\r?\n/)) {
    const line = raw.replace(/#.*$/, '').trim();
    if (line.startsWith('[')) {
      current = undefined;
      if (/^\[\[\s*partition\s*\]\]$/.test(line)) {
        current = { name: '', vcpus: 1 };
        out.push(current);
      }
      continue;
    }
    if (!current) {
      continue;
    }
    const name = /^name\s*=\s*"([^"]*)"/.exec(line);
    if (name) {
      current.name = name[1];
    }
    const vcpus = /^vcpus\s*=\s*(\d+)/.exec(line);
    if (vcpus) {
      current.vcpus = Number(vcpus[1]);
    }
  }
  return out.filter((p) => p.name !== '');
}

/** True when a TOML text has a top-level `[system]` table (the language server's rule too). */
export function hasSystemTable(toml: string): boolean {
  return /^\s*\[system\]\s*(#.*)?$/m.test(toml);
}
