// The MCP Apps view of ai-credits-mcp: draws the tool result the host pushes, nothing else. No network, no eval, no
// storage (a frame sandboxed with allow-scripts alone throws on localStorage): plain DOM and hand-drawn SVG.
(function () {
  "use strict";
  var VIEW = document.documentElement.getAttribute("data-view");
  var PROTOCOL_VERSION = "2026-01-26";
  var XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";
  var SVG_NS = "http://www.w3.org/2000/svg";
  var COLOUR_ATTRIBUTES = { fill: true, stroke: true };
  var app = document.getElementById("app");
  var host = { capabilities: {}, context: {} };
  var lastResult = null;
  var nextId = 1;
  var pending = {};

  // ---- the bridge: JSON-RPC 2.0 over postMessage with the parent (the host) ----------------------------------------
  function post(message) {
    window.parent.postMessage(message, "*");
  }
  function request(method, params) {
    var id = nextId++;
    post({ jsonrpc: "2.0", id: id, method: method, params: params });
    return new Promise(function (resolve, reject) {
      pending[id] = { resolve: resolve, reject: reject };
    });
  }
  function notify(method, params) {
    post({ jsonrpc: "2.0", method: method, params: params || {} });
  }
  window.addEventListener("message", function (event) {
    if (event.source !== window.parent) return; // only the host speaks to us
    var message = event.data;
    if (!message || message.jsonrpc !== "2.0") return;
    if (message.id !== undefined && message.method === undefined) {
      var waiting = pending[message.id];
      if (!waiting) return;
      delete pending[message.id];
      if (message.error) waiting.reject(message.error);
      else waiting.resolve(message.result);
      return;
    }
    var params = message.params || {};
    switch (message.method) {
      case "ui/notifications/tool-input":
        if (!lastResult) showMessage("Asking OpenMeter…");
        break;
      case "ui/notifications/tool-result":
        lastResult = params;
        render();
        break;
      case "ui/notifications/tool-cancelled":
        if (!lastResult) showMessage("The question was cancelled.");
        break;
      case "ui/notifications/host-context-changed":
        for (var key in params) host.context[key] = params[key];
        applyTheme();
        if (lastResult) render();
        break;
      default:
        if (message.id !== undefined) {
          // ui/resource-teardown and ping need only an empty answer; anything else is not ours.
          if (message.method === "ui/resource-teardown" || message.method === "ping") {
            post({ jsonrpc: "2.0", id: message.id, result: {} });
          } else {
            post({ jsonrpc: "2.0", id: message.id, error: { code: -32601, message: "Method not found" } });
          }
        }
    }
  });

  function applyTheme() {
    var theme = host.context.theme;
    if (theme !== "light" && theme !== "dark") {
      theme = window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
    }
    document.documentElement.setAttribute("data-theme", theme);
  }

  // The host sizes the frame from what we report: report whenever the content's size changes.
  var reported = "";
  var initialized = false; // nothing but ui/initialize goes to the host before the handshake is done
  function reportSize() {
    if (!initialized) return;
    // The body's own box: the document's scroll height would never shrink below the frame the host gave us.
    var rect = document.body.getBoundingClientRect();
    var size = { width: Math.ceil(rect.width), height: Math.ceil(rect.height) };
    var key = size.width + "x" + size.height;
    if (key === reported) return;
    reported = key;
    notify("ui/notifications/size-changed", size);
  }
  if (window.ResizeObserver) new ResizeObserver(reportSize).observe(document.body);

  // ---- small helpers --------------------------------------------------------------------------------------------
  var whole = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
  // Numbers exactly as the text prints them (Python's format: the float's exact binary value, a tie to the even
  // digit). Intl.NumberFormat rounds the shortest decimal instead: 2782.705 would be 2,782.71 here, 2,782.70 there.
  function fixed(value, digits) {
    var size = Math.abs(value);
    var halves = size * Math.pow(2, digits + 1); // exact: a power of two
    var text;
    if (halves % 1 === 0 && halves % 2 === 1) { // exactly halfway between two last digits
      var scaled = Math.floor(size * Math.pow(10, digits));
      text = ((scaled % 2 === 0 ? scaled : scaled + 1) / Math.pow(10, digits)).toFixed(digits);
    } else {
      text = size.toFixed(digits); // the exact binary value, rounded to nearest
    }
    var parts = text.split(".");
    parts[0] = parts[0].replace(/\B(?=(\d{3})+(?!\d))/g, ",");
    text = parts.join(".");
    return value < 0 && /[1-9]/.test(text) ? "-" + text : text;
  }
  function credits(value) {
    if (value !== 0 && Math.abs(value) < 0.005) return value > 0 ? "<0.01" : ">-0.01";
    return fixed(value, 2);
  }
  function percent(value) {
    return (value >= 0 ? "+" : "") + fixed(value, 1) + "%";
  }
  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    for (var key in attrs || {}) node.setAttribute(key, attrs[key]);
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function svgEl(tag, attrs, text) {
    var node = document.createElementNS(SVG_NS, tag);
    for (var key in attrs || {}) {
      var value = attrs[key];
      // Theme colours go through the style (CSSOM, allowed by a host's CSP): not every browser resolves var() in
      // an SVG presentation attribute. Only the colour attributes: a name in a data- attribute that starts with
      // "var(" is text like any other.
      if (COLOUR_ATTRIBUTES[key] && typeof value === "string" && value.indexOf("var(") === 0) node.style.setProperty(key, value);
      else node.setAttribute(key, value);
    }
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function tip(node, text) {
    node.appendChild(svgEl("title", {}, text));
    return node;
  }
  function day(iso) {
    return String(iso).slice(0, 10);
  }
  function minute(iso) {
    return String(iso).slice(0, 16).replace("T", " ") + " UTC";
  }
  function time(iso) {
    return Date.parse(iso.length === 10 ? iso + "T00:00:00Z" : iso);
  }
  // A scale from 0 with round steps (1, 2, 2.5 or 5 times a power of ten), three to five of them.
  function scale(value) {
    if (!(value > 0)) return { top: 1, step: 0.25 };
    var rough = value / 4;
    var power = Math.pow(10, Math.floor(Math.log10(rough)));
    var step = [1, 2, 2.5, 5, 10].map(function (m) { return m * power; }).filter(function (s) { return s >= rough; })[0];
    return { top: Math.ceil(value / step - 1e-9) * step, step: step };
  }
  function labelWidth(text) {
    return String(text).length * 6.6 + 10; // 11px text, in viewBox units
  }
  function valueWidth(text) {
    return Math.max(120, labelWidth(text));
  }
  var thousands = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1 });
  function axisLabel(value) {
    return value >= 10000 ? thousands.format(value / 1000) + "k" : whole.format(value);
  }

  function clear() {
    while (app.firstChild) app.removeChild(app.firstChild);
  }
  function showMessage(text, isError) {
    clear();
    app.appendChild(el("p", { class: isError ? "message error" : "message", role: "status" }, text));
  }
  function header(result, title, subtitle) {
    if (result.demo) app.appendChild(el("span", { class: "badge" }, "DEMO DATA: generated sample data"));
    app.appendChild(el("h1", {}, title));
    var filters = result.filters || {};
    var narrowed = Object.keys(filters).map(function (name) { return name + " " + filters[name]; }).join(", ");
    if (narrowed) subtitle = narrowed + (subtitle ? "; " + subtitle : "");
    if (subtitle) app.appendChild(el("p", { class: "sub" }, subtitle));
  }
  // A result with nothing to draw says so in one sentence: the answer's own when filters matched nothing.
  function nothing(result, sentence) {
    var text = result.no_match && result.no_match.message ? result.no_match.message : sentence;
    app.appendChild(el("p", { class: "message", role: "status" }, text));
  }
  function figures(items) {
    var box = el("div", { class: "figures" });
    items.forEach(function (item) {
      var figure = el("div", { class: "figure" });
      figure.appendChild(el("b", {}, item[0]));
      figure.appendChild(el("span", {}, item[1]));
      box.appendChild(figure);
    });
    app.appendChild(box);
  }
  function note(text) {
    app.appendChild(el("p", { class: "note" }, text));
  }
  function legend(entries) {
    var box = el("div", { class: "legend" });
    entries.forEach(function (entry) {
      var item = el("span", {});
      var swatch = el("i", {});
      swatch.style.background = entry[1];
      item.appendChild(swatch);
      item.appendChild(document.createTextNode(entry[0]));
      box.appendChild(item);
    });
    app.appendChild(box);
  }
  function windowText(window_) {
    return window_ ? window_.from + " to " + window_.to + " (end exclusive)" : "";
  }

  // The Excel file: the host downloads it when it offers ui/download-file, else opens the link.
  function downloadButton(url, expiresAt, name) {
    if (!url) return;
    var row = el("div", { class: "actions" });
    var button = el("button", { type: "button", id: "download" }, "Download Excel");
    var status = el("p", { class: "note" }, expiresAt ? "Link expires at " + minute(expiresAt) + "." : "");
    button.addEventListener("click", function () {
      var opening = host.capabilities.downloadFile
        ? request("ui/download-file", {
            contents: [{ type: "resource_link", uri: url, name: name, mimeType: XLSX }],
          })
        : request("ui/open-link", { url: url });
      opening.then(
        function (answer) {
          if (answer && answer.isError) status.textContent = "The host did not open the link; the answer's text has it.";
        },
        function () {
          status.textContent = "The host did not open the link; the answer's text has it.";
        }
      );
    });
    row.appendChild(button);
    row.appendChild(status);
    app.appendChild(row);
  }

  function chart(width, height, label) {
    return svgEl("svg", { viewBox: "0 0 " + width + " " + height, role: "img", "aria-label": label, preserveAspectRatio: "xMidYMid meet" });
  }
  // The y grid of a scale, in plot coordinates.
  function yGrid(svg, box, axis) {
    for (var value = 0; value <= axis.top + 1e-9; value += axis.step) {
      var y = box.y + box.h - (box.h * value) / axis.top;
      svg.appendChild(svgEl("line", { class: value === 0 ? "axis" : "grid", x1: box.x, x2: box.x + box.w, y1: y, y2: y }));
      svg.appendChild(svgEl("text", { x: box.x - 6, y: y + 4, "text-anchor": "end" }, axisLabel(value)));
    }
  }

  // ---- get_credit_usage_trend ------------------------------------------------------------------------------------
  var SERIES_COLOURS = ["var(--s0)", "var(--s1)", "var(--s2)", "var(--s3)", "var(--s4)", "var(--s5)"];
  function seriesColour(series, index) {
    // The rest ("Other", always last) is grey, whatever the number of named series before it.
    if (index === series.length - 1 && series[index] === "Other") return SERIES_COLOURS[5];
    return SERIES_COLOURS[index % 5];
  }
  var GRANULARITY = { day: "daily", week: "weekly", month: "monthly" };

  function drawTrend(result) {
    var rows = result.rows || [];
    header(result, "AI credits over time: tenant " + result.tenant,
      (GRANULARITY[result.granularity] || result.granularity) + " in " + result.time_zone +
        (result.group_by ? ", by " + result.group_by : "") + ", " + windowText(result.window));
    if (!rows.length || !(result.total_credits > 0)) {
      nothing(result, "No AI credits were used in this window.");
      return;
    }
    var facts = [[credits(result.total_credits), "credits in all"]];
    if (result.typical_credits !== null && result.typical_credits !== undefined) {
      facts.push([credits(result.typical_credits), "typical " + result.granularity]);
    }
    if (result.unusual_periods && result.unusual_periods.length) {
      facts.push([String(result.unusual_periods.length), "unusual " + result.granularity + (result.unusual_periods.length > 1 ? "s" : "")]);
    }
    figures(facts);
    var unusual = {};
    (result.unusual_periods || []).forEach(function (found) {
      unusual[found.period] = found;
    });
    var series = result.series || [];
    var width = 640, height = 260;
    var box = { x: 48, y: 22, w: width - 60, h: height - 62 };
    var svg = chart(width, height, "Credits per " + result.granularity + ", " + rows.length + " bars");
    var axis = scale(Math.max.apply(null, rows.map(function (row) { return row.credits; })));
    var top = axis.top;
    yGrid(svg, box, axis);
    var slot = box.w / rows.length;
    var barWidth = Math.max(1, Math.min(44, slot * 0.72));
    var every = Math.max(1, Math.ceil(labelWidth(rows[0].period) / slot)); // labels never overlap
    rows.forEach(function (row, index) {
      var x = box.x + slot * index + (slot - barWidth) / 2;
      var parts = series.length && row.series_credits.length ? row.series_credits : [row.credits];
      var base = box.y + box.h;
      var group = svgEl("g", {
        class: "bar" + (row.partial ? " partial" : "") + (unusual[row.period] ? " unusual" : ""),
        "data-period": row.period,
        "data-credits": String(row.credits),
      });
      parts.forEach(function (value, part) {
        var h = (box.h * value) / top;
        var fill = series.length ? seriesColour(series, part) : "var(--accent)";
        var rect = svgEl("rect", { x: x, y: base - h, width: barWidth, height: Math.max(0, h), fill: fill });
        if (row.partial) rect.setAttribute("fill-opacity", "0.45");
        group.appendChild(rect);
        base -= h;
      });
      var label = row.period + ": " + credits(row.credits) + " credits" + (row.partial ? " (partial)" : "");
      if (unusual[row.period]) label += ", " + fixed(unusual[row.period].times_typical, 1) + " times the typical " + result.granularity;
      tip(group, label);
      if (unusual[row.period]) {
        var topY = box.y + box.h - (box.h * row.credits) / top;
        group.appendChild(svgEl("rect", {
          class: "unusual-mark", x: x - 2, y: topY - 2, width: barWidth + 4, height: box.y + box.h - topY + 2,
          fill: "none", stroke: "var(--bad)", "stroke-width": 2,
        }));
        group.appendChild(svgEl("text", { class: "unusual-label", x: x + barWidth / 2, y: topY - 6, "text-anchor": "middle", fill: "var(--bad)" },
          fixed(unusual[row.period].times_typical, 1) + "×"));
      }
      svg.appendChild(group);
      if (index % every === 0) {
        svg.appendChild(svgEl("text", { class: "period-label", x: x + barWidth / 2, y: box.y + box.h + 14, "text-anchor": "middle" }, row.period));
      }
      if (row.partial) {
        svg.appendChild(svgEl("text", { class: "partial-label", x: x + barWidth / 2, y: box.y + box.h + 26, "text-anchor": "middle" }, "partial"));
      }
    });
    if (result.typical_credits) {
      var ty = box.y + box.h - (box.h * result.typical_credits) / top;
      svg.appendChild(svgEl("line", { class: "typical", x1: box.x, x2: box.x + box.w, y1: ty, y2: ty, stroke: "var(--fg)", "stroke-dasharray": "4 3", "stroke-opacity": "0.6" }));
      svg.appendChild(svgEl("text", { class: "label", x: box.x + box.w, y: ty - 4, "text-anchor": "end" }, "typical " + credits(result.typical_credits)));
    }
    app.appendChild(svg);
    var keys = series.map(function (name, index) { return [name, seriesColour(series, index)]; });
    if (keys.length) legend(keys);
    var partial = rows.filter(function (row) { return row.partial; }).length;
    if (partial) note("Faded bars: periods the window covers only in part, so they look lower than they are.");
    if (result.truncated) note("The newest " + rows.length + " of " + result.row_count + " periods; the Excel file has all.");
  }

  // ---- get_credit_forecast ---------------------------------------------------------------------------------------
  // The day of `as_of` in the forecast's time zone (the days are calendar days there); else the last day with
  // nothing left to forecast, as the past days are.
  function todayIndex(result, days) {
    var today = null;
    try {
      today = new Intl.DateTimeFormat("en-CA", { timeZone: result.time_zone, year: "numeric", month: "2-digit", day: "2-digit" })
        .format(new Date(result.as_of));
    } catch (unknownZone) {
      today = null;
    }
    var index = -1;
    days.forEach(function (d, i) {
      if (today !== null ? d.day <= today : d.forecast === 0) index = i;
    });
    return Math.max(0, index);
  }
  function drawForecast(result) {
    var days = result.days || [];
    header(result, "AI credit forecast: tenant " + result.tenant, result.time_zone + ", " + windowText(result.window) + ", as of " + minute(result.as_of));
    if (!days.length || result.no_match) {
      nothing(result, "No days to forecast in this window.");
      return;
    }
    figures([
      [credits(result.used_so_far), "used so far"],
      [credits(result.projected_total), "projected by " + day(days[days.length - 1].day)],
      [credits(result.interval_80.low) + " to " + credits(result.interval_80.high), "80% interval"],
    ]);
    var width = 640, height = 280;
    var box = { x: 52, y: 22, w: width - 70, h: height - 56 };
    var svg = chart(width, height, "Cumulative credits per day: used, projected, 80% and 95% intervals");
    var ceiling = result.interval_95.high;
    days.forEach(function (d) { ceiling = Math.max(ceiling, d.interval_95.high, d.cumulative); });
    var balanceLevel = result.balance !== null && result.balance !== undefined ? result.used_so_far + result.balance : null;
    if (balanceLevel !== null) ceiling = Math.max(ceiling, balanceLevel);
    var axis = scale(ceiling);
    var top = axis.top;
    yGrid(svg, box, axis);
    var slot = box.w / Math.max(1, days.length - 1);
    function xOf(index) { return box.x + slot * index; }
    function yOf(value) { return box.y + box.h - (box.h * value) / top; }
    function band(lowKey, className, fill) {
      var upper = days.map(function (d, i) { return xOf(i) + "," + yOf(d[lowKey].high); });
      var lower = days.map(function (d, i) { return xOf(i) + "," + yOf(d[lowKey].low); }).reverse();
      var shape = svgEl("polygon", { class: className, points: upper.concat(lower).join(" "), fill: fill });
      tip(shape, (lowKey === "interval_80" ? "80%" : "95%") + " interval of the cumulative credits");
      svg.appendChild(shape);
    }
    band("interval_95", "band-95", "var(--band-95)");
    band("interval_80", "band-80", "var(--band-80)");
    var split = todayIndex(result, days); // recorded up to here (today's part), projected from here on
    var used = days.slice(0, split + 1).map(function (d, i) { return xOf(i) + "," + yOf(d.cumulative); });
    var projected = days.slice(split).map(function (d, i) { return xOf(i + split) + "," + yOf(d.cumulative); });
    svg.appendChild(svgEl("polyline", { class: "used-line", points: used.join(" "), fill: "none", stroke: "var(--accent)", "stroke-width": 2.5 }));
    svg.appendChild(svgEl("polyline", { class: "projected-line", points: projected.join(" "), fill: "none", stroke: "var(--accent)", "stroke-width": 2, "stroke-dasharray": "5 4" }));
    days.forEach(function (d, i) {
      var dot = svgEl("circle", { class: "day", cx: xOf(i), cy: yOf(d.cumulative), r: 2.5, fill: "var(--accent)", "data-day": d.day, "data-cumulative": String(d.cumulative) });
      tip(dot, d.day + ": " + credits(d.cumulative) + " cumulative (used " + credits(d.used) + ", forecast " + credits(d.forecast) + ")");
      svg.appendChild(dot);
    });
    var nowX = xOf(split);
    svg.appendChild(svgEl("line", { class: "now", x1: nowX, x2: nowX, y1: box.y, y2: box.y + box.h, stroke: "var(--muted)", "stroke-dasharray": "2 3" }));
    svg.appendChild(svgEl("text", { x: nowX + 4, y: box.y + 10 }, "today"));
    var last = days.length - 1;
    svg.appendChild(svgEl("text", { class: "label total-label", x: xOf(last), y: yOf(days[last].cumulative) - 8, "text-anchor": "end" }, credits(result.projected_total)));
    if (balanceLevel !== null) {
      var by = yOf(balanceLevel);
      svg.appendChild(tip(svgEl("line", { class: "balance-line", x1: box.x, x2: box.x + box.w, y1: by, y2: by, stroke: "var(--warn)", "stroke-width": 1.5, "stroke-dasharray": "6 3" }),
        "Used so far plus the " + credits(result.balance) + " credits left"));
      svg.appendChild(svgEl("text", { class: "label balance-label", x: box.x + 4, y: by - 5, fill: "var(--warn)" }, credits(result.balance) + " credits left"));
    }
    var runsOut = result.balance_runs_out;
    if (runsOut && runsOut.likely) {
      var index = -1;
      days.forEach(function (d, i) { if (d.day === runsOut.likely) index = i; });
      if (index >= 0) {
        var rx = xOf(index);
        svg.appendChild(svgEl("line", { class: "runs-out", x1: rx, x2: rx, y1: box.y, y2: box.y + box.h, stroke: "var(--warn)" }));
        var right = rx > box.x + box.w / 2; // the label on the side with room
        svg.appendChild(svgEl("text", { x: right ? rx - 4 : rx + 4, y: box.y + box.h - 6, fill: "var(--warn)", "text-anchor": right ? "end" : "start" }, "runs out ~" + runsOut.likely));
      }
    }
    var every = Math.max(1, Math.ceil(labelWidth("12-31") / slot));
    days.forEach(function (d, i) {
      if (i % every === 0) svg.appendChild(svgEl("text", { class: "day-label", x: xOf(i), y: box.y + box.h + 14, "text-anchor": "middle" }, d.day.slice(5)));
    });
    app.appendChild(svg);
    legend([["used", "var(--accent)"], ["80% interval", "var(--band-80)"], ["95% interval", "var(--band-95)"]].concat(balanceLevel !== null ? [["balance", "var(--warn)"]] : []));
    if (runsOut) {
      note(runsOut.likely
        ? "The balance runs out around " + runsOut.likely + " (80% range " + (runsOut.earliest || runsOut.likely) + " to " + (runsOut.latest || "after " + runsOut.lasts_through) + ")."
        : "The balance lasts through " + runsOut.lasts_through + ".");
    }
    if (!result.enough_history) note("Too little usage history (" + result.history_days + " days) to trust this projection.");
    if (result.truncated) note("The first " + days.length + " of " + result.row_count + " days; the Excel file has all.");
  }

  // ---- get_credit_balance ----------------------------------------------------------------------------------------
  function drawBalance(result) {
    if (result.status === "none") {
      header(result, "AI credits left: tenant " + result.tenant);
      app.appendChild(el("p", { class: "message", role: "status" }, "No credit allowance is set up for this tenant."));
      return;
    }
    if (result.status !== "metered" || result.balance === null) {
      header(result, "AI credits left: tenant " + result.tenant);
      app.appendChild(el("p", { class: "message", role: "status" }, "This tenant's allowance is not metered, so it has no balance to show."));
      return;
    }
    var period = result.period;
    var runway = result.runway;
    // An entitlement has a usage period that resets; v3's credits ledger has none: its usage counts from when its
    // active grants took effect.
    var since = !period && result.usage_since ? "used since " + day(result.usage_since) : "used this period";
    var subtitle = "As of " + minute(result.as_of);
    if (period) subtitle += "; the period resets on " + minute(period.to);
    if (result.currency) subtitle += "; " + result.currency + " ledger";
    header(result, "AI credits left: tenant " + result.tenant, subtitle);
    figures([
      [credits(result.balance), "credits left"],
      [credits(result.usage), since],
    ].concat(result.overage > 0 ? [[credits(result.overage), "overage"]] : []));
    // Used and left, as one bar.
    var whole_ = result.usage + Math.max(0, result.balance);
    var width = 640, meterHeight = 34;
    var meter = chart(width, meterHeight, credits(result.usage) + " " + since + " and " + credits(result.balance) + " left");
    var left = whole_ > 0 ? ((width - 2) * result.usage) / whole_ : 0;
    meter.appendChild(tip(svgEl("rect", { class: "used-part", x: 1, y: 4, width: left, height: 18, fill: "var(--accent-2)" }), credits(result.usage) + " " + since));
    meter.appendChild(tip(svgEl("rect", { class: "left-part", x: 1 + left, y: 4, width: width - 2 - left, height: 18, fill: "var(--accent)" }), credits(result.balance) + " left"));
    meter.appendChild(svgEl("text", { x: 1, y: 33 }, "used " + credits(result.usage)));
    meter.appendChild(svgEl("text", { x: width - 1, y: 33, "text-anchor": "end" }, "left " + credits(result.balance)));
    app.appendChild(meter);
    if (result.balance <= 0.005) {
      // Nothing to burn down: say what the text says.
      note(result.has_access === false && !result.soft_limit
        ? "No credits are left: OpenMeter denies access until the period resets or a new grant starts."
        : "Nothing is left to run down.");
    } else if (period || runway) {
      drawBurnDown(result, width);
    } else {
      note("At the recent pace the balance does not run out in the time looked at.");
    }
    var grants = (result.grants || []).filter(function (g) { return g.remaining !== null && g.remaining !== undefined; });
    if (grants.length > 1) {
      app.appendChild(el("h2", {}, "Grants"));
      bars(grants.map(function (g) {
        return [g.name, g.remaining, credits(g.remaining) + (g.amount !== null && g.amount !== undefined ? " of " + credits(g.amount) : "")];
      }), "grant");
    }
  }

  // The burn-down: from the balance now to nothing at the runway's likely day, its 80% range as a fan, and the
  // reset marked when the allowance has a period.
  function drawBurnDown(result, width) {
    var period = result.period;
    var runway = result.runway;
    var height = 230;
    var box = { x: 52, y: 18, w: width - 70, h: height - 50 };
    var svg = chart(width, height, "The balance burnt down from now to the runway" + (period ? " and the reset" : ""));
    var start = time(result.as_of);
    var end = period ? time(period.to) : start;
    if (runway) end = Math.max(end, time(runway.latest || runway.earliest) + 86400000);
    var axis = scale(result.balance);
    var top = axis.top;
    yGrid(svg, box, axis);
    function xOf(ms) { return box.x + (box.w * (ms - start)) / Math.max(1, end - start); }
    function yOf(value) { return box.y + box.h - (box.h * value) / top; }
    var x0 = xOf(start), y0 = yOf(Math.max(0, result.balance));
    var slowEnd = runway && runway.latest ? "" + runway.latest : period ? "the reset" : "beyond the time looked at";
    if (runway) {
      var fast = xOf(time(runway.earliest));
      var slow = runway.latest ? xOf(time(runway.latest)) : box.x + box.w; // at the slow end it lasts to the end
      svg.appendChild(tip(svgEl("polygon", { class: "runway-range", points: [x0 + "," + y0, fast + "," + yOf(0), slow + "," + yOf(0)].join(" "), fill: "var(--band-80)" }),
        "80% range: runs out between " + runway.earliest + " and " + slowEnd));
      if (runway.likely) {
        var likely = xOf(time(runway.likely));
        svg.appendChild(tip(svgEl("line", { class: "burn-line", x1: x0, y1: y0, x2: likely, y2: yOf(0), stroke: "var(--accent)", "stroke-width": 2.5 }),
          "At the recent pace: runs out around " + runway.likely));
        svg.appendChild(svgEl("text", { class: "label", x: likely, y: yOf(0) - 8, "text-anchor": "middle" }, "~" + runway.likely));
      }
      svg.appendChild(svgEl("text", { class: "range-label", x: xOf(time(runway.earliest)), y: box.y + box.h + 28, "text-anchor": "middle" }, runway.earliest));
      if (runway.latest) svg.appendChild(svgEl("text", { class: "range-label", x: xOf(time(runway.latest)), y: box.y + box.h + 28, "text-anchor": "middle" }, runway.latest));
    } else {
      svg.appendChild(svgEl("text", { class: "label", x: box.x + box.w / 2, y: box.y + 20, "text-anchor": "middle" }, "At the recent pace the balance lasts until the reset."));
    }
    svg.appendChild(svgEl("circle", { cx: x0, cy: y0, r: 4, fill: "var(--accent)" }));
    if (period) {
      var resetX = xOf(time(period.to));
      svg.appendChild(svgEl("line", { class: "reset", x1: resetX, x2: resetX, y1: box.y, y2: box.y + box.h, stroke: "var(--ok)", "stroke-dasharray": "5 3", "stroke-width": 1.5 }));
      svg.appendChild(svgEl("text", { x: resetX - 4, y: box.y + 10, "text-anchor": "end", fill: "var(--ok)" }, "resets " + day(period.to)));
    }
    svg.appendChild(svgEl("text", { x: x0, y: box.y + box.h + 14, "text-anchor": "start" }, "now " + day(result.as_of)));
    app.appendChild(svg);
    if (runway) {
      var when = period ? ", " + (runway.before_reset ? "before" : "not before") + " the period resets" : "";
      note("At the recent pace the balance runs out around " + (runway.likely || runway.earliest) + " (80% range " + runway.earliest + " to " + slowEnd + ")" + when + ".");
      if (runway.grant_expiring_first) note("The grant " + runway.grant_expiring_first + " expires with credits left before then.");
    }
  }

  // Horizontal bars: [label, value, text] rows.
  function bars(rows, kind, into, labels) {
    var target = into || app;
    // Drawn at the width it is shown at, so its text keeps its size in a narrow panel too.
    var width = Math.max(260, Math.round(target.clientWidth || 640));
    var lineHeight = 24, nameWidth = Math.min(labels || 230, Math.round(width * 0.42));
    var svg = chart(width, rows.length * lineHeight + 4, "Bars: " + kind);
    var top = Math.max.apply(null, rows.map(function (row) { return Math.abs(row[1]); }).concat([1e-9]));
    rows.forEach(function (row, index) {
      var y = index * lineHeight + 2;
      var w = ((width - nameWidth - valueWidth(row[2]) - 10) * Math.abs(row[1])) / top;
      var group = svgEl("g", { class: "hbar " + kind, "data-label": row[0], "data-value": String(row[1]) });
      var fits = Math.floor((nameWidth - 10) / 6.6);
      var name = row[0].length > fits ? row[0].slice(0, fits - 1) + "…" : row[0];
      group.appendChild(svgEl("text", { class: "label", x: 0, y: y + 15 }, name));
      group.appendChild(svgEl("rect", { x: nameWidth, y: y + 4, width: Math.max(1, w), height: lineHeight - 8, rx: 2, fill: row[1] < 0 ? "var(--ok)" : "var(--accent)" }));
      group.appendChild(svgEl("text", { x: nameWidth + w + 6, y: y + 15 }, row[2]));
      tip(group, row[0] + ": " + row[2]);
      svg.appendChild(group);
    });
    target.appendChild(svg);
  }

  // ---- get_credit_usage_summary ----------------------------------------------------------------------------------
  var DIMENSIONS = [["users", "user"], ["modules", "module"], ["products", "product"], ["skills", "skill"]];

  // The per-dimension top 5s (issue 21), wherever the result carries them: `tops.users` or `top_users`.
  function topsOf(result) {
    var found = {};
    var any = false;
    DIMENSIONS.forEach(function (pair) {
      var list = (result.tops && (result.tops[pair[0]] || result.tops[pair[1]])) || result["top_" + pair[0]];
      if (Array.isArray(list) && list.length) {
        found[pair[0]] = list;
        any = true;
      }
    });
    return any ? found : null;
  }

  function drawSummary(result) {
    var rows = result.rows || [];
    header(result, "AI credit usage breakdown: tenant " + result.tenant, windowText(result.window));
    if (!rows.length || !(result.total_credits > 0)) {
      nothing(result, "No AI credits were used in this window.");
      return;
    }
    var facts = [[credits(result.total_credits), "credits in all"]];
    if (result.comparison && result.comparison.change_percent !== null) {
      var change = result.comparison.change_percent;
      facts.push([percent(change), "against the previous window"]);
    }
    figures(facts);
    var tops = topsOf(result);
    if (tops) {
      var panels = el("div", { class: "panels" });
      app.appendChild(panels);
      // Every panel in the grid first: each one's bars are then drawn at its final width.
      var drawn = DIMENSIONS.filter(function (pair) { return tops[pair[0]]; }).map(function (pair) {
        var panel = el("div", { class: "panel" });
        panel.appendChild(el("h2", {}, "Top " + pair[0]));
        panels.appendChild(panel);
        return [pair, panel];
      });
      drawn.forEach(function (each) {
        var pair = each[0];
        bars(tops[pair[0]].map(function (top) {
          var name = top.name !== undefined ? top.name : top[pair[1]] !== undefined ? top[pair[1]] : top.value;
          var share = top.share !== undefined ? top.share : top.share_percent;
          var text = credits(top.credits) + (share !== undefined && share !== null ? " (" + fixed(share * 100, 1) + "%)" : "");
          return [String(name), top.credits, text];
        }), "top-" + pair[1], each[1], 150);
      });
    } else {
      var grouped = DIMENSIONS.map(function (pair) { return pair[1]; }).filter(function (name) { return rows[0][name] !== null && rows[0][name] !== undefined; });
      app.appendChild(el("h2", {}, "Largest rows (" + grouped.join(" · ") + ")"));
      bars(rows.slice(0, 10).map(function (row) {
        var names = [row.user, row.module, row.product, row.skill].filter(function (name) { return name !== null && name !== undefined; });
        return [names.join(" · "), row.credits, credits(row.credits)];
      }), "row", null, 330);
      if (result.row_count > 10) note("The 10 largest of " + result.row_count + " rows; the Excel file has all.");
    }
    if (result.movers && result.movers.length) {
      app.appendChild(el("h2", {}, "Biggest changes by user against the previous window"));
      bars(result.movers.map(function (mover) {
        var sign = mover.change_credits >= 0 ? "+" : "";
        var change = Math.abs(mover.change_credits) < 0.005 ? "no change" : sign + credits(mover.change_credits);
        var relative = mover.change_percent === null ? " (" + mover.status + ")" : " (" + percent(mover.change_percent) + ")";
        return [mover.user, mover.change_credits, change + relative];
      }), "mover");
    }
  }

  var FILE = { trend: "trend", forecast: "forecast", balance: "balance", summary: "summary" };
  var DRAW = { trend: drawTrend, forecast: drawForecast, balance: drawBalance, summary: drawSummary };

  function errorText(result) {
    var texts = (result.content || []).filter(function (block) { return block && block.type === "text"; });
    return texts.length ? texts[0].text : "The question could not be answered.";
  }

  function render() {
    var result = lastResult;
    var state = "drawn";
    clear();
    if (result.isError) {
      state = "error";
      showMessage(errorText(result), true);
    } else if (!result.structuredContent || !DRAW[VIEW]) {
      state = "nothing";
      showMessage("This answer has nothing to draw; its text says it all.");
    } else {
      try {
        var data = result.structuredContent;
        DRAW[VIEW](data);
        downloadButton(data.download_url, data.expires_at, "ai-credits_" + FILE[VIEW] + ".xlsx");
      } catch (problem) {
        state = "failed";
        showMessage("This answer could not be drawn; its text says it all.");
      }
    }
    app.setAttribute("data-state", state); // for a host's tests: the result has been drawn (or said)
    reportSize();
  }

  applyTheme();
  showMessage("Waiting for the answer…");
  request("ui/initialize", {
    protocolVersion: PROTOCOL_VERSION,
    appInfo: { name: "ai-credits-mcp", version: "1" },
    appCapabilities: {},
  }).then(
    function (answer) {
      host.capabilities = (answer && answer.hostCapabilities) || {};
      host.context = (answer && answer.hostContext) || {};
      applyTheme();
      notify("ui/notifications/initialized", {});
      initialized = true;
      reportSize();
    },
    function () {
      showMessage("The host did not start this view; the answer's text says it all.");
    }
  );
})();
