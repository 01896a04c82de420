// The Sluice dashboard. One page, five views chosen by the URL's hash
// (#/nodes, #/functions, #/functions/NAME, #/events, #/cluster), each drawn
// from the coordinator's JSON API (the routes the CLI reads) and redrawn
// every few seconds. The token is kept in this tab's sessionStorage and sent
// as `Authorization: Bearer`; without one, or when the API refuses it, the
// page asks for another. DOM nodes are built, never parsed from strings, and
// charts are SVG drawn by `lineChart` below.
"use strict";

const TOKEN_KEY = "sluice-token";
const REFRESH_MS = 3000;
const SVG = "http://www.w3.org/2000/svg";

/// An answer of the API other than 2xx, with its JSON error if it had one.
class ApiError extends Error {
  constructor(status, body) {
    const e = body && body.error;
    super(e && e.message ? e.message : "HTTP " + status);
    this.status = status;
  }
}

async function api(path) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const resp = await fetch(path, { headers: { Authorization: "Bearer " + token }, cache: "no-store" });
  let body = null;
  try {
    body = await resp.json();
  } catch (_) {
    // Not JSON: the status alone says what happened.
  }
  if (!resp.ok) throw new ApiError(resp.status, body);
  return body;
}

// --- small DOM helpers -------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) node.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c !== undefined && c !== null) node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : String(c));
  return node;
}

/// A table: `columns` are [title, numeric?]; rows are arrays of cells (text or nodes).
function table(id, columns, rows) {
  const head = el("tr", {}, columns.map(([t, num]) => el("th", { class: num ? "num" : null }, t)));
  const body = rows.map((r) => el("tr", {}, r.map((cell, i) => el("td", { class: columns[i][1] ? "num" : null }, cell))));
  return el("table", { id }, el("thead", {}, head), el("tbody", {}, body));
}

function fixed(v, digits, unit) {
  return typeof v === "number" ? v.toFixed(digits) + (unit || "") : "-";
}

function clock(ms) {
  return new Date(ms).toLocaleTimeString([], { hour12: false });
}

/// A span of time in words: "7.5 min", "12 h".
function ago(ms) {
  const min = ms / 60000;
  return min < 90 ? `${+min.toFixed(1)} min` : `${+(min / 60).toFixed(1)} h`;
}

// --- views --------------------------------------------------------------------

async function nodesView() {
  const nodes = await api("/v1/nodes");
  const figures = await Promise.all(nodes.map((n) => api(`/v1/metrics/nodes/${encodeURIComponent(n.id)}?range=10s`)));
  const last = (f, metric) => (f.series.find((s) => s.metric === metric) || {}).last;
  const rows = nodes.map((n, i) => [
    n.id,
    n.state,
    fixed(last(figures[i], "cpu_percent"), 0, "%"),
    fixed(last(figures[i], "memory_used_percent"), 0, "%"),
    String(n.instances),
    `${n.reserved.cpu_millis} / ${n.capacity.cpu_millis}`,
    `${n.reserved.memory_mb} / ${n.capacity.memory_mb}`,
    Object.entries(n.labels || {}).map(([k, v]) => `${k}=${v}`).join(" "),
  ]);
  return [
    el("h2", {}, "Nodes"),
    nodes.length ? table("nodes", [["Node"], ["State"], ["CPU", 1], ["Memory", 1], ["Instances", 1], ["CPU millis reserved", 1], ["Memory MB reserved", 1], ["Labels"]], rows)
      : el("p", { class: "muted" }, "No node has reported yet: start an agent (`sluice agent`) or `sluice up`."),
  ];
}

async function functionsView() {
  const functions = await api("/v1/functions");
  const figures = await Promise.all(functions.map((f) => api(`/v1/metrics/functions/${encodeURIComponent(f.spec.name)}?range=10s`)));
  const rows = functions.map((f, i) => {
    const x = figures[i].combined;
    const n = (s) => f.instances[s] || 0;
    const p95 = typeof x.latency_p95_seconds_max === "number" ? x.latency_p95_seconds_max * 1000 : null;
    return [
      el("a", { href: `#/functions/${encodeURIComponent(f.spec.name)}` }, f.spec.name),
      String(n("ready")),
      String(n("paused")),
      String(n("pending") + n("starting")),
      fixed(x.requests_per_sec, 1),
      fixed(p95, 1, " ms"),
      String(f.cold_starts),
      fixed(x.errors_5xx_per_sec, 1),
      String(f.requests),
    ];
  });
  return [
    el("h2", {}, "Functions"),
    el("p", { class: "muted" }, "Rates and latency over the last 10 seconds; cold starts and requests since the gateways started."),
    functions.length ? table("functions", [["Function"], ["Ready", 1], ["Paused", 1], ["Starting", 1], ["Requests/s", 1], ["p95", 1], ["Cold starts", 1], ["5xx/s", 1], ["Requests", 1]], rows)
      : el("p", { class: "muted" }, "No function is deployed: `sluice deploy NAME --image IMAGE`."),
  ];
}

async function functionView(name) {
  const path = encodeURIComponent(name);
  const [one, short, day, events] = await Promise.all([
    api(`/v1/functions/${path}`),
    api(`/v1/metrics/functions/${path}/timeline?range=15m`),
    api(`/v1/metrics/functions/${path}/timeline?range=24h`),
    api(`/v1/events?function=${path}&limit=200`),
  ]);
  const f = one.function;
  const fired = events.filter((e) => e.reason.kind === "rule_fired").map((e) => ({ at: e.at, label: e.why }));
  const range = (view, title, id) => {
    const to = Date.now();
    const from = to - view.range_secs * 1000;
    const counts = (key) => view.instances.map((p) => [p.at, p[key]]);
    const demand = (key) => view.demand.map((p) => [p.at, p[key]]);
    return el("section", { id },
      el("h3", {}, title),
      el("div", { class: "charts" },
        chartFigure(`${id}-instances`, "Instances", from, to, fired, [
          { name: "ready", cls: "s-ready", points: counts("ready") },
          { name: "desired", cls: "s-desired", points: counts("desired") },
          { name: "predicted (keep-warm)", cls: "s-predicted", points: counts("predicted") },
        ]),
        chartFigure(`${id}-demand`, "Demand", from, to, fired, [
          { name: "requests/s", cls: "s-requests", points: demand("requests_per_sec") },
          { name: "concurrency", cls: "s-concurrency", points: demand("concurrency") },
        ])));
  };
  const latest = events.slice(-15).reverse();
  return [
    el("h2", {}, `Function ${f.spec.name}`),
    el("p", { id: "function-summary" },
      `image ${f.spec.image} · ready ${f.instances.ready || 0} · paused ${f.instances.paused || 0} · requests ${f.requests} · cold starts ${f.cold_starts} · in flight ${f.in_flight} · queued ${f.queued}`),
    range(short, "Last 15 minutes (per second)", "timeline-15m"),
    range(day, "Last day (per minute: each minute's mean)", "timeline-1d"),
    el("h3", {}, "Latest decisions"),
    latest.length ? eventsTable("function-events", latest) : el("p", { class: "muted" }, "No decision about this function yet."),
  ];
}

function eventsTable(id, events) {
  const outcome = (e) => (e.outcome === "refused" ? "refused" : e.outcome === "started" ? `started i${e.id}` : e.outcome);
  return table(id, [["Time"], ["Function"], ["Node"], ["Decision"], ["Why"], ["Outcome"]],
    events.map((e) => [clock(e.at), e.function || "", e.node || "", e.action, e.why, outcome(e)]));
}

async function eventsView() {
  const events = (await api("/v1/events?limit=100")).reverse();
  return [
    el("h2", {}, "Events and decisions"),
    el("p", { class: "muted" }, "The latest scaling and placement decisions, newest first, with the figures they read."),
    events.length ? eventsTable("events", events) : el("p", { class: "muted" }, "No decision yet."),
  ];
}

async function clusterView() {
  const c = await api("/v1/cluster");
  const rows = c.members.map((m) => [
    m.id === c.leader ? el("span", { class: "leader" }, `${m.id} (leader)`) : String(m.id),
    m.role,
    m.raft_addr || "",
    m.matched === undefined ? "" : String(m.matched),
  ]);
  return [
    el("h2", {}, "Cluster"),
    el("p", { id: "cluster-summary" },
      `leader ${c.leader ?? "none"} · term ${c.term} · this coordinator ${c.id} (${c.role}) · commit ${c.commit} · applied ${c.applied} · version ${c.cluster_version}` +
      (c.cluster_id ? ` · cluster ${c.cluster_id}` : "") + (c.stopped ? ` · stopped: ${c.stopped}` : "")),
    table("members", [["Member"], ["Role"], ["Raft address"], ["Matched", 1]], rows),
  ];
}

// --- charts -------------------------------------------------------------------

/// A figure with an SVG line chart of `series` ([{name, cls, points: [[ms, value]]}])
/// over [from, to], vertical markers at `marks` ([{at, label}]) and a legend
/// giving each series' latest and peak value.
function chartFigure(id, title, from, to, marks, series) {
  const legend = series.map((s) => {
    const values = s.points.map((p) => p[1]);
    const peak = values.length ? Math.max(...values) : null;
    const last = values.length ? values[values.length - 1] : null;
    return el("span", { class: "key", "data-series": s.name, "data-peak": peak ?? "" },
      el("span", { class: `swatch ${s.cls}` }), `${s.name}: now ${fixed(last, 2)}, peak ${fixed(peak, 2)}`);
  });
  if (marks.length) legend.push(el("span", { class: "key" }, el("span", { class: "swatch s-marker" }), `rules fired: ${marks.length}`));
  return el("figure", { id }, el("figcaption", {}, el("strong", {}, title), " ", legend), lineChart(series, from, to, marks));
}

function lineChart(series, from, to, marks) {
  const W = 560, H = 180, L = 40, R = 10, T = 10, B = 22;
  const max = Math.max(1, ...series.flatMap((s) => s.points.map((p) => p[1]))) * 1.1;
  const x = (ms) => L + ((ms - from) / (to - from)) * (W - L - R);
  const y = (v) => H - B - (v / max) * (H - T - B);
  const chart = svg("svg", { class: "chart", width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img" });
  for (const v of [0, max / 2, max]) {
    chart.append(svg("line", { class: "grid", x1: L, x2: W - R, y1: y(v), y2: y(v) }));
    chart.append(svg("text", { x: L - 4, y: y(v) + 3, "text-anchor": "end" }, v < 10 ? v.toFixed(1) : v.toFixed(0)));
  }
  chart.append(svg("line", { class: "axis", x1: L, x2: L, y1: T, y2: H - B }));
  chart.append(svg("text", { x: L, y: H - 6 }, `${ago(to - from)} ago`));
  chart.append(svg("text", { x: (L + W - R) / 2, y: H - 6, "text-anchor": "middle" }, `${ago((to - from) / 2)} ago`));
  chart.append(svg("text", { x: W - R, y: H - 6, "text-anchor": "end" }, `now (${clock(to)})`));
  for (const m of marks.filter((m) => m.at >= from && m.at <= to)) {
    chart.append(svg("line", { class: "marker", x1: x(m.at), x2: x(m.at), y1: T, y2: H - B }, svg("title", {}, m.label)));
  }
  for (const s of series) {
    const inside = s.points.filter((p) => p[0] >= from && p[0] <= to);
    if (!inside.length) continue;
    if (inside.length === 1) {
      // One slot so far: a line needs two points, so show a dot.
      const [t, v] = inside[0];
      chart.append(svg("circle", { class: s.cls, cx: x(t), cy: y(v), r: 2.5, "data-series": s.name }, svg("title", {}, s.name)));
      continue;
    }
    const pts = inside.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ");
    chart.append(svg("polyline", { class: s.cls, points: pts, "data-series": s.name }, svg("title", {}, s.name)));
  }
  return chart;
}

// --- routing, refresh and the token -------------------------------------------

/// The view of the current hash: [nav id, render function].
function current() {
  const parts = location.hash.replace(/^#\/?/, "").split("/");
  switch (parts[0]) {
    case "functions":
      return parts[1] ? ["functions", () => functionView(decodeURIComponent(parts[1]))] : ["functions", functionsView];
    case "events":
      return ["events", eventsView];
    case "cluster":
      return ["cluster", clusterView];
    default:
      return ["nodes", nodesView];
  }
}

let drawing = 0;

async function draw() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  document.getElementById("forget").hidden = !token;
  if (!token) {
    // No request goes out without a token: it could only be refused. A form
    // already showing keeps its message (why the last token was refused).
    if (document.getElementById("login").hidden) {
      showLogin("This coordinator asks for an API token. A reader token is enough: sluice tokens create dashboard --role reader");
    }
    return;
  }
  const [nav, render] = current();
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("current", a.id === `nav-${nav}`);
  const mine = ++drawing;
  const view = document.getElementById("view");
  try {
    const nodes = await render();
    if (mine !== drawing) return; // a newer draw began (the hash changed): it wins.
    document.getElementById("login").hidden = true;
    view.replaceChildren(...nodes);
    document.getElementById("status").textContent = `updated ${clock(Date.now())}`;
  } catch (e) {
    if (mine !== drawing) return;
    if (e instanceof ApiError && e.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      showLogin(`The API refused the token: ${e.message}. Give another.`);
    } else if (e instanceof ApiError && e.status === 403) {
      // The token is valid, only short of a role: no need to ask for one again unless the user wants to.
      document.getElementById("login").hidden = true;
      view.replaceChildren(el("p", { class: "error", id: "forbidden" },
        `This token lacks the role this page needs: ${e.message}. The dashboard only reads: a token with the reader role is enough ` +
        "(sluice tokens create dashboard --role reader)."));
    } else {
      view.replaceChildren(el("p", { class: "error", id: "unreachable" }, `Cannot read the API: ${e.message}. Retrying every ${REFRESH_MS / 1000} s.`));
    }
    document.getElementById("status").textContent = `failed ${clock(Date.now())}`;
  }
}

function showLogin(why) {
  document.getElementById("login-why").textContent = why;
  document.getElementById("login").hidden = false;
  document.getElementById("view").replaceChildren();
}

function start() {
  document.getElementById("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = document.getElementById("token");
    const token = input.value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    input.value = "";
    draw();
  });
  document.getElementById("forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    draw();
  });
  window.addEventListener("hashchange", draw);
  setInterval(draw, REFRESH_MS);
  draw();
}

start();
