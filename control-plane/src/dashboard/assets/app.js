// The Weft dashboard: polls /api/mesh and draws it. Every name from the mesh goes
// into the page as text (textContent, attributes), never as markup.
'use strict';

const SVG = 'http://www.w3.org/2000/svg';
const REFRESH_MS = 2000;
const NODE_W = 170, NODE_H = 46, COL_W = 360, ROW_H = 80, PAD = 24, TOP = 64;

function el(ns, tag, attrs, text) {
  const e = ns ? document.createElementNS(ns, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

const fmt = {
  rps: (v) => (v >= 10 ? v.toFixed(0) : v >= 0.1 || v === 0 ? v.toFixed(1) : v.toFixed(2)) + ' rps',
  pct: (v) => (v * 100).toFixed(v >= 0.9995 ? 0 : 1) + ' %',
  ms: (v) => (v >= 10 ? v.toFixed(0) : v.toFixed(1)) + ' ms',
};

// Columns by call depth over the calls the mesh lets through (edges that got an answer
// other than 4xx): a service sits one column right of its furthest caller. Services are
// ranked first (more calls out than in goes left), and a call against that rank closes a
// cycle and places nothing.
function layout(nodes, edges) {
  const services = [...new Set(nodes.map((n) => n.service))].sort();
  const serviceOf = Object.fromEntries(nodes.map((n) => [n.id, n.service]));
  const calls = edges
    .filter((e) => e.answered && serviceOf[e.source] !== serviceOf[e.destination])
    .map((e) => [serviceOf[e.source], serviceOf[e.destination]]);
  const pairs = [...new Set(calls.map((c) => c.join('\n')))].map((p) => p.split('\n'));
  const balance = Object.fromEntries(services.map((s) => [s, 0]));
  for (const [s, d] of pairs) { balance[s]++; balance[d]--; }
  const rank = Object.fromEntries([...services].sort((a, b) => balance[b] - balance[a] || a.localeCompare(b)).map((s, i) => [s, i]));
  const depth = Object.fromEntries(services.map((s) => [s, 0]));
  for (let i = 0; i < services.length; i++) {
    for (const [s, d] of pairs) {
      if (rank[s] < rank[d] && depth[d] < depth[s] + 1) depth[d] = depth[s] + 1;
    }
  }
  const rows = {};
  const pos = {};
  const order = [...nodes].sort((a, b) => rank[a.service] - rank[b.service] || a.version.localeCompare(b.version));
  for (const n of order) {
    const col = depth[n.service];
    const row = rows[col] = (rows[col] || 0) + 1;
    pos[n.id] = { x: PAD + col * COL_W, y: TOP + (row - 1) * ROW_H };
  }
  // Room to the right for bows within the last column, and below for backward edges.
  const width = PAD * 2 + Math.max(0, ...Object.values(depth)) * COL_W + NODE_W + 150;
  const height = TOP + PAD + Math.max(1, ...Object.values(rows)) * ROW_H + 70;
  return { pos, width, height };
}

function lock(x, y) {
  const g = el(SVG, 'g', { class: 'lock', transform: `translate(${x},${y})`, 'data-lock': 'true' });
  g.append(el(SVG, 'path', { d: 'M3 6V4a3 3 0 0 1 6 0v2' }), el(SVG, 'rect', { x: 1, y: 6, width: 10, height: 7, rx: 1.5 }));
  g.append(el(SVG, 'title', {}, 'mutual TLS: every request on this edge'));
  return g;
}

function drawGraph(mesh) {
  const svg = document.getElementById('graph');
  const { pos, width, height } = layout(mesh.nodes, mesh.edges);
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  svg.style.height = Math.max(300, height) + 'px';
  svg.replaceChildren();
  const byId = Object.fromEntries(mesh.nodes.map((n) => [n.id, n]));
  mesh.edges.forEach((e, i) => {
    const a = pos[e.source], b = pos[e.destination];
    if (!a || !b) return;
    const src = byId[e.source], dst = byId[e.destination];
    const denied = e.denied_rps > 0;
    const errors = !denied && e.error_rps > 0;
    const idle = !denied && e.rps === 0;
    const refused = !denied && !e.answered;
    const g = el(SVG, 'g', {
      class: 'edge' + (denied ? ' denied' : errors ? ' errors' : '') + (idle ? ' idle' : '') + (refused ? ' refused' : ''),
      'data-edge': `${src.service} → ${dst.service}`,
      'data-source': src.service, 'data-source-version': src.version,
      'data-destination': dst.service, 'data-destination-version': dst.version,
      'data-mtls': String(e.mtls), 'data-denied': String(denied), 'data-rps': e.rps.toFixed(3),
    });
    // Left to right between columns; within a column, a bow out to the right; backwards, under the graph.
    let d, lx, ly;
    if (b.x - a.x > COL_W) {
      // Over a column: above the graph, not behind the nodes in between.
      const [x1, y1, x2, y2] = [a.x + NODE_W / 2, a.y, b.x + NODE_W / 2, b.y];
      const top = TOP - 34 - (i % 3) * 6;
      d = `M${x1},${y1} C${x1},${top} ${x2},${top} ${x2},${y2}`;
      [lx, ly] = [(x1 + x2) / 2, (y1 + 3 * top) / 4 - 4];
    } else if (b.x > a.x) {
      const [x1, y1, x2, y2] = [a.x + NODE_W, a.y + NODE_H / 2, b.x, b.y + NODE_H / 2];
      d = `M${x1},${y1} C${x1 + 80},${y1} ${x2 - 80},${y2} ${x2},${y2}`;
      [lx, ly] = [(x1 + x2) / 2, (y1 + y2) / 2 - 5];
    } else if (b.x === a.x) {
      const bow = 70 + (i % 3) * 14;
      const [x, y1, y2] = [a.x + NODE_W, a.y + NODE_H / 2 + 6, b.y + NODE_H / 2 + 6];
      d = `M${x},${y1} C${x + bow},${y1} ${x + bow},${y2} ${x},${y2}`;
      [lx, ly] = [x + bow * 0.75 + 4, (y1 + y2) / 2];
    } else {
      const drop = 60 + (i % 4) * 10;
      const [x1, y1, x2, y2] = [a.x + NODE_W / 2, a.y + NODE_H, b.x + NODE_W / 2, b.y + NODE_H];
      const low = Math.max(y1, y2) + drop;
      d = `M${x1},${y1} C${x1},${low} ${x2},${low} ${x2},${y2}`;
      [lx, ly] = [(x1 + x2) / 2, low - 18];
    }
    g.append(el(SVG, 'path', { d, 'marker-end': 'url(#arrow)' }));
    const parts = [fmt.rps(e.rps)];
    if (denied) {
      parts.push('denied ' + fmt.rps(e.denied_rps));
    } else {
      if (e.success !== null) parts.push(fmt.pct(e.success));
      if (e.p99_ms !== null) parts.push('p99 ' + fmt.ms(e.p99_ms));
      if (errors) parts.push('4xx/5xx ' + fmt.rps(e.error_rps));
    }
    const anchor = b.x === a.x ? 'start' : 'middle';
    if (!idle) g.append(el(SVG, 'text', { x: lx, y: ly, 'text-anchor': anchor }, parts.join(' · ')));
    if (e.mtls) g.append(lock(anchor === 'start' ? lx : lx - 6, idle ? ly - 6 : ly + 4));
    const why = refused ? ' (only refused so far)' : idle ? ' (no requests in the last minute)' : '';
    g.append(el(SVG, 'title', {}, `${src.service} ${src.version} → ${dst.service} ${dst.version}${why}`));
    g.addEventListener('click', () => explainEdge(src.service, dst.service));
    svg.append(g);
  });
  const defs = el(SVG, 'defs');
  const marker = el(SVG, 'marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto' });
  marker.append(el(SVG, 'path', { d: 'M0,0 L10,5 L0,10 z', fill: '#8aa0bf' }));
  defs.append(marker);
  svg.prepend(defs);
  for (const n of mesh.nodes) {
    const p = pos[n.id];
    const g = el(SVG, 'g', { class: 'node', transform: `translate(${p.x},${p.y})`, 'data-node': n.service, 'data-version': n.version });
    g.append(el(SVG, 'rect', { width: NODE_W, height: NODE_H, rx: 6 }));
    g.append(el(SVG, 'text', { x: 10, y: 19 }, n.service));
    const inst = n.instances === 1 ? '1 instance' : `${n.instances} instances`;
    g.append(el(SVG, 'text', { x: 10, y: 36, class: 'version' }, `${n.version} · ${inst}`));
    svg.append(g);
  }
}

function drawSplits(mesh) {
  const box = document.getElementById('splits');
  if (!mesh.splits.length) {
    box.replaceChildren(el(null, 'p', { class: 'empty' }, 'no service is called on more than one version'));
    return;
  }
  box.replaceChildren(...mesh.splits.map((s) => {
    const d = el(null, 'div', { class: 'split', 'data-split': s.service });
    d.append(el(null, 'div', {}, s.service));
    const bar = el(null, 'div', { class: 'bar' });
    for (const v of s.versions) {
      const span = el(null, 'span', { 'data-version': v.version, 'data-percent': v.percent.toFixed(1) },
        `${v.version} ${v.percent.toFixed(1)} %`);
      span.style.width = Math.max(v.percent, 0.5) + '%';
      bar.append(span);
    }
    d.append(bar);
    d.append(el(null, 'div', { class: 'shares' }, s.versions.map((v) => `${v.version} ${v.percent.toFixed(1)} % (${fmt.rps(v.rps)})`).join(' · ')));
    return d;
  }));
}

function drawEjections(mesh) {
  const box = document.getElementById('ejections');
  if (!mesh.ejections.length) {
    box.replaceChildren(el(null, 'p', { class: 'empty' }, 'none'));
    return;
  }
  box.replaceChildren(...mesh.ejections.map((e) =>
    el(null, 'p', { 'data-ejection': e.cluster }, `${e.sidecar}: ${e.endpoints} endpoint(s) of ${e.cluster}`)));
}

function expiresIn(unix) {
  if (unix === null || unix === undefined) return '-';
  const s = unix - Date.now() / 1000;
  if (s <= 0) return 'expired';
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return h ? `in ${h} h ${m} min` : `in ${m} min`;
}

function drawSidecars(mesh) {
  const body = document.querySelector('#sidecars tbody');
  const rows = [...mesh.sidecars].sort((a, b) => a.workload.localeCompare(b.workload) || a.instance.localeCompare(b.instance));
  body.replaceChildren(...rows.map((s) => {
    const tr = el(null, 'tr', { 'data-sidecar': s.instance, 'data-acked': String(s.acked !== null && s.acked === s.sent) });
    tr.append(el(null, 'td', {}, `${s.namespace}/${s.workload}`), el(null, 'td', {}, s.instance),
      el(null, 'td', {}, s.sent ?? '-'), el(null, 'td', {}, s.acked ?? '-'),
      el(null, 'td', { class: s.nack ? 'nack' : '' }, s.nack ?? '-'), el(null, 'td', {}, String(s.warnings)),
      el(null, 'td', {}, expiresIn(s.cert_expires)), el(null, 'td', {}, s.control_plane));
    return tr;
  }));
}

function fillChoices(mesh) {
  const services = [...new Set(mesh.nodes.filter((n) => n.instances > 0).map((n) => n.service))].sort();
  for (const name of ['source', 'service']) {
    const select = document.querySelector(`#explain select[name=${name}]`);
    const current = select.value;
    if ([...select.options].map((o) => o.value).join() === services.join()) continue;
    select.replaceChildren(...services.map((s) => el(null, 'option', { value: s }, s)));
    if (services.includes(current)) select.value = current;
  }
}

async function explain(params) {
  const out = document.getElementById('explanation');
  out.textContent = 'explaining…';
  let r, j;
  try {
    r = await fetch('/api/explain?' + new URLSearchParams(params), { cache: 'no-store' });
    if (!r.ok) { out.textContent = await r.text(); return; }
    j = await r.json();
  } catch (e) {
    out.textContent = 'cannot reach the control plane: ' + e;
    return;
  }
  out.textContent = `${params.source} (${j.caller}) → ${params.method} ${params.service}${params.path}\n\n${j.text}`;
  out.dataset.explained = `${params.source} → ${params.service}`;
}

function explainEdge(source, service) {
  const form = document.getElementById('explain');
  form.source.value = source;
  form.service.value = service;
  explain({ source, service, method: form.method.value, path: form.path.value });
}

let first = true;
async function refresh() {
  const status = document.getElementById('status');
  try {
    const r = await fetch('/api/mesh', { cache: 'no-store' });
    const mesh = await r.json();
    drawGraph(mesh);
    drawSplits(mesh);
    drawEjections(mesh);
    drawSidecars(mesh);
    fillChoices(mesh);
    document.getElementById('problems').replaceChildren(...mesh.problems.map((p) => el(null, 'li', {}, p)));
    status.textContent = `revision ${mesh.revision} · ${mesh.sidecars.length} sidecars · updated ${new Date().toLocaleTimeString()}`;
    if (first) {
      first = false;
      // When the page first showed data (the browser test reads it).
      document.body.dataset.firstRenderMs = performance.now().toFixed(0);
    }
    document.body.dataset.refreshed = String(Date.now());
  } catch (e) {
    status.textContent = 'cannot reach the control plane: ' + e;
  }
}

document.addEventListener('DOMContentLoaded', () => {
  document.getElementById('explain').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const f = ev.target;
    explain({ source: f.source.value, service: f.service.value, method: f.method.value, path: f.path.value });
  });
  refresh();
  setInterval(refresh, REFRESH_MS);
});
