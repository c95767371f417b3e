"use strict";
// The inferwatch dashboard. It reads the monitor API's JSON endpoints and draws everything as
// inline SVG. Whatever comes from a payload (feature names, categories, details) enters the
// page through textContent and setAttribute only, never as markup.
(function () {
  var SVG_NS = "http://www.w3.org/2000/svg";
  var TOKEN_KEY = "inferwatch-token";
  var REFRESH_MS = 10000;
  var BASE = location.pathname.replace(/\/dashboard\/?$/, "");
  var C = {
    blue: "#2563eb", orange: "#ea580c", green: "#16a34a", red: "#dc2626",
    purple: "#7c3aed", grey: "#94a3b8", teal: "#0d9488", amber: "#d97706",
  };
  var state = { data: null, selected: null, timer: null, busy: false, again: false, refreshes: 0, domain: null };

  // ------------------------------------------------------------------ DOM helpers (text only)

  function $(id) { return document.getElementById(id); }

  function el(tag, props, children) {
    var node = document.createElement(tag);
    props = props || {};
    Object.keys(props).forEach(function (key) {
      var value = props[key];
      if (value == null) return;
      if (key === "text") node.textContent = String(value);
      else if (key === "className") node.className = value;
      else node.setAttribute(key, String(value));
    });
    (children || []).forEach(function (child) {
      if (child != null) node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    });
    return node;
  }

  function svg(tag, attrs, text) {
    var node = document.createElementNS(SVG_NS, tag);
    Object.keys(attrs || {}).forEach(function (key) {
      if (attrs[key] != null) node.setAttribute(key, String(attrs[key]));
    });
    if (text != null) node.textContent = String(text);
    return node;
  }

  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }

  function pill(text, level) { return el("span", { className: "pill " + (level || "neutral"), text: text }); }

  function emptyNote(host, text) {
    clear(host).appendChild(el("div", { className: "empty", text: text || "No data yet" }));
  }

  // ------------------------------------------------------------------ number and time formats

  function isNum(v) { return typeof v === "number" && isFinite(v); }

  function num(v) {
    if (!isNum(v)) return "–";
    var a = Math.abs(v);
    if (a >= 10000) return Math.round(v).toLocaleString("en-US");
    var text = a >= 100 ? v.toFixed(0) : a >= 10 ? v.toFixed(1) : a >= 1 ? v.toFixed(2) : a === 0 ? "0" : v.toPrecision(2);
    return text.indexOf(".") >= 0 && text.indexOf("e") < 0 ? text.replace(/\.?0+$/, "") : text;
  }
  function share(v) { return isNum(v) ? num(v * 100) + "%" : "–"; }
  function percent(v) { return isNum(v) ? num(v) + "%" : "–"; }
  function millis(v) { return !isNum(v) ? "–" : v >= 1000 ? num(v / 1000) + " s" : num(v) + " ms"; }
  function bytes(v) {
    if (!isNum(v)) return "–";
    var units = ["B", "KiB", "MiB", "GiB", "TiB"], i = 0;
    while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return num(v) + " " + units[i];
  }
  function time(ms) { return isNum(ms) ? new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hourCycle: "h23" }) : "–"; }
  function stamp(iso) {
    var t = Date.parse(iso);
    if (!isNum(t)) return "–";
    var d = new Date(t), today = new Date().toDateString() === d.toDateString();
    return today ? d.toLocaleTimeString() : d.toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
  }
  function seconds(v) {
    if (!isNum(v)) return "–";
    return v < 90 ? num(v) + " s" : v < 5400 ? num(v / 60) + " min" : v < 172800 ? num(v / 3600) + " h" : num(v / 86400) + " days";
  }
  function ago(iso) {
    var s = (Date.now() - Date.parse(iso)) / 1000;
    if (!isNum(s)) return "";
    if (s < 90) return Math.max(0, Math.round(s)) + " s ago";
    if (s < 5400) return Math.round(s / 60) + " min ago";
    if (s < 172800) return Math.round(s / 3600) + " h ago";
    return Math.round(s / 86400) + " days ago";
  }

  // ------------------------------------------------------------------ charts: inline SVG

  function niceStep(span, count) {
    var raw = span / count, mag = Math.pow(10, Math.floor(Math.log10(raw))), r = raw / mag;
    return (r <= 1 ? 1 : r <= 2 ? 2 : r <= 5 ? 5 : 10) * mag;
  }

  var TIME_STEPS = [60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800];

  function timeTicks(lo, hi, most) {
    var span = (hi - lo) / 1000, step = TIME_STEPS[TIME_STEPS.length - 1];
    for (var i = 0; i < TIME_STEPS.length; i++) if (span / TIME_STEPS[i] <= most) { step = TIME_STEPS[i]; break; }
    var ticks = [], ms = step * 1000, offset = new Date().getTimezoneOffset() * 60000;
    for (var t = Math.ceil((lo - offset) / ms) * ms + offset; t <= hi; t += ms) ticks.push(t);
    var long = span > 172800;
    return ticks.map(function (t) {
      var d = new Date(t);
      return [t, long ? d.toLocaleDateString([], { month: "short", day: "numeric" }) : time(t)];
    });
  }

  var tooltip = $("tooltip");
  function showTip(event, lines) {
    clear(tooltip);
    lines.forEach(function (line, i) { tooltip.appendChild(el("div", { className: i ? "" : "tip-head", text: line })); });
    tooltip.hidden = false;
    var x = Math.min(event.clientX + 14, window.innerWidth - tooltip.offsetWidth - 8);
    tooltip.style.left = x + "px";
    tooltip.style.top = (event.clientY + 14) + "px";
  }
  function hideTip() { tooltip.hidden = true; }

  function legend(items) {
    return el("div", { className: "legend" }, items.map(function (s) {
      var swatch = el("i");
      swatch.style.background = s.color;
      return el("span", {}, [swatch, s.label]);
    }));
  }

  // Series: [{label, color, points: [[x, y or null]], area, dash}]. Options: format (y values),
  // xDomain, yMin, yCap (an upper bound the axis never passes, e.g. 100%), hlines, marks, empty.
  function lineChart(host, series, o) {
    o = o || {};
    var all = [];
    series.forEach(function (s) { s.points.forEach(function (p) { if (isNum(p[0]) && isNum(p[1])) all.push(p); }); });
    if (!all.length) return emptyNote(host, o.empty);
    var fmt = o.format || num, W = Math.max(host.clientWidth || 0, 240), H = o.height || 170;
    var m = { l: 56, r: 14, t: 10, b: 22 }, pw = W - m.l - m.r, ph = H - m.t - m.b;
    var xs = all.map(function (p) { return p[0]; }), ys = all.map(function (p) { return p[1]; });
    var x0 = o.xDomain ? o.xDomain[0] : Math.min.apply(null, xs), x1 = o.xDomain ? o.xDomain[1] : Math.max.apply(null, xs);
    if (x1 <= x0) { x0 -= 60000; x1 += 60000; }
    var extra = (o.hlines || []).map(function (h) { return h.y; }).filter(isNum);
    var y0 = isNum(o.yMin) ? Math.min(o.yMin, Math.min.apply(null, ys)) : Math.min.apply(null, ys);
    var y1 = Math.max.apply(null, ys.concat(extra));
    if (y1 <= y0) y1 = y0 + (Math.abs(y0) || 1);
    // Bytes step in whole KiB, MiB or GiB, so that the axis reads 2 GiB, 4 GiB, not 9.31 GiB.
    var unit = fmt === bytes ? Math.pow(1024, Math.max(0, Math.floor(Math.log(Math.max(Math.abs(y1), 1)) / Math.log(1024)))) : 1;
    var step = niceStep((y1 - y0) / unit, 4) * unit;
    y0 = Math.floor(y0 / step) * step;
    y1 = Math.ceil(y1 / step) * step;
    if (isNum(o.yCap) && y1 > o.yCap && Math.max.apply(null, ys) <= o.yCap) y1 = o.yCap;
    function sx(x) { return m.l + (x - x0) / (x1 - x0) * pw; }
    function sy(y) { return m.t + ph - (y - y0) / (y1 - y0) * ph; }
    var root = svg("svg", { viewBox: "0 0 " + W + " " + H, width: "100%", height: H, class: "plot", role: "img" });
    if (o.label) root.setAttribute("aria-label", o.label);
    for (var v = y0; v <= y1 + step / 2; v += step) {
      root.appendChild(svg("line", { x1: m.l, x2: W - m.r, y1: sy(v), y2: sy(v), class: "gridline" }));
      root.appendChild(svg("text", { x: m.l - 6, y: sy(v) + 4, class: "axis", "text-anchor": "end" }, fmt(v)));
    }
    var ticks = o.time === false ? [] : timeTicks(x0, x1, Math.max(2, Math.min(6, Math.floor(pw / 64))));
    ticks.forEach(function (t) { root.appendChild(svg("text", { x: sx(t[0]), y: H - 6, class: "axis", "text-anchor": "middle" }, t[1])); });
    (o.hlines || []).forEach(function (h) {
      if (!isNum(h.y) || h.y > y1 || h.y < y0) return;
      root.appendChild(svg("line", { x1: m.l, x2: W - m.r, y1: sy(h.y), y2: sy(h.y), stroke: h.color || C.red, class: "hline" }));
      root.appendChild(svg("text", { x: W - m.r - 2, y: sy(h.y) - 4, class: "axis", "text-anchor": "end", fill: h.color || C.red }, h.label));
    });
    (o.marks || []).forEach(function (mk) {
      if (!isNum(mk.x) || mk.x < x0 || mk.x > x1) return;
      root.appendChild(svg("line", { x1: sx(mk.x), x2: sx(mk.x), y1: m.t, y2: m.t + ph, stroke: mk.color || C.purple, class: "hline" }));
      root.appendChild(svg("text", { x: sx(mk.x) + 4, y: m.t + 10, class: "axis", fill: mk.color || C.purple }, mk.label));
    });
    series.forEach(function (s) {
      var d = "", run = [], runs = [];
      s.points.forEach(function (p) {
        if (isNum(p[0]) && isNum(p[1])) { d += (run.length ? "L" : "M") + sx(p[0]).toFixed(1) + "," + sy(p[1]).toFixed(1); run.push(p); }
        else if (run.length) { runs.push(run); run = []; }
      });
      if (run.length) runs.push(run);
      if (s.area) runs.forEach(function (r) {
        var a = "M" + sx(r[0][0]) + "," + sy(Math.max(y0, 0));
        r.forEach(function (p) { a += "L" + sx(p[0]).toFixed(1) + "," + sy(p[1]).toFixed(1); });
        a += "L" + sx(r[r.length - 1][0]) + "," + sy(Math.max(y0, 0)) + "Z";
        root.appendChild(svg("path", { d: a, fill: s.color, class: "area" }));
      });
      root.appendChild(svg("path", { d: d, stroke: s.color, class: "series" + (s.dash ? " dashed" : "") }));
      runs.forEach(function (r) {
        if (r.length === 1) root.appendChild(svg("circle", { cx: sx(r[0][0]), cy: sy(r[0][1]), r: 3, fill: s.color, class: "series-dot" }));
      });
    });
    var guide = svg("line", { y1: m.t, y2: m.t + ph, class: "guide", visibility: "hidden" });
    root.appendChild(guide);
    var overlay = svg("rect", { x: m.l, y: m.t, width: pw, height: ph, fill: "transparent" });
    overlay.addEventListener("mousemove", function (event) {
      var box = root.getBoundingClientRect(), x = x0 + ((event.clientX - box.left) * W / box.width - m.l) / pw * (x1 - x0);
      var lines = [o.time === false ? num(x) : new Date(x).toLocaleString()], near = null;
      series.forEach(function (s) {
        var best = null;
        s.points.forEach(function (p) { if (isNum(p[1]) && (!best || Math.abs(p[0] - x) < Math.abs(best[0] - x))) best = p; });
        if (best) { lines.push(s.label + ": " + fmt(best[1])); if (!near || Math.abs(best[0] - x) < Math.abs(near - x)) near = best[0]; }
      });
      if (near != null) { lines[0] = o.time === false ? num(near) : new Date(near).toLocaleString(); guide.setAttribute("x1", sx(near)); guide.setAttribute("x2", sx(near)); }
      guide.setAttribute("visibility", "visible");
      showTip(event, lines);
    });
    overlay.addEventListener("mouseleave", function () { guide.setAttribute("visibility", "hidden"); hideTip(); });
    root.appendChild(overlay);
    clear(host).appendChild(root);
    if (series.length > 1 || o.legend) host.appendChild(legend(series));
  }

  // Grouped bars over categories. groups: [{label, color, values}], values aligned with labels.
  function barChart(host, labels, groups, o) {
    o = o || {};
    if (!labels.length) return emptyNote(host, o.empty);
    var fmt = o.format || num, W = Math.max(host.clientWidth || 0, 240), n = labels.length;
    var tilt = n > 6 || labels.some(function (l) { return l.length > 8; });
    var H = (o.height || 170) + (tilt ? 44 : 0), m = { l: 48, r: 8, t: 10, b: tilt ? 66 : 22 };
    var pw = W - m.l - m.r, ph = H - m.t - m.b, top = 0;
    groups.forEach(function (g) { g.values.forEach(function (v) { if (isNum(v)) top = Math.max(top, v); }); });
    var step = niceStep(top || 1, 4), y1 = Math.ceil((top || 1) / step) * step;
    function sy(y) { return m.t + ph - y / y1 * ph; }
    var root = svg("svg", { viewBox: "0 0 " + W + " " + H, width: "100%", height: H, class: "plot", role: "img" });
    if (o.label) root.setAttribute("aria-label", o.label);
    for (var v = 0; v <= y1 + step / 2; v += step) {
      root.appendChild(svg("line", { x1: m.l, x2: W - m.r, y1: sy(v), y2: sy(v), class: "gridline" }));
      root.appendChild(svg("text", { x: m.l - 6, y: sy(v) + 4, class: "axis", "text-anchor": "end" }, fmt(v)));
    }
    var band = pw / n, width = band * 0.8 / groups.length, every = Math.ceil(n / 40);
    labels.forEach(function (label, i) {
      groups.forEach(function (g, j) {
        var value = isNum(g.values[i]) ? g.values[i] : 0;
        var bar = svg("rect", {
          x: m.l + i * band + band * 0.1 + j * width, y: sy(value), width: Math.max(width - 1, 1),
          height: Math.max(m.t + ph - sy(value), 0), fill: g.color, class: "bar",
        });
        bar.appendChild(svg("title", {}, label + " · " + g.label + ": " + fmt(value)));
        root.appendChild(bar);
      });
      if (i % every) return;
      var cx = m.l + (i + 0.5) * band, short = label.length > 16 ? label.slice(0, 15) + "…" : label;
      var text = svg("text", tilt
        ? { x: cx, y: m.t + ph + 12, class: "axis", "text-anchor": "end", transform: "rotate(-40 " + cx + " " + (m.t + ph + 12) + ")" }
        : { x: cx, y: H - 6, class: "axis", "text-anchor": "middle" }, short);
      text.appendChild(svg("title", {}, label));
      root.appendChild(text);
    });
    clear(host).appendChild(root);
    host.appendChild(legend(groups));
  }

  // ------------------------------------------------------------------ data

  function token() {
    var match = /(?:^#|&)token=([^&]*)/.exec(location.hash);
    try {
      if (match) {
        sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
        history.replaceState(null, "", location.pathname + location.search);
      }
      return sessionStorage.getItem(TOKEN_KEY);
    } catch (e) { return match ? match[1] : null; }
  }
  var TOKEN = token();

  async function get(path) {
    var headers = { Accept: "application/json" };
    if (TOKEN) headers.Authorization = "Bearer " + TOKEN;
    try {
      var response = await fetch(BASE + path, { headers: headers, cache: "no-store" });
      if (response.status === 404 || response.status === 405) return { missing: true };
      if (!response.ok) return { error: response.status === 401 ? "the admin token was not accepted" : "HTTP " + response.status, status: response.status };
      return { data: await response.json() };
    } catch (e) {
      return { error: "the monitor did not answer" };
    }
  }

  function why(result, what) {
    if (result.missing) return "No data yet: this server has no " + what + " endpoint yet.";
    if (result.error) return "Could not read " + what + ": " + result.error + ".";
    return "No data yet.";
  }

  function rows(result, key) {
    return result.data && Array.isArray(result.data[key]) ? result.data[key] : [];
  }

  function series(list, key, scale) {
    return list.map(function (r) { var v = r[key]; return [Date.parse(r.ts), isNum(v) ? v * (scale || 1) : null]; });
  }

  // Several models with baselines of their own: the drift and evaluation panels show the one
  // chosen (the monitor's ?model=), or the check over every request.
  function model() { return $("model").value; }

  function scoped(path) {
    var m = model();
    return m ? path + (path.indexOf("?") < 0 ? "?" : "&") + "model=" + encodeURIComponent(m) : path;
  }

  // The drift card's window and comparison: a check of that window now, from summaries
  function driftPath() {
    var q = [], w = $("drift-window").value, a = $("drift-against").value;
    if (w) q.push("window=" + encodeURIComponent(w));
    if (a) q.push("against=" + encodeURIComponent(a));
    return scoped("/drift" + (q.length ? "?" + q.join("&") : ""));
  }

  function renderModels(health) {
    var names = health.data && Array.isArray(health.data.models) ? health.data.models.filter(function (n) { return typeof n === "string"; }) : [];
    var select = $("model"), current = select.value, known = [""].concat(names);
    var shown = Array.prototype.map.call(select.options, function (o) { return o.value; });
    $("model-choice").hidden = !names.length;
    if (shown.join("\u0000") === known.join("\u0000")) return false;
    while (select.options.length > 1) select.remove(1);
    names.forEach(function (name) { select.appendChild(el("option", { value: name, text: name })); });
    select.value = names.indexOf(current) >= 0 ? current : "";
    return select.value !== current;
  }

  // Scores of earlier checks, kept compact and fetched incrementally: a full report of a wide
  // model is large, and only a new check (every check_interval) adds to the history.
  var scores = { range: null, model: null, checks: [] };

  function compact(report) {
    var out = { t: Date.parse(report.checked_at), features: {}, prediction: {} };
    ["features", "prediction"].forEach(function (key) {
      var section = report[key] || {};
      Object.keys(section).forEach(function (name) { if (section[name]) out[key][name] = section[name].score; });
    });
    return out;
  }

  async function loadScores(range, latest) {
    var now = Date.now(), from = now - range * 1000, fresh = scores.range !== range || scores.model !== model();
    var last = !fresh && scores.checks.length ? scores.checks[scores.checks.length - 1].t : null;
    var newest = latest && Date.parse(latest.checked_at);
    if (last != null && isNum(newest) && newest <= last) return { data: true };
    var got = await get(scoped("/drift/history?limit=" + (last == null ? 120 : 50) + "&since=" + encodeURIComponent(new Date(last != null ? last : from).toISOString())));
    if (got.data) {
      var known = fresh ? [] : scores.checks, seen = {};
      known.concat(historyReports(got).map(compact)).forEach(function (c) { if (isNum(c.t) && c.t >= from) seen[c.t] = c; });
      scores.checks = Object.keys(seen).map(function (t) { return seen[t]; }).sort(function (a, b) { return a.t - b.t; });
      scores.range = range;
      scores.model = model();
    }
    return got;
  }

  function historyReports(result) {
    var d = result.data;
    if (Array.isArray(d)) return d;
    if (d && typeof d === "object") {
      var list = d.reports || d.history || d.items;
      if (Array.isArray(list)) return list;
    }
    return [];
  }

  function featureEntries(drift) {
    var list = [];
    [["features", "input"], ["prediction", "output"]].forEach(function (pair) {
      var section = drift && drift[pair[0]];
      if (!section || typeof section !== "object") return;
      Object.keys(section).forEach(function (name) {
        var entry = section[name];
        if (entry && typeof entry === "object") list.push({ name: name, role: pair[1], entry: entry });
      });
    });
    list.sort(function (a, b) {
      if (!!b.entry.drifted !== !!a.entry.drifted) return b.entry.drifted ? 1 : -1;
      var sa = isNum(a.entry.score) ? a.entry.score : -1, sb = isNum(b.entry.score) ? b.entry.score : -1;
      return sb - sa || (a.name < b.name ? -1 : 1);
    });
    return list;
  }

  // ------------------------------------------------------------------ panels

  var WORDS = { insufficient_data: "too few rows", no_baseline: "no baseline", no_labels: "no labels", insufficient_labels: "too few labels", unknown_prediction: "prediction unknown" };
  function word(status) { return WORDS[status] || status || "–"; }

  var LEVEL = { ok: "ok", degraded: "warn", alert: "warn", warning: "warn", failing: "bad", critical: "bad", firing: "bad", resolved: "ok" };

  function kpi(label, value, sub, level) {
    return el("div", { className: "kpi " + (level || "neutral") }, [
      el("div", { className: "kpi-label", text: label }),
      el("div", { className: "kpi-value", text: value }),
      el("div", { className: "kpi-sub", text: sub || "" }),
    ]);
  }

  function renderKpis(d) {
    var host = clear($("kpis")), h = d.health.data;
    if (!h) { host.appendChild(kpi("Serving", "–", why(d.health, "/health"), "neutral")); }
    else {
      var req = h.requests || {}, lat = h.latency_ms || {}, res = h.resources || {};
      var proc = res.process || {}, sys = res.system || {}, cg = res.cgroup || null, gpus = res.gpus || [];
      var span = isNum(h.window_s) ? " over " + num(h.window_s / 60) + " min" : "";
      host.appendChild(kpi("Serving", h.status || "–", "status" + span, LEVEL[h.status]));
      host.appendChild(kpi("Requests / s", num(req.per_second), num(req.count) + (isNum(h.window_s) ? " in " + seconds(h.window_s) : "")));
      host.appendChild(kpi("Error rate", share(req.error_rate), num(req.errors) + " errors",
        req.error_rate >= 0.05 ? "bad" : req.error_rate >= 0.01 ? "warn" : "neutral"));
      host.appendChild(kpi("Latency p50", millis(lat.p50), "p95 " + millis(lat.p95)));
      host.appendChild(kpi("Latency p99", millis(lat.p99), "max " + millis(lat.max)));
      host.appendChild(kpi("CPU", percent(proc.cpu_percent), "system " + percent(sys.cpu_percent)));
      var memSub = cg && isNum(cg.memory_used_percent) ? percent(cg.memory_used_percent) + " of the container limit"
        : "system " + percent(sys.memory_used_percent);
      host.appendChild(kpi("Memory", bytes(proc.rss_bytes), memSub,
        cg && cg.memory_used_percent >= 90 ? "bad" : "neutral"));
      if (gpus.length) {
        var g = gpus[0], used = 0, total = 0;
        gpus.forEach(function (x) { used += x.memory_used_bytes || 0; total += x.memory_total_bytes || 0; });
        host.appendChild(kpi(gpus.length > 1 ? "GPUs (" + gpus.length + ")" : "GPU", percent(g.utilization_percent),
          bytes(used) + " of " + bytes(total), total && used / total >= 0.95 ? "warn" : "neutral"));
      } else {
        host.appendChild(kpi("GPU", "none", res.gpu_error || "no GPU seen"));
      }
    }
    var drift = d.drift.data;
    if (drift) {
      var n = (drift.drifted_features || []).length, a = (drift.schema_anomalies || []).length;
      host.appendChild(kpi("Drift", word(drift.status), n + " drifted · " + a + " anomal" + (a === 1 ? "y" : "ies"),
        drift.status === "alert" ? "warn" : LEVEL[drift.status]));
    }
    var ev = d.evaluation.data;
    if (ev) {
      var mt = ev.metrics || {}, main = ev.task === "regression" ? ["MAE", mt.mae] : ["accuracy", mt.accuracy];
      host.appendChild(kpi("Quality", word(ev.status), isNum(main[1]) ? main[0] + " " + num(main[1]) : "no labelled window yet",
        ev.status === "degraded" ? "bad" : LEVEL[ev.status]));
    }
    var al = d.alerts.data;
    if (al) {
      var firing = rows(d.alerts, "active").length;
      host.appendChild(kpi("Alerts", String(firing), "firing now", firing ? "bad" : "ok"));
    }
  }

  function renderBanner(d) {
    var reasons = [], level = "ok", h = d.health.data;
    function raise(to, text) {
      reasons.push(text);
      if (to === "bad" || (to === "warn" && level === "ok")) level = to;
    }
    if (!h) { level = "unknown"; reasons.push(why(d.health, "/health")); }
    else if (h.status !== "ok") {
      var r = h.requests || {}, l = h.latency_ms || {};
      raise(h.status === "failing" ? "bad" : "warn", "Serving is " + h.status + ": error rate " + share(r.error_rate) + ", p99 latency " + millis(l.p99) + ".");
    }
    var drift = d.drift.data;
    if (drift && drift.status === "alert") {
      var names = drift.drifted_features || [];
      var total = featureEntries(drift).length;
      if (names.length) raise("warn", "Drift in " + names.length + " of " + total + " features and outputs: " + names.slice(0, 5).join(", ") + (names.length > 5 ? " and " + (names.length - 5) + " more" : "") + ".");
      var an = drift.schema_anomalies || [];
      var which = an.map(function (a) { return a.feature == null ? a.type : a.feature; }).filter(function (v, i, all) { return all.indexOf(v) === i; });
      if (an.length) raise("warn", an.length + " schema anomal" + (an.length === 1 ? "y" : "ies") + ": " + which.slice(0, 5).join(", ") + (which.length > 5 ? " and more" : "") + ".");
    }
    var ev = d.evaluation.data;
    if (ev && ev.status === "degraded") raise("bad", "Model quality is degraded: " + ((ev.reasons || [])[0] || "see Model quality") );
    rows(d.alerts, "active").forEach(function (a) {
      raise(a.severity === "critical" ? "bad" : "warn", "Alert firing: " + (a.title || a.rule) + ": " + (a.summary || ""));
    });
    var titles = { ok: "All good: the model is serving normally", warn: "Needs attention", bad: "Something is wrong", unknown: "No data from the monitor" };
    $("banner").className = "banner " + level;
    $("banner-title").textContent = titles[level];
    var list = clear($("banner-reasons"));
    reasons.slice(0, 8).forEach(function (text) { list.appendChild(el("li", { text: text })); });
  }

  function renderServing(d, domain) {
    var eff = rows(d.history, "efficiency"), res = rows(d.history, "resources");
    var none = d.history.data ? "No data yet: the series fill in as the engine samples them." : why(d.history, "/health/history");
    lineChart($("chart-traffic"), [{ label: "requests/s", color: C.blue, area: true, points: series(eff, "per_second") }],
      { xDomain: domain, yMin: 0, empty: none, label: "Requests per second" });
    lineChart($("chart-latency"), [
      { label: "p50", color: C.teal, points: series(eff, "p50_ms") },
      { label: "p95", color: C.orange, points: series(eff, "p95_ms") },
      { label: "p99", color: C.red, points: series(eff, "p99_ms") },
    ], { xDomain: domain, yMin: 0, format: millis, empty: none, label: "Latency percentiles" });
    lineChart($("chart-errors"), [{ label: "error rate", color: C.red, area: true, points: series(eff, "error_rate", 100) }],
      { xDomain: domain, yMin: 0, yCap: 100, format: percent, empty: none, label: "Error rate" });
    lineChart($("chart-cpu"), [
      { label: "process", color: C.blue, points: series(res, "process_cpu_percent") },
      { label: "system", color: C.grey, points: series(res, "system_cpu_percent") },
    ], { xDomain: domain, yMin: 0, format: percent, empty: none, label: "CPU" });
    var limit = null;
    res.forEach(function (r) { if (isNum(r.cgroup_memory_max_bytes)) limit = r.cgroup_memory_max_bytes; });
    lineChart($("chart-memory"), [
      { label: "process RSS", color: C.purple, points: series(res, "process_rss_bytes") },
      { label: "container", color: C.teal, points: series(res, "cgroup_memory_bytes") },
    ].filter(function (s) { return s.points.some(function (p) { return isNum(p[1]); }) || s.label === "process RSS"; }),
    { xDomain: domain, yMin: 0, format: bytes, empty: none, hlines: limit ? [{ y: limit, label: "limit" }] : [], label: "Memory" });
    var h = d.health.data, gpus = (h && h.resources && h.resources.gpus) || [];
    var gpuNone = gpus.length || !h ? none : "No GPU: " + ((h.resources && h.resources.gpu_error) || "none seen by NVML") + ".";
    lineChart($("chart-gpu"), [{ label: "utilization", color: C.green, area: true, points: series(res, "gpu_utilization_percent") }],
      { xDomain: domain, yMin: 0, yCap: 100, format: percent, empty: gpuNone, label: "GPU utilization" });
    var list = clear($("gpu-list"));
    gpus.forEach(function (g) {
      list.appendChild(el("div", { text: "GPU " + g.index + " " + (g.name || "") + ": " + percent(g.utilization_percent) + ", "
        + bytes(g.memory_used_bytes) + " of " + bytes(g.memory_total_bytes)
        + (isNum(g.temperature_c) ? ", " + num(g.temperature_c) + " °C" : "") + (isNum(g.power_watts) ? ", " + num(g.power_watts) + " W" : "") }));
    });
  }

  function renderDrift(d) {
    var drift = d.drift.data, summary = clear($("drift-summary")), body = clear($("features").tBodies[0]);
    if (!drift) {
      summary.appendChild(el("p", { className: "muted", text: why(d.drift, "/drift") }));
      body.appendChild(el("tr", {}, [el("td", { colspan: 8, className: "empty", text: "No data yet" })]));
      renderAnomalies(null, d);
      return renderFeature(d, null);
    }
    var says = {
      ok: ["no drift", "ok"], alert: ["drift or skew found", "warn"],
      insufficient_data: ["not enough rows in the window for a verdict", "neutral"], no_baseline: ["skew checks are off: set the baseline setting", "neutral"],
    }[drift.status] || [drift.status || "unknown", "neutral"];
    var w = drift.window || {}, b = drift.baseline || {};
    summary.appendChild(el("p", {}, [pill(word(drift.status), says[1]), " " + says[0]]));
    summary.appendChild(el("p", { className: "small muted", text: "Checked " + stamp(drift.checked_at) + " (" + ago(drift.checked_at) + ") over "
      + num(w.rows) + " rows; " + (b.path ? "baseline " + b.path + (isNum(b.rows) ? " (" + num(b.rows) + " rows)" : "") : "no baseline file") + "." }));
    if (b.error) summary.appendChild(el("p", { className: "warn-text small", text: "Baseline problem: " + b.error }));
    var ag = drift.against;
    if (ag) summary.appendChild(el("p", { className: "small muted", text: ag.compared
      ? "Compared with " + num(ag.rows) + " rows from " + stamp(ag.start) + " to " + stamp(ag.end) + "."
      : "The earlier window (" + stamp(ag.start) + " to " + stamp(ag.end) + ") has too few rows: compared with the baseline." }));
    var entries = featureEntries(drift), filter = $("feature-filter").value.trim().toLowerCase();
    if (!entries.some(function (f) { return f.name === state.selected; })) state.selected = entries.length ? entries[0].name : null;
    var shown = entries.filter(function (f) { return !filter || f.name.toLowerCase().indexOf(filter) >= 0; });
    shown.forEach(function (f) {
      var e = f.entry, ratio = isNum(e.score) && isNum(e.threshold) && e.threshold > 0 ? e.score / e.threshold : null;
      var bar = el("div", { className: "ratio" }), fill = el("span");
      fill.style.width = (ratio == null ? 0 : Math.min(ratio, 2) / 2 * 100) + "%";
      bar.appendChild(fill);
      bar.appendChild(el("b"));
      var nameCell = el("td", { className: "name" }, [el("span", { text: f.name })]);
      if (e.critical) nameCell.appendChild(pill("critical", "bad"));
      var tr = el("tr", {
        className: (e.drifted ? "drifted" : "") + (f.name === state.selected ? " selected" : ""),
        tabindex: 0, "data-feature": f.name, "data-role": f.role, "aria-selected": f.name === state.selected,
      }, [
        nameCell, el("td", { text: f.role }), el("td", { text: e.method || "–" }),
        el("td", { className: "num", text: num(e.score) }), el("td", { className: "num", text: num(e.threshold) }),
        el("td", {}, [bar]), el("td", { className: "num", text: num(e.rows) }),
        el("td", {}, [e.drifted ? pill("drifted", "warn") : isNum(e.score) ? pill("ok", "ok") : pill("no values", "neutral")]),
      ]);
      function choose() { state.selected = f.name; renderDrift(state.data); }
      tr.addEventListener("click", choose);
      tr.addEventListener("keydown", function (event) { if (event.key === "Enter" || event.key === " ") { event.preventDefault(); choose(); } });
      body.appendChild(tr);
    });
    if (!shown.length) {
      var text = entries.length ? "No feature matches the filter" : drift.status === "no_baseline" ? "No baseline: no feature is compared" : "No feature was compared in this check";
      body.appendChild(el("tr", {}, [el("td", { colspan: 8, className: "empty", text: text })]));
    }
    renderAnomalies(drift, d);
    renderOutliers(drift, d);
    renderFeature(d, entries.filter(function (f) { return f.name === state.selected; })[0] || null);
  }

  function renderAnomalies(drift, d) {
    var body = clear($("anomalies").tBodies[0]), list = drift ? (drift.schema_anomalies || []).slice() : [];
    list.sort(function (a, b) { return (b.share || 0) - (a.share || 0); });
    list.forEach(function (a) {
      body.appendChild(el("tr", { className: "anomaly" }, [
        el("td", { className: "name", text: a.feature == null ? "(all)" : a.feature }), el("td", {}, [pill(a.type || "?", "warn")]),
        el("td", { className: "num", text: share(a.share) }), el("td", { text: a.detail || "" }),
      ]));
    });
    if (!list.length) {
      body.appendChild(el("tr", {}, [el("td", { colspan: 4, className: "empty", text: drift ? "No schema anomalies" : why(d.drift, "/drift") })]));
    }
  }

  // The outlier share and the multivariate check, and the most unusual rows of the window;
  // request ids and feature names come from clients, so they only ever become text nodes.
  function renderOutliers(drift, d) {
    var summary = clear($("outliers-summary")), body = clear($("outliers").tBodies[0]);
    var o = drift && drift.outliers, m = drift && drift.multivariate;
    if (o && isNum(o.rows)) {
      summary.appendChild(el("p", {}, [pill(o.detected ? "alert" : "ok", o.detected ? "warn" : "ok"),
        " " + share(o.share || 0) + " of " + o.rows + " rows are outliers; the baseline has " + share(o.expected_share || 0)
        + " (p = " + (isNum(o.p_value) ? o.p_value.toPrecision(2) : "?") + ")"]));
    }
    if (m && isNum(m.rows)) {
      summary.appendChild(el("p", {}, [pill(m.drifted ? "drifted" : "ok", m.drifted ? "warn" : "ok"),
        " multivariate: mean distance " + (isNum(m.mean_score) ? m.mean_score.toFixed(2) : "?") + ", baseline range "
        + (isNum(m.lower) ? m.lower.toFixed(2) : "?") + " to " + (isNum(m.upper) ? m.upper.toFixed(2) : "?")]));
    }
    var top = (o && o.top) || [];
    top.forEach(function (r) {
      var names = (r.features || []).map(function (f) { return String(f.name) + " " + share(f.contribution || 0); }).join(", ");
      body.appendChild(el("tr", {}, [el("td", { className: "name", text: r.request_id }), el("td", { className: "num", text: r.row_index }),
        el("td", { className: "num", text: isNum(r.score) ? r.score.toFixed(2) : "?" }), el("td", { text: names })]));
    });
    if (!top.length) {
      var text = !drift ? why(d.drift, "/drift") : o ? "No outliers in this window" : "The baseline has no outlier model";
      body.appendChild(el("tr", {}, [el("td", { colspan: 4, className: "empty", text: text })]));
    }
  }

  var SHOWN = { kind: 1, method: 1, score: 1, threshold: 1, drifted: 1, rows: 1, histogram: 1 };

  function renderFeature(d, f) {
    var explain = clear($("feature-explain")), meta = $("feature-meta");
    if (!f) {
      $("feature-title").textContent = "Feature";
      meta.textContent = "Choose a feature in the table.";
      emptyNote($("chart-histogram"));
      emptyNote($("chart-score"));
      return;
    }
    var e = f.entry;
    $("feature-title").textContent = f.name;
    meta.textContent = [f.role === "output" ? "prediction output" : "input feature", e.kind, e.method].filter(Boolean).join(" · ");
    var hist = e.histogram;
    if (hist && Array.isArray(hist.bins) && Array.isArray(hist.baseline) && Array.isArray(hist.current)) {
      var norm = function (values) {
        var total = values.reduce(function (s, v) { return s + (isNum(v) ? v : 0); }, 0);
        return values.map(function (v) { return total && isNum(v) ? v / total * 100 : 0; });
      };
      barChart($("chart-histogram"), hist.bins.map(String), [
        { label: "baseline", color: C.grey, values: norm(hist.baseline) },
        { label: "current window", color: e.drifted ? C.orange : C.blue, values: norm(hist.current) },
      ], { format: percent, label: "Histogram of " + f.name });
    } else {
      emptyNote($("chart-histogram"), "This drift report carries no histogram for this feature.");
    }
    var key = f.role === "output" ? "prediction" : "features", points = [];
    var checks = d.drift.data ? scores.checks.concat([compact(d.drift.data)]) : scores.checks;
    checks.forEach(function (c) {
      var v = c && c[key][f.name];
      if (isNum(v) && (!points.length || points[points.length - 1][0] < c.t)) points.push([c.t, v]);
    });
    lineChart($("chart-score"), [{ label: "score", color: e.drifted ? C.orange : C.blue, points: points }], {
      yMin: 0, xDomain: state.domain, hlines: isNum(e.threshold) ? [{ y: e.threshold, label: "threshold " + num(e.threshold) }] : [],
      empty: d.driftHistory.data ? "No scores yet." : why(d.driftHistory, "/drift/history"), label: "Drift score of " + f.name,
    });
    function row(label, value) { explain.appendChild(el("dt", { text: label })); explain.appendChild(el("dd", { text: value })); }
    row("Score", num(e.score) + " (threshold " + num(e.threshold) + ")");
    row("Drifted", e.drifted ? "yes" : "no");
    if (isNum(e.psi)) row("PSI", num(e.psi));
    if (isNum(e.wasserstein)) row("Wasserstein (in baseline std)", num(e.wasserstein));
    if (e.top_shift && typeof e.top_shift === "object") {
      row("Moved most", String(e.top_shift.value) + ": " + share(e.top_shift.baseline_share) + " → " + share(e.top_shift.current_share));
    }
    if (isNum(e.missing_share)) row("Missing", share(e.missing_share) + " (baseline " + share(e.baseline_missing_share) + ")");
    row("Rows", num(e.rows));
    Object.keys(e).forEach(function (k) {
      var v = e[k];
      if (SHOWN[k] || /psi|wasserstein|top_shift|missing_share/.test(k) || v == null || typeof v === "object") return;
      row(k.replace(/_/g, " "), typeof v === "number" ? num(v) : String(v));
    });
  }

  var METRICS = {
    classification: [["accuracy", "accuracy"], ["macro_f1", "macro F1"], ["macro_precision", "macro precision"], ["macro_recall", "macro recall"], ["log_loss", "log loss"], ["roc_auc", "ROC AUC"]],
    regression: [["mae", "MAE"], ["rmse", "RMSE"], ["mape", "MAPE"], ["r2", "R²"]],
  };

  function renderEvaluation(d) {
    var ev = d.evaluation.data, host = clear($("evaluation-summary")), chart = $("chart-evaluation");
    if (!ev) {
      host.appendChild(el("p", { className: "muted", text: why(d.evaluation, "/evaluation") }));
      return emptyNote(chart);
    }
    var level = ev.status === "ok" ? "ok" : ev.status === "degraded" ? "bad" : "neutral";
    host.appendChild(el("p", {}, [pill(word(ev.status), level), " " + (ev.task || "task not known yet")]));
    var w = ev.window || {};
    host.appendChild(el("p", { className: "small muted", text: num(w.labels) + " labels for " + num(w.predictions) + " predictions (coverage "
      + share(ev.coverage) + "); label delay p50 " + seconds(ev.label_delay_s && ev.label_delay_s.p50)
      + (ev.prediction_field ? "; prediction field " + ev.prediction_field : "") }));
    var mt = ev.metrics || {}, base = ev.baseline || {}, grid = el("div", { className: "metrics" });
    (METRICS[ev.task] || []).forEach(function (pair) {
      if (!isNum(mt[pair[0]])) return;
      grid.appendChild(kpi(pair[1], num(mt[pair[0]]), isNum(base[pair[0]]) ? "baseline " + num(base[pair[0]]) : ""));
    });
    if (grid.childNodes.length) host.appendChild(grid);
    var change = ev.change || {};
    if (change.detected) host.appendChild(el("p", { className: "warn-text", text: "A change in the error stream was located at " + stamp(change.at) + "." }));
    (ev.reasons || []).concat(ev.notes || []).forEach(function (text) { host.appendChild(el("p", { className: "small", text: String(text) })); });
    var names = (METRICS[ev.task] || []).slice(0, 2), colors = [C.blue, C.teal];
    var buckets = Array.isArray(ev.buckets) ? ev.buckets : [];
    var lines = names.map(function (pair, i) {
      return { label: pair[1], color: colors[i], points: buckets.map(function (bk) {
        var t = (Date.parse(bk.start) + Date.parse(bk.end)) / 2, v = bk.metrics && bk.metrics[pair[0]];
        return [t, isNum(v) ? v : null];
      }) };
    });
    $("evaluation-title").textContent = names.length ? names[0][1] + " over time" : "Quality over time";
    var first = names.length ? names[0][0] : null, hl = [];
    if (first && isNum(base[first])) hl.push({ y: base[first], label: "baseline", color: C.grey });
    if (first && base.limits && isNum(base.limits[first])) hl.push({ y: base.limits[first], label: "limit" });
    lineChart(chart, lines, {
      xDomain: [Date.parse(w.start), Date.parse(w.end)].every(isNum) ? [Date.parse(w.start), Date.parse(w.end)] : null,
      hlines: hl, marks: change.detected ? [{ x: Date.parse(change.at), label: "change" }] : [],
      empty: ev.status === "no_labels" ? "No labels yet: POST /labels or inferwatch labels import." : "No labelled buckets yet.",
      label: "Model quality over time",
    });
  }

  function renderAlerts(d) {
    var active = clear($("alerts-active")), body = clear($("alerts").tBodies[0]);
    if (!d.alerts.data) {
      active.appendChild(el("p", { className: "muted", text: why(d.alerts, "/alerts") }));
      return;
    }
    var firing = rows(d.alerts, "active");
    if (!firing.length) active.appendChild(el("p", {}, [pill("quiet", "ok"), " No alert is firing."]));
    firing.forEach(function (a) {
      active.appendChild(el("div", { className: "alert " + (a.severity === "critical" ? "bad" : "warn") }, [
        el("strong", { text: (a.title || a.rule) + " " }), pill(a.severity || "?", LEVEL[a.severity]),
        el("div", { text: a.current || a.summary || "" }),
        el("div", { className: "small muted", text: "since " + stamp(a.since) + " (" + ago(a.since) + ")" }),
      ]));
    });
    var history = rows(d.alerts, "history").slice(0, 25);
    history.forEach(function (a) {
      body.appendChild(el("tr", {}, [
        el("td", { text: stamp(a.at) }), el("td", { text: a.title || a.rule || "" }),
        el("td", {}, [pill(a.state || "?", LEVEL[a.state])]), el("td", { text: a.severity || "" }),
        el("td", { text: a.summary || "" }),
      ]));
    });
    if (!history.length) body.appendChild(el("tr", {}, [el("td", { colspan: 5, className: "empty", text: "No alerts yet" })]));
  }

  function renderSources() {
    var host = clear($("sources"));
    host.appendChild(document.createTextNode("Data from "));
    ["/health", "/health/history", "/drift", "/drift/history", "/evaluation", "/alerts", "/metrics"].forEach(function (p, i) {
      if (i) host.appendChild(document.createTextNode(" · "));
      host.appendChild(el("a", { href: BASE + p, text: p }));
    });
  }

  // One panel's failure must not blank the others.
  function safely(hostId, fn) {
    try { fn(); } catch (err) {
      var host = $(hostId);
      clear(host).appendChild(el("div", { className: "empty panel-error", text: "Could not show this panel: " + (err && err.message) }));
      if (window.console) console.warn("inferwatch dashboard:", err);
    }
  }

  function render() {
    var d = state.data;
    if (!d) return;
    var range = Number($("range").value) * 1000, now = Date.now(), domain = [now - range, now];
    state.domain = domain;
    safely("banner-reasons", function () { renderBanner(d); });
    safely("kpis", function () { renderKpis(d); });
    safely("chart-traffic", function () { renderServing(d, domain); });
    safely("drift-summary", function () { renderDrift(d); });
    safely("evaluation-summary", function () { renderEvaluation(d); });
    safely("alerts-active", function () { renderAlerts(d); });
  }

  async function refresh() {
    if (state.busy) { state.again = true; return; }  // e.g. the range changed mid-fetch
    state.busy = true;
    clearTimeout(state.timer);
    var range = Number($("range").value);
    try {
      var got = await Promise.all([
        get("/health"), get("/health/history?window=" + range + "s&points=240"), get(driftPath()),
        get(scoped("/evaluation")), get("/alerts?limit=50"),
      ]);
      if (renderModels(got[0])) {  // the chosen model has no baseline any more
        got[2] = await get("/drift");
        got[3] = await get("/evaluation");
      }
      var history = await loadScores(range, got[2].data);
      state.data = { health: got[0], history: got[1], drift: got[2], driftHistory: history, evaluation: got[3], alerts: got[4] };
      render();
      state.refreshes += 1;
      document.body.setAttribute("data-refreshes", String(state.refreshes));
      $("updated").textContent = "updated " + new Date().toLocaleTimeString();
    } finally {
      state.busy = false;
      if (state.again) { state.again = false; refresh(); } else schedule();
    }
  }

  function schedule() {
    clearTimeout(state.timer);
    if ($("auto").checked && !document.hidden) state.timer = setTimeout(refresh, REFRESH_MS);
  }

  $("refresh").addEventListener("click", refresh);
  $("range").addEventListener("change", refresh);
  $("model").addEventListener("change", function () { state.selected = null; refresh(); });
  $("drift-window").addEventListener("change", refresh);
  $("drift-against").addEventListener("change", refresh);
  $("auto").addEventListener("change", schedule);
  $("feature-filter").addEventListener("input", function () { if (state.data) safely("drift-summary", function () { renderDrift(state.data); }); });
  document.addEventListener("visibilitychange", function () { if (!document.hidden && $("auto").checked) refresh(); else schedule(); });
  var resizing = null;
  window.addEventListener("resize", function () { clearTimeout(resizing); resizing = setTimeout(render, 150); });
  renderSources();
  refresh();
})();
