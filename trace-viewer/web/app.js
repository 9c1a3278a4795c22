// hv trace viewer: a timeline of one trace on a <canvas>, from the server's /api/trace (Perfetto
// JSON trace events: a process per partition, a thread per vCPU, "X" slices and "i" instants).
// Vanilla JavaScript, no build step, no network resources besides this server.
//
// window.hvTimeline exposes the state for tests: tracks (labels), events (count of drawable
// events), visible ({start, end} in µs), drawn (items drawn in the last frame), flows and
// flowsDrawn (device-model request flows, and those drawn in the last frame), selected (the
// selected event or null), matches (search matches) and ready (set after the first draw).
'use strict';

(function () {
  const LABEL_WIDTH = 170;
  const AXIS_HEIGHT = 28;
  const ROW_HEIGHT = 30;
  const MIN_SPAN_US = 0.01;
  const CLICK_SLOP_PX = 3;
  const HIT_SLOP_PX = 4;

  const SLICE_COLOURS = {
    'guest': '#3ba55d',
    'halted': '#72767d',
    'blocked on device': '#faa61a',
    'stopped in debugger': '#ed4245',
    'outside schedule window': '#4e5d94',
  };
  const OTHER_SLICE = '#9b84ee';
  const INSTANT_COLOURS = { irq: '#fee75c', marker: '#00c8ff', ipc: '#eb459e' };
  const OTHER_INSTANT = '#e3e5e8';
  const FLOW_COLOUR = '#f0b232';

  const canvas = document.getElementById('canvas');
  const ctx = canvas.getContext('2d');
  const search = document.getElementById('search');
  const matchesLabel = document.getElementById('matches');
  const details = document.getElementById('details');
  const status = document.getElementById('status');

  /** Tracks in display order: {pid, tid, label, events (sorted by ts), maxDur}. */
  let tracks = [];
  /** Every drawable event: {name, ph, cat, ts, dur, args, track}, sorted by ts. */
  let events = [];
  let full = { start: 0, end: 1 };
  let view = { start: 0, end: 1 };
  let selected = null;
  let matches = [];
  let matchIndex = -1;
  let stats = null;
  let frameRequested = false;
  /** Device-model request flows: {id, points: [{ts, track}] sorted by ts, start, end}. */
  let flows = [];

  const api = {
    ready: false,
    error: null,
    drawn: 0,
    get tracks() { return tracks.map((t) => t.label); },
    get events() { return events.length; },
    get visible() { return { start: view.start, end: view.end }; },
    get selected() { return selected && describe(selected); },
    get matches() { return matches.length; },
    get flows() { return flows.length; },
    flowsDrawn: 0,
  };
  window.hvTimeline = api;

  // ---- loading ------------------------------------------------------------------------------

  async function load() {
    try {
      const response = await fetch('api/trace');
      if (!response.ok) throw new Error(`GET /api/trace: ${response.status}`);
      const doc = await response.json();
      build(Array.isArray(doc) ? doc : doc.traceEvents || [], doc.otherData || {});
    } catch (e) {
      api.error = String(e);
      status.textContent = `Cannot load the trace: ${e}`;
      return;
    }
    status.textContent = events.length ? '' : 'The trace has no slices or instants.';
    fetch('api/stats')
      .then((r) => (r.ok ? r.json() : null))
      .then((s) => { stats = s; if (!selected) showDetails(); })
      .catch(() => {});
    resize();
    new ResizeObserver(resize).observe(canvas);
  }

  function build(raw, other) {
    const processes = new Map(); // pid -> {name, sort}
    const threads = new Map(); // "pid:tid" -> name
    for (const e of raw) {
      if (e.ph !== 'M') continue;
      const name = e.args && e.args.name;
      if (e.name === 'process_name') {
        processes.set(e.pid, { ...processes.get(e.pid), name });
      } else if (e.name === 'process_sort_index') {
        processes.set(e.pid, { ...processes.get(e.pid), sort: e.args.sort_index });
      } else if (e.name === 'thread_name') {
        threads.set(`${e.pid}:${e.tid}`, name);
      }
    }
    const byKey = new Map();
    const trackFor = (pid, tid) => {
      const key = `${pid}:${tid}`;
      let t = byKey.get(key);
      if (!t) {
        const process = (processes.get(pid) || {}).name || `pid ${pid}`;
        const thread = threads.get(key) || `tid ${tid}`;
        t = { pid, tid, label: `${process} ${thread}`, events: [], maxDur: 0 };
        byKey.set(key, t);
      }
      return t;
    };
    // Every vCPU has a track, even one without events.
    for (const key of threads.keys()) {
      const [pid, tid] = key.split(':').map(Number);
      trackFor(pid, tid);
    }
    for (const e of raw) {
      if ((e.ph !== 'X' && e.ph !== 'i' && e.ph !== 'I') || typeof e.ts !== 'number') continue;
      const t = trackFor(e.pid, e.tid);
      const ev = {
        name: String(e.name),
        ph: e.ph === 'X' ? 'X' : 'i',
        cat: e.cat || '',
        ts: e.ts,
        dur: e.ph === 'X' ? Math.max(0, e.dur || 0) : 0,
        args: e.args || {},
        track: t,
      };
      t.events.push(ev);
      t.maxDur = Math.max(t.maxDur, ev.dur);
      events.push(ev);
    }
    const sortIndex = (pid) => {
      const p = processes.get(pid);
      return p && typeof p.sort === 'number' ? p.sort : pid;
    };
    // Flow steps ("s" start, "t" step, "f" end) of one id make one arrowed line across tracks.
    const byId = new Map();
    for (const e of raw) {
      if ((e.ph !== 's' && e.ph !== 't' && e.ph !== 'f') || typeof e.ts !== 'number') continue;
      if (!byId.has(e.id)) byId.set(e.id, []);
      byId.get(e.id).push({ ts: e.ts, track: trackFor(e.pid, e.tid) });
    }
    flows = [...byId.entries()]
      .map(([id, points]) => {
        points.sort((a, b) => a.ts - b.ts);
        return { id, points, start: points[0].ts, end: points[points.length - 1].ts };
      })
      .filter((f) => f.points.length > 1)
      .sort((a, b) => a.start - b.start);
    tracks = [...byKey.values()].sort((a, b) => sortIndex(a.pid) - sortIndex(b.pid) || a.tid - b.tid);
    tracks.forEach((t, i) => { t.index = i; t.events.sort((a, b) => a.ts - b.ts); });
    events.sort((a, b) => a.ts - b.ts);
    if (events.length) {
      full = {
        start: Math.min(...tracks.filter((t) => t.events.length).map((t) => t.events[0].ts)),
        // A loop, not Math.max(...): a long trace has more events than a call has arguments.
        end: events.reduce((end, e) => Math.max(end, e.ts + e.dur), -Infinity),
      };
      if (full.end - full.start < MIN_SPAN_US) full.end = full.start + 1;
    }
    view = { ...full };
    if (other.system) {
      document.title = `${other.system} — hv trace viewer`;
      document.getElementById('title').textContent = `${other.system}`;
    }
    const legend = document.getElementById('legend');
    for (const [name, colour] of Object.entries(SLICE_COLOURS)) {
      const item = document.createElement('span');
      const swatch = document.createElement('i');
      swatch.style.background = colour;
      item.append(swatch, name);
      legend.append(item);
    }
  }

  // ---- geometry -----------------------------------------------------------------------------

  const plotWidth = () => Math.max(1, canvas.clientWidth - LABEL_WIDTH);
  const xOf = (t) => LABEL_WIDTH + ((t - view.start) / (view.end - view.start)) * plotWidth();
  const timeAt = (x) => view.start + ((x - LABEL_WIDTH) / plotWidth()) * (view.end - view.start);
  const rowTop = (i) => AXIS_HEIGHT + i * ROW_HEIGHT;

  function setView(start, end) {
    let span = Math.max(MIN_SPAN_US, end - start);
    const fullSpan = full.end - full.start;
    span = Math.min(span, fullSpan * 4);
    // Keep some of the trace on screen.
    const min = full.start - span * 0.9;
    const max = full.end - span * 0.1;
    start = Math.min(Math.max(start, min), max);
    view = { start, end: start + span };
    redraw();
  }

  function zoom(factor, anchorX) {
    const t = timeAt(anchorX);
    setView(t - (t - view.start) * factor, t + (view.end - t) * factor);
  }

  function pan(dt) {
    setView(view.start + dt, view.end + dt);
  }

  function centreOn(ev) {
    let span = view.end - view.start;
    if (ev.dur * 1.2 > span) span = ev.dur * 1.5;
    const mid = ev.ts + ev.dur / 2;
    setView(mid - span / 2, mid + span / 2);
  }

  // ---- drawing ------------------------------------------------------------------------------

  function redraw() {
    if (frameRequested) return;
    frameRequested = true;
    requestAnimationFrame(() => {
      frameRequested = false;
      draw();
    });
  }

  function resize() {
    const dpr = window.devicePixelRatio || 1;
    const height = Math.max(canvas.parentElement.clientHeight, AXIS_HEIGHT + tracks.length * ROW_HEIGHT + 10);
    canvas.style.height = `${height}px`;
    canvas.width = Math.round(canvas.clientWidth * dpr);
    canvas.height = Math.round(height * dpr);
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    redraw();
  }

  /** A tick step of 1, 2 or 5 × 10^n µs giving about `wanted` ticks over `span`. */
  function tickStep(span, wanted) {
    const raw = span / wanted;
    const power = 10 ** Math.floor(Math.log10(raw));
    for (const m of [1, 2, 5]) if (m * power >= raw) return m * power;
    return 10 * power;
  }

  function formatTime(us, step) {
    if (step >= 1e6) return `${(us / 1e6).toFixed(Math.max(0, -Math.floor(Math.log10(step / 1e6))))} s`;
    if (step >= 1e3) return `${(us / 1e3).toFixed(Math.max(0, -Math.floor(Math.log10(step / 1e3))))} ms`;
    if (step >= 1) return `${us.toFixed(Math.max(0, -Math.floor(Math.log10(step))))} µs`;
    return `${(us * 1e3).toFixed(Math.max(0, -Math.floor(Math.log10(step * 1e3))))} ns`;
  }

  function draw() {
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    ctx.clearRect(0, 0, width, height);
    ctx.font = '12px system-ui, sans-serif';
    ctx.textBaseline = 'middle';

    // Axis and grid.
    const step = tickStep(view.end - view.start, Math.max(2, Math.floor(plotWidth() / 110)));
    ctx.fillStyle = '#2b2d31';
    ctx.fillRect(0, 0, width, AXIS_HEIGHT);
    for (let t = Math.ceil(view.start / step) * step; t <= view.end; t += step) {
      const x = Math.round(xOf(t)) + 0.5;
      if (x < LABEL_WIDTH) continue;
      ctx.fillStyle = '#3a3c42';
      ctx.fillRect(x, AXIS_HEIGHT, 1, height - AXIS_HEIGHT);
      ctx.fillStyle = '#8e9297';
      ctx.fillRect(x, AXIS_HEIGHT - 6, 1, 6);
      ctx.fillText(formatTime(t, step), x + 3, AXIS_HEIGHT / 2 - 2);
    }

    // Rows, clipped to the plot area.
    let drawn = 0;
    const matchSet = new Set(matches);
    tracks.forEach((track, i) => {
      const y = rowTop(i);
      ctx.fillStyle = i % 2 ? '#232428' : '#1e1f22';
      ctx.fillRect(LABEL_WIDTH, y, width - LABEL_WIDTH, ROW_HEIGHT);
      ctx.save();
      ctx.beginPath();
      ctx.rect(LABEL_WIDTH, y, width - LABEL_WIDTH, ROW_HEIGHT);
      ctx.clip();
      drawn += drawTrack(track, y, matchSet);
      ctx.restore();
      ctx.fillStyle = '#2b2d31';
      ctx.fillRect(0, y, LABEL_WIDTH, ROW_HEIGHT);
      ctx.fillStyle = '#dcdde0';
      ctx.fillText(track.label, 8, y + ROW_HEIGHT / 2, LABEL_WIDTH - 14);
    });
    api.drawn = drawn;
    api.flowsDrawn = drawFlows(width, height);
    api.ready = true;
  }

  /** Draws the flows that touch the visible range, over the tracks; returns how many. */
  function drawFlows(width, height) {
    ctx.save();
    ctx.beginPath();
    ctx.rect(LABEL_WIDTH, AXIS_HEIGHT, width - LABEL_WIDTH, height - AXIS_HEIGHT);
    ctx.clip();
    ctx.strokeStyle = FLOW_COLOUR;
    ctx.fillStyle = FLOW_COLOUR;
    ctx.lineWidth = 1.5;
    let count = 0;
    for (const flow of flows) {
      if (flow.start > view.end) break;
      if (flow.end < view.start) continue;
      const at = (p) => ({ x: xOf(p.ts), y: rowTop(p.track.index) + ROW_HEIGHT / 2 });
      for (let k = 1; k < flow.points.length; k++) {
        const a = at(flow.points[k - 1]);
        const b = at(flow.points[k]);
        ctx.beginPath();
        ctx.moveTo(a.x, a.y);
        ctx.lineTo(b.x, b.y);
        ctx.stroke();
        arrowhead(a, b);
      }
      count++;
    }
    ctx.restore();
    return count;
  }

  /** A small filled arrowhead at `b`, pointing away from `a`. */
  function arrowhead(a, b) {
    const angle = Math.atan2(b.y - a.y, b.x - a.x);
    const size = 6;
    ctx.beginPath();
    ctx.moveTo(b.x, b.y);
    ctx.lineTo(b.x - size * Math.cos(angle - 0.4), b.y - size * Math.sin(angle - 0.4));
    ctx.lineTo(b.x - size * Math.cos(angle + 0.4), b.y - size * Math.sin(angle + 0.4));
    ctx.closePath();
    ctx.fill();
  }

  /** The index of the first event of `list` with ts >= t. */
  function lowerBound(list, t) {
    let lo = 0;
    let hi = list.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (list[mid].ts < t) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  function drawTrack(track, y, matchSet) {
    const list = track.events;
    let count = 0;
    let lastPixel = { X: -1, i: -1 };
    for (let k = lowerBound(list, view.start - track.maxDur); k < list.length; k++) {
      const ev = list[k];
      if (ev.ts > view.end) break;
      if (ev.ts + ev.dur < view.start) continue;
      const x = xOf(ev.ts);
      const highlighted = ev === selected || matchSet.has(ev);
      if (ev.ph === 'X') {
        const w = Math.max(1, xOf(ev.ts + ev.dur) - x);
        // Many slices in one pixel column draw as one.
        if (w <= 1 && Math.floor(x) === lastPixel.X && !highlighted) continue;
        lastPixel.X = Math.floor(x);
        ctx.fillStyle = SLICE_COLOURS[ev.name] || OTHER_SLICE;
        ctx.fillRect(x, y + 5, w, ROW_HEIGHT - 12);
        if (w > 40) {
          ctx.fillStyle = '#111';
          ctx.fillText(ev.name, Math.max(x, LABEL_WIDTH) + 3, y + ROW_HEIGHT / 2 - 1, w - 6);
        }
        if (highlighted) outline(x, y + 5, w, ROW_HEIGHT - 12, ev === selected);
      } else {
        if (Math.floor(x) === lastPixel.i && !highlighted) continue;
        lastPixel.i = Math.floor(x);
        ctx.fillStyle = INSTANT_COLOURS[ev.cat] || OTHER_INSTANT;
        ctx.fillRect(x - 0.5, y + 2, 1.5, ROW_HEIGHT - 4);
        if (highlighted) outline(x - 3, y + 1, 6, ROW_HEIGHT - 2, ev === selected);
      }
      count++;
    }
    return count;
  }

  function outline(x, y, w, h, isSelected) {
    ctx.strokeStyle = isSelected ? '#ffffff' : '#5865f2';
    ctx.lineWidth = 2;
    ctx.strokeRect(x - 1, y - 1, w + 2, h + 2);
  }

  // ---- selection and details ----------------------------------------------------------------

  function describe(ev) {
    return {
      name: ev.name,
      track: ev.track.label,
      start: ev.ts,
      duration: ev.ph === 'X' ? ev.dur : null,
      args: ev.args,
    };
  }

  function hitTest(px, py) {
    const row = Math.floor((py - AXIS_HEIGHT) / ROW_HEIGHT);
    if (px < LABEL_WIDTH || row < 0 || row >= tracks.length) return null;
    const list = tracks[row].events;
    const slop = (HIT_SLOP_PX / plotWidth()) * (view.end - view.start);
    const t = timeAt(px);
    let best = null;
    let bestDistance = Infinity;
    for (let k = lowerBound(list, t - slop - tracks[row].maxDur); k < list.length; k++) {
      const ev = list[k];
      if (ev.ts > t + slop) break;
      if (ev.ph === 'i') {
        // Instants win over the slice under them when close enough.
        const d = Math.abs(ev.ts - t);
        if (d <= slop && d < bestDistance) { best = ev; bestDistance = d; }
      } else if (t >= ev.ts - slop && t <= ev.ts + ev.dur + slop && bestDistance === Infinity) {
        best = ev;
      }
    }
    return best;
  }

  function select(ev) {
    selected = ev;
    showDetails();
    redraw();
  }

  function row(table, label, value) {
    const tr = document.createElement('tr');
    const th = document.createElement('th');
    const td = document.createElement('td');
    th.textContent = label;
    td.textContent = value;
    tr.append(th, td);
    table.append(tr);
  }

  const us = (v) => `${Number(v.toFixed(3))} µs`;

  function showDetails() {
    details.replaceChildren();
    const table = document.createElement('table');
    const heading = document.createElement('h2');
    if (selected) {
      heading.textContent = selected.name;
      row(table, 'track', selected.track.label);
      row(table, 'start', us(selected.ts));
      if (selected.ph === 'X') row(table, 'duration', us(selected.dur));
      if (selected.cat) row(table, 'category', selected.cat);
      for (const [k, v] of Object.entries(selected.args)) {
        row(table, k, typeof v === 'object' ? JSON.stringify(v) : String(v));
      }
      details.append(heading, table);
    } else {
      heading.textContent = 'Trace';
      if (stats) {
        row(table, 'system', stats.system);
        row(table, 'duration', us(stats.duration_ns / 1e3));
        row(table, 'records', String(stats.records));
        row(table, 'lost', String(stats.lost));
      }
      row(table, 'tracks', String(tracks.length));
      row(table, 'events', String(events.length));
      const hint = document.createElement('p');
      hint.className = 'empty';
      hint.textContent = 'Click a slice or an instant to see its details.';
      details.append(heading, table, hint);
    }
  }

  // ---- search -------------------------------------------------------------------------------

  function updateMatches() {
    const needle = search.value.trim().toLowerCase();
    matches = needle ? events.filter((e) => e.name.toLowerCase().includes(needle)) : [];
    matchIndex = -1;
    matchesLabel.textContent = needle ? `${matches.length} matches` : '';
    redraw();
  }

  function nextMatch(backwards) {
    if (!matches.length) return;
    const n = matches.length;
    matchIndex = matchIndex < 0 ? (backwards ? n - 1 : 0) : (matchIndex + (backwards ? n - 1 : 1)) % n;
    const ev = matches[matchIndex];
    matchesLabel.textContent = `${matches.length} matches (${matchIndex + 1}/${n})`;
    select(ev);
    centreOn(ev);
  }

  search.addEventListener('input', updateMatches);
  search.addEventListener('keydown', (e) => {
    if (e.key === 'Enter') {
      e.preventDefault();
      nextMatch(e.shiftKey);
    } else if (e.key === 'Escape') {
      search.value = '';
      updateMatches();
      canvas.focus();
    }
  });

  // ---- mouse and keyboard -------------------------------------------------------------------

  canvas.addEventListener('wheel', (e) => {
    e.preventDefault();
    const rect = canvas.getBoundingClientRect();
    const x = Math.max(LABEL_WIDTH, e.clientX - rect.left);
    const delta = e.deltaMode === 1 ? e.deltaY * 16 : e.deltaY;
    zoom(Math.exp(delta * 0.002), x);
  }, { passive: false });

  let drag = null;
  canvas.addEventListener('mousedown', (e) => {
    if (e.button !== 0) return;
    canvas.focus();
    drag = { x: e.clientX, y: e.clientY, start: view.start, end: view.end, moved: false };
  });
  window.addEventListener('mousemove', (e) => {
    if (!drag) return;
    const dx = e.clientX - drag.x;
    if (Math.abs(dx) > CLICK_SLOP_PX || Math.abs(e.clientY - drag.y) > CLICK_SLOP_PX) {
      drag.moved = true;
      canvas.classList.add('dragging');
    }
    if (drag.moved) {
      const dt = (dx / plotWidth()) * (drag.end - drag.start);
      setView(drag.start - dt, drag.end - dt);
    }
  });
  window.addEventListener('mouseup', (e) => {
    if (!drag) return;
    if (!drag.moved) {
      const rect = canvas.getBoundingClientRect();
      select(hitTest(e.clientX - rect.left, e.clientY - rect.top));
    }
    drag = null;
    canvas.classList.remove('dragging');
  });

  window.addEventListener('keydown', (e) => {
    if (e.target === search || e.ctrlKey || e.metaKey || e.altKey) return;
    const span = view.end - view.start;
    const mid = LABEL_WIDTH + plotWidth() / 2;
    switch (e.key) {
      case 'ArrowLeft': pan(-span * 0.1); break;
      case 'ArrowRight': pan(span * 0.1); break;
      case '+': case '=': case 'ArrowUp': zoom(0.8, mid); break;
      case '-': case 'ArrowDown': zoom(1.25, mid); break;
      case '0': setView(full.start, full.end); break;
      case '/': search.focus(); break;
      case 'Escape': select(null); break;
      default: return;
    }
    e.preventDefault();
  });

  load();
})();
