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
  // The nav's count of new alerts, unless this page loads the alerts itself; it follows
  // the notifications topic, where every raised alert is announced.
  if ($("[data-alert-count]") && !alertCountOwned) {
    refreshAlertCount();
    live([["notifications"]], (ev) => { if (String(ev.kind || "").startsWith("alert.")) refreshAlertCount(); });
  }
});

// Follows realtime topics: `[[topic, since?], …]`. WebSocket first (the API's
// `/api/v1/ws`, with the session cookie); Server-Sent Events when it cannot connect.
function live(topics, onEvent) {
  let es = null, ws = null, opened = false;
  const sse = () => {
    const names = topics.map((t) => t[0]).join(",");
    // Event ids are not topic seqs: only "from the start" (since 0) carries over to SSE.
    const from = topics.some((t) => t[1] === 0) ? "&last_event_id=0" : "";
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
    live([["knowledge", Number(root.dataset.since || 0)]], (ev) => {
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

// ---------------------------------------------------------------------------------
// The proactive C-suite: alerts (inbox, dashboard box, nav count), digests, automations
// (triggers and webhooks) and notification settings. Everything here is loaded from
// the JSON API and put on the page through textContent.

const SEVERITY = {
  critical: { rank: 0, label: "Critical", cls: "bad" },
  warning: { rank: 1, label: "Warning", cls: "warn" },
  info: { rank: 2, label: "Info", cls: "info" },
};
const ALERT_STATE = { open: "New", acknowledged: "Acknowledged", snoozed: "Snoozed", resolved: "Resolved" };
const NO_ALERTS = {
  active: "No unresolved alerts: nothing needs your attention. Alerts appear here when one of your automations notices something.",
  open: "No new alerts.",
  acknowledged: "No acknowledged alerts.",
  snoozed: "No snoozed alerts.",
  resolved: "No resolved alerts yet.",
};
const CATEGORY_NAMES = {
  "alerts.critical": "Critical alerts",
  "alerts.warning": "Warnings",
  "alerts.info": "Information alerts",
  approvals: "Waiting for your approval",
  task_outcomes: "Finished tasks",
  digests: "Digests",
};

// A date and time as the reader's browser writes them.
function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? "" : d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}
function day(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? "" : d.toLocaleDateString(undefined, { dateStyle: "medium" });
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const errText = (res, fallback) => (res.data && res.data.error && res.data.error.message) || fallback;
// "a, b and c"
function listWords(items) {
  return items.length <= 1 ? items.join("") : `${items.slice(0, -1).join(", ")} and ${items[items.length - 1]}`;
}
// A name from the API as words, where the page has no better one: "task_outcomes" → "Task outcomes".
function humanize(key) {
  const s = String(key || "").replace(/[._]+/g, " ").trim();
  return s.charAt(0).toUpperCase() + s.slice(1);
}
// Links from the server go into this app or to a web page, never `javascript:` or `data:`.
function safeHref(href) {
  const h = String(href || "");
  // "//host" and "/\\host" would leave the site.
  if (h.startsWith("/") && !h.startsWith("//") && !h.startsWith("/\\")) return h;
  try {
    const u = new URL(h);
    if (u.protocol === "https:" || u.protocol === "http:") return u.href;
  } catch {}
  return null;
}
// Most severe first, then newest.
function bySeverity(alerts) {
  const rank = (a) => (SEVERITY[a.severity] || SEVERITY.info).rank;
  return alerts.slice().sort((a, b) => rank(a) - rank(b) || String(b.created_at).localeCompare(String(a.created_at)));
}

// The nav's badge: how many alerts nobody has looked at yet.
let alertCountOwned = false;
function setAlertCount(n) {
  const badge = $("[data-alert-count]");
  if (!badge) return;
  const count = Number(n) || 0;
  badge.textContent = count > 99 ? "99+" : String(count);
  badge.title = `${count} new alert${count === 1 ? "" : "s"}`;
  badge.classList.toggle("hidden", count === 0);
}
function countFrom(data) {
  if (typeof data.open === "number") return data.open;
  return (data.alerts || []).filter((a) => a.status === "open").length;
}
async function refreshAlertCount() {
  const res = await api("GET", "/api/v1/alerts?status=open&limit=1");
  if (res.ok && res.data) setAlertCount(countFrom(res.data));
}

// One alert: severity, title, state, text, the figures and links behind it, and what
// can be done about it. `done(note)` runs after an action succeeded.
function alertCard(a, canAct, done) {
  const sev = SEVERITY[a.severity] || SEVERITY.info;
  const card = el("article", { class: `card alert ${a.severity in SEVERITY ? a.severity : "info"}`, id: a.id, "data-alert": a.id });
  card.append(el("div", { class: "row alert-head" },
    el("span", { class: `badge ${sev.cls}`, text: sev.label }),
    el("h3", { text: a.title || "Alert" }),
    el("span", { class: `badge state-${a.status}`, "data-alert-state": "", text: ALERT_STATE[a.status] || humanize(a.status) })));
  card.append(el("p", { class: "small muted", text: `Raised ${when(a.created_at)}` }));
  const ev = a.evidence || {};
  if (ev.summary && ev.summary.trim() !== String(a.body || "").trim()) card.append(el("p", { text: ev.summary }));
  if (a.body) {
    const body = el("div", { class: "alert-body" });
    markdown(body, a.body);
    card.append(body);
  }
  const figures = (ev.figures || []).filter((f) => f && (f.label || f.key));
  if (figures.length) {
    const dl = el("dl", { class: "figures" });
    for (const f of figures) {
      const shown = f.display != null ? f.display : f.value != null ? String(f.value) : "";
      dl.append(el("div", {}, el("dt", { text: f.label || humanize(f.key) }), el("dd", { text: shown })));
    }
    card.append(dl);
  }
  const links = (ev.links || []).map((l) => ({ label: l && l.label, href: safeHref(l && l.href) })).filter((l) => l.href);
  if (ev.event && typeof ev.event.task_id === "string") links.push({ label: "The task", href: `/tasks/${encodeURIComponent(ev.event.task_id)}` });
  if (a.meeting_id) links.push({ label: "The board meeting on this alert", href: `/board/${encodeURIComponent(a.meeting_id)}` });
  if (links.length) {
    const ul = el("ul", { class: "links small" }), seen = new Set();
    for (const l of links) {
      if (seen.has(l.href)) continue;
      seen.add(l.href);
      ul.append(el("li", {}, el("a", { href: l.href, text: l.label || "Open" })));
    }
    card.append(ul);
  }
  if (a.status === "snoozed" && a.snoozed_until) card.append(el("p", { class: "small muted", text: `Snoozed until ${when(a.snoozed_until)}.` }));
  if (a.status === "resolved") {
    card.append(el("p", { class: "small" }, el("strong", { text: "Resolved" }), a.resolved_note ? `: ${a.resolved_note}` : ` ${when(a.updated_at)}.`));
  }
  if (canAct && a.status !== "resolved") card.append(alertActions(a, done));
  return card;
}

function alertActions(a, done) {
  const err = el("p", { class: "field-error", role: "alert" });
  const path = (action) => `/api/v1/alerts/${encodeURIComponent(a.id)}/${action}`;
  async function act(button, action, body, note) {
    err.textContent = "";
    busy(button, true);
    const res = await api("POST", path(action), body);
    busy(button, false);
    if (!res.ok) { err.textContent = errText(res, "That did not work; try again."); return; }
    done(note ? note(res.data || {}) : null);
  }
  const button = (text, cls, onClick) => {
    const b = el("button", cls ? { type: "button", class: cls } : { type: "button" }, text);
    b.addEventListener("click", () => onClick(b));
    return b;
  };
  const row = el("div", { class: "row actions" });
  if (a.status === "open") row.append(button("Acknowledge", "", (b) => act(b, "ack", {})));
  row.append(button("Snooze 1 day", "secondary", (b) => act(b, "snooze", { hours: 24 })));
  row.append(button("Snooze 1 week", "secondary", (b) => act(b, "snooze", { hours: 168 })));
  if (!a.meeting_id) {
    row.append(button("Escalate to the board", "secondary", (b) => {
      if (!confirm("Call a board meeting on this alert? The board discusses it with the figures behind it.")) return;
      act(b, "escalate", {}, (d) => {
        const id = d.meeting_id || (d.alert && d.alert.meeting_id);
        const p = el("p", { class: "small", role: "status" }, "The board is meeting on it now. ");
        if (id) p.append(el("a", { href: `/board/${encodeURIComponent(id)}`, text: "Follow the meeting" }));
        return p;
      });
    }));
  }
  // Resolve, with a note saying what was done.
  const note = el("input", { type: "text", maxlength: "1000", "aria-label": "Resolution note", placeholder: "What was done about it? (optional)" });
  const resolve = button("Resolve", "secondary", (b) => {
    const text = note.value.trim();
    act(b, "resolve", text ? { note: text } : {});
  });
  note.addEventListener("keydown", (ev) => { if (ev.key === "Enter") { ev.preventDefault(); resolve.click(); } });
  return el("div", { class: "alert-actions" }, row, el("div", { class: "row resolve" }, note, resolve), err);
}

// Trigger conditions and actions in words.
const EVENT_WORDS = {
  "task.dead_lettered": "a task fails for good",
  "connector.expired": "a connection expires or is revoked",
  "campaign.bounced": "campaign emails bounce",
  "approval.waiting": "an approval waits too long",
  "usage.threshold": "usage reaches part of the plan",
  "knowledge.source_failed": "a document cannot be read",
};
const OP_WORDS = { "<": "falls below", "<=": "is at or below", ">": "rises above", ">=": "is at or above" };
const RUN_REASON = { schedule: "On schedule", metric: "A figure crossed the line", event: "Something happened", manual: "Run by hand" };
const RUN_STATE = { queued: "waiting", running: "running", succeeded: "done", failed: "failed" };
const DELIVERY_EVENT = { "webhook.test": "Test event", "alert.raised": "Alert", "approval.requested": "Approval needed", "task.proposed": "Proposal", "digest.sent": "Digest" };
const DELIVERY_STATE = { pending: "waiting", delivered: "delivered", retrying: "retrying", failed: "failed" };
const DAY_NAMES = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];
const DAY_KEYS = { SUN: 0, MON: 1, TUE: 2, WED: 3, THU: 4, FRI: 5, SAT: 6 };

const num = (v) => Number(v).toLocaleString(undefined, { maximumFractionDigits: 2 });
function ordinal(n) {
  const s = ["th", "st", "nd", "rd"], v = n % 100;
  return `${n}${s[(v - 20) % 10] || s[v] || s[0]}`;
}
function cronDay(t) {
  const u = t.toUpperCase();
  if (u in DAY_KEYS) return DAY_KEYS[u];
  return /^[0-7]$/.test(t) ? Number(t) % 7 : null;
}
// The common cron shapes in words ("Every Monday at 09:00"); null for the rest.
function describeCron(cron) {
  const f = String(cron || "").trim().split(/\s+/);
  if (f.length !== 5) return null;
  const [mi, ho, dom, mon, dow] = f;
  if (!/^\d{1,2}$/.test(mi) || Number(mi) > 59 || mon !== "*") return null;
  const m = Number(mi);
  let time;
  if (/^\d{1,2}$/.test(ho) && Number(ho) < 24) time = `at ${ho.padStart(2, "0")}:${String(m).padStart(2, "0")}`;
  else if (ho === "*") time = m === 0 ? "every hour, on the hour" : `every hour at ${m} past`;
  else if (/^\*\/\d{1,2}$/.test(ho)) time = `every ${ho.slice(2)} hours${m ? ` at ${m} past` : ""}`;
  else return null;
  let days;
  if (dom === "*" && dow === "*") days = null;
  else if (dom === "*") {
    const names = [];
    for (const part of dow.split(",")) {
      const r = part.split("-");
      if (r.length === 2) {
        const a = cronDay(r[0]), b = cronDay(r[1]);
        if (a === null || b === null) return null;
        names.push(a === 1 && b === 5 ? "weekday" : `${DAY_NAMES[a]} to ${DAY_NAMES[b]}`);
      } else {
        const d = cronDay(part);
        if (d === null) return null;
        names.push(DAY_NAMES[d]);
      }
    }
    days = `Every ${listWords(names)}`;
  } else if (dow === "*" && /^\d{1,2}$/.test(dom) && Number(dom) >= 1 && Number(dom) <= 31) days = `On the ${ordinal(Number(dom))} of every month`;
  else return null;
  if (!days) return time.startsWith("at") ? `Every day ${time}` : time.charAt(0).toUpperCase() + time.slice(1);
  return `${days} ${time}`;
}
function minutesWords(m) {
  const n = Number(m) || 0;
  if (n && n % 1440 === 0) return n === 1440 ? "a day" : `${n / 1440} days`;
  if (n && n % 60 === 0) return n === 60 ? "an hour" : `${n / 60} hours`;
  return `${n} minute${n === 1 ? "" : "s"}`;
}
// "Runway" → "runway" mid-sentence; "CAC" and "MRR" stay as they are.
const midSentence = (label) => (/^[A-Z][a-z]/.test(label) ? label.charAt(0).toLowerCase() + label.slice(1) : label);

function conditionWords(c, names) {
  c = c || {};
  if (c.kind === "schedule") {
    if (c.every_hours) return Number(c.every_hours) === 1 ? "Every hour" : `Every ${c.every_hours} hours`;
    const words = describeCron(c.cron) || `On the schedule “${c.cron}”`;
    return `${words} (${c.timezone || "UTC"} time)`;
  }
  if (c.kind === "metric") {
    const label = midSentence(names.figures[c.metric] || (c.metric ? humanize(c.metric).toLowerCase() : "a figure"));
    if (c.op === "deviates") return `When ${label} moves unusually far from its ${c.window || 14}-day average (more than ${num(c.value)} standard deviations)`;
    const unit = (names.units || {})[c.metric];
    const amount = unit === "%" ? `${num(c.value)}%` : unit ? `${num(c.value)} ${unit}` : num(c.value);
    if (OP_WORDS[c.op] && c.value != null) return `When ${label} ${OP_WORDS[c.op]} ${amount}`;
    return c.rule ? `When ${c.rule}` : "When a figure crosses a line";
  }
  if (c.kind === "event") {
    if (c.event === "approval.waiting") return `When an approval has waited more than ${minutesWords(c.minutes)}`;
    if (c.event === "usage.threshold") return `When usage reaches ${c.percent}% of the plan's monthly allowance`;
    return `When ${EVENT_WORDS[c.event] || humanize(c.event).toLowerCase() + " happens"}`;
  }
  return "";
}
function actionWords(a, names) {
  a = a || {};
  const speaker = (s) => names.speakers[s] || humanize(s);
  switch (a.kind) {
    case "alert": {
      const sev = { info: "an information", warning: "a warning", critical: "a critical" }[a.severity] || "an";
      return `Raise ${sev} alert${a.title ? ` titled “${a.title}”` : ""}`;
    }
    case "board_meeting": {
      const who = (a.personas || []).map(speaker);
      return `Call a board meeting${who.length ? ` with the ${listWords(who)}` : ""}${a.agenda ? ` on “${a.agenda}”` : ""}`;
    }
    case "brief": return `Ask the ${speaker(a.persona)} for a brief${a.prompt ? `: “${a.prompt}”` : ""}`;
    case "propose": return `Propose “${names.capabilities[a.capability] || a.capability}” for approval`;
    case "digest": return "Send the digest to the team";
  }
  return "";
}

// What a run did, as a link to it.
function runOutcome(r) {
  const o = r.output || {};
  const out = el("span", { class: "small" });
  if (r.error) out.append(el("span", { class: "error-text", text: r.error }));
  else if (o.alert_id) out.append(el("a", { href: `/alerts#${encodeURIComponent(o.alert_id)}`, text: "Alert raised" }));
  else if (o.meeting_id) out.append(el("a", { href: `/board/${encodeURIComponent(o.meeting_id)}`, text: "Board meeting" }));
  else if (o.conversation_id) out.append(el("a", { href: `/chat?c=${encodeURIComponent(o.conversation_id)}`, text: "The brief" }));
  else if (o.task_id) out.append(el("a", { href: `/tasks/${encodeURIComponent(o.task_id)}`, text: "Proposal to approve" }));
  else if (o.digest_id) out.append(typeof o.recipients === "number" ? `Digest sent to ${o.recipients} ${o.recipients === 1 ? "person" : "people"}` : "Digest written");
  return out;
}

function table(headings, rows) {
  const head = el("tr");
  for (const h of headings) head.append(el("th", { scope: "col", text: h }));
  const body = el("tbody");
  for (const r of rows) body.append(r);
  return el("div", { class: "table-wrap" }, el("table", {}, el("thead", {}, head), body));
}

async function loadRuns(id, box) {
  const res = await api("GET", `/api/v1/triggers/${encodeURIComponent(id)}/runs`);
  box.replaceChildren();
  if (!res.ok) { box.append(el("p", { class: "form-error", text: errText(res, "The history could not be loaded.") })); return []; }
  const runs = (res.data && res.data.runs) || [];
  if (!runs.length) { box.append(el("p", { class: "small muted", text: "It has not run yet." })); return runs; }
  box.append(table(["When", "Why", "Status", "Result"], runs.map((r) => el("tr", {},
    el("td", { class: "small nowrap", text: when(r.created_at) }),
    el("td", { class: "small" }, RUN_REASON[r.reason] || humanize(r.reason),
      r.evidence && r.evidence.summary && r.reason !== "manual" ? el("span", { class: "muted block", text: r.evidence.summary }) : ""),
    el("td", {}, el("span", { class: `badge ${r.status}`, text: RUN_STATE[r.status] || humanize(r.status) })),
    el("td", {}, runOutcome(r))))));
  return runs;
}

async function loadDeliveries(id, box) {
  const res = await api("GET", `/api/v1/webhooks/${encodeURIComponent(id)}/deliveries`);
  box.replaceChildren();
  if (!res.ok) { box.append(el("p", { class: "form-error", text: errText(res, "The delivery log could not be loaded.") })); return; }
  const list = (res.data && res.data.deliveries) || [];
  if (!list.length) { box.append(el("p", { class: "small muted", text: "Nothing sent yet." })); return; }
  box.append(table(["When", "What", "Status", "Tries", "Answer"], list.map((d) => {
    const answer = [];
    if (d.response_status != null) answer.push(`HTTP ${d.response_status}`);
    if (d.duration_ms != null) answer.push(`${d.duration_ms} ms`);
    const cell = el("td", { class: "small" }, answer.join(" · "));
    if (d.error) cell.append(el("span", { class: "error-text", text: `${answer.length ? " · " : ""}${d.error}` }));
    return el("tr", {},
      el("td", { class: "small nowrap", text: when(d.created_at) }),
      el("td", { class: "small", text: DELIVERY_EVENT[d.event_type] || humanize(d.event_type) }),
      el("td", {}, el("span", { class: `badge ${d.status}`, text: DELIVERY_STATE[d.status] || humanize(d.status) })),
      el("td", { class: "small", text: String(d.attempts ?? "") }),
      cell);
  })));
}

Object.assign(pages, {
  // The alert inbox: filtered by state, each alert with its actions.
  alerts(root) {
    alertCountOwned = true;
    const list = $("[data-alerts]", root), error = $("[data-list-error]", root);
    const canAct = root.dataset.canAct === "true";
    let filter = "active", scrolled = false;
    const notes = {};
    async function load() {
      const res = await api("GET", `/api/v1/alerts?status=${encodeURIComponent(filter)}`);
      error.textContent = "";
      list.replaceChildren();
      list.dataset.loaded = filter;
      if (!res.ok) { error.textContent = errText(res, "The alerts could not be loaded; reload the page to try again."); return; }
      const data = res.data || {};
      if (typeof data.open === "number" || filter === "open" || filter === "active") setAlertCount(countFrom(data));
      const alerts = filter === "resolved" ? data.alerts || [] : bySeverity(data.alerts || []);
      if (!alerts.length) { list.append(el("p", { class: "muted", text: NO_ALERTS[filter] || NO_ALERTS.active })); return; }
      for (const a of alerts) {
        const card = alertCard(a, canAct, (note) => { if (note) notes[a.id] = note; load(); });
        if (notes[a.id]) { card.append(notes[a.id]); delete notes[a.id]; }
        list.append(card);
      }
      // Arrived from a link to one alert (the dashboard, a run's result): show it.
      if (!scrolled && location.hash.length > 1) {
        scrolled = true;
        let target = null;
        try { target = document.getElementById(decodeURIComponent(location.hash.slice(1))); } catch {}
        if (target && target.matches("[data-alert]")) { target.classList.add("highlight"); target.scrollIntoView({ block: "start" }); }
      }
    }
    for (const b of $$("[data-filter]", root)) b.addEventListener("click", () => {
      filter = b.dataset.filter;
      for (const x of $$("[data-filter]", root)) x.setAttribute("aria-pressed", String(x === b));
      load();
    });
    load();
  },

  // The digests the CEO wrote, newest first, each opened on demand.
  async digests(root) {
    const box = $("[data-digests]", root), error = $("[data-list-error]", root);
    const res = await api("GET", "/api/v1/digests");
    box.replaceChildren();
    if (!res.ok) { error.textContent = errText(res, "The digests could not be loaded."); return; }
    const list = (res.data && res.data.digests) || [];
    if (!list.length) { box.append(el("p", { class: "muted", text: "No digests yet. An automation that sends the digest puts a copy here each time it runs." })); return; }
    for (const d of list) {
      const period = d.period_start && d.period_end ? `${day(d.period_start)} – ${day(d.period_end)}` : day(d.created_at);
      const body = el("div", { class: "digest-body" });
      markdown(body, d.body || "");
      box.append(el("details", { class: "digest", "data-digest": d.id },
        el("summary", {}, el("strong", { text: period }), " ", el("span", { class: "small muted", text: `written ${when(d.created_at)}` })),
        body));
    }
  },

  // The dashboard's "Top alerts": up to three, most severe first.
  async topalerts(root) {
    alertCountOwned = true;
    const list = $("[data-top-alerts]", root), none = $("[data-none]", root);
    const res = await api("GET", "/api/v1/alerts");
    if (!res.ok) { root.classList.add("hidden"); return; }
    const data = res.data || {};
    setAlertCount(countFrom(data));
    // A snooze that ran out reads "open"; one still running stays out of the way.
    const top = bySeverity((data.alerts || []).filter((a) => a.status !== "snoozed" && a.status !== "resolved")).slice(0, 3);
    list.replaceChildren();
    none.hidden = top.length > 0;
    for (const a of top) {
      const sev = SEVERITY[a.severity] || SEVERITY.info;
      list.append(el("li", {},
        el("span", { class: `badge ${sev.cls}`, text: sev.label }), " ",
        el("a", { href: `/alerts#${encodeURIComponent(a.id)}`, text: a.title || "Alert" }), " ",
        el("span", { class: "small muted", text: when(a.created_at) })));
    }
  },

  // Settings: which news reaches this person in the app and by email.
  async notifprefs(root) {
    const form = $("form", root), rows = $("[data-prefs-rows]", root), err = $("[data-form-error]", form), saved = $("[data-saved]", root);
    const button = $("button[type=submit]", form);
    const res = await api("GET", "/api/v1/me/notification-preferences");
    rows.replaceChildren();
    if (!res.ok) { err.textContent = errText(res, "Your notification settings could not be loaded."); button.disabled = true; return; }
    const cats = (res.data && res.data.categories) || {};
    const keys = Object.keys(CATEGORY_NAMES).filter((k) => k in cats).concat(Object.keys(cats).filter((k) => !(k in CATEGORY_NAMES)));
    for (const k of keys) {
      const name = CATEGORY_NAMES[k] || humanize(k);
      const box = (channel, words) => {
        const i = el("input", { type: "checkbox", "data-category": k, "data-channel": channel, "aria-label": `${name}: ${words}` });
        i.checked = Boolean(cats[k] && cats[k][channel]);
        return el("td", { class: "center" }, i);
      };
      rows.append(el("tr", {}, el("th", { scope: "row", text: name }), box("in_app", "in the app"), box("email", "by email")));
    }
    form.addEventListener("change", () => { saved.textContent = ""; });
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      err.textContent = "";
      saved.textContent = "";
      const categories = {};
      for (const i of $$("input[data-category]", form)) (categories[i.dataset.category] = categories[i.dataset.category] || {})[i.dataset.channel] = i.checked;
      busy(button, true);
      const r = await api("PUT", "/api/v1/me/notification-preferences", { categories });
      busy(button, false);
      if (!r.ok) { err.textContent = errText(r, "Your settings could not be saved; try again."); return; }
      saved.textContent = "Saved.";
    });
  },

  // Automations: the triggers (in words, with their history), the form that creates
  // one, and the webhook endpoints.
  automations(root) {
    const admin = root.dataset.admin === "true";
    const names = { speakers: {}, capabilities: {}, figures: {}, units: {} };
    try { Object.assign(names, JSON.parse(root.dataset.names || "{}")); } catch {}
    const box = $("[data-triggers]", root), listError = $("[data-list-error]", box.closest("section"));

    function summary(t) {
      const s = el("div", { "data-summary": "" });
      const head = el("div", { class: "row" }, el("h3", { text: t.name }));
      if (t.paused) head.append(el("span", { class: "badge", text: "paused" }));
      if (t.firing) head.append(el("span", { class: "badge warn", text: "condition met" }));
      s.append(head);
      // "When: runway falls below 6", "Then: raise a warning alert titled …".
      const phrase = (words) => midSentence(words.replace(/^When /, ""));
      s.append(el("p", {}, el("strong", { text: "When: " }), phrase(conditionWords(t.condition, names))));
      s.append(el("p", {}, el("strong", { text: "Then: " }), phrase(actionWords(t.action, names))));
      if (t.action && t.action.kind === "propose") {
        s.append(el("details", { class: "small" }, el("summary", { text: "Its input" }), el("pre", { class: "code-block", text: JSON.stringify(t.action.input ?? {}, null, 2) })));
      }
      const facts = [], kind = t.condition && t.condition.kind;
      if (t.paused) facts.push("Paused: it will not run until you turn it back on");
      else if (kind === "schedule" && t.next_run_at) facts.push(`Next run ${when(t.next_run_at)}`);
      else if (kind === "metric") facts.push(t.next_run_at ? `Next check of the figures ${when(t.next_run_at)}` : "Checks the figures when they change");
      else if (kind === "event") facts.push("Runs when it happens");
      facts.push(t.last_run_at ? `last ran ${when(t.last_run_at)}` : "has not run yet");
      const meta = el("p", { class: "small muted" }, facts.join(" · ").replace(/^./, (c) => c.toUpperCase()));
      if (t.last_status) meta.append(" ", el("span", { class: `badge ${t.last_status}`, text: RUN_STATE[t.last_status] || humanize(t.last_status) }));
      s.append(meta);
      return s;
    }

    function triggerCard(t) {
      const card = el("article", { class: "trigger", "data-trigger": t.id, id: t.id });
      let current = summary(t);
      const show = (next) => { t = next; const s = summary(t); current.replaceWith(s); current = s; };
      card.append(current);
      const err = el("p", { class: "field-error", role: "alert" });
      const history = el("details", { class: "history" }, el("summary", { text: "History" }));
      const runs = el("div", { "data-runs": "" });
      history.append(runs);
      history.addEventListener("toggle", () => { if (history.open) loadRuns(t.id, runs); });
      if (admin) {
        const path = `/api/v1/triggers/${encodeURIComponent(t.id)}`;
        const paused = el("input", { type: "checkbox", role: "switch" });
        paused.checked = Boolean(t.paused);
        paused.addEventListener("change", async () => {
          err.textContent = "";
          paused.disabled = true;
          const res = await api("PATCH", path, { paused: paused.checked });
          paused.disabled = false;
          if (!res.ok) { paused.checked = !paused.checked; err.textContent = errText(res, "That did not work; try again."); return; }
          const next = res.data && (res.data.trigger || (res.data.id ? res.data : null));
          show(next || { ...t, paused: paused.checked });
        });
        const run = el("button", { type: "button", class: "secondary" }, "Run now");
        run.addEventListener("click", async () => {
          err.textContent = "";
          busy(run, true);
          const res = await api("POST", `${path}/run`, {});
          if (!res.ok) { busy(run, false); err.textContent = errText(res, "It could not be started; try again."); return; }
          // Follow the run in the history until it has finished, then refresh the summary.
          history.open = true;
          for (let i = 0; i < 20; i++) {
            await sleep(i < 6 ? 500 : 1500);
            const list = await loadRuns(t.id, runs);
            if (list.length && !["queued", "running"].includes(list[0].status)) break;
          }
          busy(run, false);
          const again = await api("GET", path);
          if (again.ok && again.data) show(again.data.trigger || again.data);
        });
        const del = el("button", { type: "button", class: "danger" }, "Delete");
        del.addEventListener("click", async () => {
          if (!confirm(`Delete “${t.name}”? Its history goes with it.`)) return;
          busy(del, true);
          const res = await api("DELETE", path);
          busy(del, false);
          if (!res.ok) { err.textContent = errText(res, "It could not be deleted; try again."); return; }
          card.remove();
          if (!$("[data-trigger]", box)) box.append(el("p", { class: "muted", text: "No automations yet." }));
        });
        card.append(el("div", { class: "row" }, el("label", { class: "switch" }, paused, " Paused"), run, del));
      }
      card.append(err, history);
      return card;
    }

    async function loadTriggers() {
      const res = await api("GET", "/api/v1/triggers");
      listError.textContent = "";
      box.replaceChildren();
      if (!res.ok) { listError.textContent = errText(res, "The automations could not be loaded; reload the page to try again."); return; }
      const list = (res.data && res.data.triggers) || [];
      if (!list.length) box.append(el("p", { class: "muted", text: admin ? "No automations yet. Create the first one below." : "No automations yet." }));
      for (const t of list) box.append(triggerCard(t));
    }
    loadTriggers();

    const form = $("form[data-new-trigger]", root);
    if (form) newTriggerForm(form, async (t) => {
      await loadTriggers();
      const card = t && t.id && document.getElementById(t.id);
      if (card) { card.classList.add("highlight"); card.scrollIntoView({ block: "center" }); }
    });
    webhooks($("[data-webhooks]", root), admin);
  },
});

// The "New automation" form: shows the fields the chosen condition and action need
// and sends only those.
function newTriggerForm(form, created) {
  const field = (name) => form.elements.namedItem(name);
  const value = (name) => { const f = field(name); return f ? String(f.value).trim() : ""; };
  const when_ = field("when"), then = field("then"), event = field("condition.event");
  const cron = field("condition.cron"), preset = $("[data-cron-preset]", form), cronWords = $("[data-cron-words]", form);
  const tz = field("condition.timezone");
  function sync() {
    for (const d of $$("[data-when]", form)) d.hidden = d.dataset.when !== when_.value;
    for (const d of $$("[data-then]", form)) d.hidden = d.dataset.then !== then.value;
    for (const d of $$("[data-event-extra]", form)) d.hidden = d.dataset.eventExtra !== event.value;
  }
  function words() {
    const w = describeCron(cron.value);
    cronWords.textContent = w ? `${w}.` : "";
    const match = $$("option", preset).find((o) => o.value && o.value === cron.value.trim());
    preset.value = match ? match.value : "";
  }
  function defaults() {
    try { const zone = Intl.DateTimeFormat().resolvedOptions().timeZone; if (zone) tz.value = zone; } catch {}
    sync();
    words();
  }
  const zones = $("[data-timezones]", form);
  try { if (zones && Intl.supportedValuesOf) for (const z of Intl.supportedValuesOf("timeZone")) zones.append(el("option", { value: z })); } catch {}
  for (const s of [when_, then, event]) s.addEventListener("change", sync);
  preset.addEventListener("change", () => { if (preset.value) { cron.value = preset.value; words(); } else cron.focus(); });
  cron.addEventListener("input", words);
  defaults();

  const fail = (name, message) => {
    const target = $(`[data-error-for="${CSS.escape(name)}"]`, form);
    if (target) target.textContent = message;
    const f = field(name);
    if (f && f.focus) { f.setAttribute("aria-invalid", "true"); f.focus(); }
  };

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    for (const e of $$("[data-error-for], [data-form-error]", form)) e.textContent = "";
    for (const i of $$("[aria-invalid]", form)) i.removeAttribute("aria-invalid");
    const name = value("name");
    if (!name) return fail("name", "Give the automation a name.");
    let condition;
    switch (when_.value) {
      case "cron": condition = { kind: "schedule", cron: value("condition.cron"), timezone: value("condition.timezone") || "UTC" }; break;
      case "every": condition = { kind: "schedule", every_hours: Number(value("condition.every_hours")) }; break;
      case "metric":
        if (!value("condition.rule")) return fail("condition.rule", "Write the rule, for example runway_months < 6.");
        condition = { kind: "metric", rule: value("condition.rule") };
        break;
      default:
        condition = { kind: "event", event: event.value };
        if (event.value === "approval.waiting") condition.minutes = Number(value("condition.minutes"));
        if (event.value === "usage.threshold") condition.percent = Number(value("condition.percent"));
    }
    let action;
    switch (then.value) {
      case "alert":
        action = { kind: "alert", severity: value("action.severity") };
        if (value("action.title")) action.title = value("action.title");
        if (value("action.body")) action.body = value("action.body");
        break;
      case "board_meeting": {
        if (!value("action.agenda")) return fail("action.agenda", "Say what the board should discuss.");
        action = { kind: "board_meeting", agenda: value("action.agenda") };
        const who = $$("input[name='action.personas']:checked", form).map((i) => i.value);
        if (who.length) action.personas = who;
        break;
      }
      case "brief":
        action = { kind: "brief", persona: value("action.persona") };
        if (value("action.prompt")) action.prompt = value("action.prompt");
        break;
      case "propose": {
        if (!field("action.capability")) return fail("action", "No enabled module offers an action to propose.");
        let input;
        try { input = JSON.parse(value("action.input") || "{}"); } catch (e) {
          return fail("action.input", `This is not valid JSON (${e.message}).`);
        }
        if (!input || typeof input !== "object" || Array.isArray(input)) return fail("action.input", "The input must be a JSON object, like {\"name\": \"Zed Corp\"}.");
        action = { kind: "propose", capability: value("action.capability"), input };
        break;
      }
      default: action = { kind: "digest" };
    }
    const body = { name, condition, action, paused: field("paused").checked };
    const button = $("button[type=submit]", form);
    busy(button, true);
    const res = await api("POST", "/api/v1/triggers", body);
    busy(button, false);
    if (!res.ok) return showError(form, res.data);
    form.reset();
    defaults();
    created(res.data && (res.data.trigger || res.data));
  });
}

// Webhook endpoints: the list with each one's delivery log, a test event, and (for
// admins) the form that adds one and shows its signing secret once.
function webhooks(section, admin) {
  if (!section) return;
  const box = $("[data-webhook-list]", section), listError = $("[data-list-error]", section);
  const card = (w) => {
    const path = `/api/v1/webhooks/${encodeURIComponent(w.id)}`;
    const c = el("article", { class: "webhook", "data-webhook": w.id });
    // A Slack or Teams address is itself a key to the channel: only admins see all of it.
    let shown = w.url;
    if (!admin) { try { shown = `${new URL(w.url).host}/…`; } catch { shown = "…"; } }
    const head = el("div", { class: "row" }, el("h3", { class: "url", text: shown }),
      el("span", { class: "badge", text: w.format === "text" ? "Slack / Teams text" : "signed JSON" }));
    if (w.enabled === false) head.append(el("span", { class: "badge", text: "off" }));
    c.append(head);
    if (w.description) c.append(el("p", { text: w.description }));
    const cats = (w.categories || []).map((k) => midSentence(CATEGORY_NAMES[k] || humanize(k)));
    c.append(el("p", { class: "small muted", text: cats.length ? `Sends: ${listWords(cats)}.` : "Sends nothing yet." }));
    const err = el("p", { class: "field-error", role: "alert" }), note = el("span", { class: "small muted", role: "status" });
    const log = el("details", { class: "history" }, el("summary", { text: "Delivery log" }));
    const rows = el("div");
    log.append(rows);
    log.addEventListener("toggle", () => { if (log.open) loadDeliveries(w.id, rows); });
    if (admin) {
      const test = el("button", { type: "button", class: "secondary" }, "Send test event");
      test.addEventListener("click", async () => {
        err.textContent = ""; note.textContent = "";
        busy(test, true);
        const res = await api("POST", `${path}/test`, {});
        busy(test, false);
        if (!res.ok) { err.textContent = errText(res, "The test could not be sent; try again."); return; }
        note.textContent = "Test event on its way: see the delivery log.";
        if (log.open) { await sleep(1000); loadDeliveries(w.id, rows); } else log.open = true;
      });
      const del = el("button", { type: "button", class: "danger" }, "Delete");
      del.addEventListener("click", async () => {
        if (!confirm(`Stop sending to ${w.url} and delete this endpoint?`)) return;
        busy(del, true);
        const res = await api("DELETE", path);
        busy(del, false);
        if (!res.ok) { err.textContent = errText(res, "It could not be deleted; try again."); return; }
        c.remove();
        if (!$("[data-webhook]", box)) box.append(el("p", { class: "muted", text: "No endpoints yet." }));
      });
      c.append(el("div", { class: "row" }, test, del, note));
    }
    c.append(err, log);
    return c;
  };
  async function load() {
    const res = await api("GET", "/api/v1/webhooks");
    listError.textContent = "";
    box.replaceChildren();
    if (!res.ok) { listError.textContent = errText(res, "The endpoints could not be loaded; reload the page to try again."); return; }
    const list = (res.data && res.data.webhooks) || [];
    if (!list.length) box.append(el("p", { class: "muted", text: "No endpoints yet." }));
    for (const w of list) box.append(card(w));
  }
  load();

  const form = $("form[data-new-webhook]", section);
  if (!form) return;
  const secretBox = $("[data-secret-box]", section), secret = $("[data-secret]", section), copied = $("[data-copied]", section);
  $("[data-copy-secret]", section).addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(secret.textContent);
      copied.textContent = "Copied.";
    } catch {
      const range = document.createRange();
      range.selectNodeContents(secret);
      const sel = getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      copied.textContent = "Selected: copy it with your keyboard.";
    }
  });
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    for (const e of $$("[data-error-for], [data-form-error]", form)) e.textContent = "";
    for (const i of $$("[aria-invalid]", form)) i.removeAttribute("aria-invalid");
    const body = formValue(form);
    if (!body.url) { $("[data-error-for=url]", form).textContent = "Paste the address the other service gave you."; return; }
    const button = $("button[type=submit]", form);
    busy(button, true);
    const res = await api("POST", "/api/v1/webhooks", body);
    busy(button, false);
    if (!res.ok) return showError(form, res.data);
    form.reset();
    copied.textContent = "";
    secret.textContent = (res.data && res.data.secret) || "";
    secretBox.classList.toggle("hidden", !secret.textContent);
    await load();
    if (secret.textContent) { secretBox.scrollIntoView({ block: "center" }); $("[data-copy-secret]", section).focus(); }
  });
}
