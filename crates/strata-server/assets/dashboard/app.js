// strata's dashboard: polls /dashboard/data (admin) every second, keeps five minutes of
// history in the page, and draws it on canvases. No library, no network beyond this server.
"use strict";

const POLL_MS = 1000;
const HISTORY = 300; // points per series: five minutes at one a second
const COLORS = ["#2b6cb0", "#c05621", "#2f855a", "#6b46c1", "#b83280", "#2c7a7b", "#975a16"];

const history = {}; // chart id -> { series name -> [values] }
let credential = sessionStorage.getItem("strata-credential") || "";
let timer = null;

function $(id) { return document.getElementById(id); }

function fmt(v, digits) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  return Number(v).toFixed(digits === undefined ? 1 : digits);
}

function pct(v) { return v === null || v === undefined ? "–" : (100 * v).toFixed(1) + "%"; }

function bytes(v) {
  if (v === null || v === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return v.toFixed(i ? 1 : 0) + " " + units[i];
}

function push(chart, name, value) {
  const c = (history[chart] = history[chart] || {});
  const s = (c[name] = c[name] || []);
  s.push(value === null || value === undefined ? null : Number(value));
  if (s.length > HISTORY) s.shift();
}

// Draws every series of a chart: a shared y scale from 0 to the largest value seen.
function draw(chart) {
  const canvas = $(chart);
  const series = history[chart] || {};
  const ratio = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (canvas.width !== w * ratio) { canvas.width = w * ratio; canvas.height = h * ratio; }
  const g = canvas.getContext("2d");
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.clearRect(0, 0, w, h);
  const names = Object.keys(series);
  let max = 0;
  for (const n of names) for (const v of series[n]) if (v !== null && v > max) max = v;
  max = max > 0 ? max * 1.15 : 1;
  const left = 44, top = 6, bottom = h - 16, right = w - 6;
  g.strokeStyle = "#dfe3e8"; g.fillStyle = "#6b7683"; g.font = "10px system-ui"; g.lineWidth = 1;
  for (let i = 0; i <= 2; i++) {
    const y = top + (bottom - top) * i / 2;
    g.beginPath(); g.moveTo(left, y); g.lineTo(right, y); g.stroke();
    g.fillText(fmt(max * (1 - i / 2), max < 10 ? 2 : 0), 2, y + 3);
  }
  let points = 0;
  names.forEach((n, k) => {
    const s = series[n];
    g.strokeStyle = COLORS[k % COLORS.length]; g.lineWidth = 1.6; g.beginPath();
    let started = false;
    s.forEach((v, i) => {
      if (v === null) { started = false; return; }
      const x = right - (s.length - 1 - i) * (right - left) / (HISTORY - 1);
      const y = bottom - (bottom - top) * v / max;
      if (started) g.lineTo(x, y); else { g.moveTo(x, y); started = true; }
      points++;
    });
    g.stroke();
    g.fillStyle = COLORS[k % COLORS.length];
    g.fillText(n, left + 4 + 90 * k, h - 3);
  });
  canvas.dataset.points = String(points);
}

function row(cells, numeric) {
  const tr = document.createElement("tr");
  cells.forEach((c, i) => {
    const td = document.createElement("td");
    td.textContent = c;
    if (numeric && i > 0) td.className = "num";
    tr.appendChild(td);
  });
  return tr;
}

function fill(tableId, rows, numeric) {
  const body = $(tableId).querySelector("tbody");
  body.replaceChildren(...rows.map((r) => row(r, numeric)));
}

function render(data) {
  const s = data.summary, health = data.health;
  const m1 = s.windows["1m"], m5 = s.windows["5m"], m15 = s.windows["15m"];
  const breached = new Set(s.alerts.filter((a) => a.breached).map((a) => a.name));

  $("status").textContent = health.status;
  $("status").className = "pill " + health.status;
  $("uptime").textContent = "up " + Math.floor(s.uptime_seconds / 60) + " min";
  $("updated").textContent = "updated " + new Date().toLocaleTimeString();

  const alerts = $("alerts");
  alerts.replaceChildren(...s.alerts.map((a) => {
    const d = document.createElement("div");
    d.className = "alert " + (a.breached ? "breached" : "quiet");
    d.dataset.alert = a.name;
    d.textContent = (a.breached ? "⚠ " : "✓ ") + a.name + (a.breached ? ": " + a.summary : "");
    d.title = a.summary + " (" + a.direction + " " + a.threshold + "; Prometheus fires after " + a.hold + ")";
    return d;
  }));

  $("t-rps").textContent = fmt(m1.total.throughput_rps, 1);
  $("t-latency").textContent = [m1.total.p50_ms, m1.total.p95_ms, m1.total.p99_ms].map((v) => fmt(v, 1)).join(" / ");
  $("t-latency").parentElement.classList.toggle("breached", breached.has("StrataLatencyP95High"));
  $("t-errors").textContent = pct(m5.total.error_rate);
  $("t-errors").parentElement.classList.toggle("breached", breached.has("StrataErrorRateHigh"));
  $("t-requests").textContent = m5.total.requests + " requests";
  $("t-hit").textContent = pct(m5.cache_hit_ratio);
  $("t-hit").parentElement.classList.toggle("breached", breached.has("StrataCacheHitRatioDrop"));
  $("t-lookups").textContent = m5.cache.reduce((n, c) => n + c.lookups, 0) + " lookups";
  $("t-pool").textContent = s.pool.in_use + " / " + s.pool.max;
  $("t-pool").parentElement.classList.toggle("breached", breached.has("StrataDbPoolSaturated"));
  $("t-pool-detail").textContent = s.pool.backend + ", " + s.pool.waiters + " waiting";
  const jobs = s.jobs || { queued: null, running: null, delayed: null, by_kind: [] };
  $("t-jobs").textContent = (jobs.queued ?? "–") + " / " + (jobs.running ?? "–");
  $("t-jobs").parentElement.classList.toggle("breached", breached.has("StrataJobBacklog") || breached.has("StrataJobFailures"));
  $("t-jobs-detail").textContent = m15.job_failures + " failed in 15 min";
  $("t-model").textContent = pct(m1.model_utilisation);
  const ms = s.model.stats;
  $("t-model-detail").textContent = ms ? ms.passes + " passes, " + ms.queued + " queued" : s.model.id;
  const rss = s.process ? s.process.resident_memory_bytes : null;
  $("t-memory").textContent = bytes(rss);
  $("t-memory").parentElement.classList.toggle("breached", breached.has("StrataMemoryHigh"));
  const host = health.host && health.host.stats;
  $("t-host").textContent = host ? "host " + bytes(host.memory_available_bytes) + " free, load " + fmt(host.load[0], 2) : "";

  push("c-rps", "req/s", m1.total.throughput_rps);
  push("c-latency", "p50", m1.total.p50_ms);
  push("c-latency", "p95", m1.total.p95_ms);
  push("c-latency", "p99", m1.total.p99_ms);
  push("c-errors", "5xx %", m1.total.error_rate === null ? 0 : 100 * m1.total.error_rate);
  const kinds = new Set(m15.cache.map((c) => c.kind));
  for (const k of kinds) {
    const c = m1.cache.find((x) => x.kind === k);
    push("c-hit", k, c && c.hit_ratio !== null ? 100 * c.hit_ratio : null);
  }
  if (kinds.size === 0) push("c-hit", "all", null);
  push("c-pool", "in use", s.pool.in_use);
  push("c-pool", "waiters", s.pool.waiters);
  push("c-jobs", "queued", jobs.queued);
  push("c-jobs", "running", jobs.running);
  push("c-jobs", "delayed", jobs.delayed);
  push("c-model", "busy %", 100 * m1.model_utilisation);
  push("c-memory", "RSS MiB", rss === null ? null : rss / 1048576);
  for (const c of document.querySelectorAll("canvas")) draw(c.id);

  fill("routes", m5.routes.slice(0, 12).map((r) => [
    r.route, String(r.requests), fmt(r.throughput_rps, 2), fmt(r.p50_ms, 2), fmt(r.p95_ms, 2),
    fmt(r.p99_ms, 2), pct(r.error_rate)]), true);
  const ratioOf = (w, k) => { const c = w.cache.find((x) => x.kind === k); return c ? pct(c.hit_ratio) : "–"; };
  fill("cache", [...kinds].sort().map((k) => {
    const c = m5.cache.find((x) => x.kind === k);
    return [k, ratioOf(m1, k), ratioOf(m5, k), ratioOf(m15, k), String(c ? c.lookups : 0)];
  }), true);
  const parts = Object.keys(health).filter((k) => health[k] && typeof health[k] === "object" && health[k].status);
  fill("health", parts.map((p) => {
    const x = health[p];
    const detail = x.latency_ms !== undefined && x.latency_ms !== null ? fmt(x.latency_ms, 2) + " ms" : (x.error || x.pdf_reader || "");
    return [p, x.status, detail];
  }), false);
  fill("jobs", jobs.by_kind.map((d) => [d.kind, d.state, String(d.jobs)]), false);
}

async function poll() {
  const headers = credential ? { Authorization: "Bearer " + credential } : {};
  let resp;
  try {
    resp = await fetch("/dashboard/data", { headers, cache: "no-store" });
  } catch (e) {
    $("status").textContent = "unreachable";
    $("status").className = "pill down";
    return;
  }
  if (resp.status === 401 || resp.status === 403) {
    stop();
    $("board").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = credential ? "that credential is not an admin's (" + resp.status + ")" : "";
    return;
  }
  if (!resp.ok) { $("status").textContent = "error " + resp.status; $("status").className = "pill down"; return; }
  $("login").hidden = true;
  $("board").hidden = false;
  render(await resp.json());
}

function stop() { if (timer !== null) { clearInterval(timer); timer = null; } }
function start() { stop(); poll(); timer = setInterval(poll, POLL_MS); }

document.addEventListener("DOMContentLoaded", () => {
  $("login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    credential = $("credential").value.trim();
    sessionStorage.setItem("strata-credential", credential);
    start();
  });
  start();
});
