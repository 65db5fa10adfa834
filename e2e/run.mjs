// Browser tests: the real server (SQLite, offline model) driven through Debian's
// chromium by playwright-core. A small OAuth provider runs beside it so "connect" can
// be tested end to end. Screenshots of each main page land in $E2E_OUT (default
// e2e/output) for a person to look at.
//
// Usage: node e2e/run.mjs   (OCSUITE_BIN: the server binary; CHROMIUM: the browser)
import { chromium } from "playwright-core";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, mkdirSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import { homedir, tmpdir } from "node:os";
import { createHmac } from "node:crypto";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";

const here = dirname(fileURLToPath(import.meta.url));
// Where cargo put the binary: $CARGO_TARGET_DIR, ./target, or .ci/run's default.
const target = process.env.CARGO_TARGET_DIR
  || (existsSync(join(here, "..", "target", "debug", "ocsuite")) ? join(here, "..", "target") : join(homedir(), ".cache", "ocsuite-target"));
const BIN = process.env.OCSUITE_BIN || join(target, "debug", "ocsuite");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const OUT = process.env.E2E_OUT || join(here, "output");
mkdirSync(OUT, { recursive: true });

function freePort() {
  return new Promise((res) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => { const p = s.address().port; s.close(() => res(p)); });
  });
}

// A minimal OAuth 2.0 provider: authorize redirects straight back with a code; the
// token and userinfo endpoints answer like Google's.
async function fakeProvider() {
  const port = await freePort();
  const server = createServer((req, res) => {
    const url = new URL(req.url, `http://127.0.0.1:${port}`);
    if (url.pathname === "/authorize") {
      const back = new URL(url.searchParams.get("redirect_uri"));
      back.searchParams.set("code", "code-1");
      back.searchParams.set("state", url.searchParams.get("state"));
      res.writeHead(302, { location: back.toString() }).end();
    } else if (url.pathname === "/token") {
      res.writeHead(200, { "content-type": "application/json" })
        .end(JSON.stringify({ access_token: `at-${Date.now()}`, refresh_token: "rt-1", token_type: "Bearer", expires_in: 3600, scope: "openid email" }));
    } else if (url.pathname === "/userinfo") {
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ sub: "1", email: "owner@acme.example" }));
    } else res.writeHead(404).end();
  });
  await new Promise((r) => server.listen(port, "127.0.0.1", r));
  return { base: `http://127.0.0.1:${port}`, server };
}

async function startServer(idp) {
  const dir = mkdtempSync(join(tmpdir(), "ocsuite-e2e-"));
  const port = await freePort();
  const config = join(dir, "ocsuite.toml");
  writeFileSync(config, `[[connector_providers]]
name = "acme"
display_name = "Acme CRM"
client_id = "e2e"
client_secret = "e2e-secret"
authorization_url = "${idp}/authorize"
token_url = "${idp}/token"
userinfo_url = "${idp}/userinfo"
scopes = ["openid", "email"]
`);
  const env = {
    ...process.env,
    OCSUITE_CONFIG: config,
    OCSUITE_ADDR: `127.0.0.1:${port}`,
    OCSUITE_DATA_DIR: dir,
    OCSUITE_DATABASE_URL: `sqlite://${dir}/ocsuite.db`,
    OCSUITE_LLM_API_KEY: "",
    RUST_LOG: "warn",
  };
  const child = spawn(BIN, ["serve"], { env, stdio: ["ignore", "ignore", "inherit"] });
  const base = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 100; i++) {
    try { if ((await fetch(`${base}/healthz`)).ok) return { base, child, env }; } catch {}
    await new Promise((r) => setTimeout(r, 100));
  }
  child.kill();
  throw new Error("the server did not start");
}

// RFC 6238 code for a base32 secret, as an authenticator app computes it.
function totp(secret, at = Date.now()) {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = "";
  for (const c of secret.replace(/=+$/, "").toUpperCase()) bits += alphabet.indexOf(c).toString(2).padStart(5, "0");
  const key = Buffer.from(bits.match(/.{8}/g).map((b) => parseInt(b, 2)));
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(at / 1000 / 30)));
  const h = createHmac("sha1", key).update(counter).digest();
  const o = h[h.length - 1] & 15;
  return String((h.readUInt32BE(o) & 0x7fffffff) % 1_000_000).padStart(6, "0");
}

// Screenshots are evidence for people, not assertions: headless Chromium now and then
// never delivers a frame for one (the call hangs after "fonts loaded"), and that must
// not fail the journey. Two tries, then a warning.
async function shot(page, name, fullPage = false) {
  for (let attempt = 1; attempt <= 2; attempt++) {
    try {
      await page.screenshot({ path: join(OUT, name), fullPage, timeout: 15000 });
      return;
    } catch (e) {
      if (attempt === 2) console.warn(`screenshot ${name} skipped: ${e.message.split("\n")[0]}`);
    }
  }
}

const results = [];
const started = Date.now();
async function step(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    results.push(`ok   ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    results.push(`FAIL ${name}: ${e.message}`);
    throw e;
  }
}

async function newUser(browser, base, email, company) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const problems = [];
  page.on("console", (m) => { if (m.type() === "error") problems.push(m.text()); });
  page.on("pageerror", (e) => problems.push(String(e)));
  await page.goto(`${base}/signup`);
  await page.fill("#name", `${company} Owner`);
  await page.fill("#email", email);
  await page.fill("#password", "correct horse battery staple");
  await page.click("button[type=submit]");
  await page.waitForURL(/\/onboarding/);
  await page.fill("#name", company);
  await page.click("button[type=submit]");
  await page.waitForURL(/step=profile/);
  return { context, page, problems };
}

const idp = await fakeProvider();
const { base, child, env } = await startServer(idp.base);
const browser = await chromium.launch({
  executablePath: CHROMIUM,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
let failed = false;
try {
  let a;
  await step("a bad form value is explained next to its field", async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${base}/signup`);
    await page.fill("#name", "Short Password");
    await page.fill("#email", "short@acme.example");
    await page.fill("#password", "short");
    await page.click("button[type=submit]");
    await page.locator("[data-error-for=password]:not(:empty)").waitFor();
    assert.equal(await page.locator("#password").getAttribute("aria-invalid"), "true");
    assert.match(page.url(), /\/signup$/);
    await shot(page, "00-signup-error.png");
    await context.close();
  });

  await step("signup → onboarding → dashboard with demo data", async () => {
    a = await newUser(browser, base, "owner@acme.example", "Acme Studio");
    const { page } = a;
    await shot(page, "01-onboarding-profile.png", true);
    await page.fill("#industry", "design agency");
    await page.selectOption("#stage", "early_revenue");
    await page.fill("#goals", "reach 20k MRR, hire a designer");
    await page.fill("#team", "3");
    await page.click("button[type=submit]");
    await page.waitForURL(/step=board/);
    await page.getByText("Chief Financial Officer").waitFor();
    await shot(page, "02-onboarding-board.png", true);
    await page.click("text=Continue");
    await page.waitForURL(/step=connect/);
    await page.click("text=Skip for now");
    await page.waitForURL(/step=data/);
    await page.click("text=Load demo data");
    await page.waitForURL(/\/dashboard/);
    await page.locator("[data-metrics] .metric").first().waitFor();
    const text = await page.locator("[data-metrics]").innerText();
    assert.match(text, /Open pipeline value/);
    assert.match(text, /Runway/);
    await shot(page, "03-dashboard.png", true);
  });

  await step("chat with the CFO streams an answer", async () => {
    const { page } = a;
    await page.goto(`${base}/chat`);
    await page.selectOption("#persona", "cfo");
    await page.fill("#message", "How long is our runway?");
    await page.click("button[type=submit]");
    const answer = page.locator(".msg.assistant");
    await answer.waitFor();
    await page.waitForFunction(() => (document.querySelector(".msg.assistant")?.textContent || "").length > 80);
    // Even offline, the CFO answers with the company's own figures (from the demo books).
    await page.locator(".msg.assistant", { hasText: "Runway:" }).waitFor();
    await page.locator("[data-rating] button[data-body*=up]").waitFor();
    // Its lists are lists, and it reads as an answer, not as a prompt.
    await page.locator(".msg.assistant li", { hasText: "Runway:" }).first().waitFor();
    assert.ok(await page.locator(".msg.assistant ul").count() >= 3);
    const said = await page.locator(".msg.assistant").innerText();
    assert.doesNotMatch(said, /<\/?[a-z_]+>|###| - .* - /, said);
    // The conversation just started is in the list, current, before any reload.
    const listed = page.locator("[data-conversations] a[aria-current=page]");
    assert.equal(await listed.innerText(), "How long is our runway?");
    await shot(page, "04-chat.png", true);
    // The conversation is kept: reload it, rate the answer.
    assert.match(page.url(), /\/chat\?c=cnv_/);
    await page.reload();
    assert.equal(await page.locator(".msg.assistant").count(), 1);
    await page.locator(".msg.assistant li").nth(4).waitFor(); // stored answers render as lists too
    assert.equal(await page.locator("[data-conversations] a[aria-current=page]").innerText(), "How long is our runway?");
    await page.click("[data-rating] button[data-body*=up]");
    await page.locator("[data-rating] button[aria-pressed=true]").waitFor();
    // Markup in a message is shown as text, in the question and in the answer quoting it.
    await page.fill("#message", '<img src=x onerror="window.__xss=1"> and **bold**?');
    await page.click("button[type=submit]");
    await page.locator(".msg.assistant >> nth=1").locator("strong", { hasText: "bold" }).waitFor();
    await page.locator("[data-rating] >> nth=1").waitFor();
    assert.equal(await page.locator("[data-log] img").count(), 0);
    assert.equal(await page.evaluate(() => window.__xss), undefined);
    assert.match(await page.locator(".msg.assistant >> nth=1").innerText(), /<img src=x/);
  });

  let taskUrl;
  await step("a board meeting shows three members and action items", async () => {
    const { page } = a;
    await page.goto(`${base}/board`);
    await page.fill("#agenda", "Should we raise prices by 10% in January?");
    await page.selectOption("#rounds", "2");
    await page.click("button[type=submit]");
    await page.locator("[data-done]:not(.hidden)").waitFor({ timeout: 30000 });
    assert.equal(await page.locator("[data-columns] h4", { hasText: "Round 2" }).count(), 3);
    assert.equal(await page.locator("[data-columns] section").count(), 3);
    assert.ok((await page.locator("[data-synthesis]").innerText()).length > 20);
    // Turns and the synthesis render their Markdown: lists, bold labels, no prompt text.
    assert.ok(await page.locator("[data-columns] li").count() >= 6);
    await page.locator("[data-synthesis] strong", { hasText: "Decision:" }).waitFor();
    await page.locator("[data-synthesis] li", { hasText: "CFO:" }).waitFor();
    const minutes = (await page.locator("[data-columns]").innerText()) + (await page.locator("[data-synthesis]").innerText());
    assert.doesNotMatch(minutes, /<\/?[a-z_]+>|###/, minutes);
    const review = page.locator("[data-items] a", { hasText: "Review and approve" }).first();
    await review.waitFor();
    taskUrl = await review.getAttribute("href");
    await shot(page, "05-board.png", true);
  });

  await step("a meeting's record can be rated", async () => {
    const { page } = a;
    await page.goto(`${base}/board`);
    await page.click("text=Should we raise prices by 10% in January?");
    await page.check("input[name=rating][value='4']");
    await page.click("button:has-text('Rate')");
    await page.locator("input[name=rating][value='4']:checked").waitFor();
    // The stored record renders the same Markdown (once the reload the rating causes
    // has run the page's script).
    await page.locator(".turn li").nth(5).waitFor();
    await page.locator(".turn strong", { hasText: "Next steps:" }).waitFor();
    await shot(page, "05b-meeting.png", true);
  });

  await step("approving an item runs it and the page follows it live", async () => {
    const { page } = a;
    await page.goto(`${base}/approvals`);
    await page.locator("[data-approval]").first().waitFor();
    await shot(page, "06-approvals.png", true);
    await page.goto(`${base}${taskUrl}`);
    await page.click("button:has-text('Approve')");
    await page.locator("[data-status].succeeded").waitFor({ timeout: 20000 });
    // The finished page is the server's: no Cancel button, no "Not finished".
    await page.locator("text=Not finished").waitFor({ state: "detached", timeout: 10000 });
    await page.locator("button:has-text('Cancel')").waitFor({ state: "detached", timeout: 10000 });
    await shot(page, "07-task.png", true);
  });

  await step("rejecting needs a reason, given next to the item", async () => {
    const { page } = a;
    await page.evaluate(async () => {
      const r = await fetch("/api/v1/c-suite/board-meeting", { method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json" }, body: JSON.stringify({ agenda: "Open a second office?", personas: ["ceo"] }) });
      await r.text();
    });
    await page.goto(`${base}/approvals`);
    const item = page.locator("[data-approval]").first();
    await item.locator("button:has-text('Reject')").click();
    await item.locator("[data-call-error]:not(:empty)").waitFor();
    assert.match(await item.locator("[data-call-error]").innerText(), /rationale/i);
    // That refusal (422) is the one console error this journey expects.
    assert.equal(a.problems.length, 1, a.problems.join("; "));
    a.problems.length = 0;
    await item.locator("input[name=rationale]").fill("Not this year");
    await item.locator("button:has-text('Reject')").click();
    await page.waitForFunction(() => document.querySelectorAll("[data-approval]").length === 0);
  });

  await step("the dashboard's recent tasks follow their status live", async () => {
    const { page } = a;
    await page.goto(`${base}/dashboard`);
    const id = await page.evaluate(async () => {
      const r = await fetch("/api/v1/tasks/execute", { method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ capability: "diagnostics.sleep", input: { seconds: 2, steps: 2 } }) });
      return (await r.json()).task.id;
    });
    await page.reload();
    const badge = page.locator(`[data-task-id="${id}"]`);
    assert.notEqual((await badge.innerText()).trim(), "succeeded");
    await page.locator(`[data-task-id="${id}"].succeeded`).waitFor({ timeout: 15000 });
    // Keyboard: the first Tab reaches the skip link, and focus is visible.
    await page.keyboard.press("Tab");
    assert.equal(await page.evaluate(() => document.activeElement.className), "skip");
  });

  await step("connect the OAuth provider and see it connected", async () => {
    const { page } = a;
    await page.goto(`${base}/connectors`);
    await page.click("[data-connector=acme] button:has-text('Connect')");
    await page.waitForURL(/\/connectors/);
    await page.waitForFunction(() => document.querySelector("[data-connector=acme] [data-connector-status]")?.textContent.trim() === "connected", null, { timeout: 10000 }).catch(async () => {
      await page.reload();
      await page.locator("[data-connector=acme] [data-connector-status]", { hasText: "connected" }).waitFor({ timeout: 10000 });
    });
    await shot(page, "08-connectors.png", true);
  });

  await step("import a leads CSV with a preview", async () => {
    const { page } = a;
    await page.goto(`${base}/leads`);
    await page.fill("#csv-text", "Name,Company,Email,Value\nZara Quinn,Quinn Labs,zara@quinn.example,2500\nNo Email,Bad,not-an-email,10\n");
    await page.click("[data-preview]");
    await page.locator("[data-report]", { hasText: "1 with errors" }).waitFor();
    await shot(page, "09-import-preview.png", true);
    await page.click("[data-confirm-import]");
    await page.locator(".lane[data-stage=new] .lead", { hasText: "Zara Quinn" }).waitFor({ timeout: 10000 });
    await shot(page, "10-leads.png", true);
  });

  await step("a transaction's category is changed by hand", async () => {
    const { page } = a;
    await page.goto(`${base}/books`);
    const select = page.locator("form[data-auto] select").first();
    const id = await select.getAttribute("id");
    await select.selectOption("Marketing");
    await page.waitForResponse((r) => r.url().includes("/api/v1/bookkeeping/transactions/") && r.request().method() === "PATCH");
    await page.reload();
    assert.equal(await page.locator(`#${id}`).inputValue(), "Marketing");
    await page.locator(`#${id} ~ .muted`, { hasText: "manual" }).waitFor();
  });

  await step("a campaign's page shows who it reaches", async () => {
    const { page } = a;
    await page.goto(`${base}/campaigns`);
    await page.click("a:has-text('Spring check-in (demo)')");
    await page.locator("text=Reaches").waitFor();
    assert.match(await page.locator("main").innerText(), /Reaches \d+ people now/);
    await shot(page, "12b-campaign.png", true);
  });

  await step("a document is uploaded, indexed live, searched and cited in chat", async () => {
    const { page } = a;
    await page.goto(`${base}/knowledge`);
    await page.setInputFiles("#kfile", { name: "pricing.md", mimeType: "text/markdown",
      buffer: Buffer.from("# Pricing\n\nThe Gold plan costs 49 USD a month, billed yearly.\n\n## Discounts\n\nNon-profits get 20% off the Gold plan.\n") });
    await page.click("form[data-upload] button[type=submit]");
    await page.locator("tr[data-source] [data-source-status]", { hasText: "ready" }).waitFor({ timeout: 20000 });
    assert.match(await page.locator("tr[data-source]").innerText(), /pricing\.md/);
    await page.fill("#kq", "Gold plan discount");
    await page.click("form[data-search] button[type=submit]");
    await page.locator("[data-results] li", { hasText: "pricing.md" }).first().waitFor();
    await shot(page, "17-knowledge.png", true);
    await page.goto(`${base}/chat`);
    await page.selectOption("#persona", "cfo");
    await page.fill("#message", "What does the Gold plan cost?");
    await page.click("button[type=submit]");
    const cite = page.locator(".msg.assistant a.cite").first();
    await cite.waitFor();
    await cite.click();
    await page.locator("details.sources-box[open] li.highlight", { hasText: "pricing.md" }).waitFor();
    await shot(page, "18-chat-citations.png", true);
    // Stored answers keep their sources.
    await page.reload();
    await page.locator(".msg.assistant a.cite").first().waitFor();
  });

  await step("other pages render", async () => {
    const { page } = a;
    for (const [path, file] of [["/books", "11-books.png"], ["/campaigns", "12-campaigns.png"], ["/tasks", "13-tasks.png"], ["/settings", "14-settings.png"]]) {
      const res = await page.goto(`${base}${path}`);
      assert.equal(res.status(), 200, path);
      await shot(page, file, true);
    }
    await page.emulateMedia({ colorScheme: "dark" });
    await page.goto(`${base}/dashboard`);
    await shot(page, "15-dashboard-dark.png", true);
    await page.setViewportSize({ width: 390, height: 844 });
    await shot(page, "16-dashboard-phone.png", true);
    assert.deepEqual(a.problems, [], "console errors (CSP violations or script errors)");
  });

  await step("an agent is built with its tools, edited, disabled and sits on the board", async () => {
    const { page } = a;
    await page.goto(`${base}/agents`);
    await page.fill("#ag-name", "Growth Coach");
    await page.fill("#ag-slug", "growth-coach");
    await page.fill("#ag-title", "Head of Growth");
    await page.fill("#ag-ins", "Find the cheapest experiment that could double sign-ups.");
    await page.check("[data-new-agent] input[value='leadtracker.add_lead']");
    await page.fill("#ag-temp", "0.4");
    await page.click("button:has-text('Create agent')");
    await page.locator("[data-agent=growth-coach]", { hasText: "5 tools" }).waitFor();
    await page.click("[data-agent=growth-coach] summary");
    assert.ok(await page.isChecked("[data-agent=growth-coach] input[value='leadtracker.add_lead']"));
    assert.equal(await page.inputValue("#ag-growth-coach-temp"), "0.4");
    await page.fill("#ag-growth-coach-title", "Growth Lead");
    await page.click("[data-agent=growth-coach] button:has-text('Save')");
    await page.locator("[data-agent=growth-coach]", { hasText: "Growth Lead" }).waitFor();
    await page.goto(`${base}/board`);
    await page.locator("input[name=personas][value=growth-coach]").waitFor();
    await page.goto(`${base}/agents`);
    await page.click("[data-agent=growth-coach] summary");
    await page.click("[data-agent=growth-coach] button:has-text('Disable')");
    await page.locator("[data-agent=growth-coach] .badge", { hasText: "disabled" }).waitFor();
    await page.goto(`${base}/board`);
    assert.equal(await page.locator("input[name=personas][value=growth-coach]").count(), 0);
  });

  await step("an officer's Test shows its tool call; a proposal in chat is approved inline", async () => {
    const { page } = a;
    await page.setViewportSize({ width: 1280, height: 900 });
    await page.emulateMedia({ colorScheme: "light" });
    await page.goto(`${base}/agents`);
    await page.click("[data-officer=cfo] summary");
    await page.fill("#test-cfo", "How long is our runway?");
    await page.click("[data-officer=cfo] .test-box button[type=submit]");
    await page.locator("[data-officer=cfo] details.tool.succeeded", { hasText: "bookkeeping.financial_summary" }).waitFor();
    await page.locator("[data-officer=cfo] .msg.assistant", { hasText: "What I looked up" }).waitFor();
    await shot(page, "19-agent-test.png", true);
    await page.goto(`${base}/chat`);
    await page.selectOption("#persona", "cmo");
    await page.fill("#message", "Add a lead named Zed Corp, they emailed today.");
    await page.click("button:has-text('Send')");
    const card = page.locator("details.tool.awaiting_approval", { hasText: "leadtracker.add_lead" });
    await card.waitFor();
    await page.locator(".msg.assistant", { hasText: "awaits your approval" }).waitFor();
    await shot(page, "20-chat-tool-proposal.png", true);
    await card.locator("button:has-text('Approve')").click();
    // The page reloads with the task's status now; the worker runs it.
    for (let i = 0; ; i++) {
      await page.waitForLoadState("load");
      if (await page.locator("details.tool .badge", { hasText: "approved · succeeded" }).count()) break;
      assert.ok(i < 40, "the approved task never succeeded");
      await new Promise((r) => setTimeout(r, 250));
      await page.reload();
    }
    await shot(page, "21-chat-tool-approved.png", true);
    await page.goto(`${base}/leads`);
    await page.locator(".lead", { hasText: "Zed Corp" }).first().waitFor();
    assert.deepEqual(a.problems, [], "console errors (CSP violations or script errors)");
  });

  await step("an automation raises an alert, which is acknowledged in the inbox", async () => {
    const { page } = a;
    await page.goto(`${base}/automations`);
    await page.fill("#tr-name", "Runway under six months");
    await page.selectOption("#tr-when", "metric");
    await page.fill("#tr-rule", "runway_months < 6");
    await page.selectOption("#tr-then", "alert");
    await page.selectOption("#tr-sev", "warning");
    await page.fill("#tr-title", "Runway under six months");
    await page.click("button:has-text('Create automation')");
    const trigger = page.locator("[data-trigger]", { hasText: "Runway under six months" });
    await trigger.waitFor();
    // Described in words, not as the rule that was typed.
    assert.match(await trigger.innerText(), /When: runway falls below 6/);
    assert.match(await trigger.innerText(), /Then: raise a warning alert/);
    const id = await trigger.getAttribute("data-trigger");
    const status = await page.evaluate(async (id) => {
      const r = await fetch(`/api/v1/triggers/${id}/run`, { method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" }, body: "{}" });
      await r.text();
      return r.status;
    }, id);
    assert.equal(status, 202);
    // The queue worker runs it: reload the inbox until the alert is there.
    const card = page.locator("[data-alert]", { hasText: "Runway under six months" }).first();
    for (let i = 0; ; i++) {
      await page.goto(`${base}/alerts`);
      await page.locator("[data-alerts][data-loaded]").waitFor();
      if (await card.count()) break;
      assert.ok(i < 40, "the trigger's alert never appeared");
      await new Promise((r) => setTimeout(r, 250));
    }
    await page.locator("[data-alert-count]:not(.hidden)").waitFor();
    assert.match(await card.locator(".badge").first().innerText(), /Warning/);
    await card.locator("button:has-text('Acknowledge')").click();
    await page.locator("[data-alert] [data-alert-state]", { hasText: "Acknowledged" }).first().waitFor();
    await shot(page, "22-alerts.png", true);
    // The run is in the trigger's history, linked to its alert.
    await page.goto(`${base}/automations`);
    await page.click(`[data-trigger="${id}"] details.history summary`);
    await page.locator(`[data-trigger="${id}"] [data-runs] a`, { hasText: "Alert raised" }).first().waitFor();
    await shot(page, "23-automations.png", true);
    assert.deepEqual(a.problems, [], "console errors (CSP violations or script errors)");
  });

  await step("a policy change takes effect, shows in the decisions, and is rolled back; the company exports everything", async () => {
    const { page } = a;
    await page.goto(`${base}/trust`);
    const text = await page.inputValue("#policy-text");
    assert.match(text, /default\.admins-manage/);
    await page.fill("#policy-text", `${text}\n@id("keys-need-mfa")\nforbid(principal, action == Ocsuite::Action::"api_key.create", resource) unless { context.mfa };\n`);
    await page.fill("#policy-note", "API keys need a second factor");
    await Promise.all([
      page.waitForNavigation(),
      page.click("button:has-text('Save as a new version')"),
    ]);
    await page.locator("[data-policy-versions] td", { hasText: "API keys need a second factor" }).waitFor();
    const status = await page.evaluate(async () => {
      const r = await fetch("/api/v1/api-keys", { method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ name: "ci", role: "viewer" }) });
      await r.text();
      return r.status;
    });
    assert.equal(status, 403);
    await page.goto(`${base}/trust`);
    await page.locator("[data-decisions] td", { hasText: "keys-need-mfa" }).first().waitFor();
    // A bad policy is refused with where the problem is.
    await page.fill("#policy-text", "@id(\"x\")\npermit(principal, action, resource) when { resource.colour == 1 };");
    await page.click("button:has-text('Save as a new version')");
    await page.locator("[data-policy] [data-form-error], [data-policy] [data-error-for='text']", { hasText: "line 2" }).first().waitFor();
    await page.goto(`${base}/trust`);
    // The button reloads the page once the export is queued; wait for that reload.
    await Promise.all([
      page.waitForNavigation(),
      page.click("button:has-text('Start an export')"),
    ]);
    await page.locator("[data-exports] li").first().waitFor();
    for (let i = 0; ; i++) {
      await page.goto(`${base}/trust`);
      if (await page.locator("[data-exports] a", { hasText: "Download" }).count()) break;
      assert.ok(i < 40, "the export never became ready");
      await new Promise((r) => setTimeout(r, 250));
    }
    await shot(page, "29-trust.png", true);
    page.once("dialog", (d) => d.accept());
    await page.locator("[data-policy-versions] tr", { hasText: "built-in default" }).locator("button:has-text('Roll back')").click();
    await page.locator("[data-policy-versions] td", { hasText: "rollback to version 0" }).waitFor();
    // The browser logs the two refusals this step asked for (403 by the policy, 422 for
    // the bad text); nothing else.
    assert.deepEqual(a.problems.map((p) => p.match(/status of (\d+)/)?.[1]), ["403", "422"], a.problems.join("; "));
    a.problems.length = 0;
  });

  await step("retention windows are set, and erasing a person waits for a second admin", async () => {
    const { page } = a;
    await page.goto(`${base}/trust`);
    await page.fill("#ret-conv", "365");
    await page.fill("#ret-audit", "7");
    await page.click("[data-retention] button:has-text('Save')");
    // Audit details are kept at least 30 days: the field says so.
    await page.locator("[data-retention] [data-error-for='audit_details_days']", { hasText: "between 30" }).waitFor();
    await page.fill("#ret-audit", "730");
    await Promise.all([
      page.waitForNavigation(),
      page.click("[data-retention] button:has-text('Save')"),
    ]);
    assert.equal(await page.inputValue("#ret-conv"), "365");
    assert.equal(await page.inputValue("#ret-audit"), "730");
    assert.equal(await page.inputValue("#ret-events"), "", "an empty box keeps for ever");
    await page.fill("#era-email", "former.client@outside.example");
    await page.fill("#era-reason", "Asked to be forgotten (email of 3 December)");
    await Promise.all([
      page.waitForNavigation(),
      page.click("button:has-text('Ask for approval')"),
    ]);
    const item = page.locator("[data-erasures] li", { hasText: "f…@outside.example" });
    await item.waitFor();
    assert.match(await item.innerText(), /requested[\s\S]*Waiting for another admin/);
    assert.equal(await item.locator("button:has-text('Approve')").count(), 0, "the one who asked cannot approve");
    await shot(page, "30-retention-erasure.png", true);
    assert.deepEqual(a.problems.map((p) => p.match(/status of (\d+)/)?.[1]), ["422"], a.problems.join("; "));
    a.problems.length = 0;
  });

  await step("an invited member signs up through the link and joins", async () => {
    const { page } = a;
    await page.goto(`${base}/settings`);
    await page.fill("#inv-email", "member@acme.example");
    await page.click("button:has-text('Create invite link')");
    await page.waitForFunction(() => (document.querySelector("[data-invite-link]")?.textContent || "").includes("/invite/"));
    const link = await page.locator("[data-invite-link]").innerText();
    const context = await browser.newContext();
    const p = await context.newPage();
    await p.goto(link);
    await p.click("text=Sign up");
    await p.fill("#name", "Mia Member");
    await p.fill("#email", "member@acme.example");
    await p.fill("#password", "another long passphrase");
    await p.click("button[type=submit]");
    await p.waitForURL(/\/invite\//);
    await p.click("button:has-text('Accept the invitation')");
    await p.waitForURL(/\/dashboard/);
    assert.match(await p.locator("[data-company]").innerText(), /Acme Studio/);
    await shot(p, "17-member-dashboard.png", true);
    await context.close();
  });

  await step("two-factor sign-in: set up, then log in with a code", async () => {
    const { page } = a;
    await page.goto(`${base}/settings`);
    await page.fill("#mfa-pw", "correct horse battery staple");
    await page.click("button:has-text('1. Get a secret')");
    await page.waitForFunction(() => (document.querySelector("[data-totp-secret]")?.textContent || "").length >= 16);
    const secret = (await page.locator("[data-totp-secret]").innerText()).trim();
    await page.fill("#mfa-code", totp(secret));
    await page.click("button:has-text('2. Turn on')");
    await page.waitForLoadState("load");
    await page.click("header button:has-text('Log out')");
    await page.waitForURL(/\/login/);
    await page.fill("#email", "owner@acme.example");
    await page.fill("#password", "correct horse battery staple");
    await page.click("button[type=submit]");
    await page.locator("[data-form-error]:not(:empty), [data-error-for=totp]:not(:empty)").first().waitFor();
    // A code from the next window: the one used to turn MFA on may not be replayed.
    await page.fill("#totp", totp(secret, Date.now() + 30_000));
    await page.click("button[type=submit]");
    await page.waitForURL(/\/dashboard/);
  });

  await step("a second company sees none of the first one's data", async () => {
    const b = await newUser(browser, base, "owner@other.example", "Other Co");
    const { page } = b;
    await page.goto(`${base}/dashboard`);
    const body = await page.locator("main").innerText();
    assert.doesNotMatch(body, /Acme Studio|Brightline|Zara Quinn|raise prices/);
    await page.goto(`${base}/leads`);
    assert.doesNotMatch(await page.locator("main").innerText(), /Zara Quinn|Maya Patel/);
    const res = await page.goto(`${base}${taskUrl}`);
    assert.equal(res.status(), 404);
    await page.goto(`${base}/board`);
    assert.doesNotMatch(await page.locator("main").innerText(), /raise prices/);
    await b.context.close();
  });

  await step("an operator finds a company in the console, views it as support and exits", async () => {
    // The CLI makes the first super-admin, as an operator would.
    const made = spawnSync(BIN, ["admin", "create-super-admin", "--email", "root@ops.example", "--name", "Rowan Ops", "--password-stdin"],
      { env, input: "correct horse battery staple\n" });
    assert.equal(made.status, 0, String(made.stderr));
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    await page.goto(`${base}/login`);
    await page.fill("#email", "root@ops.example");
    await page.fill("#password", "correct horse battery staple");
    await page.click("button[type=submit]");
    // An operator with no company of their own lands on the console.
    await page.waitForURL(/\/admin$/);
    await page.fill("#console-q", "acme studio");
    await page.click("form[role=search] button[type=submit]");
    await page.locator("[data-companies] tr[data-company]", { hasText: "Acme Studio" }).waitFor();
    assert.match(await page.locator("[data-total]").innerText(), /1 company/);
    await shot(page, "24-console.png", true);
    await page.click("[data-companies] a:has-text('Acme Studio')");
    await page.waitForURL(/\/admin\/tenants\/ten_/);
    await page.locator("h1", { hasText: "Acme Studio" }).waitFor();
    await shot(page, "25-console-company.png", true);
    // Too short a reason is explained next to the field.
    await page.fill("#view-reason", "help");
    await page.click("form[data-view-as] button[type=submit]");
    await page.locator("form[data-view-as] [data-error-for=reason]:not(:empty)").waitFor();
    await page.fill("#view-reason", "Customer asked for help with their CSV import");
    await page.fill("#view-minutes", "20");
    await page.click("form[data-view-as] button[type=submit]");
    await page.waitForURL(/\/dashboard/);
    const banner = page.locator("[data-support-banner]");
    await banner.waitFor();
    assert.match(await banner.innerText(), /viewing Acme Studio as ocsuite support/);
    await page.goto(`${base}/leads`);
    await page.locator("[data-support-banner]").waitFor();
    await page.locator(".lane .lead", { hasText: "Zara Quinn" }).first().waitFor();
    await shot(page, "26-support-banner.png");
    await page.click("[data-support-banner] button:has-text('Exit')");
    await page.waitForURL(/\/admin$/);
    assert.equal(await page.locator("[data-support-banner]").count(), 0);
    // Exited: the company's pages are closed to the operator again.
    await page.goto(`${base}/dashboard`);
    await page.waitForURL(/\/admin$/);
    // The company's owner was told.
    await a.page.goto(`${base}/settings`);
    assert.match(await a.page.locator("main").innerText(), /ocsuite support is viewing Acme Studio/);
    await context.close();
  });

  await step("an operator invites an owner, who signs up through the link and gets the company", async () => {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    await page.goto(`${base}/login`);
    await page.fill("#email", "root@ops.example");
    await page.fill("#password", "correct horse battery staple");
    await page.click("button[type=submit]");
    await page.waitForURL(/\/admin$/);
    const created = await page.evaluate(async () => {
      const r = await fetch("/api/v1/admin/owner-invites", { method: "POST", headers: { "content-type": "application/json" },
        body: JSON.stringify({ email: "dana@bakery.example", company_name: "Dana's Bakery", plan: "pro" }) });
      return { status: r.status, body: await r.json() };
    });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    await page.reload();
    await page.locator("[data-owner-invites] tr", { hasText: "dana@bakery.example" }).waitFor();
    await context.close();
    const invitee = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const p2 = await invitee.newPage();
    await p2.goto(created.body.link.replace(/^https?:\/\/[^/]+/, base));
    assert.equal(await p2.locator("#email").inputValue(), "dana@bakery.example");
    assert.equal(await p2.locator("#email").getAttribute("readonly"), "");
    await shot(p2, "27-owner-invite.png");
    await p2.fill("#name", "Dana Baker");
    await p2.fill("#password", "correct horse battery staple");
    await p2.click("button[type=submit]");
    await p2.locator("button:has-text(\"Create Dana's Bakery\")").waitFor();
    await p2.click("button:has-text(\"Create Dana's Bakery\")");
    await p2.waitForURL(/\/dashboard/);
    assert.match(await p2.locator("[data-company]").innerText(), /Dana's Bakery/);
    await p2.goto(`${base}/settings`);
    assert.match(await p2.locator("main").innerText(), /Plan: pro/);
    await p2.locator("[data-entitlements]").waitFor();
    await shot(p2, "28-plan-usage.png", true);
    await invitee.close();
  });
} catch (e) {
  failed = true;
  console.error(e);
} finally {
  await browser.close();
  child.kill();
  idp.server.close();
  console.log(results.join("\n"));
  console.log(`whole journey: ${((Date.now() - started) / 1000).toFixed(1)} s`);
  console.log(`screenshots: ${OUT}`);
  process.exit(failed ? 1 : 0);
}
