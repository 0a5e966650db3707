// Drives strata's dashboard in headless Chromium (Debian's chromium through playwright-core):
// the page asks for an admin credential and refuses a user's, loads without a console error
// once admitted, every chart draws, and the numbers move after traffic is sent.
// Usage: node dashboard_check.mjs BASE_URL ADMIN_KEY USER_TOKEN [SCREENSHOT.png]
import { createRequire } from "node:module";

// playwright-core lives outside the clone (STRATA_NODE_DIR), where scripts/dashboard-check put it.
const require = createRequire((process.env.STRATA_NODE_DIR || "/var/tmp/strata-node") + "/");
const { chromium } = require("playwright-core");

const [base, adminKey, userToken, screenshot] = process.argv.slice(2);
const fail = (msg) => { console.error("FAIL: " + msg); process.exitCode = 1; };
const say = (msg) => console.log("==> " + msg);

const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: ["--no-sandbox"] });
const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
let admitted = false;
const errors = [];
page.on("console", (m) => { if (m.type() === "error" && admitted) errors.push(m.text()); });
page.on("pageerror", (e) => errors.push("page error: " + e.message));
page.on("requestfailed", (r) => errors.push("request failed: " + r.url()));

try {
  await page.goto(base + "/dashboard", { waitUntil: "load" });
  await page.waitForSelector("#login:not([hidden])", { timeout: 10000 });
  say("the page asks for a credential");
  await page.fill("#credential", userToken);
  await page.click("form#login button");
  await page.waitForFunction(() => document.getElementById("login-error").textContent.includes("not an admin"), null, { timeout: 10000 });
  say("a user's token is refused");
  admitted = true;
  await page.fill("#credential", adminKey);
  await page.click("form#login button");
  await page.waitForSelector("#board:not([hidden])", { timeout: 10000 });
  say("the operator key opens the board");

  const read = () => page.evaluate(() => ({
    requests: Number((document.getElementById("t-requests").textContent.match(/\d+/) || ["0"])[0]),
    lookups: Number((document.getElementById("t-lookups").textContent.match(/\d+/) || ["0"])[0]),
    routes: [...document.querySelectorAll("#routes tbody tr td:first-child")].map((td) => td.textContent),
    points: Object.fromEntries([...document.querySelectorAll("canvas")].map((c) => [c.id, Number(c.dataset.points || 0)])),
    alerts: document.querySelectorAll("#alerts .alert").length,
    status: document.getElementById("status").textContent,
  }));
  await page.waitForTimeout(2500);
  const before = await read();
  say(`before traffic: ${before.requests} requests, ${before.lookups} cache lookups, status ${before.status}`);

  // Traffic: a document, then searches (the first misses the cache, the rest hit it).
  const auth = { Authorization: "Bearer " + adminKey, "content-type": "application/json" };
  const up = await fetch(base + "/v1/documents", { method: "POST", headers: auth,
    body: JSON.stringify({ text: "# Dashboards\n\nA dashboard shows throughput, latency and cache hit ratios.", media_type: "text/markdown", title: "dash" }) });
  if (up.status !== 202) fail("upload answered " + up.status);
  for (let i = 0; i < 40; i++) {
    const r = await fetch(base + "/v1/search", { method: "POST", headers: auth, body: JSON.stringify({ query: "what does a dashboard show? " + (i % 4), k: 3 }) });
    if (r.status !== 200) fail("search answered " + r.status);
    await r.arrayBuffer();
  }
  await page.waitForTimeout(3000);
  const after = await read();
  say(`after traffic: ${after.requests} requests, ${after.lookups} cache lookups, routes ${after.routes.slice(0, 4).join(", ")}`);
  if (!(after.requests >= before.requests + 41)) fail(`request count did not move: ${before.requests} -> ${after.requests}`);
  if (!(after.lookups > before.lookups)) fail(`cache lookups did not move: ${before.lookups} -> ${after.lookups}`);
  if (!after.routes.includes("/v1/search")) fail("the routes table does not list /v1/search");
  for (const [id, n] of Object.entries(after.points)) {
    if (!(n > 0)) fail(`chart ${id} drew nothing`);
  }
  say(`every chart drew: ${JSON.stringify(after.points)}`);
  if (after.alerts !== 7) fail(`${after.alerts} alert flags on the page, expected 7`);
  if (screenshot) {
    // A minute of varied traffic first, so the picture shows history rather than a blip.
    const until = Date.now() + 60000;
    for (let i = 0; Date.now() < until; i++) {
      const q = i % 7 === 0 ? "fresh question " + i : "what does a dashboard show? " + (i % 4);
      const r = await fetch(base + "/v1/search", { method: "POST", headers: auth, body: JSON.stringify({ query: q, k: 3 }) });
      await r.arrayBuffer();
      await new Promise((ok) => setTimeout(ok, 20 + 80 * Math.abs(Math.sin(i / 40))));
    }
    await page.screenshot({ path: screenshot, fullPage: false });
    say("screenshot: " + screenshot);
  }
} catch (e) {
  fail(e.stack || String(e));
} finally {
  await browser.close();
}
if (errors.length) fail("console errors: " + errors.join(" | "));
if (!process.exitCode) say("the dashboard works in Chromium");
