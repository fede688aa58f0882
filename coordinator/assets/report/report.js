// lem report: draws the embedded JSON (#report-data) with uPlot. Every plot is a
// figure.plot element with data-points (values uPlot holds for its data series) and,
// once drawn, data-series-pixels (canvas pixels in the first data series' colour), so a
// headless browser test can check each plot rendered. Errors land in #report-errors and
// set the body's data-status to "error".
(function () {
  "use strict";

  var errorBox = document.getElementById("report-errors");
  var errorCount = 0;
  function reportError(msg) {
    errorCount += 1;
    var p = document.createElement("p");
    p.className = "error";
    p.textContent = msg;
    errorBox.appendChild(p);
    document.body.setAttribute("data-status", "error");
  }
  window.addEventListener("error", function (e) {
    reportError("uncaught: " + e.message + " (" + e.filename + ":" + e.lineno + ")");
  });
  window.addEventListener("unhandledrejection", function (e) {
    reportError("unhandled rejection: " + e.reason);
  });
  var consoleError = console.error;
  console.error = function () {
    reportError("console.error: " + Array.prototype.join.call(arguments, " "));
    consoleError.apply(console, arguments);
  };

  // Opaque colours, so a series' own pixels can be counted exactly.
  var COLORS = ["#1f6fd1", "#d1561f", "#2a9d4b", "#8e44ad", "#c0392b", "#16a0a0", "#b8860b", "#555555"];
  var PHASE_FILL = { prefill: "rgba(230, 140, 30, 0.16)", decode: "rgba(40, 110, 210, 0.10)" };
  var PLOT_WIDTH = 560;
  var PLOT_HEIGHT = 240;

  function el(tag, attrs, children) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    (children || []).forEach(function (c) {
      e.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    });
    return e;
  }
  function isNum(v) { return typeof v === "number" && isFinite(v); }
  function fmt(v, digits) {
    if (!isNum(v)) return "—";
    var a = Math.abs(v);
    if (digits === undefined) digits = a >= 100 ? 1 : a >= 1 ? 3 : 4;
    return a !== 0 && (a < 1e-3 || a >= 1e7) ? v.toExponential(3) : v.toFixed(digits);
  }
  // The random tail of an id (exp_20261201_192710_e9c3be → e9c3be).
  function short(id) { var i = id.lastIndexOf("_"); return i >= 0 ? id.slice(i + 1) : id.slice(0, 8); }
  function gap(kind, what, why) {
    return el("div", { "class": "gap", "data-gap": kind }, [el("b", {}, [what + ": "]), why || "unavailable"]);
  }
  function ci(v) {
    if (!v || !isNum(v.mean)) return "—";
    var s = fmt(v.mean);
    if (isNum(v.ci95_low) && isNum(v.ci95_high)) s += " [" + fmt(v.ci95_low) + ", " + fmt(v.ci95_high) + "]";
    return s + " (n=" + v.n + ")";
  }
  function hexRgb(hex) {
    return [1, 3, 5].map(function (i) { return parseInt(hex.slice(i, i + 2), 16); });
  }

  // Range of a scale that also covers the CI bounds drawn as error bars.
  function rangeWith(extra) {
    return function (u, dmin, dmax) {
      var vals = extra.filter(isNum);
      if (isNum(dmin)) vals.push(dmin);
      if (isNum(dmax)) vals.push(dmax);
      if (!vals.length) return [0, 1];
      return uPlot.rangeNum(Math.min.apply(null, vals), Math.max.apply(null, vals), 0.1, true);
    };
  }

  // Vertical error bars: bars[i] = {series, low: [], high: []} parallel to u.data[0].
  function drawErrorBars(u, bars) {
    var ctx = u.ctx;
    var cap = 4 * devicePixelRatio;
    ctx.save();
    ctx.lineWidth = 1.5 * devicePixelRatio;
    bars.forEach(function (b) {
      ctx.strokeStyle = u.series[b.series].stroke();
      var scale = u.series[b.series].scale;
      u.data[0].forEach(function (x, i) {
        var lo = b.low[i], hi = b.high[i];
        if (!isNum(lo) || !isNum(hi) || u.data[b.series][i] == null) return;
        var cx = u.valToPos(x, "x", true), y0 = u.valToPos(lo, scale, true), y1 = u.valToPos(hi, scale, true);
        ctx.beginPath();
        ctx.moveTo(cx, y0); ctx.lineTo(cx, y1);
        ctx.moveTo(cx - cap, y0); ctx.lineTo(cx + cap, y0);
        ctx.moveTo(cx - cap, y1); ctx.lineTo(cx + cap, y1);
        ctx.stroke();
      });
    });
    ctx.restore();
  }

  // Counts the pixels of the first data series' colour once the plot is drawn.
  function countSeriesPixels(fig, u, seriesIdx) {
    var rgb = hexRgb(u.series[seriesIdx].stroke());
    var img = u.ctx.getImageData(0, 0, u.ctx.canvas.width, u.ctx.canvas.height).data;
    var n = 0;
    for (var i = 0; i < img.length; i += 4) {
      if (img[i + 3] > 200 && Math.abs(img[i] - rgb[0]) < 12 && Math.abs(img[i + 1] - rgb[1]) < 12 && Math.abs(img[i + 2] - rgb[2]) < 12) n++;
    }
    fig.setAttribute("data-series-pixels", String(n));
    fig.setAttribute("data-drawn", "1");
  }

  // A plot: `dataSeries` are the indices whose non-null values count as its points.
  function plot(parent, id, kind, caption, opts, data, dataSeries, notes) {
    var fig = el("figure", { "class": "plot", "data-plot": id, "data-kind": kind }, [el("figcaption", {}, [caption])]);
    parent.appendChild(fig);
    opts.width = PLOT_WIDTH;
    opts.height = PLOT_HEIGHT;
    opts.legend = { live: false };
    opts.hooks = opts.hooks || {};
    opts.hooks.draw = (opts.hooks.draw || []).concat([function (u) { countSeriesPixels(fig, u, dataSeries[0]); }]);
    var u = new uPlot(opts, data, fig);
    var points = 0;
    dataSeries.forEach(function (s) {
      u.data[s].forEach(function (v) { if (v != null) points++; });
    });
    fig.setAttribute("data-points", String(points));
    (notes || []).forEach(function (n) { fig.appendChild(el("p", { "class": "note" }, [n])); });
    return fig;
  }

  function line(label, color, extra) {
    var s = { label: label, stroke: color, width: 2, points: { show: false } };
    Object.keys(extra || {}).forEach(function (k) { s[k] = extra[k]; });
    return s;
  }
  function dots(label, color, extra) {
    var s = { label: label, stroke: color, fill: color, width: 0, paths: function () { return null; }, points: { show: true, size: 8, stroke: color, fill: color } };
    Object.keys(extra || {}).forEach(function (k) { s[k] = extra[k]; });
    return s;
  }

  // ---- per experiment ----

  function powerPlot(parent, exp, p, i) {
    var what = "Power of " + p.device_name + " (" + p.device_id + ")";
    if (p.unavailable_reason) {
      parent.appendChild(gap("power", what, p.unavailable_reason + ". No power line is drawn."));
      return;
    }
    var series = [{ label: "t (s)" }, line("gross power (W)", COLORS[0])];
    var data = [p.t_s, p.power_w];
    if (isNum(p.baseline_w)) {
      series.push(line("idle baseline (W)", COLORS[2], { dash: [6, 4] }));
      data.push(p.t_s.map(function () { return p.baseline_w; }));
    }
    var notes = [
      "Shaded: prefill (orange) and decode (blue) of each batch, from the request timings. " +
        "Dashed verticals: the reading's measured window (" + p.window_start_s.toFixed(3) + "–" + p.window_end_s.toFixed(3) + " s). " +
        "Sensor: " + p.power_field + (p.simulated ? ". SIMULATED device." : "."),
    ];
    if (!isNum(p.baseline_w)) notes.push("No idle baseline: " + p.baseline_unavailable_reason);
    if (p.phases_unavailable_reason) notes.push("No phase boundaries: " + p.phases_unavailable_reason);
    var shade = function (u) {
      var ctx = u.ctx, top = u.bbox.top, h = u.bbox.height;
      ctx.save();
      p.phases.forEach(function (s) {
        var x0 = u.valToPos(s.start_s, "x", true), x1 = u.valToPos(s.end_s, "x", true);
        ctx.fillStyle = PHASE_FILL[s.phase] || "rgba(0,0,0,0.05)";
        ctx.fillRect(x0, top, Math.max(1, x1 - x0), h);
      });
      ctx.strokeStyle = "#444";
      ctx.setLineDash([5, 4]);
      ctx.lineWidth = devicePixelRatio;
      [p.window_start_s, p.window_end_s].forEach(function (t) {
        var x = u.valToPos(t, "x", true);
        ctx.beginPath(); ctx.moveTo(x, top); ctx.lineTo(x, top + h); ctx.stroke();
      });
      ctx.restore();
    };
    var xs = p.t_s.concat([p.window_start_s, p.window_end_s]);
    plot(parent, exp.id + "-power-" + i, "power", what + ", cycle " + exp.trace_cycle, {
      scales: { x: { time: false, range: rangeWith(xs) }, y: { range: rangeWith([0, p.baseline_w]) } },
      axes: [{ label: "seconds since the meters started" }, { label: "W" }],
      series: series,
      hooks: { drawAxes: [shade] },
    }, data, [1], notes);
  }

  function phasePlot(parent, exp, p, i) {
    var what = "Energy by phase, " + p.device_name + " (" + p.device_id + ")";
    var hasAny = p.prefill_j.some(isNum);
    if (!hasAny) {
      parent.appendChild(gap("phase-energy", what, p.gaps.join("; ") + ". No bars are drawn."));
      return;
    }
    // Three slots per cycle (prefill, decode, other), each series filled only at its own.
    var xs = [], pre = [], dec = [], oth = [];
    p.cycles.forEach(function (c, k) {
      [-0.25, 0, 0.25].forEach(function (off, j) {
        xs.push(c + off);
        pre.push(j === 0 ? p.prefill_j[k] : null);
        dec.push(j === 1 ? p.decode_j[k] : null);
        oth.push(j === 2 ? p.other_j[k] : null);
      });
    });
    var bars = uPlot.paths.bars({ size: [0.9, 60] });
    var methods = p.methods.filter(function (m, k) { return m && p.methods.indexOf(m) === k; });
    var notes = ["Split method: " + (methods.join(", ") || "—") + (p.simulated ? ". SIMULATED device." : ".") +
      " Other = time between batches, in neither phase."];
    if (p.gaps.length) notes.push("Missing: " + p.gaps.join("; "));
    plot(parent, exp.id + "-phases-" + i, "phase-energy", what, {
      scales: { x: { time: false, range: rangeWith([p.cycles[0] - 0.5, p.cycles[p.cycles.length - 1] + 0.5]) }, y: { range: rangeWith([0]) } },
      axes: [{ label: "cycle", splits: function () { return p.cycles; }, values: function (u, v) { return v.map(function (c) { return "cycle " + c; }); } },
        { label: "J (gross)" }],
      series: [{ label: "cycle" },
        { label: "prefill (J)", stroke: COLORS[1], fill: COLORS[1], paths: bars, points: { show: false } },
        { label: "decode (J)", stroke: COLORS[0], fill: COLORS[0], paths: bars, points: { show: false } },
        { label: "other (J)", stroke: COLORS[7], fill: COLORS[7], paths: bars, points: { show: false } }],
    }, [xs, pre, dec, oth], [1, 2, 3], notes);
  }

  function ecdfPlot(parent, exp, key, title, values, color) {
    if (!values.length) {
      parent.appendChild(gap("latency", title, "no values in these results"));
      return;
    }
    var xs = values.slice().sort(function (a, b) { return a - b; });
    var ys = xs.map(function (_, i) { return (i + 1) / xs.length; });
    var pct = function (p) { return xs[Math.min(xs.length - 1, Math.floor(p * (xs.length - 1)))]; };
    plot(parent, exp.id + "-latency-" + key, "latency", title + " — cumulative distribution", {
      scales: { x: { time: false }, y: { range: [0, 1.02] } },
      axes: [{ label: "ms" }, { label: "fraction of values ≤ x" }],
      // An ECDF is a step function: each value holds until the next.
      series: [{ label: "ms" }, line(title, color, { paths: uPlot.paths.stepped({ align: 1 }), points: { show: xs.length <= 60, size: 5 } })],
    }, [xs, ys], [1], [xs.length + " values; median ≈ " + fmt(pct(0.5)) + " ms, p90 ≈ " + fmt(pct(0.9)) + " ms, max " + fmt(xs[xs.length - 1]) + " ms."]);
  }

  function cycleMetricPlot(parent, exp, m, i) {
    var what = m.label + " per cycle";
    if (!m.summary) {
      parent.appendChild(gap("cycle-metric", what, m.unavailable_reason + ". No line is drawn."));
      return;
    }
    var s = m.summary;
    var flat = function (v) { return m.cycles.map(function () { return isNum(v) ? v : null; }); };
    var series = [{ label: "cycle" }, dots(m.label + " (" + m.unit + ")", COLORS[i % COLORS.length]), line("mean", COLORS[7])];
    var data = [m.cycles, m.values, flat(s.mean)];
    if (isNum(s.ci95_low)) {
      series.push(line("95% CI low", COLORS[7], { dash: [4, 4], width: 1 }));
      series.push(line("95% CI high", COLORS[7], { dash: [4, 4], width: 1 }));
      data.push(flat(s.ci95_low), flat(s.ci95_high));
    }
    var notes = ["Mean " + fmt(s.mean) + " " + m.unit + (isNum(s.ci95_low) ? ", 95% CI [" + fmt(s.ci95_low) + ", " + fmt(s.ci95_high) + "]" : ", no CI: it needs two or more cycles") + ", n = " + s.n + "."];
    m.left_out.forEach(function (l) { notes.push("Cycle " + l.cycle + " left out: " + l.reason); });
    var xs = m.cycles.length === 1 ? [m.cycles[0] - 1, m.cycles[0] + 1] : m.cycles;
    plot(parent, exp.id + "-cycle-" + m.name, "cycle-metric", what, {
      scales: { x: { time: false, range: rangeWith(xs) }, y: { range: rangeWith([s.ci95_low, s.ci95_high]) } },
      axes: [{ label: "cycle", splits: function () { return m.cycles; } }, { label: m.unit }],
      series: series,
    }, data, [1], notes);
  }

  function provenanceTable(rows) {
    var head = ["figure", "device", "driver", "engine", "model", "model hash", "lem", "simulated", "method", "energy (J)", "± (J)", "uncertainty method", "idle baseline", "phase split", "unavailable"];
    var t = el("table", { "class": "provenance" }, [el("tr", {}, head.map(function (h) { return el("th", {}, [h]); }))]);
    rows.forEach(function (r) {
      var cells = [r.figure, r.device, r.driver || "—", r.engine, r.model,
        r.model_hash || ("none: " + r.model_hash_unavailable_reason), r.lem_version,
        r.simulated ? "SIMULATED" : "real", r.method || "—", fmt(r.energy_j), fmt(r.uncertainty_j),
        r.uncertainty_method || "—", r.baseline || "—", r.phase_split || "—", r.unavailable_reason || ""];
      t.appendChild(el("tr", {}, cells.map(function (c, k) { return el("td", k === 9 || k === 10 ? { "class": "num" } : {}, [String(c)]); })));
    });
    return t;
  }

  function experimentSection(root, exp) {
    var sec = el("section", { "class": "experiment", id: "exp-" + exp.id });
    root.appendChild(sec);
    var h = el("h2", {}, [exp.config_name + " — " + exp.id]);
    var measured = exp.provenance.some(function (r) { return isNum(r.energy_j); });
    var badge = exp.simulated ? ["simulated", "simulated"] : measured ? ["real", "real devices"] : ["partial", "no energy measured"];
    h.appendChild(el("span", { "class": "badge " + badge[0] }, [badge[1]]));
    if (!exp.complete) h.appendChild(el("span", { "class": "badge partial" }, ["partial"]));
    sec.appendChild(h);
    sec.appendChild(el("p", { "class": "meta" }, ["Model " + exp.model_name + "; status " + exp.status + "; " +
      exp.num_cycles_with_results + " of " + exp.num_cycles_expected + " cycles have results; arrivals: " + exp.latency.arrivals.join(", ") + "."]));
    if (exp.warnings.length) {
      sec.appendChild(el("ul", { "class": "warnings" }, exp.warnings.map(function (w) { return el("li", {}, [w]); })));
    }

    sec.appendChild(el("h3", {}, ["Power per device"]));
    var pw = el("div", { "class": "plots" });
    sec.appendChild(pw);
    if (!exp.power.length) pw.appendChild(gap("power", "Power", "no device was metered in these results"));
    exp.power.forEach(function (p, i) { powerPlot(pw, exp, p, i); });

    sec.appendChild(el("h3", {}, ["Energy by phase"]));
    var ph = el("div", { "class": "plots" });
    sec.appendChild(ph);
    if (!exp.phase_energy.length) ph.appendChild(gap("phase-energy", "Energy by phase", "no device was metered in these results"));
    exp.phase_energy.forEach(function (p, i) { phasePlot(ph, exp, p, i); });

    sec.appendChild(el("h3", {}, ["Latency distributions (all cycles' requests)"]));
    var lat = el("div", { "class": "plots" });
    sec.appendChild(lat);
    ecdfPlot(lat, exp, "ttft", "TTFT", exp.latency.ttft_ms, COLORS[0]);
    ecdfPlot(lat, exp, "itl", "ITL", exp.latency.itl_ms, COLORS[1]);
    ecdfPlot(lat, exp, "e2el", "E2EL", exp.latency.e2e_ms, COLORS[2]);

    sec.appendChild(el("h3", {}, ["Cycle values with their 95% CI"]));
    var cm = el("div", { "class": "plots" });
    sec.appendChild(cm);
    exp.cycle_metrics.forEach(function (m, i) { cycleMetricPlot(cm, exp, m, i); });

    sec.appendChild(el("h3", {}, ["Provenance"]));
    sec.appendChild(provenanceTable(exp.provenance));
  }

  // ---- across experiments ----

  function axisPlots(parent, cmp, axis, ai) {
    var others = cmp.axes.filter(function (a) { return a !== axis; });
    var order = [];
    axis.values.forEach(function (v) { if (order.indexOf(v) < 0) order.push(v); });
    if (axis.numeric) order.sort(function (a, b) { return parseFloat(a) - parseFloat(b); });
    var xs = axis.numeric ? order.map(parseFloat) : order.map(function (_, i) { return i; });
    // One group per combination of the other axes' values.
    var groups = [];
    cmp.points.forEach(function (p, i) {
      var key = others.map(function (a) { return a.label + " " + a.values[i]; }).join(", ") || "all";
      var slot = order.indexOf(axis.values[i]);
      var g = groups.filter(function (g) { return g.key === key && g.members[slot] === undefined; })[0];
      if (!g) { g = { key: key, members: [] }; groups.push(g); }
      g.members[slot] = i;
    });
    // Ticks only at the values the experiments have.
    var xAxis = { label: axis.label, splits: function () { return xs; },
      values: function (u, v) { return v.map(function (x) { return order[xs.indexOf(x)] === undefined ? "" : order[xs.indexOf(x)]; }); } };
    var xRange = rangeWith(xs.length === 1 ? [xs[0] - 1, xs[0] + 1] : xs);
    [
      { key: "energy", title: "Energy per output token vs " + axis.label, unit: "J/token",
        metrics: [["j_per_output_token", "all devices"], ["gpu_j_per_output_token", "GPUs"]] },
      { key: "throughput", title: "Output throughput vs " + axis.label, unit: "tokens/s",
        metrics: [["output_tokens_per_s", "output tokens/s"]] },
    ].forEach(function (spec) {
      var series = [{ label: axis.label }], data = [xs], bars = [], bounds = [], gaps = [];
      spec.metrics.forEach(function (mt) {
        if (!cmp.points.some(function (p) { return isNum(p[mt[0]].mean); })) {
          gaps.push(mt[1] + ": no experiment has it (" + (cmp.points[0][mt[0]].unavailable_reason || "") + ")");
          return;
        }
        groups.forEach(function (g) {
          var val = function (f) { return order.map(function (_, s) { var i = g.members[s]; return i === undefined ? null : f(cmp.points[i][mt[0]]); }); };
          var ys = val(function (v) { return isNum(v.mean) ? v.mean : null; });
          var lo = val(function (v) { return v.ci95_low; }), hi = val(function (v) { return v.ci95_high; });
          var idx = series.length;
          var color = COLORS[(idx - 1) % COLORS.length];
          series.push(line(mt[1] + (groups.length > 1 ? " · " + g.key : ""), color, { points: { show: true, size: 8, fill: color }, spanGaps: false }));
          data.push(ys);
          bars.push({ series: idx, low: lo, high: hi });
          bounds = bounds.concat(lo, hi);
          g.members.forEach(function (i) {
            if (i !== undefined && !isNum(cmp.points[i][mt[0]].mean)) gaps.push(mt[1] + ", " + cmp.points[i].label + ": " + cmp.points[i][mt[0]].unavailable_reason);
          });
        });
      });
      if (series.length === 1) {
        parent.appendChild(gap("axis-" + spec.key, spec.title, gaps.join("; ") + ". No line is drawn."));
        return;
      }
      var notes = ["Mean over cycles; error bars: 95% CI."];
      if (gaps.length) notes.push("Gaps: " + gaps.join("; "));
      plot(parent, "axis-" + ai + "-" + spec.key, "axis-" + spec.key, spec.title, {
        scales: { x: { time: false, range: xRange }, y: { range: rangeWith(bounds) } },
        axes: [xAxis, { label: spec.unit }],
        series: series,
        hooks: { draw: [function (u) { drawErrorBars(u, bars); }] },
      }, data, series.map(function (_, i) { return i; }).slice(1), notes);
    });
  }

  function paretoPlot(parent, pareto) {
    var title = "Tokens per joule vs p90 E2E latency (" + pareto.scope + ")";
    if (!pareto.points.length) {
      parent.appendChild(gap("pareto", title, (pareto.left_out.join("; ") || "no experiment has both figures") + ". No point is drawn."));
      return;
    }
    var pts = pareto.points.slice().sort(function (a, b) { return a.e2e_p90_ms.mean - b.e2e_p90_ms.mean; });
    var xs = pts.map(function (p) { return p.e2e_p90_ms.mean; });
    var ys = pts.map(function (p) { return p.tokens_per_j.mean; });
    var front = pts.map(function (p) { return p.on_front ? p.tokens_per_j.mean : null; });
    var yb = pts.map(function (p) { return p.tokens_per_j; });
    var xb = pts.map(function (p) { return p.e2e_p90_ms; });
    var drawLabelsAndXBars = function (u) {
      var ctx = u.ctx, cap = 4 * devicePixelRatio;
      ctx.save();
      ctx.strokeStyle = COLORS[0];
      ctx.lineWidth = 1.5 * devicePixelRatio;
      xb.forEach(function (b, i) {
        if (!isNum(b.ci95_low) || !isNum(b.ci95_high)) return;
        var cy = u.valToPos(ys[i], "y", true), x0 = u.valToPos(b.ci95_low, "x", true), x1 = u.valToPos(b.ci95_high, "x", true);
        ctx.beginPath();
        ctx.moveTo(x0, cy); ctx.lineTo(x1, cy);
        ctx.moveTo(x0, cy - cap); ctx.lineTo(x0, cy + cap);
        ctx.moveTo(x1, cy - cap); ctx.lineTo(x1, cy + cap);
        ctx.stroke();
      });
      ctx.fillStyle = "#333";
      ctx.font = (11 * devicePixelRatio) + "px sans-serif";
      pts.forEach(function (p, i) {
        ctx.fillText(short(p.experiment_id), u.valToPos(xs[i], "x", true) + 6 * devicePixelRatio, u.valToPos(ys[i], "y", true) - 6 * devicePixelRatio);
      });
      ctx.restore();
      drawErrorBars(u, [{ series: 1, low: yb.map(function (v) { return v.ci95_low; }), high: yb.map(function (v) { return v.ci95_high; }) }]);
    };
    var xBounds = xs.concat(xb.map(function (v) { return v.ci95_low; }), xb.map(function (v) { return v.ci95_high; }));
    var yBounds = ys.concat(yb.map(function (v) { return v.ci95_low; }), yb.map(function (v) { return v.ci95_high; }));
    var notes = ["Up and to the left is better. Line: the Pareto front (no other point has more tokens per joule at no more latency). Error bars: 95% CI both ways. Scope: " + pareto.scope_reason + "."];
    if (pareto.left_out.length) notes.push("Not on the plot: " + pareto.left_out.join("; "));
    plot(parent, "pareto", "pareto", title, {
      scales: { x: { time: false, range: rangeWith(xBounds) }, y: { range: rangeWith(yBounds) } },
      axes: [{ label: "p90 E2E latency (ms)" }, { label: "output tokens per J" }],
      series: [{ label: "p90 ms" }, dots("experiments", COLORS[0]), line("Pareto front", COLORS[1], { spanGaps: true, points: { show: false } })],
      hooks: { draw: [drawLabelsAndXBars] },
    }, [xs, ys, front], [1], notes);
    var t = el("table", { "class": "pareto" }, [el("tr", {}, ["experiment", "tokens per J (95% CI)", "p90 E2E ms (95% CI)", "on the front"].map(function (h) { return el("th", {}, [h]); }))]);
    pts.forEach(function (p) {
      t.appendChild(el("tr", {}, [el("td", {}, [p.label]), el("td", { "class": "num" }, [ci(p.tokens_per_j)]), el("td", { "class": "num" }, [ci(p.e2e_p90_ms)]), el("td", {}, [p.on_front ? "yes" : "no"])]));
    });
    parent.appendChild(t);
  }

  function heatmapTable(parent, h) {
    var vals = [];
    h.cells.forEach(function (row) { row.forEach(function (c) { if (c && isNum(c.value.mean)) vals.push(c.value.mean); }); });
    var lo = Math.min.apply(null, vals), hi = Math.max.apply(null, vals);
    var t = el("table", { "class": "heatmap", "data-cells": String(vals.length) });
    t.appendChild(el("tr", {}, [el("th", {}, [h.y_axis + " ↓ / " + h.x_axis + " →"])].concat(h.x_values.map(function (x) { return el("th", {}, [x]); }))));
    h.cells.forEach(function (row, y) {
      var tr = el("tr", {}, [el("th", {}, [h.y_values[y]])]);
      row.forEach(function (c) {
        var td;
        if (!c) {
          td = el("td", { "class": "cell empty" }, ["no experiment"]);
        } else if (!isNum(c.value.mean)) {
          td = el("td", { "class": "cell missing", title: c.value.unavailable_reason || "" }, ["— " + short(c.experiment_id), el("br"), c.value.unavailable_reason || "unavailable"]);
        } else {
          var f = hi > lo ? (c.value.mean - lo) / (hi - lo) : 0.5;
          td = el("td", { "class": "cell value", style: "background: hsl(210, 70%, " + (92 - 45 * f) + "%); color: " + (f > 0.6 ? "#fff" : "#111") }, [ci(c.value), el("br"), short(c.experiment_id)]);
        }
        tr.appendChild(td);
      });
      t.appendChild(tr);
    });
    parent.appendChild(el("h3", {}, ["Heatmap: " + h.metric + " (" + h.unit + ")"]));
    parent.appendChild(t);
    parent.appendChild(el("p", { "class": "note" }, ["Darker = larger. Each cell: mean [95% CI] (n cycles) and the experiment."]));
  }

  function comparisonSection(root, data) {
    var sec = el("section", { "class": "comparison", id: "comparison" });
    root.appendChild(sec);
    sec.appendChild(el("h2", {}, ["Across experiments"]));
    var cmp = data.comparison;
    if (!cmp) {
      sec.appendChild(gap("comparison", "No comparison", data.comparison_absent_reason));
      return;
    }
    sec.appendChild(el("p", { "class": "meta" }, ["Axes that differ: " + cmp.axes.map(function (a) { return a.label; }).join(", ") +
      ". The same in every experiment: " + (cmp.constant_axes.map(function (c) { return c[0] + " " + c[1]; }).join(", ") || "nothing") + "."]));
    cmp.axes.forEach(function (a, i) {
      sec.appendChild(el("h3", {}, ["Against " + a.label]));
      var d = el("div", { "class": "plots" });
      sec.appendChild(d);
      axisPlots(d, cmp, a, i);
    });
    sec.appendChild(el("h3", {}, ["Pareto front"]));
    var pd = el("div", { "class": "plots" });
    sec.appendChild(pd);
    paretoPlot(pd, cmp.pareto);
    if (cmp.heatmap) heatmapTable(sec, cmp.heatmap);
    else sec.appendChild(gap("heatmap", "No heatmap", cmp.heatmap_absent_reason));
    var head = ["experiment", "simulated"].concat(cmp.axes.map(function (a) { return a.label; }), ["J/token, all devices", "J/token, GPUs", "output tokens/s", "p90 E2E ms"]);
    var t = el("table", { "class": "points" }, [el("tr", {}, head.map(function (h) { return el("th", {}, [h]); }))]);
    cmp.points.forEach(function (p, i) {
      var cells = [p.label, p.simulated ? "SIMULATED" : "real"].concat(cmp.axes.map(function (a) { return a.values[i]; }));
      var row = el("tr", {}, cells.map(function (c) { return el("td", {}, [c]); }));
      [p.j_per_output_token, p.gpu_j_per_output_token, p.output_tokens_per_s, p.e2e_p90_ms].forEach(function (v) {
        row.appendChild(isNum(v.mean) ? el("td", { "class": "num" }, [ci(v)]) : el("td", { "class": "missing" }, ["— " + (v.unavailable_reason || "")]));
      });
      t.appendChild(row);
    });
    sec.appendChild(el("h3", {}, ["Points (provenance of each in its experiment's table)"]));
    sec.appendChild(t);
  }

  function main() {
    var data = JSON.parse(document.getElementById("report-data").textContent);
    var root = document.getElementById("report");
    root.appendChild(el("h1", {}, ["lem report"]));
    root.appendChild(el("p", { "class": "meta" }, ["Made " + data.generated_at + " by lem " + data.lem_version + "; " + data.experiments.length + " experiment(s): " +
      data.experiments.map(function (e) { return e.config_name + " (" + short(e.id) + (e.simulated ? ", simulated" : "") + ")"; }).join(", ") + "."]));
    var k = el("p", { "class": "note key" }, ["Missing figures are shown as dashed boxes with their reason, never as zero."]);
    root.appendChild(k);
    if (data.experiments.length > 1) comparisonSection(root, data);
    data.experiments.forEach(function (e) { experimentSection(root, e); });
    if (data.experiments.length === 1) comparisonSection(root, data);
    document.body.setAttribute("data-plots", String(document.querySelectorAll("figure.plot").length));
    if (!errorCount) document.body.setAttribute("data-status", "ok");
  }

  try {
    main();
  } catch (e) {
    reportError("report script failed: " + (e && e.stack ? e.stack : e));
  }
})();
