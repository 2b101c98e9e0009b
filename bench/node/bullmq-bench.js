// BullMQ reference for bench/shared-lifecycles.sh: completed jobs per second for jobs that
// report progress twice, on a given Redis.
//
//   node bullmq-bench.js work    PORT QUEUE N [CONCURRENCY=64]
//   node bullmq-bench.js produce PORT QUEUE N [BULK=1000]
//
// `work` starts one Worker (concurrency 64 by default) whose processor calls
// job.updateProgress twice and returns; it prints "READY" once connected, then, when it has
// seen N "completed" events, one line "BULLMQJSON {...}" with jobs/s measured from the moment
// the first job became active to the N-th completion, checks with the Queue's job counts that
// N jobs are completed and none failed, and exits. `produce` adds N jobs with Queue.addBulk in
// batches of BULK (default 1000) as fast as Redis takes them, and prints "PRODUCEDJSON {...}".
// Run in two processes (the shell script starts `work`, waits for READY, starts `produce`), so
// that producing and processing overlap, as with Augur, where creates and runs overlap.
// Jobs keep BullMQ's defaults (completed jobs are kept, as Augur keeps predictions).
"use strict";

const { Queue, Worker } = require("bullmq");

const [mode, portArg, queueName, nArg, extraArg] = process.argv.slice(2);
const port = Number(portArg);
const n = Number(nArg);
if (!mode || !port || !queueName || !n) {
  console.error("usage: node bullmq-bench.js work|produce PORT QUEUE N [CONCURRENCY|BULK]");
  process.exit(2);
}
const connection = { host: "127.0.0.1", port, maxRetriesPerRequest: null };
// CPU seconds (user + system) this process has used so far.
const cpuSeconds = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};

async function produce() {
  const bulk = Number(extraArg || 1000);
  const queue = new Queue(queueName, { connection });
  const start = process.hrtime.bigint();
  for (let added = 0; added < n; ) {
    const size = Math.min(bulk, n - added);
    const jobs = [];
    for (let i = 0; i < size; i++) {
      jobs.push({ name: "echo", data: { text: "hello from the benchmark", i: added + i } });
    }
    await queue.addBulk(jobs);
    added += size;
  }
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  console.log(`PRODUCEDJSON ${JSON.stringify({ jobs: n, seconds, added_per_s: n / seconds, cpu_s: cpuSeconds() })}`);
  await queue.close();
}

async function work() {
  const concurrency = Number(extraArg || 64);
  let first = null;
  let completed = 0;
  let failed = 0;
  let done;
  const finished = new Promise((resolve) => (done = resolve));
  const worker = new Worker(
    queueName,
    async (job) => {
      if (first === null) first = process.hrtime.bigint();
      await job.updateProgress(50);
      await job.updateProgress(100);
      return { ok: true };
    },
    { connection, concurrency },
  );
  worker.on("completed", () => {
    if (++completed === n) done(process.hrtime.bigint());
  });
  worker.on("failed", (_job, err) => {
    failed++;
    if (failed <= 3) console.error("job failed:", err && err.message);
  });
  worker.on("error", (err) => console.error("worker error:", err && err.message));
  await worker.waitUntilReady();
  console.log("READY");
  const end = await finished;
  const seconds = Number(end - first) / 1e9;
  await worker.close();
  const queue = new Queue(queueName, { connection });
  const counts = await queue.getJobCounts("completed", "failed", "active", "wait");
  await queue.close();
  const ok = counts.completed === n && counts.failed === 0 && failed === 0;
  console.log(
    `BULLMQJSON ${JSON.stringify({ jobs: n, seconds, jobs_per_s: n / seconds, concurrency, counts, ok, cpu_s: cpuSeconds() })}`,
  );
  process.exit(ok ? 0 : 1);
}

(mode === "work" ? work() : mode === "produce" ? produce() : Promise.reject(new Error(`unknown mode ${mode}`)))
  .catch((err) => {
    console.error(err);
    process.exit(1);
  });
