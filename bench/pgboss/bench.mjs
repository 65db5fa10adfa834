// pg-boss side of bench/compare.sh: the phases of ocsuite-bench-tasks (bench/tasks),
// measured the same way against pg-boss on the same PostgreSQL.
//
// 1. Saturated end to end: PGBOSS_JOBS (8000) jobs sent by PGBOSS_SENDERS (32) concurrent
//    senders, each `send` one INSERT in its own transaction (no insert batching, as
//    ocsuite queues one task per HTTP request), while PGBOSS_WORKERS (16) workers fetch
//    PGBOSS_BATCH (100) jobs at a time and run a no-op handler. Jobs/s from the first
//    send to the moment the database holds every job as `completed`.
// 2. Drain: the same number sent with no worker on the queue, then the workers started:
//    jobs/s until every job is `completed`.
// 3. Paced: PGBOSS_RATE (300) jobs/s for PGBOSS_RATE_SECS (10) s, workers already
//    running; enqueue-to-start percentiles from the job table (`created_on` →
//    `started_on`), as ocsuite reads `created_at` → `started_at`.
//
// Each phase has its own queue (so its own partition of pgboss.job). The database
// (PGBOSS_DATABASE, pgboss_bench) is dropped and created by this script through
// PGBOSS_ADMIN_URL (postgres://postgres@127.0.0.1:5432/postgres), and dropped at the end
// unless PGBOSS_KEEP=1. pg-boss's pool: PGBOSS_POOL (32) connections, as the ocsuite
// bench's server pool. Polling: PGBOSS_POLL_SECONDS, by default the least pg-boss allows
// (0.5 s): a worker fetches at most once per interval, even when its last fetch was full,
// so workers × batch / interval bounds throughput and the interval bounds latency.
// PGBOSS_STAGGER=1 spreads the workers' starts over one interval (off by default).
//
// Output: a markdown table on stdout, then one line `PGBOSS_RESULT {json}` for scripts.
// Progress goes to stderr. Exit 1 on any error or when a job is not completed.

import { createRequire } from 'node:module'
import os from 'node:os'
import pg from 'pg'
import PgBoss from 'pg-boss'

const require = createRequire(import.meta.url)
const PGBOSS_VERSION = require('pg-boss/package.json').version

function envNum (name, fallback) {
  const v = process.env[name]
  if (v === undefined || v === '') return fallback
  const n = Number(v)
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name} must be a positive number, got ${JSON.stringify(v)}`)
  return n
}
function envInt (name, fallback) {
  const n = envNum(name, fallback)
  if (!Number.isInteger(n)) throw new Error(`${name} must be an integer, got ${n}`)
  return n
}

const JOBS = envInt('PGBOSS_JOBS', 8000)
const SENDERS = envInt('PGBOSS_SENDERS', 32)
const WORKERS = envInt('PGBOSS_WORKERS', 16)
const BATCH = envInt('PGBOSS_BATCH', 100)
const RATE = envInt('PGBOSS_RATE', 300)
const RATE_SECS = envInt('PGBOSS_RATE_SECS', 10)
const POOL = envInt('PGBOSS_POOL', 32)
const ADMIN_URL = process.env.PGBOSS_ADMIN_URL || 'postgres://postgres@127.0.0.1:5432/postgres'
const DATABASE = process.env.PGBOSS_DATABASE || 'pgboss_bench'
const KEEP = process.env.PGBOSS_KEEP === '1'
// Workers started one after another, not spread over the polling interval: they then
// poll in step (all at once, every interval). PGBOSS_STAGGER=1 spreads their starts
// evenly over one interval, a tuning pg-boss itself does not do; off by default.
const STAGGER = process.env.PGBOSS_STAGGER === '1'
const WAIT_LIMIT_MS = 600_000 // as ocsuite's bench: ten minutes per phase at most

// The least polling interval pg-boss accepts, from its own policy (src/attorney.js,
// MIN_POLLING_INTERVAL_MS: 500 in 10.x); the `work` call below asserts it too.
const { POLICY } = require('pg-boss/src/attorney.js')
const POLL_MIN_S = POLICY.MIN_POLLING_INTERVAL_MS / 1000
const POLL_S = envNum('PGBOSS_POLL_SECONDS', POLL_MIN_S)

if (!/^[a-z_][a-z0-9_]*$/.test(DATABASE)) throw new Error('PGBOSS_DATABASE must be a plain lower-case identifier')
const dbUrl = new URL(ADMIN_URL)
dbUrl.pathname = '/' + DATABASE
const DATABASE_URL = dbUrl.toString()

const log = (msg) => process.stderr.write(`[pgboss] ${msg}\n`)
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/** The `p`th percentile of an ascending array, as ocsuite's bench computes it (NaN when empty). */
function percentile (sorted, p) {
  if (sorted.length === 0) return NaN
  const idx = Math.round((p / 100) * (sorted.length - 1))
  return sorted[Math.min(idx, sorted.length - 1)]
}

async function admin (sql) {
  const c = new pg.Client({ connectionString: ADMIN_URL })
  await c.connect()
  try {
    return await c.query(sql)
  } finally {
    await c.end()
  }
}

let boss
let monitor
let bossErrors = 0
let handled = 0
let cleaningUp = false

async function cleanup () {
  if (cleaningUp) return
  cleaningUp = true
  try { if (boss) await boss.stop({ graceful: false, wait: true, timeout: 5000 }) } catch (e) { log(`stopping pg-boss: ${e.message}`) }
  try { if (monitor) await monitor.end() } catch {}
  if (!KEEP) {
    try { await admin(`DROP DATABASE IF EXISTS ${DATABASE} WITH (FORCE)`) } catch (e) { log(`could not drop ${DATABASE}: ${e.message}`) }
  } else {
    log(`kept database ${DATABASE}`)
  }
}

/** Jobs of `queue` in `state`, counted in the database. */
async function countState (queue, state) {
  const { rows } = await monitor.query(
    'SELECT count(*)::int AS n FROM pgboss.job WHERE name = $1 AND state = $2', [queue, state])
  return rows[0].n
}

/**
 * Waits until the database holds `n` jobs of `queue` as `completed`; returns the time it
 * saw them (ms, performance.now()). Polls every 20 ms: a count over one phase's partition
 * (at most PGBOSS_JOBS rows) costs about a millisecond.
 */
async function waitCompleted (queue, n, since) {
  for (;;) {
    const done = await countState(queue, 'completed')
    if (done >= n) return performance.now()
    if (performance.now() - since > WAIT_LIMIT_MS) {
      throw new Error(`only ${done} of ${n} jobs of ${queue} completed in ${WAIT_LIMIT_MS / 1000} s`)
    }
    await sleep(20)
  }
}

/** Sends `n` jobs to `queue` from `senders` concurrent senders, one `send` (one INSERT) at a time each. */
async function sendAll (queue, senders, n) {
  let next = 0
  const sender = async () => {
    while (next++ < n) {
      const id = await boss.send(queue, {})
      if (!id) throw new Error(`send to ${queue} returned no id`)
    }
  }
  await Promise.all(Array.from({ length: senders }, sender))
}

async function startWorkers (queue) {
  const opts = { batchSize: BATCH, pollingIntervalSeconds: POLL_S }
  for (let i = 0; i < WORKERS; i++) {
    if (STAGGER && i > 0) await sleep((POLL_S * 1000) / WORKERS)
    await boss.work(queue, opts, async (jobs) => { handled += jobs.length })
  }
}

/** Every job of `queue` completed, none failed or left: else throws. */
async function verify (queue, n) {
  const { rows } = await monitor.query(
    'SELECT state::text AS state, count(*)::int AS n FROM pgboss.job WHERE name = $1 GROUP BY state', [queue])
  const by = Object.fromEntries(rows.map((r) => [r.state, r.n]))
  const total = rows.reduce((a, r) => a + r.n, 0)
  if (total !== n || by.completed !== n) {
    throw new Error(`${queue}: expected ${n} completed jobs, found ${JSON.stringify(by)}`)
  }
}

/** Enqueue-to-start and enqueue-to-complete, in ms, from the job table, ascending. */
async function latencies (queue) {
  const { rows } = await monitor.query(
    `SELECT extract(epoch FROM started_on - created_on) * 1000 AS start_ms,
            extract(epoch FROM completed_on - created_on) * 1000 AS finish_ms
       FROM pgboss.job WHERE name = $1 AND started_on IS NOT NULL AND completed_on IS NOT NULL`, [queue])
  const toStart = rows.map((r) => Number(r.start_ms)).sort((a, b) => a - b)
  const toFinish = rows.map((r) => Number(r.finish_ms)).sort((a, b) => a - b)
  return { toStart, toFinish }
}

async function main () {
  log(`pg-boss ${PGBOSS_VERSION}, database ${DATABASE} (recreated)`)
  await admin(`DROP DATABASE IF EXISTS ${DATABASE} WITH (FORCE)`)
  await admin(`CREATE DATABASE ${DATABASE}`)

  boss = new PgBoss({ connectionString: DATABASE_URL, max: POOL })
  boss.on('error', (e) => { bossErrors++; log(`pg-boss error: ${e.message}`) })
  await boss.start()
  monitor = new pg.Client({ connectionString: DATABASE_URL, application_name: 'pgboss-bench-monitor' })
  await monitor.connect()
  const pgVersion = (await monitor.query('SHOW server_version')).rows[0].server_version
  const Q = { e2e: 'bench-e2e', drain: 'bench-drain', paced: 'bench-paced' }
  for (const q of Object.values(Q)) await boss.createQueue(q)

  // --- saturated: senders and workers at once --------------------------------------------
  log(`saturated: ${JOBS} jobs from ${SENDERS} senders, ${WORKERS} workers × batch ${BATCH}, polling ${POLL_S} s`)
  await startWorkers(Q.e2e)
  const t0 = performance.now()
  await sendAll(Q.e2e, SENDERS, JOBS)
  const sentIn = performance.now() - t0
  const t1 = await waitCompleted(Q.e2e, JOBS, t0)
  const e2eRate = JOBS / ((t1 - t0) / 1000)
  await verify(Q.e2e, JOBS)
  const sat = await latencies(Q.e2e)
  await boss.offWork(Q.e2e)

  // --- drain: a backlog sent with no worker on the queue, then the workers ---------------
  log(`drain: ${JOBS} jobs sent with no worker, then ${WORKERS} workers started`)
  await sendAll(Q.drain, SENDERS, JOBS)
  const d0 = performance.now()
  await startWorkers(Q.drain)
  const d1 = await waitCompleted(Q.drain, JOBS, d0)
  const drainRate = JOBS / ((d1 - d0) / 1000)
  await verify(Q.drain, JOBS)
  await boss.offWork(Q.drain)

  // --- paced: enqueue-to-start at a steady offered load ----------------------------------
  const totalPaced = RATE * RATE_SECS
  log(`paced: ${RATE} jobs/s for ${RATE_SECS} s (${totalPaced} jobs), workers already polling`)
  await startWorkers(Q.paced)
  await sleep(2 * POLL_S * 1000) // the workers in their steady polling loop, as ocsuite's are
  const inflight = []
  const p0 = performance.now()
  let fired = 0
  while (fired < totalPaced) {
    // Every send due by now (a late timer bursts, like tokio's MissedTickBehavior::Burst).
    const due = Math.min(totalPaced, Math.floor(((performance.now() - p0) / 1000) * RATE) + 1)
    while (fired < due) {
      inflight.push(boss.send(Q.paced, {}))
      fired++
    }
    const nextAt = p0 + (fired / RATE) * 1000
    const wait = nextAt - performance.now()
    if (wait > 0) await sleep(wait)
  }
  const ids = await Promise.all(inflight)
  const pacedSendS = (performance.now() - p0) / 1000
  if (ids.some((id) => !id)) throw new Error('a paced send returned no id')
  await waitCompleted(Q.paced, totalPaced, performance.now())
  await verify(Q.paced, totalPaced)
  const paced = (await latencies(Q.paced)).toStart
  await boss.offWork(Q.paced)

  if (bossErrors > 0) throw new Error(`pg-boss reported ${bossErrors} errors`)
  const handledTotal = handled
  if (handledTotal !== 2 * JOBS + totalPaced) {
    throw new Error(`the handlers saw ${handledTotal} jobs, expected ${2 * JOBS + totalPaced}`)
  }

  const r2 = (x) => Math.round(x * 100) / 100
  const result = {
    pgboss_version: PGBOSS_VERSION,
    postgres: pgVersion,
    node: process.version,
    cpus: os.availableParallelism ? os.availableParallelism() : os.cpus().length,
    jobs: JOBS,
    senders: SENDERS,
    workers: WORKERS,
    batch: BATCH,
    pool: POOL,
    poll_s: POLL_S,
    poll_min_s: POLL_MIN_S,
    stagger: STAGGER,
    fetch_bound_jobs_per_s: Math.round(WORKERS * BATCH / POLL_S),
    e2e_jobs_per_s: Math.round(e2eRate),
    send_per_s: Math.round(JOBS / (sentIn / 1000)),
    drain_jobs_per_s: Math.round(drainRate),
    saturated_start_p99_ms: r2(percentile(sat.toStart, 99)),
    saturated_finish_p99_ms: r2(percentile(sat.toFinish, 99)),
    rate: RATE,
    rate_secs: RATE_SECS,
    paced_send_s: r2(pacedSendS),
    paced_p50_ms: r2(percentile(paced, 50)),
    paced_p99_ms: r2(percentile(paced, 99))
  }

  const f = (x, d = 0) => Number.isFinite(x) ? x.toFixed(d) : 'n/a'
  const rows = [
    ['jobs/s end to end (first send → last completed)', f(e2eRate)],
    ['send rate (sends/s, during end to end)', f(JOBS / (sentIn / 1000))],
    ['drain jobs/s (fetch+run+complete)', f(drainRate)],
    ['enqueue-to-start p99 ms, saturated', f(percentile(sat.toStart, 99), 2)],
    [`enqueue-to-start p50 ms @ ${RATE}/s`, f(percentile(paced, 50), 2)],
    [`enqueue-to-start p99 ms @ ${RATE}/s`, f(percentile(paced, 99), 2)],
    ['enqueue-to-complete p99 ms, saturated', f(percentile(sat.toFinish, 99), 2)]
  ]
  console.log()
  console.log(`pg-boss ${PGBOSS_VERSION} bench: PostgreSQL ${pgVersion}, node ${process.version}, ${result.cpus} CPUs, ` +
    `${JOBS} jobs, ${SENDERS} senders, ${WORKERS} workers × batch ${BATCH}, polling ${POLL_S} s (min ${POLL_MIN_S} s)${STAGGER ? ', staggered' : ''}, pool ${POOL}`)
  console.log()
  console.log('| measure | value |')
  console.log('| --- | ---: |')
  for (const [k, v] of rows) console.log(`| ${k} | ${v} |`)
  console.log()
  console.log(`Fetch bound: ${WORKERS} workers × ${BATCH} / ${POLL_S} s = ${result.fetch_bound_jobs_per_s} jobs/s ` +
    '(at most workers × batch jobs are fetched per polling interval: after each fetch, full or not, a worker sleeps out the rest of its interval).')
  console.log()
  console.log('PGBOSS_RESULT ' + JSON.stringify(result))
}

let failed = false
try {
  await main()
} catch (e) {
  failed = true
  log(`error: ${e.stack || e.message}`)
} finally {
  await cleanup()
}
process.exit(failed ? 1 : 0)
