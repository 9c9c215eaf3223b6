// A running job survives the node its worker was connected to: three real nodes on one
// PostgreSQL database and one Redis, behind haproxy; a remote `atelier worker` connected
// THROUGH haproxy to one of them, which meters the session's lease (leases are placed on the
// node of their worker) and runs its long job. That node is killed with SIGKILL: the worker
// keeps running the job, reconnects through haproxy to a live node, which adopts the lease (at
// epoch 2, metered from then on: the gap is not billed) and the job; the job finishes once for
// every participant on the surviving nodes, and the ledger shows the lease charged once, for no
// more than its wall time, the rest of the hold refunded.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, execFileSync } from 'node:child_process'
import { cpSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir, homedir } from 'node:os'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import WebSocket from 'ws'
import * as decoding from 'lib0/decoding'
import { Cluster, LoadBalancer } from '../lib/cluster.mjs'
import { until } from '../lib/server.mjs'

const repo = join(dirname(fileURLToPath(import.meta.url)), '../../..')
const modelsDir = process.env.ATELIER_MODELS_DIR || join(repo, 'models')
process.env.ORT_DYLIB_PATH ||= join(repo, '.tools/onnxruntime/libonnxruntime.so.1.31.1')
const bin = process.env.ATELIER_BIN ||
  join(process.env.CARGO_TARGET_DIR || join(homedir(), '.cache/atelier/target'), 'debug/atelier')

const PRICE = 6000 // millicredits per minute: 100 per second
const HOLD = 12000 // two minutes prepaid
const CREDITS = 1_000_000
const TAKEOVER_AFTER_MS = 2000
const GRACE_S = 6 // the worker heartbeat timeout: how long a dropped worker may take to come back

let cluster, lb, worker
const tinyModels = mkdtempSync(join(tmpdir(), 'atelier-tiny-models-'))
cpSync(join(modelsDir, 'tiny-denoiser'), join(tinyModels, 'tiny-denoiser'), { recursive: true })

before(async () => {
  cluster = await new Cluster({
    nodes: 3,
    env: {
      ATELIER_GPU_PRICES: `cpu=${PRICE}`,
      ATELIER_SIGNUP_CREDITS: String(CREDITS),
      ATELIER_CHECKPOINT_INTERVAL_S: '1',
      ATELIER_LEASE_TAKEOVER_AFTER_MS: String(TAKEOVER_AFTER_MS),
      ATELIER_WORKER_HEARTBEAT_TIMEOUT_S: String(GRACE_S),
      ATELIER_LEASE_IDLE_TIMEOUT_S: '120',
      ATELIER_MODELS_DIR: tinyModels,
      ATELIER_EXECUTION_PROVIDER: 'cpu'
    }
  }).start()
  lb = await new LoadBalancer(cluster.nodes).start()
})
after(async () => {
  worker?.kill('SIGKILL')
  await lb?.stop()
  await cluster?.stop()
  rmSync(tinyModels, { recursive: true, force: true })
})

/** Studio events (type 100) a participant receives on `node`. */
function watch (node, session, token) {
  const events = []
  const ws = new WebSocket(`${node.wsUrl}/${session}?token=${token}&events=1`)
  ws.binaryType = 'nodebuffer'
  ws.on('message', (data) => {
    const d = decoding.createDecoder(new Uint8Array(data))
    if (decoding.readVarUint(d) === 100) events.push(JSON.parse(decoding.readVarString(d)))
  })
  ws.on('error', () => {})
  return { ws, events, open: new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject) }) }
}

const json = (node, method, path, token, body) => node.call(method, path, { token, body })
const admin = (...args) => execFileSync(bin, ['admin', ...args, '--database-url', cluster.databaseUrl],
  { env: { ...process.env, RUST_LOG: 'warn' } }).toString().trim()

/** Progress of the test on stderr (a hang shows where). */
const step = (what) => { if (process.env.ATELIER_TEST_STEPS) console.error(`[cluster-reattach] ${what}`) }

async function metric (node, name) {
  const text = await (await fetch(`${node.base}/metrics`)).text()
  const line = text.split('\n').find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`))
  return line ? Number(line.split(' ').pop()) : 0
}

/** `n` independent tiny denoisers, each into its own output: a job that runs a while. */
function wideGraph (n, steps, size) {
  const nodes = {}
  const edges = {}
  for (let i = 0; i < n; i++) {
    nodes[`tiny${i}`] = { type: 'tiny-denoiser', x: 0, y: i * 100, params: { steps, width: size, height: size } }
    nodes[`out${i}`] = { type: 'output', x: 200, y: i * 100, params: {} }
    edges[`e${i}`] = { source: `tiny${i}`, source_port: 'image', target: `out${i}`, target_port: 'image' }
  }
  return { nodes, edges }
}

test('kill -9 of the node that meters a running lease: another node takes it over, the job keeps running on its worker', async () => {
  const owner = await cluster.nodes[0].signup('Owner')
  const ops = await cluster.nodes[0].signup('Ops')
  admin('set-role', '--email', ops.email, '--role', 'admin')
  const token = admin('create-worker-token', '--name', 'gpu-through-lb')

  // The worker connects through haproxy: to whichever node haproxy picks.
  worker = spawn(bin, ['worker', '--server', lb.base, '--token', token, '--models-dir', tinyModels,
    '--execution-provider', 'cpu', '--gpu-class', 'cpu', '--reconnect-max-ms', '500'],
  { stdio: ['ignore', 'inherit', 'inherit'], env: { ...process.env, RUST_LOG: 'warn' } })
  let home
  await until(async () => {
    for (const node of cluster.nodes) {
      const { body } = await json(node, 'GET', '/admin/workers', ops.token)
      if (body?.workers?.length) { home = node; return true }
    }
    return false
  }, 60_000, 'the worker connected to a node')
  const survivors = cluster.nodes.filter((n) => n !== home)
  step(`worker on node-${cluster.nodes.indexOf(home) + 1}`)

  const session = await home.createSession(owner.token)
  const put = await json(home, 'PUT', `/sessions/${session}/graph`, owner.token, wideGraph(6, 16, 384))
  assert.equal(put.status, 200, JSON.stringify(put.body))
  const watchers = survivors.map((n) => watch(n, session, owner.token))
  await Promise.all(watchers.map((w) => w.open))

  // The lease is started on the worker's node, which meters it on the worker's slot.
  const startedAt = Date.now()
  const started = await json(home, 'POST', `/sessions/${session}/runtime`, owner.token, { gpu_class: 'cpu', prepaid_minutes: 2 })
  assert.equal(started.status, 201, JSON.stringify(started.body))
  const leaseId = started.body.lease_id
  let lease
  await until(async () => {
    lease = (await json(home, 'GET', `/sessions/${session}/runtime`, owner.token)).body.lease
    return lease.status === 'running'
  }, 30_000, 'the lease on the worker')
  assert.equal(lease.epoch, 1)
  const firstWorker = lease.worker_id
  step('lease running')

  const submitted = await json(home, 'POST', `/sessions/${session}/jobs`, owner.token, {})
  assert.equal(submitted.status, 201, JSON.stringify(submitted.body))
  const jobId = submitted.body.id
  const of = (w, type) => w.events.filter((e) => e.job_id === jobId && e.type === type)
  await until(() => watchers.every((w) => of(w, 'job.progress').length > 0), 60_000, 'progress on the surviving nodes')

  step('progress seen; killing the worker\'s node')
  await home.kill('SIGKILL')
  const killedAt = Date.now()

  // The worker comes back through haproxy to a live node, which adopts lease and job.
  const tookMs = await until(async () => {
    lease = (await json(survivors[0], 'GET', `/sessions/${session}/runtime`, owner.token)).body.lease
    return lease.epoch >= 2
  }, TAKEOVER_AFTER_MS + GRACE_S * 1000, () => `the adoption (lease ${JSON.stringify(lease)})`)
  assert.equal(lease.epoch, 2, 'exactly one claim')
  assert.equal(lease.status, 'running', 'adopted, not settled')
  assert.ok(survivors.some((n) => `node-${cluster.nodes.indexOf(n) + 1}` === lease.owner_node), JSON.stringify(lease))
  step('adopted')
  const adopter = cluster.nodes[Number(lease.owner_node.split('-')[1]) - 1]
  console.log(`adopted ${tookMs} ms after the kill by ${lease.owner_node}`)

  // The job keeps running on its worker and finishes once, with every output, everywhere.
  await until(() => watchers.every((w) => of(w, 'job.succeeded').length + of(w, 'job.failed').length > 0), 90_000, 'the job to end')
  for (const w of watchers) {
    assert.equal(of(w, 'job.failed').length, 0, JSON.stringify(of(w, 'job.failed')))
    const done = of(w, 'job.succeeded')
    assert.equal(done.length, 1, 'the job finished once')
    assert.equal(done[0].outputs.length, 6, JSON.stringify(done[0]))
    assert.equal(of(w, 'job.requeued').length + of(w, 'job.started').length, 1, 'started once, never again')
  }
  const { body: stored } = await json(adopter, 'GET', `/jobs/${jobId}`, owner.token)
  assert.equal(stored.status, 'succeeded', JSON.stringify(stored))
  lease = (await json(adopter, 'GET', `/sessions/${session}/runtime`, owner.token)).body.lease
  assert.equal(lease.status, 'running')
  assert.notEqual(lease.worker_id, firstWorker, 'metered on the worker\'s new connection')

  // Stopped: settled once by the adopting node.
  const stop = await json(adopter, 'DELETE', `/sessions/${session}/runtime`, owner.token)
  assert.equal(stop.status, 200, JSON.stringify(stop.body))
  const wallMs = Date.now() - startedAt
  const settled = stop.body
  assert.equal(settled.charged + settled.refunded, HOLD)
  assert.ok(settled.used_ms > 0 && settled.used_ms <= wallMs, `used ${settled.used_ms} ms of ${wallMs} ms wall time`)

  // The ledger: charged + refunded == the hold, charged == what was used, no key twice,
  // nothing held any more.
  const entries = []
  for (let before = null; ;) {
    const { body: page } = await json(adopter, 'GET', `/billing/ledger?limit=50${before ? `&before=${before}` : ''}`, owner.token)
    entries.push(...page.entries)
    if (page.next_before == null) break
    before = page.next_before
  }
  const charges = entries.filter((e) => e.lease_id === leaseId && e.kind === 'charge')
  const charged = charges.reduce((s, e) => s - e.amount, 0)
  assert.equal(charged, settled.charged)
  assert.equal(charged, Math.floor(PRICE * settled.used_ms / 60000))
  const keys = entries.map((e) => e.idempotency_key)
  assert.equal(new Set(keys).size, keys.length, 'a ledger key twice')
  const { body: balance } = await json(adopter, 'GET', '/billing/balance', owner.token)
  assert.deepEqual([balance.balance, balance.held], [CREDITS - charged, 0])
  console.log(`lease wall ${wallMs} ms, used ${settled.used_ms} ms (killed after ${killedAt - startedAt} ms)`)

  // One adoption, no takeover: nobody settled it worker_lost.
  let adoptions = 0
  let takeovers = 0
  for (const n of survivors) {
    adoptions += await metric(n, 'atelier_worker_reconnects_total')
    takeovers += await metric(n, 'atelier_lease_takeovers_total')
  }
  assert.equal(adoptions, 1)
  assert.equal(takeovers, 0)
  for (const w of watchers) {
    assert.ok(!w.events.some((e) => e.type === 'runtime.stopped' && e.reason === 'worker_lost'))
    w.ws.close()
  }
})
