// Job benchmarks through a cluster of real nodes (issue 12): real `atelier serve` nodes on a
// fresh PostgreSQL database and a redis-server of their own (tests/node/lib/cluster.mjs), real
// `atelier worker` processes (one slot each, the tiny denoiser only, the CPU provider, one ONNX
// Runtime thread), every job under a Pro runtime lease on its lease's slot, timed by a
// participant's WebSocket events:
//   1. submit → `job.started`, p50/p99, sequential submits: (a) on one node whose worker holds the
//      lease; (b) across nodes: submitted on node 1, the lease's worker connected to node 2;
//   2. jobs/s, closed loop: one session, lease and slot per worker, each session submitting its
//      next job as soon as its last one ended: 1 node × 4 workers vs 2 nodes × 4 workers, submits on the lease's node or
//      spread over both nodes; with p50/p99 submit → end.
// Each case is a function that answers either its figures or why this build cannot run it (a
// lease that never gets a worker of another node, a submit another node refuses), so the same
// script runs against `ATELIER_BIN` of any build. Prints markdown tables on stdout, progress on
// stderr.
//
//   ATELIER_BIN=…/release/atelier node bench/cluster-jobs-bench.mjs
//   BENCH_SAMPLES (200), BENCH_WARMUP (20), BENCH_THROUGHPUT_S (20), BENCH_THROUGHPUT_WARMUP_S (5),
//   BENCH_IN_FLIGHT (1 or 2 jobs per session at once in the throughput cases),
//   BENCH_CROSS_NODE_TIMEOUT_S (15): how long a cross-node lease or job may wait before the row
//   says "n/a", BENCH_CASES (all; comma-separated of: latency-local, latency-cross,
//   throughput-1, throughput-1x8, throughput-2, throughput-2-spread), BENCH_JSON (a file for every sample).
import { spawn, execFileSync } from 'node:child_process'
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { cpus, loadavg, tmpdir, homedir } from 'node:os'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import WebSocket from 'ws'
import * as decoding from 'lib0/decoding'
import { Cluster } from '../lib/cluster.mjs'

const repo = join(dirname(fileURLToPath(import.meta.url)), '../../..')
process.env.ORT_DYLIB_PATH ||= join(repo, '.tools/onnxruntime/libonnxruntime.so.1.31.1')
const BIN = process.env.ATELIER_BIN ||
  join(process.env.CARGO_TARGET_DIR || join(homedir(), '.cache/atelier/target'), 'debug/atelier')
const modelsDir = process.env.ATELIER_MODELS_DIR || join(repo, 'models')

const num = (name, fallback) => {
  const v = Number(process.env[name] ?? fallback)
  if (!Number.isFinite(v) || v < 0) throw new Error(`${name} must be a non-negative number`)
  return v
}
const SAMPLES = Math.max(1, num('BENCH_SAMPLES', 200))
const WARMUP = num('BENCH_WARMUP', 20)
const THROUGHPUT_MS = Math.max(1, num('BENCH_THROUGHPUT_S', 20)) * 1000
const THROUGHPUT_WARMUP_MS = num('BENCH_THROUGHPUT_WARMUP_S', 5) * 1000
// Jobs each session keeps submitted at once in the throughput cases: 1 leaves its slot idle from
// a job's end to the next submit's assignment; 2 keeps one queued behind the running one.
// (Within the server's per-account limits: ATELIER_MAX_RUNNING_JOBS 2, _QUEUED_JOBS 10.)
const IN_FLIGHT = Math.min(2, Math.max(1, Math.floor(num('BENCH_IN_FLIGHT', 1))))
const CROSS_NODE_TIMEOUT_MS = num('BENCH_CROSS_NODE_TIMEOUT_S', 15) * 1000
const ALL_CASES = ['latency-local', 'latency-cross', 'throughput-1', 'throughput-1x8', 'throughput-2', 'throughput-2-spread']
const CASES = (process.env.BENCH_CASES || ALL_CASES.join(',')).split(',').map((s) => s.trim()).filter(Boolean)
for (const c of CASES) if (!ALL_CASES.includes(c)) throw new Error(`unknown case ${c} (known: ${ALL_CASES.join(', ')})`)
/** A local lease gets its worker within this (workers start ONNX Runtime and connect first). */
const LOCAL_LEASE_TIMEOUT_MS = 60_000
/** One tiny job, even on a debug build with every core busy. */
const JOB_TIMEOUT_MS = 60_000
const WORKERS_PER_NODE = 4
const PREPAID_MINUTES = 30

const log = (...args) => console.error('[cluster-jobs-bench]', ...args)
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
/** Nearest-rank percentile (the jobs bench's). */
const pct = (xs, p) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor(p / 100 * s.length))] }
const ms = (x) => x.toFixed(1)

/** Says a case cannot run on this build: the table shows `reason` in its row. */
class NotSupported extends Error {}

/** Polls `predicate` every 10 ms; false after `ms` instead of throwing (callers decide). */
async function waitFor (predicate, ms) {
  const deadline = Date.now() + ms
  while (Date.now() < deadline) {
    if (await predicate()) return true
    await sleep(10)
  }
  return false
}

/** CPU seconds `pids` have used (user + system, from /proc/<pid>/stat), and the machine's busy
 *  and total CPU seconds (from /proc/stat): what the throughput window cost, and where. */
const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100
function processCpu (pids) {
  let ticks = 0
  for (const pid of pids) {
    try {
      // The command name may hold spaces: the fields that follow start after its ')'.
      const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(')').pop().trim().split(' ')
      ticks += Number(fields[11]) + Number(fields[12]) // utime, stime
    } catch {} // exited
  }
  return ticks / CLK_TCK
}
function machineCpu () {
  const [, ...f] = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/)
  const v = f.map(Number)
  const total = v.slice(0, 8).reduce((a, b) => a + b, 0)
  return { busy: (total - v[3] - v[4]) / CLK_TCK, total: total / CLK_TCK } // minus idle, iowait
}
function cpuSample (ctx) {
  return {
    nodes: processCpu(ctx.cluster.nodes.map((n) => n.proc.pid)),
    workers: processCpu(ctx.workers.procs.map((p) => p.pid)),
    bench: (({ user, system }) => (user + system) / 1e6)(process.cpuUsage()),
    machine: machineCpu(),
    at: performance.now()
  }
}
/** CPU use between two samples, in % of one core (nodes, workers, this load generator) and %
 *  of the machine (everything: PostgreSQL, Redis and any neighbour too). */
function cpuUse (a, b) {
  const wall = (b.at - a.at) / 1000
  return {
    nodes: 100 * (b.nodes - a.nodes) / wall,
    workers: 100 * (b.workers - a.workers) / wall,
    bench: 100 * (b.bench - a.bench) / wall,
    machine: 100 * (b.machine.busy - a.machine.busy) / (b.machine.total - a.machine.total)
  }
}

// The tiny denoiser, 1 step at 8×8, into an output: the smallest job that still goes through a
// worker, so the server path (queue, board, relay, events) dominates the time measured.
const GRAPH = {
  nodes: {
    tiny: { type: 'tiny-denoiser', x: 0, y: 0, params: { steps: 1, width: 8, height: 8 } },
    out: { type: 'output', x: 200, y: 0, params: {} }
  },
  edges: { e1: { source: 'tiny', source_port: 'image', target: 'out', target_port: 'image' } }
}
// `from` runs the node again: without it the node cache would answer and no worker would run.
const JOB = { from: 'tiny' }

/** A models directory with the tiny denoiser only: workers load nothing else. */
function tinyModelsDir () {
  const dir = mkdtempSync(join(tmpdir(), 'atelier-bench-tiny-'))
  cpSync(join(modelsDir, 'tiny-denoiser'), join(dir, 'tiny-denoiser'), { recursive: true })
  return dir
}

/** `atelier worker` processes (each one slot) connected to the nodes they are given. */
class Workers {
  constructor (cluster, models) { this.cluster = cluster; this.models = models; this.procs = []; this.token = null }

  start (node, name) {
    this.token ||= execFileSync(BIN, ['admin', 'create-worker-token', '--database-url', this.cluster.databaseUrl, '--name', 'bench'],
      { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim()
    const env = { PATH: process.env.PATH, RUST_LOG: 'warn', ORT_DYLIB_PATH: process.env.ORT_DYLIB_PATH }
    const proc = spawn(BIN, ['worker', '--server', node.base, '--token', this.token, '--name', name,
      '--slots', '1', '--gpu-class', 'cpu', '--execution-provider', 'cpu', '--intra-threads', '1',
      '--models-dir', this.models], { env, stdio: ['ignore', 'ignore', 'inherit'] })
    proc.on('exit', (code, signal) => { if (!this.stopping) log(`worker ${name} exited (${code ?? signal})`) })
    this.procs.push(proc)
  }

  async stop () {
    this.stopping = true
    await Promise.all(this.procs.filter((p) => p.exitCode === null && p.signalCode === null).map((p) => {
      const exited = new Promise((resolve) => p.once('exit', resolve))
      p.kill('SIGKILL')
      return exited
    }))
  }
}

/** A cluster of `nodes` nodes on the tiny model, every node without an in-process worker. */
async function startCluster (nodes, models) {
  return new Cluster({
    nodes,
    env: {
      ATELIER_MODELS_DIR: models,
      ATELIER_EXECUTION_PROVIDER: 'cpu',
      ATELIER_SIGNUP_CREDITS: '100000000',
      ATELIER_GPU_PRICES: 'cpu=100',
      ATELIER_PREVIEW_MIN_INTERVAL_MS: '0',
      ATELIER_LEASE_IDLE_TIMEOUT_S: '3600'
    }
  }).start()
}

/** A participant's studio events (type 100) on `node`: each job's first arrival of each event
 *  type, and `waitEnd(id, ms)`, which resolves as the job's end arrives (no polling delay
 *  between a job's end and the next submit) or with false after `ms`. */
async function watchJobs (node, session, token) {
  const jobs = new Map()
  const waiters = new Map()
  const ended = (id) => {
    const row = jobs.get(id)
    return row && (row['job.succeeded'] ?? row['job.failed'] ?? row['job.cancelled'])
  }
  const ws = new WebSocket(`${node.wsUrl}/${session}?token=${token}&events=1`)
  ws.binaryType = 'nodebuffer'
  ws.on('message', (data) => {
    const t = performance.now()
    const d = decoding.createDecoder(new Uint8Array(data))
    if (decoding.readVarUint(d) !== 100) return
    const e = JSON.parse(decoding.readVarString(d))
    if (!e.job_id) return
    const row = jobs.get(e.job_id) || {}
    if (!(e.type in row)) row[e.type] = t
    if (e.type === 'job.failed' || e.type === 'job.cancelled') row.error ??= e.error || e.reason
    jobs.set(e.job_id, row)
    if (ended(e.job_id)) waiters.get(e.job_id)?.(true)
  })
  ws.on('error', () => {})
  await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject) })
  const waitEnd = (id, ms) => ended(id)
    ? Promise.resolve(true)
    : new Promise((resolve) => {
      const timer = setTimeout(() => { waiters.delete(id); resolve(false) }, ms)
      waiters.set(id, (v) => { clearTimeout(timer); waiters.delete(id); resolve(v) })
    })
  return { jobs, ended, waitEnd, close: () => ws.close() }
}

/** A session of a new account (signed up on `node`) with the tiny graph. */
async function newSession (node, name) {
  const user = await node.signup(name)
  const session = await node.createSession(user.token, name)
  const put = await node.call('PUT', `/sessions/${session}/graph`, { token: user.token, body: GRAPH })
  if (put.status !== 200) throw new Error(`graph: ${put.status} ${JSON.stringify(put.body)}`)
  return { user, session }
}

/** Starts the session's lease through `node`; resolves with the lease once it runs, or, when it
 *  has not left the line within `timeoutMs`, stops it and throws `reason` (as `NotSupported`
 *  when the lease needs another node's worker). */
async function runningLease (node, { user, session }, timeoutMs, reason, crossNode = false) {
  const res = await node.call('POST', `/sessions/${session}/runtime`, { token: user.token, body: { gpu_class: 'cpu', prepaid_minutes: PREPAID_MINUTES } })
  if (res.status !== 201) {
    const why = `${res.status} ${JSON.stringify(res.body)}`
    if (crossNode) throw new NotSupported(`n/a (no cross-node placement in this build: starting a lease on a node without a worker answered ${why})`)
    throw new Error(`runtime: ${why}`)
  }
  let lease = null
  const ran = await waitFor(async () => {
    lease = (await node.call('GET', `/sessions/${session}/runtime`, { token: user.token })).body?.lease
    return lease?.status === 'running' || lease?.status === 'stopped'
  }, timeoutMs)
  if (ran && lease.status === 'running') return lease
  await stopLease(node, { user, session })
  // A lease on a node with a free worker that does not run is a failure, not a missing feature.
  if (!ran) throw crossNode ? new NotSupported(reason) : new Error(reason)
  throw new Error(`the lease stopped before running: ${JSON.stringify(lease)}`)
}

async function stopLease (node, { user, session }) {
  await node.call('DELETE', `/sessions/${session}/runtime`, { token: user.token })
}

/** The node that meters `lease` (its `owner_node`, `node-i`), else the one it was started on. */
function leaseNode (cluster, lease, fallback) {
  const m = /^node-(\d+)$/.exec(lease.owner_node || '')
  return (m && cluster.nodes[Number(m[1]) - 1]) || fallback
}

/** Submits one job through `node`; its id, or `NotSupported` when `crossNode` and refused. */
async function submit (node, { user, session }, crossNode) {
  const res = await node.call('POST', `/sessions/${session}/jobs`, { token: user.token, body: JOB })
  if (res.status === 201) return res.body.id
  const why = `${res.status} ${res.body?.error?.code || res.body?.code || JSON.stringify(res.body)}`
  if (crossNode) throw new NotSupported(`n/a (no cross-node job routing in this build: a submit on another node than the lease's answered ${why})`)
  throw new Error(`submit: ${why}`)
}

/** Sequential submits through `submitNode`, timed by a participant on `submitNode`: after
 *  `WARMUP` discarded jobs, `SAMPLES` of submit → job.started (and → job end). */
async function sequentialLatency (submitNode, s, crossNode) {
  const watcher = await watchJobs(submitNode, s.session, s.user.token)
  try {
    const started = []; const ended = []; const answered = []; let failed = 0
    for (let i = 0; i < WARMUP + SAMPLES; i++) {
      const t0 = performance.now()
      // Only the first submit may say "not supported": a later refusal is a failure.
      const id = await submit(submitNode, s, crossNode && i === 0)
      const t201 = performance.now()
      // A cross-node job that is accepted but never starts is a build without routing too.
      const limit = crossNode && i === 0 ? CROSS_NODE_TIMEOUT_MS : JOB_TIMEOUT_MS
      if (!await watcher.waitEnd(id, limit)) {
        if (crossNode && i === 0) {
          await submitNode.call('POST', `/jobs/${id}/cancel`, { token: s.user.token })
          throw new NotSupported('n/a (no cross-node job routing in this build: the job never started)')
        }
        throw new Error(`job ${id} did not end within ${limit} ms`)
      }
      const row = watcher.jobs.get(id)
      if (!row['job.succeeded']) { failed++; log(`job ${id} did not succeed: ${row.error}`) }
      if (i < WARMUP || !row['job.started']) continue
      started.push(row['job.started'] - t0)
      ended.push(watcher.ended(id) - t0)
      answered.push(t201 - t0)
    }
    return { started, ended, answered, failed }
  } finally { watcher.close() }
}

/** 1a: the lease, its worker, the submits and the participant all on node 2. */
async function latencyLocal (ctx) {
  const [, n2] = ctx.cluster.nodes
  const s = await newSession(n2, 'Local')
  await runningLease(n2, s, LOCAL_LEASE_TIMEOUT_MS, 'the worker of node 2 never took the lease')
  try { return await sequentialLatency(n2, s, false) } finally { await stopLease(n2, s) }
}

/** 1b: the lease started through node 1, which has no worker: it must get node 2's (the only
 *  slot of the cluster); the jobs are submitted on node 1 and timed by a participant there. */
async function latencyCross (ctx) {
  const [n1, n2] = ctx.cluster.nodes
  const s = await newSession(n1, 'Cross')
  const lease = await runningLease(n1, s, CROSS_NODE_TIMEOUT_MS,
    `n/a (no cross-node placement in this build: a lease started on node 1 did not get node 2's free worker within ${CROSS_NODE_TIMEOUT_MS / 1000} s)`, true)
  try {
    if (leaseNode(ctx.cluster, lease, n1) !== n2) throw new Error(`the lease runs on ${lease.owner_node}, not node-2`)
    return await sequentialLatency(n1, s, true)
  } finally { await stopLease(n1, s) }
}

/** Every session keeps `IN_FLIGHT` jobs submitted, each loop submitting its next job as soon as
 *  its last one ended, for the warm-up and then the measured window; `route(session, k)` is the
 *  node the session's k-th job is submitted on. Counts the
 *  jobs that ended inside the window; submit → end of the jobs submitted inside it. */
async function closedLoop (ctx, sessions, route, crossNode) {
  const t0 = performance.now()
  const windowStart = t0 + THROUGHPUT_WARMUP_MS
  const windowEnd = windowStart + THROUGHPUT_MS
  const latencies = []; let done = 0; let failed = 0
  // The first failing loop stops the others (the leases are stopped right after).
  let abort = false
  const samples = []
  const timers = [windowStart, windowEnd].map((t) => setTimeout(() => samples.push(cpuSample(ctx)), t - performance.now()))
  const loops = sessions.flatMap((s) => Array.from({ length: IN_FLIGHT }, () => s))
  for (const s of sessions) s.submitted = 0
  await Promise.all(loops.map(async (s) => {
    try {
      while (!abort && performance.now() < windowEnd) {
        const k = s.submitted++
        const node = route(s, k)
        const sent = performance.now()
        // Each session's first two submits reach both nodes: only they may say "not supported".
        const id = await submit(node, s, crossNode && node !== s.node && k < 2)
        const limit = crossNode && k < 2 ? CROSS_NODE_TIMEOUT_MS : JOB_TIMEOUT_MS
        if (!await s.watcher.waitEnd(id, limit)) {
          if (crossNode && k < 2) throw new NotSupported('n/a (no cross-node job routing in this build: the job never started)')
          throw new Error(`job ${id} did not end within ${limit} ms`)
        }
        const end = s.watcher.ended(id)
        if (!s.watcher.jobs.get(id)['job.succeeded']) failed++
        if (end >= windowStart && end < windowEnd) done++
        if (sent >= windowStart && end < windowEnd) latencies.push(end - sent)
      }
    } catch (e) { abort = true; throw e }
  })).finally(() => timers.forEach(clearTimeout))
  const cpu = samples.length === 2 ? cpuUse(...samples) : null
  return { jobsPerS: done / (THROUGHPUT_MS / 1000), done, failed, latencies, cpu }
}

/** Throughput through `ctx.cluster` (all its nodes and `ctx.slots` workers, already
 *  connected): one session and lease per slot, started round-robin over the nodes. `spread`:
 *  each session's submits alternate over the nodes; else they go to the lease's node. */
async function throughput (ctx, spread) {
  const nodes = ctx.cluster.nodes
  const sessions = []
  try {
    for (let i = 0; i < ctx.slots; i++) {
      const via = nodes[i % nodes.length]
      const s = await newSession(via, `Load${i}`)
      s.via = via
      sessions.push(s)
    }
    await Promise.all(sessions.map(async (s) => {
      const lease = await runningLease(s.via, s, LOCAL_LEASE_TIMEOUT_MS, `a lease started on ${s.via.base} got no worker`)
      s.leased = true
      s.node = leaseNode(ctx.cluster, lease, s.via)
      s.watcher = await watchJobs(s.node, s.session, s.user.token)
    }))
    const route = spread
      ? (s, k) => nodes[(sessions.indexOf(s) + k) % nodes.length]
      : (s) => s.node
    return await closedLoop(ctx, sessions, route, spread)
  } finally {
    for (const s of sessions) {
      s.watcher?.close()
      if (s.leased) await stopLease(s.via, s)
    }
  }
}

/** Runs `body` on a fresh cluster of `nodes` nodes with `workersPerNode[i]` workers on node i+1. */
async function withCluster (nodes, workersPerNode, body) {
  const models = tinyModelsDir()
  let cluster; let workers
  try {
    cluster = await startCluster(nodes, models)
    workers = new Workers(cluster, models)
    cluster.nodes.forEach((node, i) => {
      for (let w = 0; w < workersPerNode[i]; w++) workers.start(node, `node${i + 1}-w${w + 1}`)
    })
    return await body({ cluster, workers, slots: workersPerNode.reduce((a, b) => a + b, 0) })
  } finally {
    await workers?.stop()
    await cluster?.stop()
    rmSync(models, { recursive: true, force: true })
  }
}

/** The case's figures, or as a string its `NotSupported` reason or its failure. */
async function attempt (name, fn) {
  if (!CASES.includes(name)) return null
  log(`${name}…`)
  const started = Date.now()
  try {
    const r = await fn()
    log(`${name}: done in ${((Date.now() - started) / 1000).toFixed(0)} s`)
    return r
  } catch (e) {
    if (e instanceof NotSupported) { log(`${name}: ${e.message}`); return e.message }
    // A failure fails the run (exit status 1), but the other cases still run and print.
    log(`${name} failed:`, e)
    process.exitCode = 1
    return `failed: ${e.message}`
  }
}

const load = loadavg().map((x) => x.toFixed(2)).join(' ')
log(`binary ${BIN}; load average ${load} on ${cpus().length} CPUs`)

// 1. Latency: 2 nodes, one worker (one slot) on node 2.
let local = null; let cross = null
if (CASES.includes('latency-local') || CASES.includes('latency-cross')) {
  await withCluster(2, [0, 1], async (ctx) => {
    local = await attempt('latency-local', () => latencyLocal(ctx))
    cross = await attempt('latency-cross', () => latencyCross(ctx))
  })
}

// 2. Throughput: 1 node × 4 workers, 1 node × 8 workers (the 2-node rows' concurrency on one
// node: what the second node changes, apart from having twice the sessions), 2 nodes × 4.
let one = null; let oneEight = null; let two = null; let twoSpread = null
if (CASES.includes('throughput-1')) {
  await withCluster(1, [WORKERS_PER_NODE], async (ctx) => {
    one = await attempt('throughput-1', () => throughput(ctx, false))
  })
}
if (CASES.includes('throughput-1x8')) {
  await withCluster(1, [2 * WORKERS_PER_NODE], async (ctx) => {
    oneEight = await attempt('throughput-1x8', () => throughput(ctx, false))
  })
}
if (CASES.includes('throughput-2') || CASES.includes('throughput-2-spread')) {
  await withCluster(2, [WORKERS_PER_NODE, WORKERS_PER_NODE], async (ctx) => {
    two = await attempt('throughput-2', () => throughput(ctx, false))
    twoSpread = await attempt('throughput-2-spread', () => throughput(ctx, true))
  })
}

const cpu = cpus().length
const na = (r) => typeof r === 'string'
if (local !== null || cross !== null) {
  console.log(`\n| submit → \`job.started\` (tiny model: 1 step, 8×8; 2 nodes, PostgreSQL + Redis; ${SAMPLES} sequential jobs after ${WARMUP} warm-up) | p50 | p99 | submit → end p50 / p99 | submit → 201 p50 / p99 |`)
  console.log('|---|---|---|---|---|')
  const row = (label, r) => {
    if (r === null) return
    if (na(r)) { console.log(`| ${label} | ${r} | | | |`); return }
    console.log(`| ${label} | ${ms(pct(r.started, 50))} ms | ${ms(pct(r.started, 99))} ms | ${ms(pct(r.ended, 50))} / ${ms(pct(r.ended, 99))} ms${r.failed ? ` (${r.failed} failed)` : ''} | ${ms(pct(r.answered, 50))} / ${ms(pct(r.answered, 99))} ms |`)
  }
  row('one node: lease, worker, submits and participant on node 2', local)
  row('across nodes: submitted and watched on node 1, the lease\'s worker on node 2', cross)
}
if (one !== null || oneEight !== null || two !== null || twoSpread !== null) {
  console.log(`\n| jobs/s (tiny model; one session, lease and worker slot per worker, ${IN_FLIGHT === 1 ? 'one job' : `${IN_FLIGHT} jobs`} in flight each; ${THROUGHPUT_MS / 1000} s after ${THROUGHPUT_WARMUP_MS / 1000} s warm-up) | jobs/s | submit → end p50 / p99 | CPU in the window: nodes / workers / load generator (% of one core); machine busy |`)
  console.log('|---|---|---|---|')
  const row = (label, r) => {
    if (r === null) return
    if (na(r)) { console.log(`| ${label} | ${r} | | |`); return }
    const c = r.cpu
    console.log(`| ${label} | **${r.jobsPerS.toFixed(1)}** (${r.done} jobs${r.failed ? `, ${r.failed} failed` : ''}) | ${ms(pct(r.latencies, 50))} / ${ms(pct(r.latencies, 99))} ms | ${c ? `${c.nodes.toFixed(0)} / ${c.workers.toFixed(0)} / ${c.bench.toFixed(0)} %; ${c.machine.toFixed(0)} %` : '—'} |`)
  }
  row(`1 node × ${WORKERS_PER_NODE} workers`, one)
  row(`1 node × ${2 * WORKERS_PER_NODE} workers (the 2-node rows' concurrency on one node)`, oneEight)
  row(`2 nodes × ${WORKERS_PER_NODE} workers, submits on the lease's node`, two)
  row(`2 nodes × ${WORKERS_PER_NODE} workers, submits spread over both nodes`, twoSpread)
  console.log(`\n${cpu} CPUs run everything: the nodes, PostgreSQL, Redis, this load generator and ` +
    `${WORKERS_PER_NODE} or ${2 * WORKERS_PER_NODE} worker processes, one ONNX Runtime thread each — ` +
    `${2 * WORKERS_PER_NODE} worker processes share ${cpu} cores. A second node adds no CPU here, so the 2-node rows measure ` +
    'what the cluster path costs, not how it scales; the tiny model keeps the workers\' share small so the server path dominates.')
}
if (process.env.BENCH_JSON) {
  writeFileSync(process.env.BENCH_JSON, JSON.stringify({ binary: BIN, cpus: cpu, load, samples: SAMPLES, warmup: WARMUP, local, cross, one, oneEight, two, twoSpread }, null, 1))
}
