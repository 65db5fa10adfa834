// ocsuite's pages: forms and buttons talk to the JSON API with the session cookie;
// streams (chat, board) are read from fetch; live task status comes over SSE.
// Nothing here writes HTML from data: every value goes in through textContent (model
// text too: markdown() below builds its elements one by one).
"use strict";

(function theme() {
  const saved = localStorage.getItem("ocs-theme");
  if (saved === "light" || saved === "dark") document.documentElement.dataset.theme = saved;
})();

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

async function api(method, path, body) {
  const init = { method, credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  let data = null;
  const text = await res.text();
  if (text) {
    try { data = JSON.parse(text); } catch { data = { error: { message: text } }; }
  }
  return { ok: res.ok, status: res.status, data };
}

function busy(button, on) {
  if (!button) return;
  button.setAttribute("aria-busy", on ? "true" : "false");
  button.disabled = on;
}

function formValue(form) {
  const out = {};
  for (const input of $$("input, select, textarea", form)) {
    if (!input.name || input.disabled) continue;
    const name = input.name;
    const path = name.split(".");
    let o = out;
    while (path.length > 1) { const k = path.shift(); o = o[k] = o[k] || {}; }
    const key = path[0];
    if (input.type === "radio") {
      if (input.checked) o[key] = input.dataset.type === "number" ? Number(input.value) : input.value;
      continue;
    }
    if (input.type === "checkbox") {
      if (input.dataset.array !== undefined) {
        o[key] = o[key] || [];
        if (input.checked) o[key].push(input.value);
      } else o[key] = input.checked;
      continue;
    }
    let v = input.value;
    if (v === "" && input.dataset.optional !== undefined) continue;
    if (v === "" && input.form && input.form.dataset.auto !== undefined) v = null;
    if (input.dataset.type === "number") v = Number(v);
    if (input.dataset.type === "list") v = v.split(",").map((s) => s.trim()).filter(Boolean);
    o[key] = v;
  }
  return out;
}

function showError(form, data) {
  const err = (data && data.error) || { message: "Something went wrong; try again." };
  const field = err.field && $(`[data-error-for="${CSS.escape(err.field)}"]`, form);
  const target = field || $("[data-form-error]", form);
  if (target) target.textContent = err.message;
  const input = err.field && $(`[name="${CSS.escape(err.field)}"]`, form);
  if (input) { input.setAttribute("aria-invalid", "true"); input.focus(); }
}

// <form data-api="POST /api/v1/..." data-redirect="/x/{id}" data-reload>
document.addEventListener("submit", async (ev) => {
  const form = ev.target.closest("form[data-api]");
  if (!form) return;
  ev.preventDefault();
  for (const e of $$("[data-error-for], [data-form-error]", form)) e.textContent = "";
  for (const i of $$("[aria-invalid]", form)) i.removeAttribute("aria-invalid");
  const [method, path] = form.dataset.api.split(" ");
  const button = $("button[type=submit], button:not([type])", form);
  busy(button, true);
  const body = formValue(form);
  const res = await api(method, path, body);
  busy(button, false);
  if (!res.ok) return showError(form, res.data);
  form.dispatchEvent(new CustomEvent("api:done", { detail: res.data, bubbles: true }));
  // Something the API shows once (an invite link, an API key): display it in place.
  if (form.dataset.result) {
    let text = form.dataset.result.replace(/\{(\w+)\}/g, (_, k) => (res.data && res.data[k]) || "");
    if (text.startsWith("/")) text = location.origin + text;
    const target = $(form.dataset.resultTarget);
    if (target) target.textContent = text;
    return;
  }
  if (form.dataset.redirect) {
    location.href = form.dataset.redirect.replace("{id}", (res.data && (res.data.id || (res.data.task && res.data.task.id))) || "");
  } else if (form.dataset.reload !== undefined) location.reload();
});

// <button data-call="POST /api/v1/..." data-body='{"k":"v"}' data-confirm="Sure?">
document.addEventListener("click", async (ev) => {
  const b = ev.target.closest("button[data-call]");
  if (!b) return;
  if (b.dataset.confirm && !confirm(b.dataset.confirm)) return;
  const [method, path] = b.dataset.call.split(" ");
  busy(b, true);
  let body;
  if (b.dataset.body) body = JSON.parse(b.dataset.body);
  else if (method !== "GET" && method !== "DELETE") body = {};
  if (b.dataset.bodyFrom) body = formValue($(b.dataset.bodyFrom));
  const res = await api(method, path, body);
  busy(b, false);
  const out = b.dataset.out ? $(b.dataset.out) : b.parentElement.querySelector("[data-call-error]");
  if (!res.ok) {
    if (out) out.textContent = (res.data && res.data.error && res.data.error.message) || "failed";
    return;
  }
  if (res.data && res.data.authorization_url) { location.href = res.data.authorization_url; return; }
  if (b.dataset.go) location.href = b.dataset.go;
  else location.reload();
});

document.addEventListener("change", (ev) => {
  const auto = ev.target.closest("form[data-auto]");
  if (auto) { auto.requestSubmit(); return; }
  if (ev.target.id === "theme") {
    const v = ev.target.value;
    if (v === "system") { localStorage.removeItem("ocs-theme"); delete document.documentElement.dataset.theme; }
    else { localStorage.setItem("ocs-theme", v); document.documentElement.dataset.theme = v; }
  }
});

document.addEventListener("DOMContentLoaded", () => {
  const t = $("#theme");
  if (t) t.value = localStorage.getItem("ocs-theme") || "system";
  const next = new URLSearchParams(location.search).get("next");
  for (const f of $$("form[data-next]")) if (next && next.startsWith("/") && !next.startsWith("//")) f.dataset.redirect = next;
  for (const w of $$("[data-width]")) w.style.width = `${Number(w.dataset.width) || 0}%`;
  for (const m of $$("[data-markdown]")) {
    let items = null;
    try { items = m.dataset.citations ? JSON.parse(m.dataset.citations) : null; } catch {}
    const anchor = (m.dataset.sourcesAfter && $(m.dataset.sourcesAfter)) || m;
    // One list per anchor, shared by every text that cites it (a meeting's turns).
    if (items && items.length && !anchor.citesRef) anchor.citesRef = sources(anchor, items);
    markdown(m, m.textContent, items && items.length ? anchor.citesRef : null);
  }
  for (const t of $$("[data-tool-calls]")) {
    let calls = [];
    try { calls = JSON.parse(t.dataset.toolCalls); } catch {}
    for (const c of calls) t.append(toolCard(c));
  }
  for (const init of $$("[data-init]")) (pages[init.dataset.init] || (() => {}))(init);
});

// Follows realtime topics: `[[topic, since?], …]`. WebSocket first (the API's
// `/api/v1/ws`, with the session cookie); Server-Sent Events when it cannot connect.
function live(topics, onEvent) {
  let es = null, ws = null, opened = false;
  const sse = () => {
    const names = topics.map((t) => t[0]).join(",");
    const from = topics.some((t) => t[1] !== undefined) ? "&last_event_id=0" : "";
    es = new EventSource(`/api/v1/events?topics=${encodeURIComponent(names)}${from}`);
    es.onmessage = (m) => { try { onEvent(JSON.parse(m.data)); } catch {} };
  };
  try {
    ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/api/v1/ws`);
    ws.onopen = () => {
      opened = true;
      for (const [topic, since] of topics) ws.send(JSON.stringify(since === undefined ? { type: "subscribe", topic } : { type: "subscribe", topic, since }));
    };
    ws.onmessage = (m) => { let d; try { d = JSON.parse(m.data); } catch { return; } if (d.type === "event") onEvent(d); };
    ws.onerror = () => { if (!opened) sse(); };
  } catch { sse(); }
  return { close() { if (ws) ws.close(); if (es) es.close(); } };
}

// Reads a text/event-stream response body, calling on(event, data) per event.
async function readSSE(res, on) {
  const reader = res.body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const chunk = buf.slice(0, i);
      buf = buf.slice(i + 2);
      let event = "message", data = "";
      for (const line of chunk.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data += line.slice(5).trim();
      }
      if (data) { try { on(event, JSON.parse(data)); } catch { on(event, data); } }
    }
  }
}

// A small, safe Markdown subset for model text: paragraphs (a single newline is a line
// break), "-", "*" and "1." lists, **bold**, `code`, ``` blocks, and "#" headings
// shown as bold lines. It builds DOM nodes and puts every piece of text in through
// textContent, so nothing in the text is ever parsed as HTML.
function markdown(target, text, cites) {
  target.replaceChildren();
  target.cites = cites || target.cites || null;
  target.classList.add("md");
  let para = null, list = null, item = null, code = null;
  for (const line of String(text).replace(/\r\n?/g, "\n").split("\n")) {
    if (code) {
      if (/^\s*```/.test(line)) code = null;
      else code.textContent += (code.textContent ? "\n" : "") + line;
      continue;
    }
    if (/^\s*```/.test(line)) {
      para = list = item = null;
      code = el("code");
      target.append(el("pre", {}, code));
      continue;
    }
    const li = line.match(/^\s*(?:([-*])|(\d{1,9})[.)])\s+(.*)$/);
    if (li) {
      const tag = li[1] ? "ul" : "ol";
      if (!list || list.tagName.toLowerCase() !== tag) {
        list = el(tag);
        if (tag === "ol" && li[2] !== "1") list.setAttribute("start", String(Number(li[2])));
        target.append(list);
      }
      para = null;
      item = inline(el("li"), li[3], target.cites);
      list.append(item);
      continue;
    }
    if (!line.trim()) { para = list = item = null; continue; }
    // An indented line right after an item continues it.
    if (item && /^\s+\S/.test(line)) { inline(item, ` ${line.trim()}`, target.cites); continue; }
    list = item = null;
    const heading = line.match(/^\s*#{1,6}\s+(.*)$/);
    if (heading) { target.append(el("p", {}, el("strong", { text: heading[1] }))); para = null; continue; }
    if (para) para.append(el("br"));
    else { para = el("p"); target.append(para); }
    inline(para, line, target.cites);
  }
}
// `cites`: {key, items} of the answer's sources; `[n]` becomes a link to source n.
function inline(node, text, cites) {
  for (const p of text.split(/(\*\*[^*\n]+\*\*|`[^`\n]+`|\[\d{1,2}\])/)) {
    if (!p) continue;
    const ref = p.match(/^\[(\d{1,2})\]$/);
    const cite = ref && cites && cites.items.find((c) => c.n === Number(ref[1]));
    if (p.length > 4 && p.startsWith("**") && p.endsWith("**")) node.append(el("strong", { text: p.slice(2, -2) }));
    else if (p.length > 2 && p.startsWith("`") && p.endsWith("`")) node.append(el("code", { text: p.slice(1, -1) }));
    else if (cite) node.append(el("a", { class: "cite", href: `#${cites.key}-${cite.n}`, title: [cite.title, cite.location].filter(Boolean).join(" — "), text: p }));
    else node.append(document.createTextNode(p));
  }
  return node;
}

let citeKeys = 0;
// The sources under an answer: each numbered passage with its title, place and
// snippet; a `[n]` link opens and highlights it. Returns {key, items} for markdown().
function sources(after, items, note) {
  const key = `src${++citeKeys}`;
  const old = after.nextElementSibling;
  if (old && old.matches("[data-sources-for]")) old.remove();
  if (!items || items.length === 0) {
    if (note) after.after(el("p", { class: "small muted", "data-sources-for": key, text: note.charAt(0).toUpperCase() + note.slice(1) + "." }));
    return null;
  }
  const list = el("ol", { class: "sources" });
  for (const c of items) {
    const head = el("strong", { text: c.title || "Untitled" });
    const li = el("li", { id: `${key}-${c.n}`, value: String(c.n) }, head);
    if (c.location) li.append(" ", el("span", { class: "muted", text: c.location }));
    if (c.hq) li.append(" ", el("span", { class: "badge", text: "ocsuite HQ" }));
    if (c.snippet) li.append(el("p", { class: "small", text: c.snippet }));
    list.append(li);
  }
  const box = el("details", { class: "sources-box small", "data-sources-for": key }, el("summary", { text: `Sources (${items.length})` }), list);
  after.after(box);
  return { key, items };
}
document.addEventListener("click", (ev) => {
  const a = ev.target.closest("a.cite");
  if (!a) return;
  const target = document.getElementById(a.getAttribute("href").slice(1));
  if (!target) return;
  ev.preventDefault();
  const box = target.closest("details");
  if (box) box.open = true;
  for (const h of $$(".sources li.highlight")) h.classList.remove("highlight");
  target.classList.add("highlight");
  target.scrollIntoView({ block: "nearest", behavior: "smooth" });
});

// One tool call of an answer: what was looked up or proposed, its task, the output
// (collapsed), and, for a proposal still waiting, Approve or a link to review it.
const TOOL_VERBS = { succeeded: "Looked up", failed: "Could not use", refused: "Not allowed", awaiting_approval: "Proposed", queued: "Queued" };
const TOOL_BADGES = { succeeded: "done", failed: "failed", refused: "refused", awaiting_approval: "awaits approval", queued: "queued" };
function toolCard(c, card) {
  const d = card || el("details", { class: "tool" });
  d.replaceChildren();
  const status = c.status || "running";
  d.className = `tool ${status}`;
  const name = c.capability || c.name || "a tool";
  // A proposal decided since: its task's status now, not the stale "awaits approval".
  const decided = status === "awaiting_approval" && c.now && c.now !== "proposed";
  const badge = decided
    ? el("span", { class: `badge ${c.now}`, text: c.now === "rejected" ? "rejected" : `approved · ${c.now}` })
    : el("span", { class: `badge ${status}`, text: TOOL_BADGES[status] || "working…" });
  const summary = el("summary", {}, badge, " ", `${TOOL_VERBS[status] || "Using"} `, el("code", { text: name }));
  if (c.task_id) summary.append(" · ", el("a", { href: `/tasks/${c.task_id}`, text: "task" }));
  d.append(summary);
  if (c.input && Object.keys(c.input).length) d.append(el("p", { class: "small muted", text: `Input: ${JSON.stringify(c.input)}` }));
  if (c.error) d.append(el("p", { class: "field-error", text: c.error }));
  if (c.output !== undefined && c.output !== null) d.append(el("pre", { class: "small", text: JSON.stringify(c.output, null, 2).slice(0, 4000) }));
  if (status === "awaiting_approval" && c.task_id && (!c.now || c.now === "proposed")) {
    d.open = true;
    d.append(el("div", { class: "row" },
      el("button", { type: "button", "data-call": `POST /api/v1/tasks/${c.task_id}/approve` }, "Approve"),
      el("a", { class: "button secondary", href: `/tasks/${c.task_id}`, text: "Review or reject" }),
      el("span", { class: "field-error", "data-call-error": "" })));
  }
  return d;
}

// The chosen speaker as the list names it: "CFO" for "Chief Financial Officer (CFO)",
// an agent by its name.
function speakerName(form) {
  const option = $("select[name=persona]", form).selectedOptions[0];
  const label = option ? option.textContent.trim() : "";
  const short = label.match(/\(([^()]+)\)$/);
  return short ? short[1] : label;
}

// A conversation started on this page joins the list at once, on top and current,
// titled as the server titles it: the first line of the first message, at most 80
// characters.
function listConversation(id, message, persona) {
  const list = $("[data-conversations]");
  if (!list) return;
  for (const a of $$("a[aria-current]", list)) a.removeAttribute("aria-current");
  const line = message.split("\n").map((l) => l.trim()).find(Boolean) || "New conversation";
  const title = Array.from(line).slice(0, 80).join("");
  list.prepend(el("li", {}, el("a", { href: `/chat?c=${encodeURIComponent(id)}`, "aria-current": "page", text: title }), " ", el("span", { class: "small muted", text: persona })));
  const none = $("[data-no-conversations]");
  if (none) none.remove();
}

const pages = {
  // Live task status and progress (task detail page).
  task(root) {
    const id = root.dataset.task;
    const bar = $(".progress > div", root), status = $("[data-status]", root), msg = $("[data-message]", root);
    if (["succeeded", "failed", "dead", "cancelled", "rejected"].includes(status.textContent.trim())) return;
    // From the first event, so nothing that happened before the page loaded is missed.
    const es = live([[`task:${id}`, 0]], (ev) => {
      const d = ev.data || {};
      if (d.percent !== undefined) bar.style.width = `${d.percent}%`;
      if (d.message) msg.textContent = d.message;
      const st = d.status || (ev.kind === "progress" ? null : ev.kind);
      if (st) { status.textContent = st; status.className = `badge ${st}`; }
      if (["succeeded", "failed", "dead", "cancelled", "rejected"].includes(st)) {
        // The result, the timeline and the buttons are the server's to render: a
        // half-updated page (a finished badge beside a running bar and a Cancel
        // button) would only confuse, so reload at once.
        es.close();
        location.reload();
      }
    });
  },

  // The dashboard's recent tasks: their badges follow the `tasks` topic.
  livetasks(root) {
    live([["tasks"]], (ev) => {
      const d = ev.data || {};
      const st = d.status || (ev.kind === "progress" ? null : ev.kind);
      const id = d.task_id || (ev.topic || "").replace(/^task:/, "");
      const badge = id && root.querySelector(`[data-task-id="${CSS.escape(id)}"]`);
      if (badge && st) { badge.textContent = st; badge.className = `badge ${st}`; }
    });
  },

  // The board room: members' turns side by side, the synthesis, the items.
  board(root) {
    const form = $("form", root);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const body = formValue(form);
      if (!body.personas || body.personas.length === 0) delete body.personas;
      body.rounds = Number(body.rounds || 1);
      const cols = $("[data-columns]", root), synth = $("[data-synthesis]", root), items = $("[data-items]", root), err = $("[data-form-error]", form);
      cols.replaceChildren(); synth.replaceChildren(); items.replaceChildren(); err.textContent = "";
      const button = $("button[type=submit]", form);
      busy(button, true);
      const res = await fetch("/api/v1/c-suite/board-meeting", { method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
      if (!res.ok) { busy(button, false); const d = await res.json().catch(() => null); return showError(form, d); }
      // Per member: their card, the current round's element and its text so far (each
      // delta re-renders that round's Markdown).
      const turn = {}, chair = { out: synth, text: "" };
      let cites = null;
      const sourcesCard = $("[data-sources]", root);
      if (sourcesCard) sourcesCard.replaceChildren();
      await readSSE(res, (event, d) => {
        if (event === "citations" && sourcesCard) {
          const anchor = el("h2", { text: "What the board read" });
          sourcesCard.append(anchor);
          cites = sources(anchor, d.items, d.note);
          if (cites) anchor.nextElementSibling.open = true;
          chair.out.cites = cites;
          for (const t of Object.values(turn)) t.out.cites = cites;
        } else if (event === "meeting_start") {
          for (const p of d.personas) {
            const out = el("div", { class: "stream turn", "data-persona": p.slug });
            out.cites = cites;
            const card = el("section", { class: "card", "aria-live": "polite" }, el("h3", { text: `${p.title} (${p.name})` }), out);
            cols.append(card);
            turn[p.slug] = { card, out, text: "" };
          }
        } else if (event === "delta") {
          const t = d.persona === "chair" ? chair : turn[d.persona];
          if (t) { t.text += d.text || d.delta || ""; markdown(t.out, t.text); }
        } else if (event === "turn_start" && d.round > 1 && turn[d.persona]) {
          const t = turn[d.persona];
          t.out = el("div", { class: "stream turn", "data-persona": d.persona });
          t.out.cites = cites;
          t.text = "";
          t.card.append(el("h4", { text: `Round ${d.round}` }), t.out);
        } else if (event === "error" && d.persona && turn[d.persona]) {
          turn[d.persona].card.append(el("p", { class: "field-error", text: d.message || "this member could not answer" }));
        } else if (event === "action_items") {
          for (const it of d.items || []) {
            const li = el("li", { class: "card" }, el("strong", { text: it.title }), el("p", { class: "muted", text: it.description || "" }));
            if (it.task_id) li.append(el("a", { href: `/tasks/${it.task_id}`, class: "button secondary", text: "Review and approve" }));
            else li.append(el("span", { class: "badge", text: "follow-up" }));
            items.append(li);
          }
          if (d.error) items.append(el("p", { class: "field-error", text: d.error }));
        } else if (event === "meeting_end") {
          $("[data-done]", root).classList.remove("hidden");
          $("[data-done] a", root).href = `/board/${d.meeting_id}`;
        }
      });
      busy(button, false);
    });
  },

  // Chat with one officer: the answer streams in and is rendered as safe markdown.
  chat(root) {
    const form = $("form", root), log = $("[data-log]", root), stop = $("[data-stop]", root);
    let controller = null, conversation = root.dataset.conversation || null;
    stop.addEventListener("click", () => controller && controller.abort());
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const text = $("textarea", form).value.trim();
      if (!text) return;
      const persona = $("select[name=persona]", form).value;
      log.append(el("div", { class: "msg user", text }));
      const tools = el("div", { class: "tools" });
      const answer = el("div", { class: "msg assistant", "aria-live": "polite" });
      log.append(tools, answer);
      const cards = {};
      $("textarea", form).value = "";
      controller = new AbortController();
      stop.disabled = false;
      const button = $("button[type=submit]", form);
      busy(button, true);
      let acc = "";
      try {
        const body = { message: text };
        if (conversation) body.conversation_id = conversation;
        const res = await fetch(`/api/v1/c-suite/${encodeURIComponent(persona)}/chat`, { method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body), signal: controller.signal });
        if (!res.ok) { const d = await res.json().catch(() => null); answer.textContent = (d && d.error && d.error.message) || "failed"; return; }
        await readSSE(res, (event, d) => {
          if (event === "message_start" && d.conversation_id) {
            if (!conversation) listConversation(d.conversation_id, text, speakerName(form));
            conversation = d.conversation_id;
            $("select[name=persona]", form).disabled = true;
            history.replaceState(null, "", `/chat?c=${encodeURIComponent(conversation)}`);
          }
          if (event === "citations") answer.cites = sources(answer, d.items, d.note);
          if (event === "delta") { acc += d.text || d.delta || ""; markdown(answer, acc); }
          if (event === "tool_call") { cards[d.id] = toolCard(d); tools.append(cards[d.id]); }
          if (event === "tool_result") { const c = cards[d.id]; if (c) toolCard(d, c); else tools.append(toolCard(d)); }
          if (event === "error") answer.append(el("p", { class: "field-error", text: d.message || "the answer stopped" }));
          if (event === "message_end" && d.message_id) {
            const rate = (r, label) => el("button", { type: "button", class: "secondary", "data-call": `POST /api/v1/messages/${d.message_id}/rating`, "data-body": JSON.stringify({ rating: r }) }, label);
            const tail = answer.nextElementSibling && answer.nextElementSibling.matches("[data-sources-for]") ? answer.nextElementSibling : answer;
            tail.after(el("div", { class: "row small", "data-rating": "" }, rate("up", "Helpful"), rate("down", "Not helpful")));
          }
        });
      } catch (e) {
        answer.append(el("p", { class: "muted", text: "stopped" }));
      } finally {
        busy(button, false);
        stop.disabled = true;
      }
    });
  },

  // The agent builder's "Test" boxes: one turn, its tool calls shown as they happen.
  agents(root) {
    for (const form of $$("form[data-test]", root)) form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const input = $("input[name=message]", form), out = $("[data-test-out]", form);
      const message = input.value.trim() || input.placeholder;
      out.replaceChildren();
      const button = $("button[type=submit]", form);
      busy(button, true);
      const answer = el("div", { class: "msg assistant" }), cards = {};
      let acc = "";
      try {
        const res = await fetch(`/api/v1/c-suite/${encodeURIComponent(form.dataset.test)}/chat`, { method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ message }) });
        if (!res.ok) { const d = await res.json().catch(() => null); out.append(el("p", { class: "field-error", text: (d && d.error && d.error.message) || "failed" })); return; }
        out.append(answer);
        await readSSE(res, (event, d) => {
          if (event === "tool_call") { cards[d.id] = toolCard(d); answer.before(cards[d.id]); }
          if (event === "tool_result") { const c = cards[d.id]; if (c) toolCard(d, c); else answer.before(toolCard(d)); }
          if (event === "delta") { acc += d.text || ""; markdown(answer, acc); }
          if (event === "error") answer.append(el("p", { class: "field-error", text: d.message || "the answer stopped" }));
          if (event === "message_start" && d.conversation_id) out.append(el("p", { class: "small muted" }, "Kept in ", el("a", { href: `/chat?c=${encodeURIComponent(d.conversation_id)}`, text: "Chat" }), "."));
        });
      } finally { busy(button, false); }
    });
  },

  // Knowledge: upload with progress, search, and the sources' live status.
  knowledge(root) {
    const upload = $("form[data-upload]", root);
    if (upload) upload.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const err = $("[data-form-error]", upload), bar = $("[data-progress]", upload), file = $("input[type=file]", upload);
      err.textContent = "";
      if (!file.files[0]) { err.textContent = "Choose a file to upload."; return; }
      const data = new FormData();
      data.append("file", file.files[0]);
      const title = $("input[name=title]", upload).value.trim();
      if (title) data.append("title", title);
      const xhr = new XMLHttpRequest();
      const button = $("button[type=submit]", upload);
      busy(button, true);
      bar.value = 0;
      bar.classList.remove("hidden");
      xhr.upload.onprogress = (e) => { if (e.lengthComputable) bar.value = Math.round((e.loaded / e.total) * 100); };
      xhr.onload = () => {
        busy(button, false);
        if (xhr.status >= 200 && xhr.status < 300) { location.reload(); return; }
        bar.classList.add("hidden");
        let msg = "The upload failed; try again.";
        try { msg = JSON.parse(xhr.responseText).error.message || msg; } catch {}
        err.textContent = msg;
      };
      xhr.onerror = () => { busy(button, false); bar.classList.add("hidden"); err.textContent = "The upload was interrupted; try again."; };
      xhr.open("POST", "/api/v1/knowledge/sources");
      xhr.send(data);
    });
    const search = $("form[data-search]", root), results = $("[data-results]", root), serr = $("[data-search-error]", root);
    search.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      serr.textContent = "";
      const query = $("input[name=query]", search).value.trim();
      if (!query) { serr.textContent = "Say what to look for."; return; }
      const button = $("button[type=submit]", search);
      busy(button, true);
      const res = await api("POST", "/api/v1/knowledge/search", { query, k: 8 });
      busy(button, false);
      results.replaceChildren();
      if (!res.ok) { serr.textContent = (res.data && res.data.error && res.data.error.message) || "Search failed."; return; }
      // Keyword-only because the model failed just now (the page says when none is set).
      if (res.data.note && root.dataset.mode === "hybrid") results.append(el("p", { class: "small muted", text: res.data.note }));
      if (res.data.items.length === 0) { results.append(el("p", { class: "muted", text: "No passage matches." })); return; }
      const list = el("ol", { class: "sources" });
      for (const h of res.data.items) {
        const li = el("li", {}, el("strong", { text: h.title }));
        const place = [h.document, h.location].filter(Boolean).join(" · ");
        if (place) li.append(" ", el("span", { class: "muted", text: place }));
        if (h.hq) li.append(" ", el("span", { class: "badge", text: "ocsuite HQ" }));
        li.append(el("p", { text: h.snippet }));
        const why = [];
        if (h.keyword_score != null) why.push("its words");
        if (h.semantic_score != null) why.push(`its meaning (${Math.round(h.semantic_score * 100)}% similar)`);
        li.append(el("p", { class: "small muted", text: `Matched by ${why.join(" and ")}` }));
        list.append(li);
      }
      results.append(list);
    });
    // Status changes arrive over the realtime bus; a source the table does not show
    // yet (added in another tab) reloads the page once it settles.
    live([["knowledge"]], (ev) => {
      const d = ev.data || {};
      const row = d.source_id && root.querySelector(`tr[data-source="${CSS.escape(d.source_id)}"]`);
      if (!row) { if (d.status === "ready" || d.status === "failed") location.reload(); return; }
      if (d.status === "deleted") { row.remove(); return; }
      const badge = $("[data-source-status]", row);
      badge.textContent = d.status;
      badge.className = `badge ${d.status}`;
      if (d.chunk_count !== undefined) $("[data-source-chunks]", row).textContent = String(d.chunk_count);
      const e = $("[data-source-error]", row);
      e.textContent = d.error || "";
      e.hidden = !d.error;
    });
  },

  // CSV import: preview (errors by line), then confirm the good rows.
  import(root) {
    const file = $("input[type=file]", root), text = $("textarea", root), out = $("[data-report]", root), confirmB = $("[data-confirm-import]", root);
    file.addEventListener("change", async () => { if (file.files[0]) text.value = await file.files[0].text(); });
    async function send(confirm) {
      const res = await api("POST", root.dataset.path, { csv: text.value, confirm });
      out.replaceChildren();
      if (!res.ok) { out.append(el("p", { class: "form-error", text: res.data.error.message })); return; }
      const r = res.data.report || res.data;
      out.append(el("p", { text: `${r.total_rows} rows: ${r.valid_rows} good, ${r.duplicates} duplicates, ${r.error_count} with errors${confirm ? `; ${r.imported} imported` : ""}.` }));
      if (r.errors.length) {
        const t = el("table", {}, el("tr", {}, el("th", { text: "Line" }), el("th", { text: "Field" }), el("th", { text: "Problem" })));
        for (const e of r.errors) t.append(el("tr", {}, el("td", { text: String(e.line) }), el("td", { text: e.field || "" }), el("td", { text: e.message })));
        out.append(el("div", { class: "table-wrap" }, t));
      }
      confirmB.classList.toggle("hidden", confirm || r.valid_rows === 0);
      if (confirm) setTimeout(() => location.reload(), 800);
    }
    $("[data-preview]", root).addEventListener("click", () => send(false));
    confirmB.addEventListener("click", () => send(true));
  },
};
