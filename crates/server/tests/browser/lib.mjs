// The dashboard's browser-test harness: Playwright (npm `playwright-core`) driving Debian's
// Chromium against a real `augur serve`, axe-core for accessibility. Each scenario is a node
// script (`<scenario>.mjs`) that calls `scenario(name, fn)`; crates/server/tests/dashboard.rs
// runs it with AUGUR_URL, AUGUR_ADMIN_TOKEN and AUGUR_SCREENSHOT_DIR set, and asserts it exits 0.
//
// A page opened with `openPage` records console errors, uncaught exceptions, failed requests
// and HTTP answers >= 400, and the scenario FAILS on any of them, unless the test declared
// that answer (`t.expectStatus(404, '/v1/predictions/')`).

import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';

// The packages live in ../js (one package.json and lock file for every Node-side test).
const require = createRequire(new URL('../js/package.json', import.meta.url));
const { chromium } = require('playwright-core');
const AXE_SOURCE = fs.readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');

export const BASE = (process.env.AUGUR_URL || '').replace(/\/$/, '');
export const ADMIN_TOKEN = process.env.AUGUR_ADMIN_TOKEN || '';
export const SHOTS = process.env.AUGUR_SCREENSHOT_DIR || path.resolve('target/dashboard-screenshots');
export const CHROMIUM = process.env.AUGUR_CHROMIUM || '/usr/bin/chromium';

/** Fails the scenario with `message` unless `cond`. */
export function assert(cond, message) {
  if (!cond) throw new Error(`assertion failed: ${message}`);
}

/** Starts headless Chromium (`--no-sandbox` only when running as root, where it needs it). */
export async function launch() {
  const args = ['--disable-dev-shm-usage', '--disable-gpu'];
  if (typeof process.getuid === 'function' && process.getuid() === 0) args.push('--no-sandbox');
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args });
}

/** The JSON API as `token` (the admin token by default), with fetch. */
export class Api {
  constructor(token = ADMIN_TOKEN) { this.token = token; }

  /** `{status, body, ms}` of one call; `ms` is the server's time as the client saw it. */
  async call(method, p, body) {
    const started = performance.now();
    const response = await fetch(BASE + p, {
      method,
      headers: { Authorization: `Bearer ${this.token}`, 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    let json = null;
    try { json = text ? JSON.parse(text) : null; } catch { json = text; }
    return { status: response.status, body: json, ms: performance.now() - started };
  }

  /** Like `call`, failing unless the answer has status `want`. */
  async ok(method, p, body, want = [200, 201]) {
    const r = await this.call(method, p, body);
    const wanted = Array.isArray(want) ? want : [want];
    assert(wanted.includes(r.status), `${method} ${p}: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body;
  }

  /** Creates account `username` with `grant` credits; returns `{username, token, api}`. */
  async account(username, grant = 0) {
    await this.ok('POST', '/v1/accounts', { username }, 201);
    if (grant > 0) await this.ok('POST', `/v1/accounts/${username}/credits`, { amount: grant, reason: 'grant' }, 200);
    const { token } = await this.ok('POST', `/v1/accounts/${username}/tokens`, undefined, 201);
    return { username, token, api: new Api(token) };
  }

  /** Creates a prediction of `model` (`owner/name`) with `input`. */
  async predict(model, input, extra = {}) {
    return this.ok('POST', `/v1/models/${model}/predictions`, { input, ...extra }, [200, 201]);
  }

  /** Polls the prediction until `done(p)` holds (default: settled), up to `ms`. */
  async waitFor(id, done = (p) => ['succeeded', 'failed', 'canceled'].includes(p.status), ms = 30000) {
    const until = Date.now() + ms;
    for (;;) {
      const p = await this.ok('GET', `/v1/predictions/${id}`, undefined, 200);
      if (done(p)) return p;
      if (Date.now() > until) throw new Error(`prediction ${id} did not reach the state in ${ms} ms (is ${p.status})`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** A unique name for accounts and such in one server's store. */
export function unique(prefix) {
  return `${prefix}${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
}

/**
 * Runs a scenario: `fn(t)` with `t = {browser, api, openPage, ...}`; on failure prints why,
 * saves a screenshot of every open page (`<name>-failure-<n>.png`) and exits 1.
 */
export async function scenario(name, fn, { timeoutMs = 120000 } = {}) {
  fs.mkdirSync(SHOTS, { recursive: true });
  assert(BASE, 'AUGUR_URL is not set');
  const browser = await launch();
  const pages = [];
  const t = {
    name,
    browser,
    api: new Api(),
    /** A new page (its own context: its own sessionStorage, so its own sign-in). */
    async openPage(options = {}) {
      const wrapped = await openPage(browser, options);
      pages.push(wrapped);
      return wrapped;
    },
  };
  let failed = null;
  const timer = setTimeout(() => {
    console.error(`${name}: timed out after ${timeoutMs} ms`);
    process.exit(1);
  }, timeoutMs);
  try {
    await fn(t);
    for (const p of pages) p.check();
  } catch (e) {
    failed = e;
  }
  clearTimeout(timer);
  if (failed) {
    console.error(`${name}: FAILED: ${failed.stack || failed}`);
    for (const [i, p] of pages.entries()) {
      const problems = p.problems;
      if (problems.length) console.error(`page ${i} recorded:\n  ${problems.join('\n  ')}`);
      try {
        await p.page.screenshot({ path: path.join(SHOTS, `${name}-failure-${i}.png`), fullPage: true });
        console.error(`page ${i} at ${p.page.url()}; screenshot ${path.join(SHOTS, `${name}-failure-${i}.png`)}`);
      } catch { /* page closed */ }
    }
  }
  await browser.close();
  if (failed) process.exit(1);
  console.log(`${name}: ok`);
}

/**
 * Opens a page that records problems. Returns `{page, context, problems, expectStatus(status,
 * urlPart), check(), goto(path)}`; `check()` throws if anything unexpected was recorded.
 */
export async function openPage(browser, { viewport = { width: 1280, height: 860 }, colorScheme = 'light' } = {}) {
  const context = await browser.newContext({ baseURL: BASE, viewport, colorScheme });
  const page = await context.newPage();
  const problems = [];
  const expected = [];
  const isExpected = (status, url) => expected.some((e) => e.status === status && url.includes(e.urlPart));
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    const text = msg.text();
    const loc = msg.location() || {};
    const m = /status of (\d{3})/.exec(text);
    if (m && isExpected(Number(m[1]), loc.url || '')) return;
    problems.push(`console error: ${text}${loc.url ? ` (${loc.url})` : ''}`);
  });
  page.on('pageerror', (err) => problems.push(`uncaught exception: ${err.message}`));
  page.on('requestfailed', (request) => {
    const failure = request.failure();
    const text = failure ? failure.errorText : 'failed';
    // A page closing its own stream or fetch on navigation aborts it: not a failure.
    if (text === 'net::ERR_ABORTED') return;
    problems.push(`request failed: ${request.method()} ${request.url()}: ${text}`);
  });
  page.on('response', (response) => {
    const status = response.status();
    if (status >= 400 && !isExpected(status, response.url())) {
      problems.push(`HTTP ${status}: ${response.request().method()} ${response.url()}`);
    }
  });
  return {
    page,
    context,
    problems,
    /** Declares that an answer with `status` for a URL containing `urlPart` is expected. */
    expectStatus(status, urlPart) { expected.push({ status, urlPart }); },
    check() {
      if (problems.length) throw new Error(`the page recorded problems:\n  ${problems.join('\n  ')}`);
    },
    async goto(p) {
      await page.goto(BASE + p, { waitUntil: 'domcontentloaded' });
    },
  };
}

/** Signs in with `token` through the sign-in form, then waits for the page it leads to. */
export async function signIn(t, token, next = '/') {
  const { page } = t;
  await page.goto(`${BASE}/signin${next === '/' ? '' : `?next=${encodeURIComponent(next)}`}`);
  await page.locator('input[name="token"]').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL((url) => url.pathname !== '/signin', { timeout: 15000 });
}

/**
 * Runs axe-core on the page as it is now and fails on serious or critical violations
 * (labels, roles, names, contrast…), naming each with its elements. Returns the violations.
 */
export async function checkA11y(page, what = page.url()) {
  // Evaluated through the debugging protocol, which the page's CSP does not govern.
  await page.evaluate(AXE_SOURCE);
  const result = await page.evaluate(async () => {
    // eslint-disable-next-line no-undef
    const r = await axe.run(document, { resultTypes: ['violations'] });
    return r.violations.map((v) => ({
      id: v.id, impact: v.impact, help: v.help,
      nodes: v.nodes.slice(0, 5).map((n) => `${n.target.join(' ')}: ${n.failureSummary || ''}`.replace(/\s+/g, ' ')),
    }));
  });
  const bad = result.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  if (bad.length) {
    const text = bad.map((v) => `${v.impact} ${v.id} (${v.help}):\n    ${v.nodes.join('\n    ')}`).join('\n  ');
    throw new Error(`accessibility violations on ${what}:\n  ${text}`);
  }
  for (const v of result) console.log(`  a11y note on ${what}: ${v.impact} ${v.id} (${v.help})`);
  return result;
}

/** Saves a full-page screenshot `<name>.png` under AUGUR_SCREENSHOT_DIR. */
export async function screenshot(page, name) {
  const file = path.join(SHOTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

/** Milliseconds from navigation start until `selector` is visible (the first render). */
export async function timeToRender(page, url, selector, timeout = 30000) {
  const started = performance.now();
  await page.goto(BASE + url, { waitUntil: 'commit' });
  await page.locator(selector).first().waitFor({ state: 'visible', timeout });
  return performance.now() - started;
}
