// A Pro runtime lease survives the node that meters it: three real nodes on one PostgreSQL
// database and one Redis; a lease started through node 1 (whose in-process worker it gets) is
// metered and checkpointed by node 1; node 1 is killed with SIGKILL; once the takeover delay
// and the reconnect grace have passed (a running lease's worker may reconnect to a live node,
// which would adopt the lease: `cluster-reattach.test.mjs`) another node claims the lease at the
// next epoch and — its worker having died with node 1, never to come back — settles it at node
// 1's last checkpoint with `worker_lost`, telling every participant. The
// ledger then shows the lease charged once for no more than its wall time, the rest of the hold
// refunded.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { cpSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import WebSocket from 'ws'
import * as decoding from 'lib0/decoding'
import { Cluster } from '../lib/cluster.mjs'
import { until } from '../lib/server.mjs'

const repo = join(dirname(fileURLToPath(import.meta.url)), '../../..')
const modelsDir = process.env.ATELIER_MODELS_DIR || join(repo, 'models')
process.env.ORT_DYLIB_PATH ||= join(repo, '.tools/onnxruntime/libonnxruntime.so.1.31.1')

const PRICE = 6000 // millicredits per minute: 100 per second
const HOLD = 6000 // one minute prepaid
const CREDITS = 1_000_000
const TAKEOVER_AFTER_MS = 2000
const GRACE_S = 3 // the worker heartbeat timeout: how long a running lease waits for its worker

let cluster
// Node 1's in-process worker runs the tiny denoiser only (what a lease needs to get a worker).
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
      ATELIER_WORKER_HEARTBEAT_TIMEOUT_S: String(GRACE_S)
    },
    nodeEnv: (i) => i === 1
      ? { ATELIER_IN_PROCESS_WORKER: 'on', ATELIER_MODELS_DIR: tinyModels, ATELIER_EXECUTION_PROVIDER: 'cpu' }
      : {}
  }).start()
})
after(async () => {
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

async function metric (node, name) {
  const text = await (await fetch(`${node.base}/metrics`)).text()
  const line = text.split('\n').find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`))
  return line ? Number(line.split(' ').pop()) : 0
}

test('kill -9 of the node metering a lease: another node takes it over, nothing is charged twice', async () => {
  const [n1, n2, n3] = cluster.nodes
  const owner = await n1.signup('Owner')
  const session = await n1.createSession(owner.token)
  const watchers = [watch(n2, session, owner.token), watch(n3, session, owner.token)]
  await Promise.all(watchers.map((w) => w.open))

  // The lease's wall time starts no later than the request is sent: the server starts metering
  // before it answers, so a clock started at the answer would miss up to the answer's latency.
  const startedAt = Date.now()
  const started = await json(n1, 'POST', `/sessions/${session}/runtime`, owner.token, { gpu_class: 'cpu', prepaid_minutes: 1 })
  assert.equal(started.status, 201, JSON.stringify(started.body))
  const leaseId = started.body.lease_id
  assert.equal(started.body.owner_node, 'node-1')
  assert.equal(started.body.epoch, 1)

  // Metered by node 1: running, checkpointed at least twice, seen from node 2 (the database).
  const charges = async (node) => {
    const { body } = await json(node, 'GET', '/billing/ledger?limit=50', owner.token)
    return body.entries.filter((e) => e.lease_id === leaseId && e.kind === 'charge')
  }
  await until(async () => (await charges(n2)).length >= 2, 15000, 'two checkpoints by node 1')
  const seen = await json(n2, 'GET', `/sessions/${session}/runtime`, owner.token)
  assert.equal(seen.body.lease.status, 'running', JSON.stringify(seen.body))
  assert.equal(seen.body.lease.owner_node, 'node-1')

  await n1.kill('SIGKILL')
  const killedAt = Date.now()
  const wallMs = killedAt - startedAt

  // Another node claims it at epoch 2 after the takeover delay and the reconnect grace (plus a
  // heartbeat and slack) — not before: its worker might have come back until then.
  let lease
  const waitMs = TAKEOVER_AFTER_MS + GRACE_S * 1000
  const tookMs = await until(async () => {
    lease = (await json(n2, 'GET', `/sessions/${session}/runtime`, owner.token)).body.lease
    return lease.epoch >= 2
  }, waitMs + 5000, () => `a takeover (lease ${JSON.stringify(lease)})`)
  assert.ok(Date.now() - killedAt >= waitMs - 1000, `taken over ${Date.now() - killedAt} ms after the kill, before the grace`)
  assert.ok(['node-2', 'node-3'].includes(lease.owner_node), JSON.stringify(lease))
  assert.equal(lease.epoch, 2, 'exactly one claim')
  // Its worker died with node 1: settled with a reason, as a lost worker is.
  await until(async () => {
    lease = (await json(n3, 'GET', `/sessions/${session}/runtime`, owner.token)).body.lease
    return lease.status === 'stopped'
  }, 5000, 'the settlement')
  assert.equal(lease.reason, 'worker_lost')
  console.log(`takeover ${tookMs} ms after the kill (delay ${TAKEOVER_AFTER_MS} ms + grace ${GRACE_S} s), by ${lease.owner_node}`)

  // Every participant, on both surviving nodes, is told.
  await until(() => watchers.every((w) => w.events.some((e) => e.type === 'runtime.stopped')), 5000, 'runtime.stopped on nodes 2 and 3')
  for (const w of watchers) {
    const stopped = w.events.filter((e) => e.type === 'runtime.stopped')
    assert.equal(stopped.length, 1, 'one runtime.stopped')
    assert.equal(stopped[0].reason, 'worker_lost')
    assert.equal(stopped[0].lease_id, leaseId)
    assert.equal(stopped[0].charged + stopped[0].refunded, HOLD)
  }

  // The ledger: charged + refunded == the hold, charged == what was used, used ≤ wall time,
  // no key twice, nothing held any more.
  const { body: page } = await json(n2, 'GET', '/billing/ledger?limit=50', owner.token)
  const entries = page.entries
  const charged = entries.filter((e) => e.lease_id === leaseId && e.kind === 'charge').reduce((s, e) => s - e.amount, 0)
  const usedMs = entries.filter((e) => e.lease_id === leaseId && e.kind === 'charge').reduce((s, e) => s + e.usage_ms, 0)
  assert.equal(charged, lease.charged)
  assert.equal(usedMs, lease.used_ms)
  assert.equal(charged + lease.refunded, HOLD)
  assert.equal(charged, Math.floor(PRICE * lease.used_ms / 60000))
  assert.ok(lease.used_ms > 0 && lease.used_ms <= wallMs, `used ${lease.used_ms} ms of ${wallMs} ms wall time`)
  const keys = entries.map((e) => e.idempotency_key)
  assert.equal(new Set(keys).size, keys.length, 'a ledger key twice')
  const { body: balance } = await json(n3, 'GET', '/billing/balance', owner.token)
  assert.deepEqual([balance.balance, balance.held], [CREDITS - charged, 0])

  // Exactly one node counted a takeover.
  const takeovers = (await metric(n2, 'atelier_lease_takeovers_total')) + (await metric(n3, 'atelier_lease_takeovers_total'))
  assert.equal(takeovers, 1)

  for (const w of watchers) w.ws.close()
})
