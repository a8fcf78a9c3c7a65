// Operator dashboard for budget-router: polls the /v1/dashboard endpoints and draws inline SVG.
"use strict";

(function () {
  const REFRESH_MS = 5000;
  const KEY_STORAGE = "budgetRouterKey";
  const BASE = location.pathname.replace(/\/dashboard\/?$/, "");
  const SVG_NS = "http://www.w3.org/2000/svg";
  const PALETTE = [
    "#2f6fde", "#e0702b", "#2e9d5b", "#c23b7a", "#7a4fd0", "#1aa3b0", "#c9a21b",
    "#8a5a3c", "#5b6b8c", "#d2453b", "#4bb8e6", "#98b83a", "#e089c0", "#3d4658",
  ];
  const ACTION_COLORS = {
    proceed: "#2e9d5b", upgrade: "#2f6fde", downgrade: "#e08a1e", compress_context: "#7a4fd0",
    skip_optional: "#8a93a6", require_confirmation: "#e0702b", abort: "#d2453b",
  };
  const modelColors = new Map();
  const state = { selected: null, busy: false, query: "" };

  // ---- auth: ?key= wins and is remembered, then dropped from the address bar ----
  function apiKey() {
    const params = new URLSearchParams(location.search);
    const fromUrl = params.get("key");
    if (fromUrl) {
      try { localStorage.setItem(KEY_STORAGE, fromUrl); } catch (e) { /* storage may be off */ }
      params.delete("key");
      const rest = params.toString();
      history.replaceState(null, "", location.pathname + (rest ? "?" + rest : "") + location.hash);
      return fromUrl;
    }
    try { return localStorage.getItem(KEY_STORAGE); } catch (e) { return null; }
  }
  const KEY = apiKey();

  async function getJson(path) {
    const headers = { Accept: "application/json" };
    if (KEY) headers.Authorization = "Bearer " + KEY;
    const response = await fetch(BASE + path, { headers });
    if (!response.ok) {
      let message = response.status + " " + response.statusText;
      try {
        const body = await response.json();
        if (body && body.error && body.error.message) message += ": " + body.error.message;
      } catch (e) { /* not JSON */ }
      if (response.status === 401 || response.status === 403) {
        message += " (open the page with ?key=YOUR_API_KEY)";
      }
      throw new Error(message);
    }
    return response.json();
  }

  // ---- tiny DOM helpers ----
  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    setAttrs(node, attrs);
    append(node, children);
    return node;
  }
  function s(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    setAttrs(node, attrs);
    append(node, children);
    return node;
  }
  function setAttrs(node, attrs) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") node.textContent = v;
      else if (k === "onclick") node.addEventListener("click", v);
      else node.setAttribute(k, v);
    }
  }
  function append(node, children) {
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    }
  }
  function replace(id, ...children) {
    const node = document.getElementById(id);
    node.replaceChildren();
    append(node, children);
  }
  function title(text) { return s("title", { text }); }

  // ---- formatting ----
  function dollars(x) {
    if (x === null || x === undefined) return "—";
    const a = Math.abs(x);
    const sign = x < 0 ? "−" : "";
    if (a === 0) return "$0";
    if (a < 0.01) return sign + "$" + a.toPrecision(3);
    if (a < 100) return sign + "$" + a.toFixed(3);
    return sign + "$" + a.toFixed(0);
  }
  function pct(x) { return (x * 100).toFixed(x < 0.1 && x > 0 ? 1 : 0) + "%"; }
  function num(x, digits) { return x === null || x === undefined ? "—" : x.toFixed(digits); }
  function clock(iso) { return new Date(iso).toLocaleTimeString([], { hour12: false }); }
  function shortId(id) { return id.length > 14 ? id.slice(0, 14) + "…" : id; }
  function colorFor(model) {
    if (!modelColors.has(model)) modelColors.set(model, PALETTE[modelColors.size % PALETTE.length]);
    return modelColors.get(model);
  }
  function widthOf(id) { return Math.max(300, document.getElementById(id).clientWidth || 600); }
  function empty(text) { return h("div", { class: "empty", text }); }

  // ---- charts ----
  // rows: [{label, sub, segments:[{value, color, tip}], max, value}]; one bar per row.
  function hbars(id, name, rows, opts) {
    if (!rows.length) { replace(id, empty(opts.emptyText || "no data yet")); return; }
    const width = widthOf(id);
    const labelW = opts.labelWidth || Math.min(190, width * 0.34);
    const valueW = opts.valueWidth || 150;
    const rowH = opts.sub ? 36 : 22;
    const barH = 14;
    const plotW = Math.max(60, width - labelW - valueW - 12);
    const svg = s("svg", {
      viewBox: `0 0 ${width} ${rows.length * rowH + 4}`, "data-chart": name,
      "data-count": rows.length, role: "img", "aria-label": name,
    });
    rows.forEach((row, i) => {
      const y = i * rowH + 2;
      const g = s("g", { class: "row", "data-label": row.label });
      g.appendChild(s("text", { x: 0, y: y + 11, text: row.label }));
      if (row.sub) g.appendChild(s("text", { x: 0, y: y + 25, class: "muted", text: row.sub }));
      const max = row.max > 0 ? row.max : 1;
      g.appendChild(s("rect", {
        x: labelW, y, width: plotW, height: barH, rx: 3, fill: opts.track || "#e8ecf3",
      }, title(row.trackTip || "")));
      let x = labelW;
      for (const seg of row.segments) {
        const w = Math.max(0, Math.min(plotW - (x - labelW), (seg.value / max) * plotW));
        if (w <= 0) continue;
        g.appendChild(s("rect", {
          x, y, width: w, height: barH, rx: 2, fill: seg.color, class: "bar",
        }, title(seg.tip || "")));
        x += w;
      }
      g.appendChild(s("text", { x: labelW + plotW + 8, y: y + 11, text: row.value }));
      svg.appendChild(g);
    });
    replace(id, svg);
  }

  function spendColor(share) {
    if (share >= 0.9) return "#d2453b";
    if (share >= 0.7) return "#e08a1e";
    return "#2f6fde";
  }

  function drawTasks(tasks) {
    document.getElementById("tasks-note").textContent = tasks.length
      ? `(${tasks.length} most recent)` : "";
    hbars("chart-tasks", "task-spend", tasks.map((t) => {
      const share = t.total_dollars ? t.spent_dollars / t.total_dollars : 0;
      return {
        label: shortId(t.task_id) + (t.status === "closed" ? " ✓" : ""),
        sub: `${t.trust_domain} · ${t.task_type} · ${t.decisions} steps`,
        max: t.total_dollars,
        trackTip: `budget ${dollars(t.total_dollars)}`,
        segments: [
          { value: t.spent_dollars, color: spendColor(share), tip: `spent ${dollars(t.spent_dollars)}` },
          { value: t.reserved_dollars, color: "#9dbcf2", tip: `reserved ${dollars(t.reserved_dollars)}` },
        ],
        value: `${dollars(t.spent_dollars)} / ${dollars(t.total_dollars)} (${pct(share)})`,
      };
    }), { sub: true, valueWidth: 170, emptyText: "no tasks yet" });
  }

  function drawDomains(domains) {
    hbars("chart-domains", "domain-spend", domains.map((d) => ({
      label: d.trust_domain,
      sub: `${d.tasks} tasks, ${d.open_tasks} open`,
      max: d.total_dollars,
      segments: [
        { value: d.spent_dollars, color: "#2f6fde", tip: `spent ${dollars(d.spent_dollars)}` },
        { value: d.reserved_dollars, color: "#9dbcf2", tip: `reserved ${dollars(d.reserved_dollars)}` },
      ],
      value: `${dollars(d.spent_dollars)} / ${dollars(d.total_dollars)}`,
    })), { sub: true, labelWidth: 120, valueWidth: 110, emptyText: "no tasks yet" });
  }

  function drawDomainShare(domains) {
    const id = "chart-domain-share";
    const spent = domains.filter((d) => d.spent_dollars > 0);
    const total = spent.reduce((a, d) => a + d.spent_dollars, 0);
    if (!total) { replace(id, empty("nothing spent yet")); return; }
    const width = widthOf(id), r = 58, cx = r + 6, cy = r + 6;
    const svg = s("svg", {
      viewBox: `0 0 ${width} ${2 * r + 12}`, "data-chart": "domain-share",
      "data-count": spent.length, role: "img", "aria-label": "share of spend per trust domain",
    });
    let angle = -Math.PI / 2;
    spent.forEach((d, i) => {
      const share = d.spent_dollars / total;
      const color = PALETTE[(i + 4) % PALETTE.length];
      const tip = `${d.trust_domain}: ${dollars(d.spent_dollars)} (${pct(share)})`;
      if (share > 0.9999) {
        svg.appendChild(s("circle", { cx, cy, r, fill: color, class: "bar" }, title(tip)));
      } else {
        const end = angle + share * 2 * Math.PI;
        const large = end - angle > Math.PI ? 1 : 0;
        const path = `M ${cx} ${cy} L ${cx + r * Math.cos(angle)} ${cy + r * Math.sin(angle)} ` +
          `A ${r} ${r} 0 ${large} 1 ${cx + r * Math.cos(end)} ${cy + r * Math.sin(end)} Z`;
        svg.appendChild(s("path", { d: path, fill: color, class: "bar" }, title(tip)));
        angle = end;
      }
      const ly = 16 + i * 20;
      svg.appendChild(s("rect", { x: 2 * r + 30, y: ly - 10, width: 11, height: 11, rx: 2, fill: color }));
      svg.appendChild(s("text", { x: 2 * r + 48, y: ly, text: `${d.trust_domain}  ${pct(share)}` }));
    });
    svg.appendChild(s("circle", { cx, cy, r: r * 0.55, fill: "#fff" }));
    svg.appendChild(s("text", { x: cx, y: cy + 4, "text-anchor": "middle", text: dollars(total) }));
    replace(id, svg);
  }

  function drawMix(mix) {
    const id = "chart-mix";
    const buckets = mix.buckets;
    mix.models.forEach(colorFor);
    replace("legend-mix", mix.models.map((m) =>
      h("span", {}, h("i", { class: "sw", style: `background:${colorFor(m)}` }), m)));
    document.getElementById("mix-note").textContent = buckets.length
      ? `(decisions per ${mix.bucket_seconds}s)` : "";
    if (!buckets.length) { replace(id, empty("no decisions yet")); return; }
    const width = widthOf(id);
    const height = 200;
    const left = 34, bottom = 20, top = 6;
    const plotW = width - left - 4, plotH = height - bottom - top;
    const totals = buckets.map((b) => Object.values(b.counts).reduce((a, c) => a + c, 0));
    const maxTotal = Math.max(1, ...totals);
    const step = plotW / buckets.length;
    const barW = Math.max(2, step * 0.78);
    const svg = s("svg", {
      viewBox: `0 0 ${width} ${height}`, "data-chart": "model-mix",
      "data-count": totals.reduce((a, c) => a + c, 0), role: "img", "aria-label": "model mix",
    });
    for (const frac of [0, 0.5, 1]) {
      const y = top + plotH * (1 - frac);
      svg.appendChild(s("line", { x1: left, x2: width, y1: y, y2: y, class: "grid-line" }));
      svg.appendChild(s("text", {
        x: left - 6, y: y + 4, "text-anchor": "end", class: "muted",
        text: String(Math.round(maxTotal * frac)),
      }));
    }
    const labelEvery = Math.max(1, Math.ceil(buckets.length / 6));
    buckets.forEach((b, i) => {
      const x = left + i * step + (step - barW) / 2;
      let y = top + plotH;
      for (const model of mix.models) {
        const count = b.counts[model] || 0;
        if (!count) continue;
        const hgt = (count / maxTotal) * plotH;
        y -= hgt;
        svg.appendChild(s("rect", {
          x, y, width: barW, height: hgt, fill: colorFor(model), class: "bar",
        }, title(`${clock(b.start)} · ${model}: ${count}`)));
      }
      if (i % labelEvery === 0) {
        svg.appendChild(s("text", {
          x: x + barW / 2, y: height - 5, "text-anchor": "middle", class: "muted",
          text: clock(b.start),
        }));
      }
    });
    replace(id, svg);
  }

  function drawExploration(ex) {
    replace("exploration-headline",
      h("div", {}, h("div", { class: "big", text: pct(ex.rate) }),
        h("div", { class: "lbl", text: `draws off the top choice (${ex.explored} of ${ex.draws})` })),
      h("div", {}, h("div", { class: "big", text: num(ex.mean_one_minus_propensity, 3) }),
        h("div", { class: "lbl", text: "mean 1 − propensity" })));
    hbars("chart-exploration", "exploration", ex.by_domain.map((d) => ({
      label: d.trust_domain,
      max: 1,
      segments: [{ value: d.rate, color: "#c9a21b", tip: `${d.explored} of ${d.draws} explored` }],
      value: `${pct(d.rate)} of ${d.draws}`,
    })), { labelWidth: 120, valueWidth: 80, emptyText: "no draws yet" });
  }

  function drawPerformance(perf) {
    const kinds = perf.by_kind.map((k) => k.step_kind);
    const cells = new Map(perf.cells.map((c) => [c.model + "\u0000" + c.step_kind, c]));
    if (!perf.by_model.length) {
      replace("heatmap", empty("no outcomes yet"));
    } else {
      const head = h("tr", {}, h("th", { text: "model" }), kinds.map((k) => h("th", { text: k })),
        h("th", { text: "all kinds" }));
      const rows = perf.by_model.map((m) => h("tr", {},
        h("td", { class: "model", text: m.model }),
        kinds.map((k) => heatCell(cells.get(m.model + "\u0000" + k))),
        heatCell(m)));
      replace("heatmap", h("table", { "data-chart": "heatmap", "data-count": perf.cells.length },
        h("thead", {}, head), h("tbody", {}, rows)));
    }
    const rewards = perf.by_model.map((m) => m.mean_reward);
    const lo = Math.min(0, ...rewards), hi = Math.max(0, ...rewards, 1e-9);
    hbars("chart-reward", "reward", perf.by_model.map((m) => ({
      label: m.model,
      max: hi - lo,
      segments: [
        { value: Math.max(0, m.mean_reward - lo) , color: colorFor(m.model),
          tip: `${m.model}: mean reward ${num(m.mean_reward, 3)} over ${m.n}` },
      ],
      value: `${num(m.mean_reward, 3)} · ${pct(m.success_rate)} ok · n=${m.n}`,
    })), { valueWidth: 170, emptyText: "no outcomes yet" });
  }

  function heatCell(c) {
    if (!c) return h("td", { class: "none", text: "–" });
    const hue = Math.round(c.success_rate * 120);
    return h("td", {
      style: `background:hsl(${hue},62%,86%)`,
      title: `n=${c.n}, success ${pct(c.success_rate)}, quality ${num(c.mean_quality, 2)}, ` +
        `cost ${dollars(c.mean_cost_dollars)}, reward ${num(c.mean_reward, 3)}`,
    }, h("span", { class: "rate", text: pct(c.success_rate) }),
      h("span", { class: "sub", text: `r ${num(c.mean_reward, 2)} · n ${c.n}` }));
  }

  function drawActions(actions) {
    const entries = Object.entries(actions);
    const max = Math.max(1, ...entries.map(([, n]) => n));
    hbars("chart-actions", "actions", entries.map(([action, n]) => ({
      label: action,
      max,
      segments: [{ value: n, color: ACTION_COLORS[action] || "#8a93a6", tip: `${action}: ${n}` }],
      value: String(n),
    })), { labelWidth: 140, valueWidth: 50, emptyText: "no decisions yet" });
  }

  function drawSystem(system, totals) {
    const chips = [
      ["policy", system.policy_version],
      ["champion", system.champion_version ?? system.champion],
      ["challenger", system.challenger_version ?? system.challenger],
      ["decisions", `${totals.decisions} / ${totals.max_decisions}`],
      ["outcomes", totals.outcomes],
    ];
    replace("system", chips.filter(([, v]) => v !== undefined && v !== null)
      .map(([k, v]) => h("span", { class: "chip" }, k, h("b", { text: String(v) }))));
    const shown = new Set(["lambda_by_domain", "lambda"]);
    const pairs = Object.entries(system).filter(([k]) => !shown.has(k));
    replace("learner", pairs.length ? pairs.flatMap(([k, v]) => [
      h("span", { class: "k", text: k.replace(/_/g, " ") }),
      h("span", { class: "v", text: typeof v === "object" ? JSON.stringify(v) : String(v) }),
    ]) : [empty("no learner status reported")]);
    const lambdas = system.lambda_by_domain || (typeof system.lambda === "object" ? system.lambda : null);
    const entries = lambdas ? Object.entries(lambdas) : [];
    const max = Math.max(1e-9, ...entries.map(([, v]) => Number(v) || 0));
    hbars("chart-lambda", "lambda", entries.map(([domain, value]) => ({
      label: domain,
      max,
      segments: [{ value: Number(value) || 0, color: "#7a4fd0", tip: `λ ${value}` }],
      value: num(Number(value), 3),
    })), { labelWidth: 120, valueWidth: 60, emptyText: "λ not reported" });
  }

  // ---- recent decisions and the explanation panel ----
  function drawDecisions(rows) {
    const body = document.querySelector("#decisions tbody");
    body.replaceChildren();
    if (!rows.length) {
      body.appendChild(h("tr", {}, h("td", { colspan: 10, class: "empty", text: "no matching decisions" })));
      return;
    }
    for (const r of rows) {
      const o = r.outcome;
      const tr = h("tr", {
        "data-decision-id": r.decision_id,
        class: r.decision_id === state.selected ? "selected" : null,
        onclick: () => openDecision(r.decision_id),
      },
      h("td", { text: clock(r.created_at) }),
      h("td", { class: "mono", text: shortId(r.decision_id), title: r.decision_id }),
      h("td", { class: "mono", text: shortId(r.task_id), title: r.task_id }),
      h("td", { text: r.trust_domain }),
      h("td", { text: r.step_kind }),
      h("td", {}, r.model ? h("i", { class: "sw", style: `background:${colorFor(r.model)}` }) : null,
        " ", r.model || "—", r.explored ? h("span", { class: "badge explore", text: "explore" }) : null),
      h("td", {}, h("span", { class: "badge " + r.action, text: r.action })),
      h("td", { class: "num", text: num(r.propensity, 3) }),
      h("td", { class: "num", text: dollars(r.reserved_dollars) }),
      h("td", {}, o ? h("span", {
        class: "badge " + (o.success ? "ok" : "fail"),
        text: `${o.success ? "ok" : "failed"} · q ${num(o.quality, 2)} · ${dollars(o.cost_dollars)}`,
      }) : "pending"));
      body.appendChild(tr);
    }
  }

  async function openDecision(id) {
    state.selected = id;
    document.querySelectorAll("#decisions tbody tr").forEach((tr) =>
      tr.classList.toggle("selected", tr.dataset.decisionId === id));
    const panel = document.getElementById("panel");
    panel.hidden = false;
    replace("panel-body", empty("loading…"));
    try {
      drawExplanation(await getJson("/v1/dashboard/decisions/" + encodeURIComponent(id)));
    } catch (err) {
      replace("panel-body", h("div", { class: "empty", text: String(err.message || err) }));
    }
  }

  function closePanel() {
    state.selected = null;
    document.getElementById("panel").hidden = true;
    document.querySelectorAll("#decisions tbody tr.selected")
      .forEach((tr) => tr.classList.remove("selected"));
  }

  function drawExplanation(ex) {
    const d = ex.decision;
    document.getElementById("panel-title").textContent = d.model || d.action;
    const meta = h("div", { class: "meta" },
      h("span", { class: "badge " + d.action, text: d.action }),
      ex.explored ? h("span", { class: "badge explore", text: "explored" }) : null,
      h("span", { class: "badge", text: `domain ${d.trust_domain.name}${d.trust_domain.fallback ? " (fallback)" : ""}` }),
      h("span", { class: "badge", text: `p ${num(d.propensity, 3)}` }),
      h("span", { class: "badge", text: `policy ${d.policy_version}` }),
      h("span", { class: "badge", text: d.exploration }));
    const ids = h("div", { class: "kv" },
      h("span", { class: "k", text: "decision" }), h("span", { class: "v", text: d.decision_id }),
      h("span", { class: "k", text: "task" }), h("span", { class: "v", text: `${d.task_id} (${ex.task.task_type})` }),
      h("span", { class: "k", text: "step" }), h("span", { class: "v", text: `${d.step.kind} · ${d.step.type} · ${d.step.input_tokens} in / ${d.step.expected_output_tokens} out` }),
      h("span", { class: "k", text: "time" }), h("span", { class: "v", text: new Date(d.created_at).toLocaleString() }));

    const alts = d.alternatives;
    const altChart = h("div", { id: "chart-alternatives", class: "chart" });
    const altTable = h("table", { "data-section": "alternatives-table" },
      h("thead", {}, h("tr", {}, ["model", "probability", "est. cost", "status"].map((t) => h("th", { text: t })))),
      h("tbody", {}, alts.map((a) => h("tr", {
        class: a.model === d.model ? "chosen" : a.excluded ? "excluded" : null,
        "data-model": a.model,
      },
      h("td", { text: a.model + (a.model === d.model ? " ◀ chosen" : "") }),
      h("td", { class: "num", text: num(a.probability, 4) }),
      h("td", { class: "num", text: dollars(a.estimated_cost_dollars) }),
      h("td", { text: a.excluded ? a.excluded_reason || "excluded" : "eligible" })))));

    const rules = d.rules.length
      ? h("ul", { class: "rules" }, d.rules.map((r) => h("li", { "data-rule": r.rule },
        h("span", { class: "badge " + r.action, text: r.action }), " ",
        h("b", { text: r.rule }), h("span", { class: "detail", text: r.detail }))))
      : empty("no governor rule fired");
    const reasons = h("ol", { class: "reasons" }, d.reasons.map((r) => h("li", { text: r })));
    const o = ex.outcome;
    const outcome = o ? h("div", { class: "kv" },
      h("span", { class: "k", text: "success" }), h("span", { class: "v", text: String(o.success) }),
      h("span", { class: "k", text: "quality" }), h("span", { class: "v", text: num(o.quality, 3) }),
      h("span", { class: "k", text: "cost" }), h("span", { class: "v", text: dollars(o.cost_dollars) }),
      h("span", { class: "k", text: "latency" }), h("span", { class: "v", text: o.latency_ms === null ? "—" : `${num(o.latency_ms, 0)} ms` }))
      : empty("no outcome reported yet");

    replace("panel-body", meta, ids,
      h("section", { "data-section": "alternatives" }, h("h3", { text: `Alternatives (${alts.length})` }), altChart, altTable),
      h("section", { "data-section": "budget" }, h("h3", { text: "Budget before → after" }),
        h("div", { id: "chart-budget", class: "chart" })),
      h("section", { "data-section": "rules" }, h("h3", { text: `Rules fired (${d.rules.length})` }), rules),
      h("section", { "data-section": "reasons" }, h("h3", { text: "Reasons" }), reasons),
      h("section", { "data-section": "outcome" }, h("h3", { text: "Outcome" }), outcome),
      h("section", {}, h("details", {}, h("summary", { text: "Raw decision JSON" }),
        h("pre", { text: JSON.stringify(d, null, 2) }))));

    hbars("chart-alternatives", "alternatives", alts.filter((a) => !a.excluded).map((a) => ({
      label: a.model,
      max: 1,
      segments: [{ value: a.probability, color: a.model === d.model ? "#2f6fde" : "#9dbcf2",
        tip: `${a.model}: p=${num(a.probability, 4)}, est. ${dollars(a.estimated_cost_dollars)}` }],
      value: `${num(a.probability, 3)} · ${dollars(a.estimated_cost_dollars)}`,
    })), { labelWidth: 150, valueWidth: 120, emptyText: "no model was drawn" });

    const total = d.budget.total_dollars;
    const book = (name, l) => ({
      label: name,
      sub: `${l.steps} steps · ${l.input_tokens_used} in / ${l.output_tokens_used} out tokens`,
      max: total,
      segments: [
        { value: l.spent_dollars, color: "#2f6fde", tip: `spent ${dollars(l.spent_dollars)}` },
        { value: l.reserved_dollars, color: "#9dbcf2", tip: `reserved ${dollars(l.reserved_dollars)}` },
      ],
      value: `${dollars(l.spent_dollars)} + ${dollars(l.reserved_dollars)} res. · ${dollars(l.remaining_dollars)} left`,
    });
    hbars("chart-budget", "budget", [book("before", d.ledger_before), book("after", d.ledger)],
      { sub: true, labelWidth: 60, valueWidth: 220 });
  }

  // ---- refresh loop ----
  function setStatus(text, isError) {
    const node = document.getElementById("status");
    node.textContent = text;
    node.classList.toggle("error", Boolean(isError));
  }

  async function refreshDecisions() {
    const q = encodeURIComponent(state.query);
    drawDecisions(await getJson(`/v1/dashboard/decisions?limit=200&q=${q}`));
  }

  async function refresh() {
    if (state.busy) return;
    state.busy = true;
    try {
      const lam = Math.max(0, Number(document.getElementById("lam").value) || 0);
      const summary = await getJson(`/v1/dashboard/summary?lam=${lam}&tasks=20`);
      drawSystem(summary.system || {}, summary.totals);
      drawTasks(summary.tasks);
      drawDomains(summary.domains);
      drawDomainShare(summary.domains);
      drawMix(summary.model_mix);
      drawExploration(summary.exploration);
      drawPerformance(summary.performance);
      drawActions(summary.actions);
      await refreshDecisions();
      setStatus("updated " + new Date().toLocaleTimeString([], { hour12: false }));
    } catch (err) {
      setStatus("refresh failed: " + (err.message || err), true);
    } finally {
      state.busy = false;
    }
  }

  let searchTimer = null;
  document.getElementById("search").addEventListener("input", (event) => {
    state.query = event.target.value.trim();
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => refreshDecisions().catch((err) =>
      setStatus("search failed: " + (err.message || err), true)), 200);
  });
  document.getElementById("lam").addEventListener("change", refresh);
  document.getElementById("panel-close").addEventListener("click", closePanel);
  document.addEventListener("keydown", (event) => { if (event.key === "Escape") closePanel(); });
  let resizeTimer = null;
  window.addEventListener("resize", () => { clearTimeout(resizeTimer); resizeTimer = setTimeout(refresh, 200); });

  refresh();
  setInterval(refresh, REFRESH_MS);
})();
