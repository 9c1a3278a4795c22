// hv trace viewer: a timeline of one trace on a <canvas>. The page never holds the whole trace:
// it asks the server for what to draw in a time range (/api/range: exact slices and instants
// when few enough overlap it, else per-pixel-column summaries from the trace's index), keeps the
// last answer and draws the current view from it at once while the next one loads. Search,
// details and the interrupt-latency histograms are answered by the server too.
// Vanilla JavaScript, no build step, no network resources besides this server.
//
// window.hvTimeline exposes the state for tests: tracks (labels), events (items in the trace),
// visible ({start, end} in µs), drawn (items and columns drawn in the last frame), exactTracks
// and summaryTracks (how the last frame's tracks were drawn), flows (device-model requests in the
// trace) and flowsDrawn (drawn in the last frame), selected (the selected item or null), matches
// (search matches in the whole trace), settled (the data on screen is the answer for this view),
// frameMs (time of the last frame's drawing), ready (set after the first draw), and for a live
// view (hv trace view --live) live and following (the view scrolls with the arriving records
// until Freeze).
'use strict';

(function () {
  const LABEL_WIDTH = 170;
  const AXIS_HEIGHT = 28;
  const ROW_HEIGHT = 30;
  const MIN_SPAN_US = 0.01;
  const CLICK_SLOP_PX = 3;
  const HIT_SLOP_PX = 4;
  /** Range asked for: the view plus this fraction of its span on each side. */
  const MARGIN = 0.5;
  const SEARCH_DELAY_MS = 200;

  const SLICE_NAMES = ['guest', 'halted', 'stopped in debugger', 'outside schedule window', 'blocked on device'];
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
  const irqPanel = document.getElementById('irq');
  const LIVE_POLL_MS = 500;
  /** Span shown when a live view starts following (µs). */
  const LIVE_SPAN_US = 2e6;

  /** From /api/meta. */
  let meta = null;
  /** Tracks in display order: {label, index}. */
  let tracks = [];
  let full = { start: 0, end: 1 };
  let view = { start: 0, end: 1 };
  /** The last range answer: {from, to, px, q, tracks: [{exact, items | columns}]}. */
  let data = null;
  let inFlight = false;
  let fetchError = null;
  /** The selected item: {track, item} (item as the server gives it). */
  let selected = null;
  let needle = '';
  let total = 0;
  let frameRequested = false;
  let searchTimer = null;
  let following = false;

  const api = {
    ready: false,
    error: null,
    drawn: 0,
    exactTracks: 0,
    summaryTracks: 0,
    flowsDrawn: 0,
    frameMs: 0,
    requests: 0,
    get tracks() { return tracks.map((t) => t.label); },
    get events() { return meta ? meta.items : 0; },
    get visible() { return { start: view.start, end: view.end }; },
    get selected() { return selected && describe(selected); },
    get matches() { return total; },
    get flows() { return meta ? meta.flows : 0; },
    get settled() { return !inFlight && usable(data) && (data.q || '') === needle && !data.stale; },
    get live() { return Boolean(meta && meta.live); },
    get following() { return following; },
  };
  window.hvTimeline = api;

  // ---- loading ------------------------------------------------------------------------------

  async function getJson(url) {
    const response = await fetch(url);
    if (!response.ok) throw new Error(`GET ${url.split('?')[0]}: ${response.status} ${await response.text()}`);
    return response.json();
  }

  async function load() {
    try {
      meta = await getJson('api/meta');
    } catch (e) {
      api.error = String(e);
      status.textContent = `Cannot load the trace: ${e}`;
      return;
    }
    tracks = meta.tracks.map((t, i) => ({ label: t.label, index: i }));
    full = { start: 0, end: Math.max(meta.duration_us, MIN_SPAN_US) };
    view = { ...full };
    if (meta.live) startLive();
    document.title = `${meta.system} — hv trace viewer`;
    document.getElementById('title').textContent = meta.system;
    const legend = document.getElementById('legend');
    for (const [name, colour] of Object.entries(SLICE_COLOURS)) {
      const item = document.createElement('span');
      const swatch = document.createElement('i');
      swatch.style.background = colour;
      item.append(swatch, name);
      legend.append(item);
    }
    status.textContent = meta.items ? 'Loading…' : 'The trace has no slices or instants.';
    showDetails();
    resize();
    new ResizeObserver(resize).observe(canvas);
    getJson('api/irq').then(showIrq).catch((e) => { irqPanel.textContent = `IRQ latency: ${e}`; });
  }

  // ---- live ---------------------------------------------------------------------------------

  /** Follows a live trace: polls /api/meta, and while following shows its last span. */
  function startLive() {
    following = true;
    document.getElementById('live').hidden = false;
    const follow = document.getElementById('follow');
    const saved = document.getElementById('saved');
    follow.addEventListener('click', () => {
      following = !following;
      follow.textContent = following ? 'Freeze' : 'Follow';
      follow.classList.toggle('frozen', !following);
      if (following) tick();
    });
    document.getElementById('save').addEventListener('click', async () => {
      saved.textContent = 'saving…';
      try {
        const response = await fetch('api/save', { method: 'POST', headers: { 'X-Hv-Save': '1' } });
        if (!response.ok) throw new Error(await response.text());
        saved.textContent = `saved to ${(await response.json()).path}`;
      } catch (e) {
        saved.textContent = `cannot save: ${e}`;
      }
    });
    const tick = () => {
      getJson('api/meta').then((m) => {
        meta = m;
        if (meta.tracks.length !== tracks.length) {
          tracks = meta.tracks.map((t, i) => ({ label: t.label, index: i }));
          resize();
        }
        full = { start: 0, end: Math.max(meta.duration_us, MIN_SPAN_US) };
        if (!following) return;
        const span = Math.min(view.end - view.start, full.end);
        view = { start: Math.max(0, full.end - span), end: Math.max(span, full.end) };
        // New records may have landed in what is on hand.
        if (data) data.stale = true;
        if (!selected) showDetails();
        redraw();
      }).catch((e) => { status.textContent = `Lost the live trace: ${e}`; });
    };
    view = { start: Math.max(0, full.end - LIVE_SPAN_US), end: Math.max(full.end, MIN_SPAN_US) };
    setInterval(() => { if (following) tick(); }, LIVE_POLL_MS);
  }

  /** Whether `d` can draw the current view at its resolution. */
  function usable(d) {
    if (!d || d.stale) return false;
    const span = view.end - view.start;
    const viewRes = span / plotWidth();
    const dataRes = (d.to - d.from) / d.px;
    const from = Math.max(full.start, view.start);
    const to = Math.min(full.end, view.end);
    return d.from <= from + span * 1e-9 && d.to >= to - span * 1e-9 && dataRes <= viewRes * 1.5;
  }

  /** Asks for the current view's range when the data on hand does not fit it. */
  function refresh() {
    if (inFlight || !meta) return;
    if (usable(data) && (data.q || '') === needle) return;
    const span = view.end - view.start;
    const from = Math.max(full.start, view.start - span * MARGIN);
    const to = Math.min(full.end, view.end + span * MARGIN);
    const px = Math.max(1, Math.min(8192, Math.round(((to - from) / span) * plotWidth())));
    const q = needle;
    let url = `api/range?from=${from}&to=${to}&px=${px}`;
    if (q) url += `&q=${encodeURIComponent(q)}`;
    inFlight = true;
    api.requests++;
    getJson(url)
      .then((answer) => {
        answer.q = q;
        data = answer;
        fetchError = null;
        status.textContent = '';
      })
      .catch((e) => {
        fetchError = String(e);
        api.error = fetchError;
        status.textContent = `Cannot load the range: ${e}`;
      })
      .finally(() => {
        inFlight = false;
        redraw();
        if (!fetchError) refresh();
      });
  }

  // ---- geometry -----------------------------------------------------------------------------

  /** The plot's width, read from the layout on resize (reading it per call costs a layout). */
  let plotW = 1;
  const plotWidth = () => plotW;
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

  /** A live view stops following when the user moves the view. */
  function pauseFollowing() {
    if (following) document.getElementById('follow').click();
  }

  function zoom(factor, anchorX) {
    const t = timeAt(anchorX);
    setView(t - (t - view.start) * factor, t + (view.end - t) * factor);
  }

  function pan(dt) {
    setView(view.start + dt, view.end + dt);
  }

  function centreOn(item) {
    let span = view.end - view.start;
    const dur = item.d || 0;
    if (dur * 1.2 > span) span = dur * 1.5;
    const mid = item.s + dur / 2;
    setView(mid - span / 2, mid + span / 2);
  }

  // ---- drawing ------------------------------------------------------------------------------

  function redraw() {
    if (frameRequested) return;
    frameRequested = true;
    requestAnimationFrame(() => {
      frameRequested = false;
      const t0 = performance.now();
      draw();
      api.frameMs = performance.now() - t0;
      refresh();
    });
  }

  function resize() {
    plotW = Math.max(1, canvas.clientWidth - LABEL_WIDTH);
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
    let exact = 0;
    let summary = 0;
    const summarised = [];
    tracks.forEach((track, i) => {
      const y = rowTop(i);
      ctx.fillStyle = i % 2 ? '#232428' : '#1e1f22';
      ctx.fillRect(LABEL_WIDTH, y, width - LABEL_WIDTH, ROW_HEIGHT);
      ctx.save();
      ctx.beginPath();
      ctx.rect(LABEL_WIDTH, y, width - LABEL_WIDTH, ROW_HEIGHT);
      ctx.clip();
      const answer = data && data.tracks[i];
      if (answer && answer.exact) {
        drawn += drawItems(i, answer.items, y);
        exact++;
      } else if (answer) {
        summarised.push([i, answer.columns]);
        summary++;
      }
      ctx.restore();
    });
    drawn += drawSummaries(summarised);
    tracks.forEach((track, i) => {
      const y = rowTop(i);
      ctx.fillStyle = '#2b2d31';
      ctx.fillRect(0, y, LABEL_WIDTH, ROW_HEIGHT);
      ctx.fillStyle = '#dcdde0';
      ctx.fillText(track.label, 8, y + ROW_HEIGHT / 2, LABEL_WIDTH - 14);
    });
    api.drawn = drawn;
    api.exactTracks = exact;
    api.summaryTracks = summary;
    api.flowsDrawn = drawFlows(width, height);
    if (data) api.ready = true;
  }

  /** An RGBA colour ('#rrggbb') as a little-endian 32-bit pixel. */
  const pixel = (hex) => (0xff000000 | (parseInt(hex.slice(5, 7), 16) << 16)
    | (parseInt(hex.slice(3, 5), 16) << 8) | parseInt(hex.slice(1, 3), 16)) >>> 0;
  const SLICE_PIXELS = SLICE_NAMES.map((n) => pixel(SLICE_COLOURS[n]));
  const INSTANT_PIXEL = pixel(OTHER_INSTANT);
  const summaryCanvas = document.createElement('canvas');
  const summaryCtx = summaryCanvas.getContext('2d');

  /** Draws the summarised tracks (`rows`: [track index, columns]) as pixels: in each screen
   *  pixel column, each slice kind's share of it stacked, and a tick on top where instants are.
   *  Answer columns that fall in one screen pixel are averaged into it, so a frame costs the
   *  same whatever the answer's resolution. Returns how many answer columns were in view. */
  function drawSummaries(rows) {
    if (!rows.length) return 0;
    const width = Math.ceil(plotWidth());
    const height = tracks.length * ROW_HEIGHT;
    if (summaryCanvas.width !== width || summaryCanvas.height !== height) {
      summaryCanvas.width = width;
      summaryCanvas.height = height;
    }
    const image = summaryCtx.createImageData(width, height);
    const out = new Uint32Array(image.data.buffer);
    const cw = (data.to - data.from) / data.px;
    const h = ROW_HEIGHT - 12;
    const sums = new Float64Array(width * 7);
    let count = 0;
    for (const [i, columns] of rows) {
      sums.fill(0);
      for (const c of columns) {
        const t0 = data.from + c[0] * cw;
        if (t0 > view.end || t0 + cw < view.start) continue;
        // Rounded, not floored: neighbours share a boundary however it is computed.
        const a = Math.max(0, Math.round(xOf(t0) - LABEL_WIDTH));
        const b = Math.min(width, Math.max(a + 1, Math.round(xOf(t0 + cw) - LABEL_WIDTH)));
        for (let x = a; x < b; x++) {
          const o = x * 7;
          for (let k = 0; k < 5; k++) sums[o + k] += c[3 + k];
          sums[o + 5] += c[2];
          sums[o + 6] += 1;
        }
        count++;
      }
      const top = i * ROW_HEIGHT;
      for (let x = 0; x < width; x++) {
        const o = x * 7;
        const n = sums[o + 6];
        if (!n) continue;
        let bottom = top + 5 + h;
        for (let k = 0; k < 5; k++) {
          const p = sums[o + k] / n;
          if (p < 0.5) continue;
          const bar = Math.max(1, Math.round((h * p) / 1000));
          for (let yy = bottom - bar; yy < bottom; yy++) out[yy * width + x] = SLICE_PIXELS[k];
          bottom -= bar;
        }
        if (sums[o + 5] > 0) {
          for (let yy = top + 1; yy < top + 4; yy++) out[yy * width + x] = INSTANT_PIXEL;
        }
      }
    }
    summaryCtx.putImageData(image, 0, 0);
    ctx.drawImage(summaryCanvas, LABEL_WIDTH, AXIS_HEIGHT, width, height);
    return count;
  }

  function isSelected(track, item) {
    return selected && selected.track === track && selected.item.k === item.k;
  }

  function drawItems(track, items, y) {
    let count = 0;
    const lastPixel = { X: -1, i: -1 };
    for (const ev of items) {
      if (ev.s > view.end) break;
      const dur = ev.d || 0;
      if (ev.s + dur < view.start) continue;
      const x = xOf(ev.s);
      const chosen = isSelected(track, ev);
      const highlighted = chosen || ev.m;
      if (ev.d !== undefined) {
        const w = Math.max(1, xOf(ev.s + dur) - x);
        // Many slices in one pixel column draw as one.
        if (w <= 1 && Math.floor(x) === lastPixel.X && !highlighted) continue;
        lastPixel.X = Math.floor(x);
        ctx.fillStyle = SLICE_COLOURS[ev.n] || OTHER_SLICE;
        ctx.fillRect(x, y + 5, w, ROW_HEIGHT - 12);
        if (w > 40) {
          ctx.fillStyle = '#111';
          ctx.fillText(ev.n, Math.max(x, LABEL_WIDTH) + 3, y + ROW_HEIGHT / 2 - 1, w - 6);
        }
        if (highlighted) outline(x, y + 5, w, ROW_HEIGHT - 12, chosen);
      } else {
        if (Math.floor(x) === lastPixel.i && !highlighted) continue;
        lastPixel.i = Math.floor(x);
        ctx.fillStyle = INSTANT_COLOURS[ev.c] || OTHER_INSTANT;
        ctx.fillRect(x - 0.5, y + 2, 1.5, ROW_HEIGHT - 4);
        if (highlighted) outline(x - 3, y + 1, 6, ROW_HEIGHT - 2, chosen);
      }
      count++;
    }
    return count;
  }

  function outline(x, y, w, h, isChosen) {
    ctx.strokeStyle = isChosen ? '#ffffff' : '#5865f2';
    ctx.lineWidth = 2;
    ctx.strokeRect(x - 1, y - 1, w + 2, h + 2);
  }

  /** Draws the device-request flows among the exact items on hand; returns how many touch the
   *  view. A blocked slice is the request (its start) and the reply (its end); the model's
   *  take and answer instants are the steps between. */
  function drawFlows(width, height) {
    if (!data) return 0;
    const byId = new Map();
    data.tracks.forEach((answer, track) => {
      if (!answer.exact) return;
      for (const ev of answer.items) {
        if (ev.f === undefined) continue;
        if (!byId.has(ev.f)) byId.set(ev.f, []);
        const points = byId.get(ev.f);
        points.push({ ts: ev.s, track });
        if (ev.d !== undefined) points.push({ ts: ev.s + ev.d, track });
      }
    });
    ctx.save();
    ctx.beginPath();
    ctx.rect(LABEL_WIDTH, AXIS_HEIGHT, width - LABEL_WIDTH, height - AXIS_HEIGHT);
    ctx.clip();
    ctx.strokeStyle = FLOW_COLOUR;
    ctx.fillStyle = FLOW_COLOUR;
    ctx.lineWidth = 1.5;
    let count = 0;
    for (const points of byId.values()) {
      if (points.length < 2) continue;
      points.sort((a, b) => a.ts - b.ts);
      if (points[0].ts > view.end || points[points.length - 1].ts < view.start) continue;
      const at = (p) => ({ x: xOf(p.ts), y: rowTop(p.track) + ROW_HEIGHT / 2 });
      for (let k = 1; k < points.length; k++) {
        const a = at(points[k - 1]);
        const b = at(points[k]);
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

  // ---- selection and details ----------------------------------------------------------------

  function describe(sel) {
    const ev = sel.item;
    return {
      name: ev.n,
      track: tracks[sel.track].label,
      start: ev.s,
      duration: ev.d === undefined ? null : ev.d,
      args: ev.a,
    };
  }

  /** The item under (px, py) among the exact items on hand, or a column summary. */
  function hitTest(px, py) {
    const row = Math.floor((py - AXIS_HEIGHT) / ROW_HEIGHT);
    if (px < LABEL_WIDTH || row < 0 || row >= tracks.length || !data) return null;
    const answer = data.tracks[row];
    const slop = (HIT_SLOP_PX / plotWidth()) * (view.end - view.start);
    const t = timeAt(px);
    if (!answer.exact) {
      const cw = (data.to - data.from) / data.px;
      const column = answer.columns.find((c) => t >= data.from + c[0] * cw - slop && t <= data.from + (c[0] + 1) * cw + slop);
      return column ? { track: row, column, from: data.from + column[0] * cw, width: cw } : null;
    }
    let best = null;
    let bestDistance = Infinity;
    for (const ev of answer.items) {
      const dur = ev.d || 0;
      if (ev.s > t + slop) break;
      if (ev.d === undefined) {
        // Instants win over the slice under them when close enough.
        const d = Math.abs(ev.s - t);
        if (d <= slop && d < bestDistance) { best = ev; bestDistance = d; }
      } else if (t >= ev.s - slop && t <= ev.s + dur + slop && bestDistance === Infinity) {
        best = ev;
      }
    }
    return best ? { track: row, item: best } : null;
  }

  function select(hit) {
    if (hit && hit.column) {
      selected = null;
      showColumn(hit);
    } else {
      selected = hit;
      showDetails();
      // A range's items come without their details: ask for them.
      if (hit && !hit.item.a) {
        getJson(`api/item?track=${hit.track}&k=${hit.item.k}`)
          .then((full) => {
            if (selected !== hit) return;
            selected = { track: hit.track, item: { ...hit.item, a: full.a } };
            showDetails();
          })
          .catch((e) => { status.textContent = `Cannot load the details: ${e}`; });
      }
    }
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
    return td;
  }

  const us = (v) => `${Number(v.toFixed(3))} µs`;

  function showColumn(hit) {
    details.replaceChildren();
    const heading = document.createElement('h2');
    heading.textContent = `${hit.column[1]} items`;
    const table = document.createElement('table');
    row(table, 'track', tracks[hit.track].label);
    row(table, 'from', us(hit.from));
    row(table, 'width', us(hit.width));
    row(table, 'instants', String(hit.column[2]));
    SLICE_NAMES.forEach((name, k) => {
      if (hit.column[3 + k]) row(table, name, `${hit.column[3 + k] / 10}%`);
    });
    const hint = document.createElement('p');
    hint.className = 'empty';
    hint.textContent = 'A summary of one pixel column: zoom in to see its slices and instants.';
    details.append(heading, table, hint);
  }

  function showDetails() {
    details.replaceChildren();
    const table = document.createElement('table');
    const heading = document.createElement('h2');
    if (selected) {
      const ev = selected.item;
      heading.textContent = ev.n;
      row(table, 'track', tracks[selected.track].label);
      row(table, 'start', us(ev.s));
      if (ev.d !== undefined) row(table, 'duration', us(ev.d));
      if (ev.c) row(table, 'category', ev.c);
      for (const [k, v] of Object.entries(ev.a || {})) {
        row(table, k, typeof v === 'object' ? JSON.stringify(v) : String(v));
      }
      details.append(heading, table);
      if (ev.a && ev.a.rip && ev.a.rip !== '0x0') showSource(selected, table);
    } else {
      heading.textContent = 'Trace';
      if (meta) {
        row(table, 'system', meta.system);
        row(table, 'duration', us(meta.duration_us));
        row(table, 'records', String(meta.records));
        row(table, 'lost', String(meta.lost));
        row(table, 'tracks', String(tracks.length));
        row(table, 'events', String(meta.items));
      }
      const hint = document.createElement('p');
      hint.className = 'empty';
      hint.textContent = 'Click a slice or an instant to see its details.';
      details.append(heading, table, hint);
    }
  }

  /** Adds the source line of a slice's guest rip (from the partition's ELF and DWARF, asked of
   *  the server) to the details; embedded in a page that listens (the VS Code webview), a button
   *  asks it to open the line: postMessage {type: 'hv-open-source', file, line}. */
  function showSource(sel, table) {
    const partition = meta.tracks[sel.track].partition;
    const cell = row(table, 'source', '…');
    cell.id = 'source';
    getJson(`api/source?partition=${partition}&rip=${encodeURIComponent(sel.item.a.rip)}`)
      .then((src) => {
        if (selected !== sel && (!selected || selected.item.k !== sel.item.k)) return;
        if (src.error) {
          cell.textContent = src.error;
          return;
        }
        cell.textContent = `${src.file}:${src.line}${src.function ? ` (${src.function})` : ''}`;
        api.source = src;
        if (window.parent !== window) {
          const open = document.createElement('button');
          open.id = 'open-source';
          open.textContent = 'Open in editor';
          open.addEventListener('click', () => {
            window.parent.postMessage({ type: 'hv-open-source', file: src.file, line: src.line }, '*');
          });
          details.append(open);
        }
      })
      .catch((e) => { cell.textContent = String(e); });
  }

  // ---- interrupt latency --------------------------------------------------------------------

  function formatNs(ns) {
    if (ns >= 1e9) return `${Number((ns / 1e9).toPrecision(3))} s`;
    if (ns >= 1e6) return `${Number((ns / 1e6).toPrecision(3))} ms`;
    if (ns >= 1e3) return `${Number((ns / 1e3).toPrecision(3))} µs`;
    return `${ns} ns`;
  }

  function showIrq(partitions) {
    irqPanel.replaceChildren();
    const heading = document.createElement('h2');
    heading.textContent = 'Interrupt latency';
    irqPanel.append(heading);
    if (!partitions.length) {
      const p = document.createElement('p');
      p.className = 'empty';
      p.textContent = 'No interrupts in this trace.';
      irqPanel.append(p);
      return;
    }
    for (const part of partitions) {
      for (const [what, h] of [['raise → inject', part.raise_to_inject], ['inject → EOI', part.inject_to_eoi]]) {
        if (!h.count) continue;
        const box = document.createElement('div');
        box.className = 'histogram';
        box.dataset.partition = part.name;
        const title = document.createElement('h3');
        title.textContent = `${part.name}: ${what}`;
        const summary = document.createElement('p');
        summary.textContent = `${h.count} · min ${formatNs(h.min_ns)} · mean ${formatNs(Math.round(h.sum_ns / h.count))} · max ${formatNs(h.max_ns)}`;
        box.append(title, summary);
        const most = Math.max(...h.counts);
        h.counts.forEach((n, k) => {
          if (!n) return;
          const line = document.createElement('div');
          line.className = 'bar';
          const label = document.createElement('span');
          label.textContent = `≥ ${formatNs(2 ** k)}`;
          const bar = document.createElement('i');
          bar.style.width = `${Math.max(1, (100 * n) / most)}%`;
          const count = document.createElement('b');
          count.textContent = String(n);
          line.append(label, bar, count);
          box.append(line);
        });
        irqPanel.append(box);
      }
    }
  }

  // ---- search -------------------------------------------------------------------------------

  function updateMatches() {
    needle = search.value.trim().toLowerCase();
    clearTimeout(searchTimer);
    if (!needle) {
      total = 0;
      matchesLabel.textContent = '';
      redraw();
      return;
    }
    const asked = needle;
    searchTimer = setTimeout(() => {
      getJson(`api/search?q=${encodeURIComponent(asked)}&after=${-Infinity}`)
        .then((answer) => {
          if (asked !== needle) return;
          total = answer.total;
          matchesLabel.textContent = `${total} matches`;
        })
        .catch((e) => { matchesLabel.textContent = String(e); });
      redraw();
    }, SEARCH_DELAY_MS);
  }

  async function nextMatch(backwards) {
    if (!needle) return;
    const from = selected && selected.item.m ? selected.item.s : (backwards ? Infinity : -Infinity);
    const dir = backwards ? 'prev' : 'next';
    let answer;
    try {
      answer = await getJson(`api/search?q=${encodeURIComponent(needle)}&after=${from}&dir=${dir}`);
    } catch (e) {
      matchesLabel.textContent = String(e);
      return;
    }
    total = answer.total;
    if (!answer.match) {
      matchesLabel.textContent = `${total} matches (no ${backwards ? 'earlier' : 'later'} one)`;
      return;
    }
    matchesLabel.textContent = `${total} matches`;
    select({ track: answer.match.track, item: answer.match.item });
    centreOn(answer.match.item);
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
    pauseFollowing();
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
      pauseFollowing();
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

  /** For tests and embedders: shows `start`..`end` (µs). */
  api.show = (start, end) => setView(start, end);
  /** For tests: the exact items on hand of track `i` that are in view ({s, d, n}), or null when
   *  the track is summarised. */
  api.onScreen = (i) => {
    const answer = data && data.tracks[i];
    if (!answer || !answer.exact) return null;
    return answer.items
      .filter((ev) => ev.s <= view.end && ev.s + (ev.d || 0) >= view.start)
      .map((ev) => ({ s: ev.s, d: ev.d, n: ev.n }));
  };
  /** For benchmarks: draws the current view now; the time it took (ms). */
  api.drawNow = () => {
    const t0 = performance.now();
    draw();
    return performance.now() - t0;
  };
  /** For tests: the x of time `t` (µs) in the canvas. */
  api.xOf = (t) => xOf(t);

  load();
})();
