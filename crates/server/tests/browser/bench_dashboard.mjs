// The dashboard with many stored predictions: seeds AUGUR_BENCH_SEED `augur/echo` predictions
// (default 2,000) through the API, plus one `augur/demo-image` prediction (the oldest, so the
// detail page's record is deep in the store), then measures, AUGUR_BENCH_RUNS times each
// (default 5), the time to first render in Chromium of:
//   - `/` (the predictions list) for the seeded account: navigation until the first row shows;
//   - `/` for the admin (every account's predictions);
//   - `/predictions/{id}` (the detail page) until its picture has loaded;
//   - `/?model=augur/demo-image` (the model filter's worst case: one match behind all others);
// and the server time of the API request behind each (the browser's request start to
// response start, i.e. time to first byte on loopback). Prints one `bench dashboard {json}`
// line with the medians, and fails if a page takes longer than AUGUR_BENCH_MAX_RENDER_MS
// (default 10,000) to render.

import { Api, assert, BASE, scenario, screenshot, signIn, unique } from './lib.mjs';

const SEED = Number(process.env.AUGUR_BENCH_SEED || 2000);
const RUNS = Number(process.env.AUGUR_BENCH_RUNS || 5);
const MAX_RENDER_MS = Number(process.env.AUGUR_BENCH_MAX_RENDER_MS || 10000);
const CONCURRENCY = 32;

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor((s.length - 1) / 2)] : NaN;
};
const round = (x) => Math.round(x * 10) / 10;

/** Creates `n` echo predictions as `api`, `CONCURRENCY` at a time; returns creates per second. */
async function seed(api, n) {
  const started = performance.now();
  let next = 0;
  const worker = async () => {
    for (;;) {
      const i = next++;
      if (i >= n) return;
      const r = await api.call('POST', '/v1/models/augur/echo/predictions', { input: { text: `seed ${i}` } });
      assert(r.status === 201, `seed create ${i}: ${r.status} ${JSON.stringify(r.body)}`);
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  return n / ((performance.now() - started) / 1000);
}

/** Waits until nothing is left starting or processing. */
async function settled(api) {
  const until = Date.now() + 600000;
  for (;;) {
    const a = await api.ok('GET', '/v1/predictions?status=starting&limit=1');
    const b = await api.ok('GET', '/v1/predictions?status=processing&limit=1');
    if (!a.results.length && !b.results.length) return;
    assert(Date.now() < until, 'the seeded predictions did not settle in 10 minutes');
    await new Promise((r) => setTimeout(r, 250));
  }
}

/**
 * Loads `path` RUNS times in `p`, timing navigation start to `selector` visible, and the
 * server time of the first API response whose URL contains `apiPart`.
 */
async function measure(p, path, selector, apiPart) {
  const renders = [];
  const servers = [];
  for (let i = 0; i < RUNS; i++) {
    let server = null;
    const onResponse = async (response) => {
      if (server === null && response.url().includes(apiPart) && response.request().method() === 'GET') {
        server = -1;
        await response.finished();
        const t = response.request().timing();
        server = t.responseStart - t.requestStart;
      }
    };
    p.page.on('response', onResponse);
    // From a blank page, so every run is a whole page load (module scripts revalidated).
    await p.page.goto('about:blank');
    const started = performance.now();
    await p.page.goto(BASE + path, { waitUntil: 'commit' });
    await p.page.locator(selector).first().waitFor({ state: 'visible', timeout: 60000 });
    renders.push(performance.now() - started);
    for (let w = 0; w < 50 && (server === null || server === -1); w++) await new Promise((r) => setTimeout(r, 20));
    p.page.off('response', onResponse);
    if (server !== null && server >= 0) servers.push(server);
  }
  return { render_ms: round(median(renders)), render_max_ms: round(Math.max(...renders)), api_server_ms: round(median(servers)) };
}

/** The median time of `n` direct API calls (the client's view, on loopback). */
async function direct(api, path, n = 20) {
  const times = [];
  for (let i = 0; i < n; i++) times.push((await api.call('GET', path)).ms);
  return round(median(times));
}

await scenario('bench_dashboard', async (t) => {
  const user = await t.api.account(unique('bench'), 0);
  const target = await user.api.predict('augur/demo-image', { prompt: 'benchmark', width: 64, height: 64, steps: 1, step_ms: 0 });
  await user.api.waitFor(target.id);
  const rate = await seed(user.api, SEED);
  await settled(t.api);
  const stored = SEED + 1;

  const p = await t.openPage();
  await signIn(p, user.token);
  const list = await measure(p, '/', 'table.predictions tbody tr', '/v1/predictions?');
  await screenshot(p.page, `bench-list-${stored}`);
  const detail = await measure(p, `/predictions/${target.id}`, '.output-media img', `/v1/predictions/${target.id}`);
  await screenshot(p.page, `bench-detail-${stored}`);
  const filtered = await measure(p, '/?model=augur/demo-image', 'table.predictions tbody tr, .pager, .empty', '/v1/predictions?');

  const admin = await t.openPage();
  await signIn(admin, t.api.token);
  const adminList = await measure(admin, '/', 'table.predictions tbody tr', '/v1/predictions?');

  const result = {
    stored,
    seed_creates_per_s: Math.round(rate),
    list,
    admin_list: adminList,
    detail,
    model_filter: filtered,
    direct_api_ms: {
      list_50: await direct(user.api, '/v1/predictions?limit=50'),
      admin_list_50: await direct(t.api, '/v1/predictions?limit=50'),
      get_one: await direct(user.api, `/v1/predictions/${target.id}`),
      model_filter_50: await direct(user.api, '/v1/predictions?limit=50&model=augur/demo-image'),
    },
  };
  console.log(`bench dashboard ${JSON.stringify(result)}`);
  for (const [name, m] of Object.entries({ list, admin_list: adminList, detail, model_filter: filtered })) {
    assert(m.render_max_ms < MAX_RENDER_MS, `${name} took ${m.render_max_ms} ms to render (limit ${MAX_RENDER_MS})`);
  }
}, { timeoutMs: 1800000 });
