// lf board: the page of `lf ui`. Plain DOM code; every text from the server goes in through
// textContent, never as HTML. Charts are uPlot's.
"use strict";

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c != null) e.append(c);
  return e;
}

async function api(path, body) {
  const init = body === undefined ? {} : {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  };
  const r = await fetch(path, init);
  let data = null;
  try { data = await r.json(); } catch (_) { data = { error: `${r.status} ${r.statusText}` }; }
  if (!r.ok) throw new Error(data && data.error ? data.error : `${r.status}`);
  return data;
}

const board = {
  pipelines: [],
  current: null,     // the manifest shown
  plan: null,        // `lf plan --json` of the form's settings
  live: null,        // runs/<pipeline>/live.json
  alive: false,
  last: null,        // runs/<pipeline>/run.json
  series: {},        // step -> metrics lines
  charts: {},        // step -> uPlot
  events: null,
  job: null,         // the run started from this page
  selected: null,    // the step shown in detail
  chatModel: null,
  chatHistory: [],
  history: [],       // the store's records of this pipeline's runs, newest first
  viewId: "",        // the past run shown ("" = the latest, live)
};

const TRAINING = new Set(["pretrain", "sft", "rm", "dpo", "kto"]);
const MODELS = new Set(["model", "pretrain", "sft", "rm", "dpo", "kto"]);
const PREVIEWABLE = new Set(["dataset", "template", "tokenizer"]);

// ---------- pipelines ----------

async function loadPipelines() {
  const data = await api("/api/pipelines");
  board.pipelines = data.pipelines;
  $("where").textContent = `${data.dir} · store ${data.store}`;
  const list = $("pipeline-list");
  list.replaceChildren();
  for (const m of data.pipelines) {
    const b = el("button", { type: "button", "data-pipeline": m.name, onclick: () => selectPipeline(m) },
      m.name, el("small", { text: m.file || "embedded quickstart" }));
    list.append(el("li", {}, b));
  }
  const wanted = new URLSearchParams(location.search).get("pipeline");
  const first = data.pipelines.find((m) => m.name === wanted) || data.pipelines[0];
  if (first) selectPipeline(first);
}

function selectPipeline(m) {
  board.current = m;
  board.plan = null; board.live = null; board.last = null; board.selected = null;
  board.dagKey = null; board.tabsKey = null; board.detailFor = null; board.detailFiles = null;
  for (const id of ["data-step", "chat-model", "only", "force"]) $(id).replaceChildren();
  $("preview-text").textContent = ""; $("preview-samples").replaceChildren();
  for (const c of Object.values(board.charts)) c.destroy();
  board.series = {}; board.charts = {};
  $("charts").replaceChildren();
  for (const b of document.querySelectorAll("#pipeline-list button")) {
    b.classList.toggle("active", b.dataset.pipeline === m.name);
  }
  $("pipeline-name").textContent = m.name;
  $("pipeline-description").textContent = m.error ? `cannot read: ${m.error}` : (m.description || "");
  const vars = $("vars");
  vars.replaceChildren();
  for (const [k, v] of Object.entries(m.vars || {})) {
    const input = el("input", { name: k, "data-var": k, value: typeof v === "string" ? v : JSON.stringify(v) });
    input.dataset.default = input.value;
    input.addEventListener("input", formChanged);
    vars.append(el("label", {}, `${k}`, input));
  }
  if (!Object.keys(m.vars || {}).length) vars.append(el("p", { class: "hint", text: "This pipeline has no variables." }));
  board.history = []; board.viewId = "";
  follow(m.name);
  loadHistory();
  formChanged();
}

async function loadHistory() {
  if (!board.current) return;
  const name = board.current.name;
  try {
    const { runs } = await api(`/api/history/${enc(name)}`);
    if (!still(name)) return;
    board.history = runs;
    const count = (r, status) => r.steps.filter((s) => s.status === status).length;
    const sel = $("history");
    sel.replaceChildren(el("option", { value: "", text: "latest" }), ...runs.map((r) => el("option", {
      value: r.id,
      text: `${new Date(Number(r.started_unix_ms)).toLocaleString()} · ${r.ok ? "ok" : "failed"} · ${count(r, "ran")} ran, ${count(r, "cached")} cached, ${count(r, "failed")} failed`,
    })));
    sel.value = runs.some((r) => r.id === board.viewId) ? board.viewId : "";
    sel.onchange = () => { board.viewId = sel.value; board.selected = null; render(); };
  } catch (_) { /* no store yet */ }
}

function request() {
  const vars = {};
  for (const input of document.querySelectorAll("#vars input")) {
    if (input.value !== input.dataset.default) vars[input.dataset.var] = input.value;
  }
  const picked = (id) => [...$(id).selectedOptions].map((o) => o.value);
  return { file: board.current ? board.current.file : null, vars, only: picked("only"), force: picked("force") };
}

let planTimer = null;
let formSeq = 0;
async function formChanged() {
  if (!board.current) return;
  const req = request();
  const seq = ++formSeq;
  try {
    const c = await api("/api/command", req);
    if (seq !== formSeq) return; // a newer edit's answer wins
    $("command").textContent = c.command;
    $("form-error").textContent = "";
  } catch (e) { if (seq === formSeq) $("form-error").textContent = e.message; }
  clearTimeout(planTimer);
  planTimer = setTimeout(refreshPlan, 250);
}

let planSeq = 0;
async function refreshPlan() {
  if (!board.current) return;
  const name = board.current.name;
  const seq = ++planSeq;
  try {
    // The whole pipeline (not only the `--only` part): the DAG and the step pickers show every step.
    const r = await api("/api/plan", { ...request(), only: [] });
    if (!board.current || board.current.name !== name || seq !== planSeq) return;
    $("plan-error").hidden = !r.error;
    $("plan-error").textContent = r.error || "";
    board.plan = r.plan || null;
    fillStepPickers();
    render();
  } catch (e) {
    $("plan-error").hidden = false;
    $("plan-error").textContent = e.message;
  }
}

function fillStepPickers() {
  const names = board.plan ? board.plan.steps.map((s) => s.name) : [];
  for (const id of ["only", "force"]) {
    const sel = $(id);
    const keep = new Set([...sel.selectedOptions].map((o) => o.value));
    if ([...sel.options].map((o) => o.value).join() === names.join()) continue;
    sel.replaceChildren(...names.map((n) => { const o = el("option", { value: n, text: n }); o.selected = keep.has(n); return o; }));
    sel.onchange = formChanged;
  }
}

// ---------- the run: live state and metrics ----------

function follow(pipeline) {
  if (board.events) board.events.close();
  const es = new EventSource(`/api/events/${encodeURIComponent(pipeline)}`);
  es.addEventListener("state", (ev) => {
    if (!still(pipeline)) return;
    const s = JSON.parse(ev.data);
    const ended = (l) => (l ? `${l.id}:${l.finished}` : "");
    const lastId = (r) => (r ? r.id : "");
    const changed = ended(board.live) !== ended(s.live) || lastId(board.last) !== lastId(s.last);
    const first = board.live === null && board.last === null;
    board.live = s.live; board.alive = s.alive; board.last = s.last;
    render();
    // A run ended (or began) since the last event: what the next run would do, and the history, changed.
    if (changed && !first && (!s.live || s.live.finished)) { refreshPlan(); loadHistory(); }
  });
  es.addEventListener("metrics", (ev) => {
    if (!still(pipeline)) return;
    const m = JSON.parse(ev.data);
    const before = m.reset ? [] : (board.series[m.step] || []);
    board.series[m.step] = before.concat(m.lines);
    drawChart(m.step);
  });
  board.events = es;
}

/// The steps to show: a past run's when one is picked, else the latest run's (live.json) when there is
/// one, else the plan's.
function stepList() {
  const past = board.viewId && board.history.find((r) => r.id === board.viewId);
  if (past) {
    const needs = {};
    for (const s of (board.live && board.live.steps) || (board.plan && board.plan.steps) || []) needs[s.name] = s.needs;
    return past.steps.map((s) => ({ ...s, needs: needs[s.name] || [] }));
  }
  if (board.live && board.live.steps) return board.live.steps;
  if (board.plan) return board.plan.steps.map((s) => ({ ...s, status: s.status }));
  return [];
}

function runStatus() {
  const past = board.viewId && board.history.find((r) => r.id === board.viewId);
  if (past) return past.ok ? "finished" : "failed";
  const l = board.live;
  if (!l) return null;
  if (l.finished) return l.ok ? "finished" : "failed";
  return board.alive ? "running" : "interrupted";
}

function render() {
  renderDag();
  renderDetail();
  renderTabs();
  const status = runStatus();
  const badge = $("run-badge");
  badge.className = status ? `badge ${status}` : "";
  badge.textContent = status ? `${board.viewId ? "run" : "last run"}: ${status}` : "";
  badge.dataset.status = status || "";
  const shown = (board.viewId && board.history.find((r) => r.id === board.viewId)) || board.live;
  $("run-note").textContent = shown
    ? `run ${shown.id} (${new Date(Number(shown.started_unix_ms)).toLocaleString()})`
    : (board.plan ? "plan: what `lf run` would do" : "");
}

function renderDag() {
  const steps = stepList();
  const planned = {};
  if (board.plan) for (const s of board.plan.steps) planned[s.name] = s;
  const depth = {};
  const byName = Object.fromEntries(steps.map((s) => [s.name, s]));
  const depthOf = (n, seen = new Set()) => {
    if (depth[n] !== undefined) return depth[n];
    if (seen.has(n)) return 0;
    seen.add(n);
    const needs = ((byName[n] || {}).needs || []).filter((x) => byName[x]);
    depth[n] = needs.length ? 1 + Math.max(...needs.map((x) => depthOf(x, seen))) : 0;
    return depth[n];
  };
  const key = JSON.stringify([steps, board.plan && board.plan.steps.map((s) => s.status), board.selected, !!board.live, board.viewId]);
  if (board.dagKey === key) return;
  board.dagKey = key;
  const layers = [];
  for (const s of steps) (layers[depthOf(s.name)] ||= []).push(s);
  const dag = $("dag");
  dag.replaceChildren();
  for (const layer of layers) {
    if (!layer) continue;
    const col = el("div", { class: "layer" });
    for (const s of layer) {
      const next = planned[s.name];
      const why = (s.reasons || []).join("; ");
      const card = el("div", {
        class: "step" + (board.selected === s.name ? " selected" : ""),
        "data-step": s.name, "data-status": s.status, title: why,
        onclick: () => { board.selected = s.name; render(); },
      },
        el("div", {}, el("span", { class: "name", text: s.name }), " ", el("span", { class: `badge ${s.status}`, text: s.status })),
        el("div", { class: "kind", text: s.kind + (s.needs && s.needs.length ? ` ← ${s.needs.join(", ")}` : "") }),
        why ? el("div", { class: "why", text: why }) : null,
        board.live && next && next.status !== "cached" ? el("div", { class: "why", text: `next run: ${next.status}` }) : null);
      col.append(card);
    }
    dag.append(col);
  }
}

async function renderDetail() {
  const box = $("step-detail");
  const name = board.selected;
  const step = stepList().find((s) => s.name === name);
  if (!step) { box.replaceChildren(); return; }
  const shownRun = (board.viewId && board.history.find((r) => r.id === board.viewId)) || board.last;
  const lastRec = shownRun && shownRun.steps ? shownRun.steps.find((s) => s.name === name) : null;
  const parts = [el("h4", { text: `${step.name} (${step.kind})` })];
  if (step.reasons && step.reasons.length) parts.push(el("div", {}, "why: ", step.reasons.join("; ")));
  if (step.error) parts.push(el("pre", { class: "error", text: step.error }));
  if (lastRec && lastRec.metrics && Object.keys(lastRec.metrics).length) {
    parts.push(el("div", { text: Object.entries(lastRec.metrics).map(([k, v]) => `${k} = ${fmt(v)}`).join(" · ") }));
  }
  box.replaceChildren(...parts);
  const pipeline = board.current.name;
  const key = `${pipeline}:${name}:${step.status}:${board.viewId}`;
  if (board.detailFor === key) { if (board.detailFiles) box.append(board.detailFiles); return; }
  board.detailFor = key;
  board.detailFiles = null;
  if (board.viewId) return; // a past run's artifact may be gone; `runs/` links point at the latest
  try {
    const a = await api(`/api/artifacts/${enc(pipeline)}/${enc(name)}`);
    if (!still(pipeline) || board.detailFor !== key) return;
    board.detailFiles = filesTable(pipeline, name, a.files, 12);
    if (board.selected === name) box.append(board.detailFiles);
  } catch (_) { /* no artifact yet */ }
}

function enc(s) { return encodeURIComponent(s); }

/// Whether `name` is still the pipeline shown (an answer that arrives after a switch is dropped).
function still(name) { return board.current && board.current.name === name; }

function fmt(v) {
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toPrecision(5);
  return typeof v === "string" ? v : JSON.stringify(v);
}

function size(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1 << 20) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1 << 30) return `${(n / (1 << 20)).toFixed(1)} MiB`;
  return `${(n / (1 << 30)).toFixed(2)} GiB`;
}

function filesTable(pipeline, step, files, limit) {
  const rows = files.slice(0, limit).map((f) => el("tr", {},
    el("td", {}, el("a", { href: `/files/${enc(pipeline)}/${enc(step)}/${f.path.split("/").map(enc).join("/")}`, download: "", text: f.path })),
    el("td", { text: size(f.bytes) })));
  const t = el("table", { class: "files" }, el("tr", {}, el("th", { text: "file" }), el("th", { text: "size" })), ...rows);
  if (files.length > limit) t.append(el("tr", {}, el("td", { text: `… ${files.length - limit} more` }), el("td")));
  return t;
}

// ---------- charts ----------

function drawChart(step) {
  const lines = board.series[step] || [];
  const train = lines.filter((l) => typeof l.loss === "number");
  let card = document.querySelector(`.chart[data-step="${CSS.escape(step)}"]`);
  if (!card) {
    card = el("div", { class: "chart", "data-step": step }, el("h4", { text: step }));
    $("charts").append(card);
  }
  card.dataset.points = String(train.length);
  const xs = train.map((l) => l.step);
  const evals = lines.filter((l) => typeof l.eval_loss === "number");
  const evalAt = new Map(evals.map((l) => [l.step, l.eval_loss]));
  const data = [xs, train.map((l) => l.loss), train.map((l) => l.lr ?? null)];
  const hasEval = evals.length > 0;
  if (hasEval) data.push(xs.map((x) => evalAt.get(x) ?? null));
  const old = board.charts[step];
  if (old && old.series.length === data.length) { old.setData(data); return; }
  if (old) old.destroy();
  const width = Math.max(420, card.clientWidth - 16 || 460);
  const series = [
    { label: "step" },
    { label: "loss", stroke: "#1769c2", width: 2, scale: "loss" },
    { label: "lr", stroke: "#b07d18", width: 1, dash: [4, 4], scale: "lr", value: (_, v) => v == null ? "-" : v.toExponential(2) },
  ];
  if (hasEval) series.push({ label: "eval loss", stroke: "#c0392b", width: 2, scale: "loss", spanGaps: true, points: { show: true } });
  board.charts[step] = new uPlot({
    width, height: 240, series,
    scales: { x: { time: false } },
    axes: [{ label: "step" }, { scale: "loss", label: "loss" }, { scale: "lr", side: 1, label: "lr", grid: { show: false }, values: (_, ticks) => ticks.map((t) => t.toExponential(0)) }],
  }, data, card);
}

// ---------- tabs ----------

function renderTabs() {
  const steps = stepList();
  const kinds = (set) => steps.filter((s) => set.has(s.kind)).map((s) => s.name);
  fillSelect($("data-step"), kinds(PREVIEWABLE), loadPreview);
  fillSelect($("chat-model"), kinds(MODELS), null, true);
  const evals = steps.filter((s) => s.kind === "evaluate").map((s) => s.name);
  const exports = steps.filter((s) => s.kind === "export").map((s) => s.name);
  const key = JSON.stringify([board.current && board.current.name, evals, exports, steps.map((s) => s.status)]);
  if (board.tabsKey === key) return;
  board.tabsKey = key;
  renderEvals(evals);
  renderExports(exports);
}

function fillSelect(sel, names, onchange, preferLast) {
  if ([...sel.options].map((o) => o.value).join() === names.join()) return;
  const keep = sel.value;
  sel.replaceChildren(...names.map((n) => el("option", { value: n, text: n })));
  if (names.includes(keep)) sel.value = keep;
  else if (preferLast && names.length) sel.value = names[names.length - 1];
  if (onchange) { sel.onchange = onchange; onchange(); }
}

/// Each named step's artifact in `box`, drawn by `draw`; `none` when the pipeline has no such step,
/// `notYet` for a step without an artifact.
async function renderArtifacts(box, names, none, notYet, draw) {
  if (!names.length) { box.replaceChildren(el("p", { class: "hint", text: none })); return; }
  const pipeline = board.current.name;
  const parts = [];
  for (const name of names) {
    parts.push(el("h3", { text: name }));
    try {
      const a = await api(`/api/artifacts/${enc(pipeline)}/${enc(name)}`);
      parts.push(draw(pipeline, name, a));
    } catch (e) { parts.push(el("p", { class: "hint", text: notYet })); }
  }
  if (still(pipeline)) box.replaceChildren(...parts);
}

function renderEvals(names) {
  renderArtifacts($("evals"), names, "This pipeline has no evaluate step.", "Not evaluated yet.",
    (_, __, a) => evalTable(a.results));
}

/// One row per metric, one column per model (what `report.md` shows), best of each row in bold.
function evalTable(results) {
  const models = (results && results.models) || [];
  const rows = new Map();
  const walk = (prefix, obj, i) => {
    for (const [k, v] of Object.entries(obj || {})) {
      const key = prefix ? `${prefix}.${k}` : k;
      if (typeof v === "number") { if (!rows.has(key)) rows.set(key, []); rows.get(key)[i] = v; }
      else if (v && typeof v === "object" && !Array.isArray(v)) walk(key, v, i);
    }
  };
  models.forEach((m, i) => {
    for (const task of ["perplexity", "generation", "reward", "choice", "multiple_choice"]) if (m[task]) walk(task, m[task], i);
  });
  const lowerBetter = (k) => /perplexity\.(perplexity|nll)$/.test(k);
  const higherBetter = (k) => /(bleu|rouge|accuracy|margin)/.test(k);
  const t = el("table", { class: "eval" }, el("tr", {}, el("th", { text: "metric" }), ...models.map((m) => el("th", { text: m.model }))));
  for (const [k, vals] of rows) {
    const nums = vals.filter((v) => typeof v === "number");
    const best = lowerBetter(k) ? Math.min(...nums) : higherBetter(k) ? Math.max(...nums) : null;
    t.append(el("tr", {}, el("td", { text: k }), ...models.map((_, i) =>
      el("td", { class: best !== null && vals[i] === best && nums.length > 1 ? "best" : "", text: vals[i] === undefined ? "" : fmt(vals[i]) }))));
  }
  return t;
}

function renderExports(names) {
  renderArtifacts($("exports"), names, "This pipeline has no export step.", "Not exported yet.",
    (pipeline, name, a) => filesTable(pipeline, name, a.files, 1000));
}

async function loadPreview() {
  const step = $("data-step").value;
  if (!step || !board.current) return;
  const pipeline = board.current.name;
  try {
    const p = await api(`/api/preview/${enc(pipeline)}/${enc(step)}?rows=5`);
    if (!still(pipeline) || $("data-step").value !== step) return;
    $("preview-text").textContent = p.text;
    const samples = [];
    p.samples.forEach((s, i) => {
      const sides = s.chosen ? [["chosen", s.chosen], ["rejected", s.rejected]]
        : typeof s.desirable === "boolean" ? [[s.desirable ? "desirable" : "undesirable", s]]
        : [["", s]];
      for (const [side, x] of sides) {
        const seq = x.sequence || {};
        const box = el("div", { class: "sample" }, el("h5", { text: `sample ${i + 1}${side ? " · " + side : ""} · ${seq.tokens} tokens, ${seq.trained} trained` }));
        for (const [text, trained] of seq.runs || []) box.append(el("span", { class: trained ? "" : "masked", text }));
        samples.push(box);
      }
    });
    $("preview-samples").replaceChildren(...samples);
  } catch (e) {
    $("preview-text").textContent = e.message;
    $("preview-samples").replaceChildren();
  }
}

// ---------- starting and cancelling runs ----------

async function startRun(ev) {
  ev.preventDefault();
  try {
    board.job = await api("/api/runs", request());
    $("form-error").textContent = "";
    showJob(board.job);
    pollJob();
  } catch (e) { $("form-error").textContent = e.message; }
}

async function cancelRun() {
  if (!board.job) return;
  try { await api(`/api/jobs/${board.job.id}/cancel`, {}); } catch (e) { $("form-error").textContent = e.message; }
  pollJob();
}

function showJob(job) {
  const state = $("job-state");
  state.className = `badge ${job.state}`;
  state.textContent = job.state + (job.exit_code != null ? ` (exit ${job.exit_code})` : "");
  state.dataset.state = job.state;
  const log = $("log");
  const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
  log.textContent = `$ ${job.command}\n${job.log}`;
  if (atEnd) log.scrollTop = log.scrollHeight;
  $("cancel").disabled = job.state !== "running";
  $("start").disabled = job.state === "running";
}

let pollTimer = null;
async function pollJob() {
  clearTimeout(pollTimer);
  if (!board.job) return;
  try {
    const { jobs } = await api("/api/jobs");
    const job = jobs.find((j) => j.id === board.job.id);
    if (job) { board.job = job; showJob(job); }
    if (job && job.state === "running") pollTimer = setTimeout(pollJob, 1000);
  } catch (_) { pollTimer = setTimeout(pollJob, 2000); }
}

// ---------- chat ----------

async function loadModel() {
  const step = $("chat-model").value;
  if (!step) return;
  $("chat-status").textContent = `loading ${step}…`;
  $("chat-send").disabled = true;
  try {
    const r = await api("/api/chat/load", { pipeline: board.current.name, step });
    board.chatModel = r.model;
    $("chat-status").textContent = `${r.model} loaded`;
    $("chat-status").dataset.model = r.model;
    $("chat-send").disabled = false;
  } catch (e) { $("chat-status").textContent = e.message; }
}

/// The chat request: the conversation (after the system prompt, if one is set) and the sampling
/// settings of the panel.
function chatRequest() {
  const system = $("chat-system").value.trim();
  const number = (id, fallback) => { const v = Number($(id).value); return Number.isFinite(v) && $(id).value !== "" ? v : fallback; };
  return {
    model: board.chatModel,
    messages: (system ? [{ role: "system", content: system }] : []).concat(board.chatHistory),
    stream: true,
    temperature: number("chat-temperature", 0),
    top_p: number("chat-top-p", 1),
    max_tokens: Math.round(number("chat-max-tokens", 128)),
  };
}

async function sendChat(ev) {
  ev.preventDefault();
  const text = $("chat-input").value.trim();
  if (!text || !board.chatModel) return;
  $("chat-input").value = "";
  board.chatHistory.push({ role: "user", content: text });
  $("chat-log").append(el("div", { class: "msg user", text }));
  const answer = el("div", { class: "msg assistant", "data-done": "false" });
  $("chat-log").append(answer);
  $("chat-send").disabled = true;
  try {
    const r = await fetch("/api/chat/v1/chat/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(chatRequest()),
    });
    if (!r.ok) {
      const e = await r.json().catch(() => ({}));
      throw new Error((e.error && (e.error.message || e.error)) || `${r.status}`);
    }
    const reader = r.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data: ")) continue;
          const data = line.slice(6);
          if (data === "[DONE]") continue;
          const chunk = JSON.parse(data);
          if (chunk.error) throw new Error(chunk.error.message);
          const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
          if (delta && delta.content) answer.textContent += delta.content;
        }
      }
    }
    board.chatHistory.push({ role: "assistant", content: answer.textContent });
  } catch (e) {
    answer.classList.add("error");
    answer.textContent = e.message;
    board.chatHistory.pop();
  }
  answer.dataset.done = "true";
  $("chat-send").disabled = false;
}

// ---------- start ----------

function showTab(name) {
  for (const b of document.querySelectorAll(".tabs button")) b.classList.toggle("active", b.dataset.tab === name);
  for (const s of document.querySelectorAll("section.tab")) s.hidden = s.id !== `tab-${name}`;
  if (name === "curves") for (const step of Object.keys(board.series)) drawChart(step);
  if (name === "data") loadPreview();
  if (name === "eval" || name === "export") { board.tabsKey = null; renderTabs(); }
}

window.addEventListener("DOMContentLoaded", () => {
  for (const b of document.querySelectorAll(".tabs button")) b.addEventListener("click", () => showTab(b.dataset.tab));
  $("run-form").addEventListener("submit", startRun);
  $("cancel").addEventListener("click", cancelRun);
  $("chat-load").addEventListener("click", loadModel);
  $("chat-form").addEventListener("submit", sendChat);
  $("chat-clear").addEventListener("click", () => { board.chatHistory = []; $("chat-log").replaceChildren(); });
  $("chat-input").addEventListener("keydown", (e) => { if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("chat-form").requestSubmit(); } });
  loadPipelines().catch((e) => { $("pipeline-name").textContent = e.message; });
});
