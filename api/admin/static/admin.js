// genq admin: the overview refreshes itself from /admin/data/overview.json every 5 s and draws its charts
// as inline SVG. No library; no inline script (the pages' Content-Security-Policy forbids it).
(function () {
  "use strict";
  var root = document.getElementById("overview");
  if (!root) return;
  var NS = "http://www.w3.org/2000/svg";
  var H = 160, L = 44, R = 8, T = 10, B = 22, last = null;

  function el(name, attrs, parent) {
    var e = document.createElementNS(NS, name);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  }
  function fmt(v, unit) {
    if (v === null || v === undefined) return "—";
    if (unit === "s") return v < 1 ? Math.round(v * 1000) + " ms" : v.toFixed(1) + " s";
    if (v === 0) return "0";
    return v >= 100 ? Math.round(v).toString() : v >= 1 ? (Math.round(v * 10) / 10).toString() : v.toPrecision(2);
  }
  function hhmm(epoch) {
    var d = new Date(epoch * 1000);
    return ("0" + d.getUTCHours()).slice(-2) + ":" + ("0" + d.getUTCMinutes()).slice(-2);
  }
  // series: [[values...], ...] over the same minutes; nulls leave gaps
  function draw(box, minutes, series, unit, names) {
    box.textContent = "";
    var W = Math.max(240, Math.round(box.clientWidth || 600));  // drawn at its pixel width: text is never stretched
    var svg = el("svg", {viewBox: "0 0 " + W + " " + H, width: W, height: H, role: "img"}, box);
    var max = 0;
    series.forEach(function (s) { s.forEach(function (v) { if (v !== null && v > max) max = v; }); });
    max = max > 0 ? max * 1.15 : 1;
    var n = minutes.length, x = function (i) { return L + (W - L - R) * i / Math.max(1, n - 1); };
    var y = function (v) { return T + (H - T - B) * (1 - v / max); };
    [0, 0.5, 1].forEach(function (f) {
      el("line", {x1: L, x2: W - R, y1: y(max * f), y2: y(max * f), "class": "axis"}, svg);
      el("text", {x: L - 4, y: y(max * f) + 3, "text-anchor": "end"}, svg).textContent = fmt(max * f, unit);
    });
    [0, Math.floor(n / 2), n - 1].forEach(function (i) {
      if (minutes[i] !== undefined) el("text", {x: x(i), y: H - 6, "text-anchor": i === 0 ? "start" : i === n - 1 ? "end" : "middle"}, svg).textContent = hhmm(minutes[i]);
    });
    series.forEach(function (s, k) {
      var d = "", pen = false, area = "";
      s.forEach(function (v, i) {
        if (v === null) { pen = false; return; }
        d += (pen ? "L" : "M") + x(i).toFixed(1) + " " + y(v).toFixed(1);
        pen = true;
      });
      if (k === 0 && series.length === 1) {
        area = "M" + x(0) + " " + y(0);
        s.forEach(function (v, i) { area += "L" + x(i).toFixed(1) + " " + y(v || 0).toFixed(1); });
        area += "L" + x(n - 1) + " " + y(0) + "Z";
        el("path", {d: area, "class": "area"}, svg);
      }
      if (d) el("path", {d: d, "class": "s" + k}, svg);
      s.forEach(function (v, i) {  // a minute alone between gaps is a dot, not an invisible line
        if (v !== null && (i === 0 || s[i - 1] === null) && (i === n - 1 || s[i + 1] === null)) {
          el("circle", {cx: x(i).toFixed(1), cy: y(v).toFixed(1), r: 3, "class": "d" + k}, svg);
        }
      });
    });
    var cap = box.parentNode.querySelector("figcaption");
    var legend = cap.querySelector(".legend") || cap.appendChild(document.createElement("span"));
    legend.className = "legend";
    var latest = series.map(function (s) { for (var i = s.length - 1; i >= 0; i--) if (s[i] !== null) return s[i]; return null; });
    legend.textContent = "";
    (names || [""]).forEach(function (name, k) {
      var span = document.createElement("span");
      span.className = "sw" + k;
      span.textContent = (k ? "  " : "") + (name ? name + " " : "now ") + fmt(latest[k], unit);
      legend.appendChild(span);
    });
  }
  function render(data) {
    last = data;
    var m = data.minutes, at = m.map(function (r) { return r.minute; });
    var pick = function (key, scale) { return m.map(function (r) { return r[key] === null ? null : r[key] * (scale || 1); }); };
    var charts = {
      finished: [[pick("finished")], ""],
      tokens_per_s: [[pick("tokens", 1 / 60)], "tok/s"],
      wait: [[pick("wait_p50"), pick("wait_p95")], "s", ["p50", "p95"]],
      run: [[pick("run_p50"), pick("run_p95")], "s", ["p50", "p95"]]
    };
    root.querySelectorAll("[data-chart]").forEach(function (box) {
      var c = charts[box.getAttribute("data-chart")];
      if (c) draw(box, at, c[0], c[1], c[2]);
    });
    Object.keys(data.statuses).forEach(function (s) {
      var e = root.querySelector('[data-stat="' + s + '"]');
      if (e) e.textContent = data.statuses[s];
    });
    ["up", "lost"].forEach(function (k) {
      var e = root.querySelector('[data-worker="' + k + '"]');
      if (e) e.textContent = data.workers[k];
    });
    data.queues.forEach(function (q) {
      var row = root.querySelector('tr[data-queue="' + CSS.escape(q.model) + '"]');
      if (!row) return;
      row.querySelector('[data-q="queued"]').textContent = q.queued;
      row.querySelector('[data-q="running"]').textContent = q.running;
      row.querySelector('[data-q="oldest"]').textContent = q.oldest_age_s === null ? "—" : fmt(q.oldest_age_s, "s");
    });
    var h = data.hour, hour = root.querySelector("[data-hour]");
    if (hour) hour.textContent = h.finished + (h.finished === 1 ? " job" : " jobs") + " finished, " + h.tokens + " tokens generated · queue wait p50 " +
      fmt(h.wait_p50, "s") + ", p95 " + fmt(h.wait_p95, "s") + " · run time p50 " + fmt(h.run_p50, "s") + ", p95 " + fmt(h.run_p95, "s");
    var now = root.querySelector('[data-live="now"]');
    if (now) now.textContent = "updated " + new Date(data.now).toISOString().slice(11, 19) + " UTC";
  }
  var initial = document.getElementById("overview-data");
  if (initial) render(JSON.parse(initial.textContent));
  function refresh() {
    fetch(root.getAttribute("data-src"), {credentials: "same-origin", headers: {Accept: "application/json"}})
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
      .then(render)
      .catch(function () { /* the next refresh tries again */ });
  }
  setInterval(refresh, 5000);
  var resized = null;
  window.addEventListener("resize", function () {
    clearTimeout(resized);
    resized = setTimeout(function () { if (last) render(last); }, 150);
  });
})();
