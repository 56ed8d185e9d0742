// canaryd dashboard: plain DOM, no dependencies (docs/api.md, "Dashboard").
// Every value from the daemon is put on the page as text (textContent, attributes),
// never parsed as HTML. The token lives in this tab's sessionStorage and is sent
// only as an Authorization header.
"use strict";

const TOKEN_KEY = "canaryd.token";
const SVG = "http://www.w3.org/2000/svg";
const ACTIONS = ["promote", "pause", "resume", "abort"];
const ui = { token: sessionStorage.getItem(TOKEN_KEY) || "", stream: null, busy: false, again: false, timer: 0, said: null };

// ------------------------------------------------------------------ DOM helpers

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  for (const c of children.flat()) {
    if (c !== null && c !== undefined && c !== false) el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

function s(tag, attrs, text) {
  const el = document.createElementNS(SVG, tag);
  setAttrs(el, attrs);
  if (text !== undefined) el.textContent = String(text);
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (v === true) el.setAttribute(k, "");
    else if (v !== false && v !== null && v !== undefined) el.setAttribute(k, String(v));
  }
}

function time(t) {
  if (typeof t !== "number") return "–";
  return new Date(t * 1000).toISOString().replace("T", " ").slice(0, 19) + "Z";
}

function num(v) {
  if (typeof v !== "number") return v === null || v === undefined ? "no data" : String(v);
  return Math.abs(v) >= 1000 || v === Math.round(v) ? String(Math.round(v * 100) / 100) : v.toPrecision(4);
}

function weightBar(c) {
  const fill = h("div", { class: "fill" });
  fill.style.width = `${Math.max(0, Math.min(100, c.canaryWeight))}%`;
  return h("div", {}, h("div", { class: "bar", title: `canary ${c.canaryWeight}% / primary ${c.primaryWeight}%` }, fill),
    h("span", { class: "bar-label" }, `canary ${c.canaryWeight}% · primary ${c.primaryWeight}%`));
}

// ------------------------------------------------------------------ API

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

function headers() {
  return ui.token ? { Authorization: `Bearer ${ui.token}` } : {};
}

async function api(path, method = "GET", body = undefined) {
  const init = { method, headers: headers(), cache: "no-store" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  let data = null;
  try { data = await res.json(); } catch (_) { data = null; }
  if (!res.ok) throw new ApiError(res.status, (data && data.error) || `HTTP ${res.status}`);
  return data;
}

function canaryPath(ns, name) {
  return `/api/v1/canaries/${encodeURIComponent(ns)}/${encodeURIComponent(name)}`;
}

// ------------------------------------------------------------------ token

function showMode() {
  const mode = document.getElementById("mode");
  mode.textContent = ui.token ? "token set: actions enabled" : "read-only (no token)";
  mode.className = ui.token ? "mode write" : "mode";
  document.getElementById("forget-token").hidden = !ui.token;
}

function useToken() {
  const input = document.getElementById("token");
  ui.token = input.value.trim();
  input.value = "";
  if (ui.token) sessionStorage.setItem(TOKEN_KEY, ui.token);
  else sessionStorage.removeItem(TOKEN_KEY);
  showMode();
  follow();
  refresh();
}

function forgetToken() {
  ui.token = "";
  sessionStorage.removeItem(TOKEN_KEY);
  showMode();
  follow();
  refresh();
}

// ------------------------------------------------------------------ live stream

function setLive(on, text) {
  const el = document.getElementById("live");
  el.textContent = text || (on ? "live" : "offline");
  el.className = on ? "live on" : "live off";
}

function follow() {
  if (ui.stream) ui.stream.abort();
  const ctl = new AbortController();
  ui.stream = ctl;
  streamLoop(ctl).catch(() => setLive(false));
}

async function streamLoop(ctl) {
  while (!ctl.signal.aborted) {
    try {
      const res = await fetch("/api/v1/events/stream", { headers: headers(), signal: ctl.signal, cache: "no-store" });
      if (res.status === 401) { setLive(false, "needs token"); return; }
      if (res.ok && res.body) {
        setLive(true);
        await readEvents(res.body, ctl);
      }
    } catch (_) { /* network error or aborted: retry below */ }
    if (ctl.signal.aborted) return;
    setLive(false, "reconnecting");
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

async function readEvents(body, ctl) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  while (!ctl.signal.aborted) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      onEvent(buffer.slice(0, end));
      buffer = buffer.slice(end + 2);
    }
  }
}

function onEvent(block) {
  let name = "message";
  let data = "";
  for (const line of block.split("\n")) {
    if (line.startsWith("event: ")) name = line.slice(7);
    else if (line.startsWith("data: ")) data += line.slice(6);
  }
  if (name === "hello" || name === "canary") schedule();
}

function schedule() {  // at most two redraws a second, however busy the daemon
  if (ui.timer) return;
  ui.timer = setTimeout(() => { ui.timer = 0; refresh(); }, 500);
}

// ------------------------------------------------------------------ views

function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "canary" && parts.length >= 3) {
    return { view: "canary", ns: parts[1], name: parts[2], rollout: parts[3] === "rollout" ? parts[4] : null };
  }
  return { view: "list" };
}

async function refresh() {
  if (ui.busy) { ui.again = true; return; }
  ui.busy = true;
  try {
    const r = route();
    const view = r.view === "canary" ? await canaryView(r) : await listView();
    document.getElementById("main").replaceChildren(...view);
  } catch (err) {
    document.getElementById("main").replaceChildren(...errorView(err));
  } finally {
    ui.busy = false;
    if (ui.again) { ui.again = false; refresh(); }
  }
}

function errorView(err) {
  if (err instanceof ApiError && err.status === 401) {
    setTimeout(() => document.getElementById("token").focus(), 0);
    return [h("p", { class: "notice", id: "token-needed" },
      "This daemon needs the API token to read (api.anonymous_read is off). Enter it above: ",
      "it is kept in this tab only.")];
  }
  return [h("p", { class: "error" }, `Cannot load: ${err.message}`)];
}

async function listView() {
  const { canaries } = await api("/api/v1/canaries");
  const rows = canaries.map((c) => h("tr", { "data-canary": `${c.namespace}/${c.name}` },
    h("td", {}, h("a", { href: `#/canary/${encodeURIComponent(c.namespace)}/${encodeURIComponent(c.name)}` },
      `${c.namespace}/${c.name}`)),
    h("td", { class: `phase ${c.phase}` }, c.phase),
    h("td", { class: "revision" }, c.revision || "–"),
    h("td", {}, weightBar(c)),
    h("td", { class: "failed" }, `${c.failedChecks}/${c.threshold}`),
    h("td", { class: "reason" }, c.reason || (c.lastCheck && c.lastCheck.reason) || ""),
    h("td", { class: "gate" }, c.gate ? `waiting: ${c.gate}` : "")));
  const table = h("table", { id: "canaries" },
    h("thead", {}, h("tr", {}, ...["canary", "phase", "revision", "weight", "failed / threshold",
      "last reason", "gate"].map((t) => h("th", {}, t)))),
    h("tbody", {}, rows));
  return [h("h1", {}, "Canaries"), canaries.length ? table : h("p", { class: "muted" }, "No canaries configured.")];
}

async function canaryView(r) {
  const base = canaryPath(r.ns, r.name);
  const [c, history] = await Promise.all([api(base), api(`${base}/rollouts?limit=50`)]);
  const shown = r.rollout || c.rolloutId;
  const rollout = shown ? await api(`${base}/rollouts/${encodeURIComponent(shown)}`).catch(() => null) : null;
  const title = r.rollout ? `${c.namespace}/${c.name} · rollout ${r.rollout}` : `${c.namespace}/${c.name}`;
  const out = [h("p", {}, h("a", { href: "#/" }, "← all canaries")), h("h1", {}, title)];
  if (!r.rollout) out.push(facts(c), actions(c));
  else if (rollout) out.push(rolloutFacts(rollout));
  if (rollout) out.push(...rolloutSections(rollout));
  else out.push(h("p", { class: "muted" }, "No rollout recorded yet."));
  out.push(pastRollouts(r, history.rollouts));
  return out;
}

function facts(c) {
  const fact = (label, value, attrs) => h("div", attrs || {}, h("span", {}, label), value);
  const why = c.reason || (c.lastCheck && c.lastCheck.reason);
  return h("section", { class: "facts", id: "facts" },
    fact("phase", h("b", { class: `phase ${c.phase}`, id: "phase" }, c.phase)),
    fact("revision", h("b", { id: "revision" }, c.revision || "–")),
    fact("weight", weightBar(c), { id: "weight" }),
    fact("failed checks", h("b", { id: "failed" }, `${c.failedChecks}/${c.threshold}`)),
    fact("iteration", `${c.iteration}/${c.iterations || "–"}`),
    fact("gate", h("b", { class: "gate", id: "gate" }, c.gate ? `waiting: ${c.gate}` : "none")),
    fact("why", h("span", { class: "reason", id: "why" }, why || "–")),
    fact("metadata", h("span", { id: "metadata" },
      Object.entries(c.metadata || {}).map(([k, v]) => `${k}=${v}`).join(", ") || "–")));
}

function rolloutFacts(r) {
  return h("section", { class: "facts" },
    h("div", {}, h("span", {}, "revision"), r.revision || "–"),
    h("div", {}, h("span", {}, "outcome"), h("b", { class: `outcome ${r.outcome}` }, r.outcome)),
    h("div", {}, h("span", {}, "started"), time(r.startedAt)),
    h("div", {}, h("span", {}, "ended"), time(r.endedAt)),
    h("div", {}, h("span", {}, "why"), r.reason || "–"));
}

function actions(c) {
  const can = Boolean(ui.token);
  const buttons = [];
  if (c.gate) {  // the state names the webhook type (confirm-promotion); the API the gate
    const gate = c.gate.replace(/^confirm-/, "");
    buttons.push(h("button", { class: "primary", id: "approve", disabled: !can,
      onclick: () => act(c, `gates/${encodeURIComponent(gate)}/approve`, `Open the ${gate} gate of ${c.namespace}/${c.name}?`) },
      `Approve ${gate} gate`));
  }
  for (const a of ACTIONS) {
    buttons.push(h("button", { id: a, class: a === "abort" ? "danger" : "", disabled: !can,
      onclick: () => act(c, a, `${a[0].toUpperCase()}${a.slice(1)} ${c.namespace}/${c.name} (revision ${c.revision || "none"})?`) }, a));
  }
  const note = can ? null : h("span", { class: "muted", id: "read-only" }, "read-only: enter the API token to act");
  const said = ui.said && ui.said.key === `${c.namespace}/${c.name}` ? ui.said : { cls: "", text: "" };
  return h("section", { class: "actions" }, ...buttons, note, h("span", { id: "action-result", class: said.cls }, said.text));
}

function confirmBox(text) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  return new Promise((resolve) => {
    const done = (answer) => () => { dialog.close(); resolve(answer); };
    document.getElementById("confirm-ok").onclick = done(true);
    document.getElementById("confirm-cancel").onclick = done(false);
    dialog.oncancel = done(false);
    dialog.showModal();
  });
}

async function act(c, action, question) {
  if (!(await confirmBox(question))) return;
  const key = `${c.namespace}/${c.name}`;
  try {  // said until the next action: the view is redrawn on every change
    const state = await api(`${canaryPath(c.namespace, c.name)}/${action}`, "POST");
    ui.said = { key, cls: "muted", text: `${action}: done (${state.phase})` };
  } catch (err) {
    ui.said = { key, cls: "error", text: `${action} refused: ${err.message}` };
  }
  schedule();
}

function rolloutSections(r) {
  const checks = r.checks || [];
  const out = [h("h2", {}, "Traffic"), h("div", { class: "charts" }, weightChart(checks))];
  const metrics = metricCharts(checks);
  if (metrics.length) out.push(h("h2", {}, "Metrics against their bounds"), h("div", { class: "charts", id: "metrics" }, ...metrics));
  const compare = compareSection(checks);
  if (compare) out.push(compare);
  out.push(h("h2", {}, "Checks"), checksTable(checks), h("h2", {}, "Events"), eventsTable(r.events || []));
  return out;
}

// ------------------------------------------------------------------ charts (plain SVG)

const W = 360, H = 150, L = 44, R = 8, T = 10, B = 22;

function frame(caption, points, extraY, attrs, fixed) {
  const xs = points.map((p) => p[0]);
  const ys = points.map((p) => p[1]).concat(extraY.filter((v) => typeof v === "number"));
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
  let [y0, y1] = fixed || [Math.min(...ys), Math.max(...ys)];
  if (!fixed) {  // the values and their bounds, with a margin: the change must show
    const pad = (y1 - y0) * 0.15 || Math.abs(y0) * 0.05 || 1;
    y0 -= pad; y1 += pad;
  }
  const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
  const svg = s("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img" });
  svg.append(s("title", {}, caption),
    s("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }),
    s("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }),
    s("text", { class: "tick", x: L - 4, y: T + 8, "text-anchor": "end" }, num(y1)),
    s("text", { class: "tick", x: L - 4, y: H - B, "text-anchor": "end" }, num(y0)),
    s("text", { class: "tick", x: L, y: H - 6 }, time(x0).slice(11)),
    s("text", { class: "tick", x: W - R, y: H - 6, "text-anchor": "end" }, time(x1).slice(11)));
  const fig = h("figure", attrs || {}, h("figcaption", {}, caption), svg);
  return { svg, sx, sy, fig, x0, x1 };
}

function polyline(f, points, cls) {
  if (!points.length) return;
  f.svg.append(s("polyline", { class: `line ${cls || ""}`, points: points.map((p) => `${f.sx(p[0])},${f.sy(p[1])}`).join(" ") }));
}

function weightChart(checks) {
  const points = checks.map((c) => [c.time, c.canaryWeight]);
  if (!points.length) return h("p", { class: "muted" }, "No checks yet.");
  const f = frame("canary weight (%) over the rollout", points, [], { id: "weight-chart", "data-points": points.length }, [0, 100]);
  const steps = points.flatMap((p, i) => (i ? [[p[0], points[i - 1][1]], p] : [p]));
  polyline(f, steps, "weight");
  return f.fig;
}

function metricCharts(checks) {
  const byName = new Map();
  for (const c of checks) {
    for (const m of c.metrics || []) {
      if (!byName.has(m.name)) byName.set(m.name, []);
      byName.get(m.name).push({ t: c.time, m, outcome: c.outcome });
    }
  }
  return [...byName].map(([name, rows]) => metricChart(name, rows));
}

function metricChart(name, rows) {
  const last = rows[rows.length - 1].m;
  const bounds = [last.min, last.max].filter((v) => typeof v === "number");
  const points = rows.filter((r) => typeof r.m.value === "number").map((r) => [r.t, r.m.value]);
  const shown = points.length ? points : rows.map((r) => [r.t, 0]);
  const range = `${typeof last.min === "number" ? `min ${num(last.min)}` : ""} ${typeof last.max === "number" ? `max ${num(last.max)}` : ""}`.trim();
  const caption = `${name}: ${num(last.value)}${range ? ` (bounds: ${range})` : ""}${last.error ? ` · error: ${last.error}` : ""}`;
  const f = frame(caption, shown, bounds, { class: "metric", "data-metric": name });
  for (const b of bounds) f.svg.append(s("line", { class: "bound", x1: L, x2: W - R, y1: f.sy(b), y2: f.sy(b) }));
  polyline(f, points);
  for (const r of rows) {
    const ok = typeof r.m.value === "number";
    const out = ok && ((typeof r.m.min === "number" && r.m.value < r.m.min) || (typeof r.m.max === "number" && r.m.value > r.m.max));
    const dot = s("circle", { class: `dot ${ok ? (out ? "fail" : "") : "none"}`, cx: f.sx(r.t), cy: ok ? f.sy(r.m.value) : H - B - 3, r: 3 });
    dot.append(s("title", {}, `${time(r.t)}: ${ok ? num(r.m.value) : r.m.error ? `error: ${r.m.error}` : "no data"}`));
    f.svg.append(dot);
  }
  return f.fig;
}

function compareSection(checks) {
  const judged = checks.filter((c) => c.judge && Array.isArray(c.judge.results));
  if (!judged.length) return null;
  const latest = judged[judged.length - 1].judge;
  const rows = latest.results.map((r) => h("tr", {},
    h("td", {}, r.name), h("td", { class: `outcome ${r.classification === "Pass" ? "pass" : "fail"}` }, r.classification),
    h("td", {}, r.interval ? `[${num(r.interval[0])}, ${num(r.interval[1])}]` : "–"),
    h("td", {}, r.estimate === null || r.estimate === undefined ? "–" : num(r.estimate)),
    h("td", {}, r.ratio === null || r.ratio === undefined ? "–" : num(r.ratio)),
    h("td", { class: "reason" }, r.reason || "")));
  const table = h("table", { id: "compare" }, h("thead", {}, h("tr", {},
    ...["metric", "verdict", "interval (canary − primary)", "estimate", "ratio", "why"].map((t) => h("th", {}, t)))),
    h("tbody", {}, rows));
  const charts = latest.results.map((r) => intervalChart(r.name, judged));
  return h("section", {}, h("h2", {}, `Compare metrics · score ${num(latest.score)} (${latest.classification})`),
    table, h("div", { class: "charts" }, ...charts));
}

function intervalChart(name, judged) {
  const rows = [];
  for (const c of judged) {
    const r = c.judge.results.find((x) => x.name === name);
    if (r && r.interval) rows.push({ t: c.time, r });
  }
  if (!rows.length) return h("p", { class: "muted" }, `${name}: no interval yet`);
  const ys = rows.flatMap((x) => x.r.interval);
  const f = frame(`${name}: interval of the shift canary − primary (dot: estimate)`, rows.map((x) => [x.t, x.r.interval[0]]), ys.concat([0]));
  f.svg.append(s("line", { class: "zero", x1: L, x2: W - R, y1: f.sy(0), y2: f.sy(0) }));
  for (const x of rows) {
    f.svg.append(s("line", { class: `interval ${x.r.classification}`, x1: f.sx(x.t), x2: f.sx(x.t),
      y1: f.sy(x.r.interval[0]), y2: f.sy(x.r.interval[1]) }));
    if (typeof x.r.estimate === "number") {
      f.svg.append(s("circle", { class: "dot estimate", cx: f.sx(x.t), cy: f.sy(x.r.estimate), r: 3 }));
    }
  }
  return f.fig;
}

// ------------------------------------------------------------------ tables

function checksTable(checks) {
  const rows = checks.slice(-30).reverse().map((c) => h("tr", {},
    h("td", {}, time(c.time)), h("td", { class: `outcome ${c.outcome}` }, c.outcome),
    h("td", {}, `${c.canaryWeight}%`), h("td", {}, String(c.failedChecks)),
    h("td", { class: "reason" }, c.reason || "")));
  return h("table", { id: "checks" }, h("thead", {}, h("tr", {},
    ...["time", "outcome", "weight", "failed", "why"].map((t) => h("th", {}, t)))), h("tbody", {}, rows));
}

const EVENT_KEYS = new Set(["event", "level", "canary", "revision", "phase", "time", "primaryWeight", "threshold"]);

function eventsTable(all) {  // every tick is in the checks table: its events are left out here
  const events = all.filter((e) => e.event !== "analysis.tick");
  const rows = events.slice(-50).reverse().map((e) => h("tr", { "data-event": e.event },
    h("td", {}, time(e.time)), h("td", {}, e.level), h("td", {}, e.event),
    h("td", { class: "reason" }, Object.entries(e).filter(([k]) => !EVENT_KEYS.has(k))
      .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`).join("  "))));
  return h("table", { id: "events" }, h("thead", {}, h("tr", {},
    ...["time", "level", "event", "details"].map((t) => h("th", {}, t)))), h("tbody", {}, rows));
}

function pastRollouts(r, rollouts) {
  const link = (x) => `#/canary/${encodeURIComponent(r.ns)}/${encodeURIComponent(r.name)}/rollout/${encodeURIComponent(x.id)}`;
  const rows = rollouts.map((x) => h("tr", { "data-rollout": x.id },
    h("td", {}, h("a", { href: link(x) }, x.revision || x.id)),
    h("td", { class: `outcome ${x.outcome}` }, x.outcome), h("td", {}, time(x.startedAt)),
    h("td", {}, time(x.endedAt)), h("td", {}, `${x.failedCheckCount}/${x.checkCount}`),
    h("td", { class: "reason" }, x.reason || "")));
  return h("section", {}, h("h2", {}, "Rollouts"), h("table", { id: "rollouts" }, h("thead", {}, h("tr", {},
    ...["revision", "outcome", "started", "ended", "failed / checks", "why"].map((t) => h("th", {}, t)))),
  h("tbody", {}, rows)));
}

// ------------------------------------------------------------------ start

document.getElementById("use-token").addEventListener("click", useToken);
document.getElementById("token").addEventListener("keydown", (e) => { if (e.key === "Enter") useToken(); });
document.getElementById("forget-token").addEventListener("click", forgetToken);
window.addEventListener("hashchange", refresh);
showMode();
follow();
refresh();
