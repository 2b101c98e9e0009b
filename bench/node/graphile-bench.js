// graphile-worker reference for bench/shared-lifecycles.sh: the bulk rate, i.e. completed jobs
// per second when N jobs were enqueued in bulk first, on a given PostgreSQL database.
//
//   node graphile-bench.js CONNECTION_STRING N [CONCURRENCY=64] [MODE=batched|default]
//
// Migrates graphile-worker's schema, enqueues N jobs of a no-op task with WorkerUtils.addJobs
// (graphile_worker.add_jobs, 10,000 per call), then starts a runner with concurrency 64 and
// counts "job:success" events; jobs/s is measured from the runner's start to the N-th
// success. Then checks that no job is left in graphile_worker's job table (it deletes
// completed jobs) and prints one line "GRAPHILEJSON {...}".
// MODE=batched (default) uses the settings of graphile-worker's own performance page
// (https://worker.graphile.org/docs/performance): localQueue.size 500, completeJobBatchDelay 0,
// failJobBatchDelay 0, with maxPoolSize concurrency + 2; MODE=default uses the library's
// defaults for those (no local queue, one completion per job; maxPoolSize concurrency + 2,
// as its docs recommend). Success logging is off (NO_LOG_SUCCESS=1), as on that page.
"use strict";

process.env.NO_LOG_SUCCESS = "1";
const { run, makeWorkerUtils, Logger } = require("graphile-worker");
const { Pool } = require("pg");

const [connectionString, nArg, concurrencyArg, modeArg] = process.argv.slice(2);
const n = Number(nArg);
const concurrency = Number(concurrencyArg || 64);
const mode = modeArg || "batched";
if (!connectionString || !n || !["batched", "default"].includes(mode)) {
  console.error("usage: node graphile-bench.js CONNECTION_STRING N [CONCURRENCY] [batched|default]");
  process.exit(2);
}
const logger = new Logger(() => (level, message) => {
  if (level === "error" || level === "warning") console.error(`${level}: ${message}`);
});

async function main() {
  const utils = await makeWorkerUtils({ connectionString, logger });
  await utils.migrate();
  const enqueueStart = process.hrtime.bigint();
  const chunk = 10000;
  for (let added = 0; added < n; ) {
    const size = Math.min(chunk, n - added);
    const specs = [];
    for (let i = 0; i < size; i++) {
      specs.push({ identifier: "noop", payload: { text: "hello from the benchmark", i: added + i } });
    }
    await utils.addJobs(specs);
    added += size;
  }
  const enqueueSeconds = Number(process.hrtime.bigint() - enqueueStart) / 1e9;
  await utils.release();

  const worker =
    mode === "batched"
      ? { localQueue: { size: 500 }, completeJobBatchDelay: 0, failJobBatchDelay: 0 }
      : {};
  let succeeded = 0;
  let failed = 0;
  let done;
  const finished = new Promise((resolve) => (done = resolve));
  const start = process.hrtime.bigint();
  const runner = await run({
    connectionString,
    concurrency,
    maxPoolSize: concurrency + 2,
    noHandleSignals: true,
    pollInterval: 1000,
    logger,
    taskList: { noop: async () => {} },
    preset: { worker },
  });
  runner.events.on("job:success", () => {
    if (++succeeded === n) done(process.hrtime.bigint());
  });
  runner.events.on("job:failed", () => failed++);
  const end = await finished;
  const seconds = Number(end - start) / 1e9;
  await runner.stop();

  const pool = new Pool({ connectionString, max: 1 });
  // Batched completions may still be in flight when the N-th success fires; wait for them.
  let left = -1;
  for (let i = 0; i < 100; i++) {
    left = Number((await pool.query("SELECT count(*) AS c FROM graphile_worker._private_jobs")).rows[0].c);
    if (left === 0) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  await pool.end();
  const ok = left === 0 && failed === 0;
  console.log(
    `GRAPHILEJSON ${JSON.stringify({
      jobs: n,
      mode,
      concurrency,
      enqueue_s: enqueueSeconds,
      enqueued_per_s: n / enqueueSeconds,
      seconds,
      jobs_per_s: n / seconds,
      left,
      failed,
      ok,
      cpu_s: (process.cpuUsage().user + process.cpuUsage().system) / 1e6,
    })}`,
  );
  process.exit(ok ? 0 : 1);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
