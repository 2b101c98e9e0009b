// bench/cloudflare/augur-race.mjs: the seeds' race through Augur's HTTP API, for
// bench/cloudflare.sh part d (node drive.mjs augur-race URL TOKEN TRIALS WRITERS COG_PORT).
//
// Augur must serve a model `bench/race` with provider "cog" at http://127.0.0.1:COG_PORT; this
// file runs that model server: a fake coglet that is always READY, takes every
// PUT /predictions/{id} (202) and remembers its webhook URL, and acknowledges cancels. Per
// trial: create a prediction, wait until Augur has submitted it (it is processing), then
// WRITERS concurrent conflicting terminal requests, sent alternately (who goes first alternates
// per trial): half cancel it (POST /v1/predictions/{id}/cancel), half complete it as coglet
// would (POST its webhook URL, status succeeded, output "w<i>"). Then wait until it is settled and read it.
//
// Counted per trial: a cancel is acknowledged when its answer says "canceled"; a completion is
// acknowledged when it is the stored output (a webhook's 2xx does not say whether it applied).
// More than one winner: the stored state is succeeded although a cancel was told "canceled",
// or the output is none of the writers'. Lost acknowledged writes: those cancels. Exactly one
// terminal state each trial and 0 lost is the contract.
import http from 'node:http';

function fakeCoglet(port) {
  const webhooks = new Map();
  const waiters = new Map();
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const send = (status, body) => {
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(body));
      };
      if (req.method === 'GET' && req.url === '/health-check') {
        return send(200, { status: 'READY', setup: { started_at: 'bench-race-epoch', status: 'succeeded' } });
      }
      const put = /^\/predictions\/([^/]+)$/.exec(req.url ?? '');
      if (req.method === 'PUT' && put) {
        let body = {};
        try {
          body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        } catch {
          return send(400, { detail: 'bad json' });
        }
        const id = decodeURIComponent(put[1]);
        webhooks.set(id, body.webhook);
        waiters.get(id)?.(body.webhook);
        return send(202, { id, status: 'starting' });
      }
      if (req.method === 'POST' && /^\/predictions\/[^/]+\/cancel$/.test(req.url ?? '')) {
        return send(200, {});
      }
      return send(404, { detail: 'not found' });
    });
  });
  return new Promise((resolve, reject) => {
    server.on('error', reject);
    server.listen(port, '127.0.0.1', () =>
      resolve({
        server,
        submitted(id, ms) {
          if (webhooks.has(id)) return Promise.resolve(webhooks.get(id));
          return new Promise((ok, fail) => {
            const timer = setTimeout(() => fail(new Error(`Augur did not submit ${id} within ${ms} ms`)), ms);
            waiters.set(id, (url) => {
              clearTimeout(timer);
              ok(url);
            });
          });
        },
      }),
    );
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function augurRace({ request, expect, url, token, trials, writers, cogPort }) {
  const cog = await fakeCoglet(cogPort);
  const auth = { authorization: `Bearer ${token}` };
  const perTrial = [];
  try {
    for (let t = 0; t < trials; t++) {
      const created = expect(
        await request('POST', `${url}/v1/models/bench/race/predictions`, { input: { trial: t } }, auth),
        201,
        'create',
      ).body;
      const id = created.id;
      const webhook = await cog.submitted(id, 30000);
      // coglet's "start" webhook: the prediction is processing.
      await request('POST', webhook, { id, status: 'processing', logs: '' });
      const answers = await Promise.all(
        Array.from({ length: writers }, (_, i) => {
          const kind = (i + t) % 2 === 0 ? 'cancel' : 'complete';
          const done =
            kind === 'cancel'
              ? request('POST', `${url}/v1/predictions/${id}/cancel`, {}, auth)
              : request('POST', webhook, { id, status: 'succeeded', output: `w${i}`, logs: '', metrics: { predict_time: 0.01 } });
          return done.then(
            (res) => ({ i, kind, status: res.status, body: res.body }),
            (err) => ({ i, kind, status: 0, error: String(err) }),
          );
        }),
      );
      let final = null;
      for (let k = 0; k < 300; k++) {
        final = expect(await request('GET', `${url}/v1/predictions/${id}`, undefined, auth), 200, 'read').body;
        if (['succeeded', 'failed', 'canceled'].includes(final.status)) break;
        await sleep(100);
      }
      const cancelsTold = answers.filter((a) => a.kind === 'cancel' && a.body?.status === 'canceled').length;
      const errors = answers.filter((a) => a.status === 0 || a.status >= 500).length;
      const writerTags = answers.filter((a) => a.kind === 'complete').map((a) => `w${a.i}`);
      const outputOk = final.status !== 'succeeded' || writerTags.includes(final.output);
      const conflict = (final.status !== 'canceled' && cancelsTold > 0) || !outputOk;
      perTrial.push({
        final: final.status,
        winners: conflict ? 2 : 1,
        lost: final.status !== 'canceled' ? cancelsTold : 0,
        errors,
      });
    }
  } finally {
    cog.server.close();
  }
  const finals = {};
  for (const x of perTrial) finals[x.final] = (finals[x.final] ?? 0) + 1;
  return {
    trials,
    writers,
    trials_with_more_than_one_winner: perTrial.filter((x) => x.winners > 1).length,
    lost_total: perTrial.reduce((s, x) => s + x.lost, 0),
    errors_total: perTrial.reduce((s, x) => s + x.errors, 0),
    final_states: finals,
  };
}
