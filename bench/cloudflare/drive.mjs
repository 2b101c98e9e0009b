// bench/cloudflare/drive.mjs: the load for bench/cloudflare.sh that wrk cannot make (several
// dependent requests per unit). Node's own http module, keep-alive, loopback only; no
// dependencies. Prints one JSON line starting with "DRIVEJSON ".
//
//   node drive.mjs race BASE TRIALS WRITERS
//     The seeds' race on the reference Worker (BASE: http://127.0.0.1:PORT/kv or .../do).
//     Per trial: create a prediction, move it to processing, then WRITERS concurrent checked
//     terminal transitions (POST BASE/api/predictions/{id}/status, status succeeded, failed or
//     canceled in turn, writer w0..wN). A writer "won" when it got 200 (it was told its
//     transition was applied). At the end the stored record names one writer; the others'
//     acknowledged writes are lost: lost = winners - (1 if the stored writer is a winner).
//
//   node drive.mjs lifecycles BASE CONCURRENCY SECONDS
//     Whole lifecycles on the reference, CONCURRENCY loops for SECONDS: create, update to
//     processing (checked transition), a progress update (PATCH), the terminal transition to
//     succeeded, and a read of the seeds' status route, which must say succeeded. Every
//     response is checked; a lifecycle with any unexpected answer counts as failed.
//
//   node drive.mjs lifecycles-bare URL CONCURRENCY SECONDS
//     The reference for lifecycles: the same loops, each "lifecycle" five GETs of URL (the
//     reference Worker's bare route, no storage).
//
//   node drive.mjs augur-race AUGUR_URL TOKEN TRIALS WRITERS COG_PORT
//     The seeds' race through Augur's HTTP API (bench/cloudflare.sh part d): see
//     augur-race.mjs.
import http from 'node:http';

const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });

function request(method, url, body, headers = {}) {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const req = http.request(
      url,
      {
        method,
        agent,
        headers: {
          ...(data ? { 'content-type': 'application/json', 'content-length': data.length } : {}),
          ...headers,
        },
      },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed = null;
          try {
            parsed = text ? JSON.parse(text) : null;
          } catch {
            parsed = null;
          }
          resolve({ status: res.statusCode, body: parsed, text });
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    if (data) req.write(data);
    req.end();
  });
}

function expect(res, status, what) {
  if (res.status !== status) {
    throw new Error(`${what}: expected ${status}, got ${res.status}: ${res.text.slice(0, 200)}`);
  }
  return res;
}

const TERMINAL = ['succeeded', 'failed', 'canceled'];
const runTag = `${process.pid}-${Date.now()}`;

async function seedRace(base, trials, writers) {
  const perTrial = [];
  for (let t = 0; t < trials; t++) {
    const id = `race-${runTag}-${t}`;
    expect(await request('POST', `${base}/api/predictions`, { predictionId: id, prompt: 'race' }), 201, 'create');
    expect(await request('POST', `${base}/api/predictions/${id}/status`, { status: 'processing' }), 200, 'processing');
    const answers = await Promise.all(
      Array.from({ length: writers }, (_, i) =>
        request('POST', `${base}/api/predictions/${id}/status`, { status: TERMINAL[i % 3], writer: `w${i}` }).then(
          (res) => ({ writer: `w${i}`, status: res.status }),
          (err) => ({ writer: `w${i}`, status: 0, error: String(err) }),
        ),
      ),
    );
    const winners = answers.filter((a) => a.status === 200).map((a) => a.writer);
    const refused = answers.filter((a) => a.status === 409).length;
    const errors = answers.length - winners.length - refused;
    const final = expect(await request('GET', `${base}/debug/predictions/${id}`), 200, 'final read').body;
    const kept = winners.includes(final.writer) ? 1 : 0;
    perTrial.push({ winners: winners.length, lost: winners.length - kept, refused, errors, final: final.status });
  }
  const sum = (k) => perTrial.reduce((s, x) => s + x[k], 0);
  return {
    trials,
    writers,
    trials_with_more_than_one_winner: perTrial.filter((x) => x.winners > 1).length,
    trials_with_lost_writes: perTrial.filter((x) => x.lost > 0).length,
    winners_total: sum('winners'),
    lost_total: sum('lost'),
    max_winners: Math.max(...perTrial.map((x) => x.winners)),
    errors_total: sum('errors'),
    per_trial_winners: perTrial.map((x) => x.winners),
    per_trial_lost: perTrial.map((x) => x.lost),
  };
}

function percentile(sorted, p) {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

// steps(id, worker) runs one lifecycle's requests (throws on an unexpected answer).
function seedSteps(base) {
  return async (id, worker) => {
    expect(await request('POST', `${base}/api/predictions`, { predictionId: id, prompt: 'lifecycle', model: 'seed/echo' }), 201, 'create');
    expect(await request('POST', `${base}/api/predictions/${id}/status`, { status: 'processing' }), 200, 'processing');
    expect(await request('PATCH', `${base}/api/predictions/${id}`, { estimatedTime: 1000 }), 200, 'progress');
    expect(await request('POST', `${base}/api/predictions/${id}/status`, { status: 'succeeded', imageUrl: 'https://example.invalid/x.png', writer: `w${worker}` }), 200, 'terminal');
    const read = expect(await request('GET', `${base}/api/predictions/${id}`), 200, 'read');
    if (read.body?.data?.status !== 'succeeded') throw new Error(`read: ${read.text.slice(0, 200)}`);
  };
}

// The reference for lifecycles: five GETs of the bare route (no storage).
function bareSteps(url) {
  return async () => {
    for (let i = 0; i < 5; i++) expect(await request('GET', url), 200, 'bare');
  };
}

async function lifecycles(steps, concurrency, seconds) {
  const deadline = Date.now() + seconds * 1000;
  const latencies = [];
  let ok = 0;
  let failed = 0;
  let firstError = null;
  let n = 0;
  const started = process.hrtime.bigint();
  async function loop(worker) {
    while (Date.now() < deadline) {
      const id = `life-${runTag}-${worker}-${n++}`;
      const t0 = process.hrtime.bigint();
      try {
        await steps(id, worker);
        ok++;
        latencies.push(Number(process.hrtime.bigint() - t0) / 1e6);
      } catch (err) {
        failed++;
        if (!firstError) firstError = String(err);
      }
    }
  }
  await Promise.all(Array.from({ length: concurrency }, (_, i) => loop(i)));
  const elapsed = Number(process.hrtime.bigint() - started) / 1e9;
  latencies.sort((a, b) => a - b);
  return {
    lifecycles: ok,
    failed,
    first_error: firstError,
    duration_s: Number(elapsed.toFixed(3)),
    lps: Number((ok / elapsed).toFixed(1)),
    requests_per_s: Number(((ok * 5) / elapsed).toFixed(1)),
    p50_ms: Number(percentile(latencies, 50).toFixed(3)),
    p99_ms: Number(percentile(latencies, 99).toFixed(3)),
  };
}

const [mode, ...args] = process.argv.slice(2);
let out;
if (mode === 'race') {
  out = await seedRace(args[0], Number(args[1] ?? 20), Number(args[2] ?? 50));
} else if (mode === 'lifecycles') {
  out = await lifecycles(seedSteps(args[0]), Number(args[1] ?? 64), Number(args[2] ?? 10));
} else if (mode === 'lifecycles-bare') {
  out = await lifecycles(bareSteps(args[0]), Number(args[1] ?? 64), Number(args[2] ?? 10));
} else if (mode === 'augur-race') {
  const { augurRace } = await import('./augur-race.mjs');
  out = await augurRace({
    request,
    expect,
    url: args[0],
    token: args[1],
    trials: Number(args[2] ?? 20),
    writers: Number(args[3] ?? 50),
    cogPort: Number(args[4]),
    runTag,
  });
} else {
  console.error('usage: node drive.mjs race|lifecycles|augur-race ...');
  process.exit(2);
}
console.log(`DRIVEJSON ${JSON.stringify(out)}`);
agent.destroy();
