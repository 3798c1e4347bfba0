"""The labelling page of ``peal-sk project serve``: one HTML document, no dependencies.

``__NONCE__`` (the Content-Security-Policy nonce) and ``__CONFIG__`` (a JSON object
with the token and the classes) are filled in per request. Every text that comes from
the project (paths, class names) is inserted with ``textContent``, never as HTML.
"""

# SPDX-License-Identifier: BSD-3-Clause

PAGE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<link rel="icon" href="data:,">
<title>peal-sk labelling</title>
<style nonce="__NONCE__">
  :root { --ok: #1a7f37; --pending: #bf8700; --bad: #cf222e; --focus: #0969da; }
  body { font-family: system-ui, sans-serif; margin: 0; background: #f6f8fa; color: #1f2328; }
  header { position: sticky; top: 0; z-index: 1; background: #fff;
           border-bottom: 1px solid #d0d7de; padding: 8px 16px; }
  h1 { font-size: 18px; margin: 0 0 4px 0; }
  h1 small { font-weight: normal; color: #59636e; }
  .row { display: flex; gap: 12px; align-items: center; flex-wrap: wrap; }
  #progress { font-weight: 600; }
  #bar { width: 200px; height: 8px; background: #d0d7de; border-radius: 4px; overflow: hidden; }
  #bar div { height: 100%; background: var(--ok); width: 0; }
  button { font: inherit; padding: 3px 10px; border: 1px solid #d0d7de; border-radius: 6px;
           background: #f6f8fa; cursor: pointer; }
  button:disabled { opacity: .5; cursor: default; }
  button.primary { background: var(--ok); color: #fff; border-color: var(--ok); }
  #keys { color: #59636e; font-size: 13px; }
  kbd { border: 1px solid #d0d7de; border-bottom-width: 2px; border-radius: 4px;
        padding: 0 4px; font-size: 12px; background: #fff; }
  #message { min-height: 1.3em; font-size: 14px; white-space: pre-wrap; }
  #message.error { color: var(--bad); }
  #message.ok { color: var(--ok); }
  #model { color: #59636e; font-size: 13px; }
  #grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(210px, 1fr));
          gap: 12px; padding: 16px; }
  .card { background: #fff; border: 2px solid #d0d7de; border-radius: 8px; padding: 8px;
          display: flex; flex-direction: column; gap: 4px; }
  .card.focused { border-color: var(--focus); box-shadow: 0 0 0 3px rgba(9,105,218,.3); }
  .card.saved { background: #eefbf1; }
  .card.pending { background: #fff8e1; }
  .card.conflict { border-color: var(--bad); }
  .card.gone { opacity: .5; }
  .card img { width: 100%; height: 180px; object-fit: contain; background: #eaeef2;
              border-radius: 4px; }
  .path { font-size: 12px; word-break: break-all; color: #59636e; }
  .path a { color: inherit; }
  .suggest { font-size: 13px; min-height: 1.2em; }
  .state { font-size: 14px; font-weight: 600; min-height: 1.2em; }
  .classes { display: flex; flex-wrap: wrap; gap: 4px; }
  .classes button { font-size: 13px; padding: 2px 7px; }
  .classes button.chosen { background: var(--focus); color: #fff; border-color: var(--focus); }
  .classes button.suggested { border-color: var(--focus); }
  #done { margin: 0 16px 16px; padding: 12px 16px; background: #fff; border: 2px solid var(--ok);
          border-radius: 8px; }
  #done[hidden] { display: none; }
</style>
</head>
<body>
<header>
  <h1 id="title">peal-sk labelling <small id="subtitle"></small></h1>
  <div class="row">
    <span id="progress">loading...</span>
    <div id="bar"><div></div></div>
    <button id="undo" type="button" disabled>Undo</button>
    <button id="save" type="button" class="primary" disabled>Save</button>
    <span id="keys"></span>
  </div>
  <div id="model"></div>
  <div id="message" role="status" aria-live="polite"></div>
</header>
<section id="done" hidden>
  <div class="row">
    <strong id="done-text">Batch complete.</strong>
    <label>next batch size <input id="next-n" type="number" min="1" value="20"></label>
    <button id="propose" type="button" class="primary">Propose the next batch</button>
  </div>
</section>
<main id="grid"></main>
<script id="config" type="application/json">__CONFIG__</script>
<script nonce="__NONCE__">
"use strict";
const CONFIG = JSON.parse(document.getElementById("config").textContent);
const $ = (id) => document.getElementById(id);
const KEYS = "1234567890";
let state = null;      // the server's view of the batch
let items = [];        // [{id, path, status, saved, pending, suggestion, confidence, conflict}]
let focus = 0;
let undoStack = [];
let busy = false;

function api(path, body) {
  const opts = { headers: { [CONFIG.tokenHeader]: CONFIG.token }, credentials: "same-origin" };
  if (body !== undefined) {
    opts.method = "POST";
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  return fetch(path, opts).then(async (resp) => {
    let data = null;
    try { data = await resp.json(); } catch (e) { data = { error: resp.statusText }; }
    return { status: resp.status, data };
  });
}

function say(text, kind) {
  const el = $("message");
  el.textContent = text;
  el.className = kind || "";
}

function storageKey() {
  return state && state.batch ? `peal-sk:${CONFIG.projectId}:batch-${state.batch.id}` : null;
}

function remember() {
  const key = storageKey();
  if (!key) return;
  const pending = {};
  for (const it of items) if (it.pending !== undefined) pending[it.path] = it.pending;
  try {
    if (Object.keys(pending).length) localStorage.setItem(key, JSON.stringify(pending));
    else localStorage.removeItem(key);
  } catch (e) { /* storage off: the page still works */ }
}

function restore() {
  const key = storageKey();
  if (!key) return;
  let pending = {};
  try { pending = JSON.parse(localStorage.getItem(key) || "{}") || {}; } catch (e) { pending = {}; }
  let n = 0;
  for (const it of items) {
    const lab = pending[it.path];
    if (typeof lab === "string" && CONFIG.classes.includes(lab) && lab !== it.saved) {
      it.pending = lab;
      n += 1;
    }
  }
  if (n) say(`${n} unsaved label(s) restored from this browser; press Save to keep them.`);
}

function load(batch) {
  const q = batch ? `?batch=${encodeURIComponent(batch)}` : "";
  return api(`/api/batch${q}`).then(({ status, data }) => {
    if (status !== 200) { say(data.error || `error ${status}`, "error"); return; }
    setState(data, true);
    if (state.batch) {
      const url = new URL(window.location.href);
      url.searchParams.delete("token");
      url.searchParams.set("batch", state.batch.id);
      history.replaceState(null, "", url.pathname + url.search);
      loadSuggestions(state.batch.id);
    }
  });
}

function setState(data, fresh) {
  const old = new Map(items.map((it) => [it.path, it]));
  state = data;
  items = data.items.map((r) => {
    const prev = fresh ? undefined : old.get(r.path);
    return {
      id: r.id, path: r.path, status: r.status, saved: r.label,
      pending: prev && prev.pending !== r.label ? prev.pending : undefined,
      suggestion: prev ? prev.suggestion : null, confidence: prev ? prev.confidence : null,
      conflict: prev ? prev.conflict : null,
    };
  });
  if (fresh) {
    undoStack = [];
    restore();
    focus = firstOpen(0);
  }
  render();
}

function loadSuggestions(batch) {
  $("model").textContent = "model suggestions: loading...";
  api(`/api/suggestions?batch=${batch}`).then(({ status, data }) => {
    if (status !== 200 || !state.batch || state.batch.id !== batch) {
      $("model").textContent = status === 200 ? "" : `no suggestions (${data.error})`;
      return;
    }
    for (const it of items) {
      const s = data.items[String(it.id)];
      if (s) { it.suggestion = s.label; it.confidence = s.confidence; }
    }
    $("model").textContent = data.model
      ? `suggestions: ${data.model}` : (data.note || "no model yet");
    render();
  });
}

function current(it) { return it.pending !== undefined ? it.pending : it.saved; }
function usable(it) { return it.status === "present"; }
function firstOpen(from) {
  for (let k = 0; k < items.length; k++) {
    const i = (from + k) % items.length;
    if (usable(items[i]) && current(items[i]) == null) return i;
  }
  return Math.min(from, Math.max(items.length - 1, 0));
}

function setLabel(i, label) {
  const it = items[i];
  if (!it || !usable(it) || busy) return;
  const next = label === it.saved ? undefined : label;
  if (next === it.pending && current(it) === label) { focus = firstOpen(i + 1); render(); return; }
  undoStack.push({ i, before: it.pending, conflict: it.conflict });
  it.pending = next;
  it.conflict = null;
  focus = firstOpen(i + 1);
  remember();
  render();
}

function undo() {
  const last = undoStack.pop();
  if (!last || busy) return;
  items[last.i].pending = last.before;
  items[last.i].conflict = last.conflict;
  focus = last.i;
  remember();
  render();
  say(`undone: ${items[last.i].path}`);
}

function save() {
  const labels = items.filter((it) => it.pending !== undefined)
    .map((it) => ({ path: it.path, label: it.pending, previous: it.saved }));
  if (!labels.length || busy) return;
  busy = true;
  render();
  say(`saving ${labels.length} label(s)...`);
  api("/api/labels", { batch: state.batch.id, labels }).then(({ status, data }) => {
    busy = false;
    if (status === 200) {
      const r = data.report;
      undoStack = [];
      setState(data.state, false);
      let text = `saved: ${r.new} new, ${r.relabelled} changed, ${r.unchanged} unchanged`;
      if (r.conflicts.length && !r.conflicts_applied) {
        text += `; ${r.conflicts.length} not applied (labelled elsewhere): ` +
          r.conflicts.map((c) => `${c.path} is ${c.saved}`).join(", ");
        for (const c of r.conflicts) {
          const it = items.find((x) => x.path === c.path);
          if (it) { it.conflict = c.saved; }
        }
      }
      say(text, r.conflicts.length && !r.conflicts_applied ? "error" : "ok");
    } else if (status === 409 && data.conflicts) {
      for (const c of data.conflicts) {
        const it = items.find((x) => x.path === c.path);
        if (!it) continue;
        it.saved = c.saved;
        it.conflict = c.saved;
        if (it.pending === c.saved) it.pending = undefined;
      }
      const lines = data.conflicts.map((c) => `${c.path}: saved ${c.saved}, yours ${c.yours}`);
      say(`${data.error}\n${lines.join("\n")}`, "error");
    } else {
      say(data.error || `error ${status}`, "error");
    }
    remember();
    render();
  }).catch((e) => { busy = false; say(`save failed: ${e}`, "error"); render(); });
}

function propose() {
  const n = parseInt($("next-n").value, 10);
  if (!(n >= 1) || busy) { say("the batch size must be a number >= 1", "error"); return; }
  busy = true;
  render();
  say(`proposing ${n} images (computing embeddings may take a while)...`);
  api("/api/propose", { n }).then(({ status, data }) => {
    busy = false;
    if (status !== 200) { say(data.error || `error ${status}`, "error"); render(); return; }
    say(`batch ${data.batch} proposed`, "ok");
    load(data.batch);
  }).catch((e) => { busy = false; say(`propose failed: ${e}`, "error"); render(); });
}

function card(it, i) {
  const el = document.createElement("div");
  el.className = "card";
  el.dataset.index = i;
  el.dataset.path = it.path;
  const img = document.createElement("img");
  img.alt = it.path;
  img.loading = "lazy";
  img.src = `/thumb/${it.id}?token=${encodeURIComponent(CONFIG.token)}`;
  const path = document.createElement("div");
  path.className = "path";
  const link = document.createElement("a");
  link.href = `/image/${it.id}?token=${encodeURIComponent(CONFIG.token)}`;
  link.target = "_blank";
  link.rel = "noopener noreferrer";
  link.textContent = `${i + 1}. ${it.path}`;
  path.appendChild(link);
  const suggest = document.createElement("div");
  suggest.className = "suggest";
  const st = document.createElement("div");
  st.className = "state";
  const buttons = document.createElement("div");
  buttons.className = "classes";
  CONFIG.classes.forEach((c, k) => {
    const b = document.createElement("button");
    b.type = "button";
    b.dataset.class = c;
    b.textContent = k < KEYS.length ? `${KEYS[k]} ${c}` : c;
    b.addEventListener("click", () => { focus = i; setLabel(i, c); });
    buttons.appendChild(b);
  });
  el.append(img, path, suggest, st, buttons);
  el.addEventListener("click", (ev) => {
    if (ev.target.tagName === "BUTTON" || ev.target.tagName === "A") return;
    focus = i;
    render();
  });
  return el;
}

function render() {
  const grid = $("grid");
  const same = grid.children.length === items.length &&
    [...grid.children].every((el, i) => el.dataset.path === items[i].path);
  if (!same) {
    grid.replaceChildren(...items.map(card));
  }
  const b = state && state.batch;
  $("subtitle").textContent = b
    ? `batch ${b.id} (${b.strategy}, ${b.phase || ""})${b.closed ? ", closed" : ""}` +
      (state.open_batches.length ? ` - open batches: ${state.open_batches.join(", ")}` : "")
    : "no batch proposed yet";
  const usableItems = items.filter(usable);
  const labelled = usableItems.filter((it) => current(it) != null).length;
  const unsaved = items.filter((it) => it.pending !== undefined).length;
  $("progress").textContent = `${labelled} / ${usableItems.length} labelled` +
    (unsaved ? ` (${unsaved} unsaved)` : "");
  const share = usableItems.length ? (100 * labelled) / usableItems.length : 0;
  $("bar").firstElementChild.style.width = `${share}%`;
  $("undo").disabled = busy || !undoStack.length;
  $("save").disabled = busy || !unsaved;
  $("save").textContent = unsaved ? `Save ${unsaved}` : "Save";
  const complete = !unsaved && usableItems.every((it) => it.saved != null);
  $("done").hidden = !(complete || !b);
  $("done-text").textContent = b ? `Batch ${b.id} is labelled and saved.` : "No batch yet.";
  $("propose").disabled = busy || !state || state.pool < 1;
  if (b && b.n && !$("next-n").dataset.touched) {
    $("next-n").value = Math.min(b.n, Math.max(state.pool, 1));
  }
  [...grid.children].forEach((el, i) => {
    const it = items[i];
    const cur = current(it);
    el.classList.toggle("focused", i === focus);
    el.classList.toggle("saved", it.pending === undefined && it.saved != null);
    el.classList.toggle("pending", it.pending !== undefined);
    el.classList.toggle("conflict", it.conflict != null);
    el.classList.toggle("gone", !usable(it));
    el.querySelector(".suggest").textContent = it.suggestion
      ? `model: ${it.suggestion} ${Math.round(100 * it.confidence)}%` : "";
    let text = !usable(it) ? `image ${it.status}` : cur == null ? "unlabelled" :
      it.pending !== undefined ? `${cur} (unsaved)` : `${cur}`;
    if (it.conflict != null) text += ` - saved elsewhere as ${it.conflict}`;
    el.querySelector(".state").textContent = text;
    el.querySelectorAll(".classes button").forEach((btn) => {
      btn.classList.toggle("chosen", btn.dataset.class === cur);
      btn.classList.toggle("suggested", btn.dataset.class === it.suggestion);
      btn.disabled = busy || !usable(it);
    });
  });
  const f = grid.children[focus];
  if (f && document.activeElement !== $("next-n")) f.scrollIntoView({ block: "nearest" });
}

function onKey(ev) {
  if (ev.target instanceof HTMLInputElement) return;
  if (ev.altKey || ev.metaKey) return;
  const key = ev.key;
  if (ev.ctrlKey) {
    if (key === "z") { undo(); ev.preventDefault(); }
    if (key === "s") { save(); ev.preventDefault(); }
    return;
  }
  const k = KEYS.indexOf(key);
  const it = items[focus];
  if (k >= 0 && k < CONFIG.classes.length) setLabel(focus, CONFIG.classes[k]);
  else if (key === "Enter" && it && it.suggestion) setLabel(focus, it.suggestion);
  else if (["ArrowRight", "ArrowDown", "j"].includes(key)) move(1);
  else if (["ArrowLeft", "ArrowUp", "k"].includes(key)) move(-1);
  else if (key === "u" || key === "Backspace") undo();
  else if (key === "s") save();
  else return;
  ev.preventDefault();
}

function move(step) {
  focus = Math.max(0, Math.min(focus + step, items.length - 1));
  render();
}

$("keys").replaceChildren();
{
  const parts = CONFIG.classes.slice(0, KEYS.length).map((c, k) => [KEYS[k], c]);
  parts.push(["Enter", "accept suggestion"], ["\u2190 \u2192", "move"]);
  parts.push(["u", "undo"], ["s", "save"]);
  for (const [key, what] of parts) {
    const kbd = document.createElement("kbd");
    kbd.textContent = key;
    $("keys").append(kbd, ` ${what}  `);
  }
}
$("undo").addEventListener("click", undo);
$("save").addEventListener("click", save);
$("propose").addEventListener("click", propose);
$("next-n").addEventListener("input", () => { $("next-n").dataset.touched = "1"; });
document.addEventListener("keydown", onKey);
window.addEventListener("beforeunload", (ev) => {
  if (items.some((it) => it.pending !== undefined)) { ev.preventDefault(); ev.returnValue = ""; }
});
load(new URLSearchParams(window.location.search).get("batch"));
</script>
</body>
</html>
"""
