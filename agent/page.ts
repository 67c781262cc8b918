/**
 * The agent's status page: one HTML document with its script, no build step and nothing fetched
 * from elsewhere. It polls `/api/status` every second and `/api/cluster` every three, and shows,
 * in this order: what is wrong in plain words, this server's portals and their slots (state,
 * rates, queues, spool), the host, and every server of the map.
 *
 * Elements carry `data-` attributes (`data-stream`, `data-slot`, `data-state`, `data-kind`,
 * `data-server`) so a script or a test can read what the page shows.
 */
export const PAGE_HTML = String.raw`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Flotilla</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #1d232a; background: #f6f7f9; }
  header { background: #1d3557; color: #fff; padding: 10px 20px; display: flex; gap: 24px; align-items: baseline; flex-wrap: wrap; }
  header h1 { font-size: 18px; margin: 0; }
  main { padding: 12px 20px; max-width: 1200px; }
  section { background: #fff; border: 1px solid #dde1e6; border-radius: 6px; padding: 10px 14px; margin-bottom: 14px; }
  h2 { font-size: 15px; margin: 0 0 8px; }
  table { border-collapse: collapse; width: 100%; }
  th, td { text-align: left; padding: 3px 8px; border-bottom: 1px solid #eef0f3; white-space: nowrap; }
  th { font-weight: 600; color: #555; font-size: 12px; }
  td.num { text-align: right; font-variant-numeric: tabular-nums; }
  ul.problems { list-style: none; margin: 0; padding: 0; }
  ul.problems li { padding: 5px 10px; margin: 3px 0; border-radius: 4px; }
  li.error { background: #fde2e1; border-left: 4px solid #c62828; }
  li.warning { background: #fff4d6; border-left: 4px solid #e0a100; }
  li.ok { background: #e3f5e5; border-left: 4px solid #2e7d32; }
  .state { padding: 1px 6px; border-radius: 3px; font-size: 12px; }
  .s-running, .s-idle, .s-busy { background: #e3f5e5; }
  .s-paused, .s-waiting { background: #fff4d6; }
  .s-dead, .s-missing, .s-unreachable { background: #fde2e1; color: #b71c1c; font-weight: 600; }
  .slots { display: flex; flex-wrap: wrap; gap: 3px; }
  .slot { min-width: 22px; text-align: center; font-size: 11px; padding: 1px 3px; border-radius: 3px; }
  .slot.idle { background: #d9eedb; } .slot.busy { background: #9fd4a5; }
  .slot.dead { background: #c62828; color: #fff; } .slot.missing { background: #f3b0ab; }
  #stale { display: none; background: #c62828; color: #fff; padding: 6px 20px; }
  .muted { color: #777; }
</style>
</head>
<body>
<header><h1>Flotilla <span id="server">…</span></h1><span id="summary" class="muted"></span><span id="updated" class="muted"></span></header>
<div id="stale"></div>
<main>
  <section><h2>Problems</h2><ul class="problems" id="problems"><li class="ok">loading…</li></ul></section>
  <section><h2>Portals</h2>
    <table id="portals"><thead><tr><th>stream</th><th>state</th><th>epoch</th><th>in/s</th><th>out/s</th><th>queued</th><th>in flight</th><th>spool</th><th>slots</th></tr></thead><tbody></tbody></table>
  </section>
  <section><h2>Slots</h2><table id="slots"><thead><tr><th>stream</th><th>slot</th><th>state</th><th>pid</th><th>queued</th><th>in flight</th><th>processed</th><th>records/s</th><th>ms/delivery</th><th>silent</th></tr></thead><tbody></tbody></table></section>
  <section><h2>Host</h2><div id="host" class="muted">not sampled yet</div></section>
  <section><h2>Cluster</h2>
    <table id="cluster"><thead><tr><th>server</th><th>health</th><th>epoch</th><th>portals</th><th>in/s</th><th>out/s</th><th>queued</th><th>problems</th></tr></thead><tbody></tbody></table>
  </section>
</main>
<script>
"use strict";
var HEALTH = { 0: "healthy", 1: "unreachable", 3: "dead", 4: "missing", 5: "hold waiting", 6: "map refused", 7: "spool stopped" };
var lastProcessed = {};
var lastAt = 0;

function el(tag, attrs, children) {
  var e = document.createElement(tag);
  for (var k in attrs || {}) {
    if (k === "class") e.className = attrs[k];
    else e.setAttribute(k, attrs[k]);
  }
  (children || []).forEach(function (c) { e.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c); });
  return e;
}
function td(v, num) { return el("td", num ? { class: "num" } : {}, [v === undefined || v === null ? "-" : v]); }
function bytes(n) {
  var u = ["B", "KiB", "MiB", "GiB", "TiB"], i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(1)) + " " + u[i];
}
function fill(id, rows) {
  var body = document.querySelector("#" + id + " tbody");
  body.replaceChildren.apply(body, rows);
}
function stateOf(s) {
  var b = s.beacon;
  if (b && b.spool && b.spool.records > 0 && !b.paused && s.state !== "dead" && s.state !== "missing" &&
      (s.idle || b.slots.some(function (x) { return x.state === "dead" || x.state === "missing"; }))) return "spooled, waiting for slots";
  return s.state;
}
function stateCls(text) { return text.indexOf("waiting") >= 0 ? "s-waiting" : "s-" + text; }

function showProblems(view) {
  var list = document.getElementById("problems");
  if (view.problems.length === 0) { list.replaceChildren(el("li", { class: "ok", "data-kind": "none" }, ["Nothing is wrong: every portal and slot is heard from, no hold waits, the map file is in force."])); return; }
  list.replaceChildren.apply(list, view.problems.map(function (p) {
    return el("li", { class: p.severity, "data-kind": p.kind, "data-stream": p.stream || "", "data-slot": p.slot === null ? "" : p.slot }, [p.message]);
  }));
}

function showServer(view) {
  var st = view.status;
  document.getElementById("server").textContent = st.server;
  document.getElementById("summary").textContent = "instance " + st.instance + " · epoch " + st.epoch + " · " + HEALTH[view.health] + (st.idle ? " · all idle" : "");
  document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
  var now = Date.now(), dt = lastAt ? (now - lastAt) / 1000 : 0, seen = {};
  fill("portals", st.streams.map(function (s) {
    var b = s.beacon, text = stateOf(s), fresh = b && s.state !== "dead";
    var chips = el("div", { class: "slots" }, fresh ? b.slots.map(function (x) {
      return el("span", { class: "slot " + x.state, title: "slot " + x.slot + ": " + x.state + (x.pid ? " (pid " + x.pid + ")" : ""), "data-stream": s.stream, "data-slot": x.slot, "data-state": x.state }, [x.slot]);
    }) : []);
    return el("tr", { "data-stream": s.stream, "data-state": text }, [
      td(s.stream), el("td", {}, [el("span", { class: "state " + stateCls(text) }, [text])]),
      td(b && b.epoch), td(fresh ? b.rates.inPerSec : null, 1), td(fresh ? b.rates.outPerSec : null, 1),
      td(fresh ? b.queued : null, 1), td(fresh ? b.inflight : null, 1),
      td(fresh && b.spool ? (b.spool.state === "ok" ? "" : b.spool.state.toUpperCase() + " ") + b.spool.records + " (" + bytes(b.spool.bytes) + ")" : "-"),
      el("td", {}, [chips])]);
  }));
  var rows = [];
  st.streams.forEach(function (s) {
    if (!s.beacon || s.state === "dead") return;
    s.beacon.slots.forEach(function (x) {
      var key = s.stream + "/" + x.slot, prev = lastProcessed[key];
      seen[key] = x.processed;
      var rate = dt > 0 && prev !== undefined && x.processed >= prev ? Math.round((x.processed - prev) / dt) : null;
      rows.push(el("tr", { "data-stream": s.stream, "data-slot": x.slot, "data-state": x.state }, [
        td(s.stream), td(x.slot, 1), el("td", {}, [el("span", { class: "state s-" + x.state }, [x.state])]), td(x.pid || null, 1),
        td(x.queued, 1), td(x.inflight, 1), td(x.processed, 1), td(rate, 1), td(x.serviceMs.toFixed(1), 1),
        td(x.silentMs < 0 ? "-" : (x.silentMs / 1000).toFixed(1) + " s", 1)]));
    });
  });
  lastProcessed = seen; lastAt = now;
  fill("slots", rows);
  var h = st.host, host = document.getElementById("host");
  if (h) {
    var rss = function (role) { return h.processes.filter(function (p) { return p.role === role; }).reduce(function (n, p) { return n + p.rssBytes; }, 0); };
    host.className = "";
    host.replaceChildren(
      el("div", {}, ["memory " + bytes(h.memory.availableBytes) + " available of " + bytes(h.memory.totalBytes) + " (warning under " + bytes(h.memory.floorBytes) + "), load " + h.load.join(" ") + " on " + h.cpus + " cpus"]),
      el("div", {}, [h.disks.map(function (d) { return d.use + ": " + bytes(d.freeBytes) + " free of " + bytes(d.totalBytes) + (d.floorBytes ? " (floor " + bytes(d.floorBytes) + ")" : ""); }).join(" · ")]),
      el("div", {}, ["resident memory: agent " + bytes(rss("agent")) + ", portals " + bytes(rss("portal")) + ", components " + bytes(rss("component")) + " (sampled every " + h.intervalMs / 1000 + " s)"]));
  }
}

function showCluster(views) {
  fill("cluster", views.map(function (v) {
    var st = v.status, sum = function (f) { return st ? st.streams.reduce(function (n, s) { return n + (s.beacon && s.state !== "dead" ? f(s.beacon) : 0); }, 0) : null; };
    var states = st ? st.streams.map(function (s) { return s.stream + " " + stateOf(s); }).join(", ") : v.error;
    var health = v.status ? HEALTH[v.health] || String(v.health) : "unreachable";
    return el("tr", { "data-server": v.server, "data-health": health }, [
      td(v.server), el("td", {}, [el("span", { class: "state " + (v.health === 0 ? "s-running" : "s-dead") }, [health])]),
      td(st && st.epoch), td(states), td(sum(function (b) { return b.rates.inPerSec; }), 1), td(sum(function (b) { return b.rates.outPerSec; }), 1),
      td(sum(function (b) { return b.queued; }), 1), td(v.problems.length ? v.problems.map(function (p) { return p.message; }).join("; ") : "-")]);
  }));
}

function get(path) {
  return fetch(path, { cache: "no-store" }).then(function (r) { if (!r.ok) throw new Error(path + ": HTTP " + r.status); return r.json(); });
}
function stale(err) {
  var s = document.getElementById("stale");
  s.style.display = err ? "block" : "none";
  s.textContent = err ? "The agent is not answering (" + err.message + "); what is shown is from " + document.getElementById("updated").textContent.replace("updated ", "") : "";
}
function poll() {
  get("/api/status").then(function (v) { stale(null); showProblems(v); showServer(v); }, stale).finally(function () { setTimeout(poll, 1000); });
}
function pollCluster() {
  get("/api/cluster").then(showCluster, function () {}).finally(function () { setTimeout(pollCluster, 3000); });
}
poll();
pollCluster();
</script>
</body>
</html>
`;
