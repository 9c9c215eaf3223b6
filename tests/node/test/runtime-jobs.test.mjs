// Pro runtime with real jobs: stopping a lease interrupts its job; running out of prepaid time
// stops the lease, interrupts the job and tells every participant.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import WebSocket from 'ws'
import * as Y from 'yjs'
import * as decoding from 'lib0/decoding'
import { Server, until, synced, destroyAll } from '../lib/server.mjs'

const repo = join(dirname(fileURLToPath(import.meta.url)), '../../..')
const modelsDir = process.env.ATELIER_MODELS_DIR || join(repo, 'models')
process.env.ORT_DYLIB_PATH ||= join(repo, '.tools/onnxruntime/libonnxruntime.so.1.31.1')

let server
after(async () => { await server?.stop() })

function watch (session, token) {
  const events = []
  const ws = new WebSocket(`${server.wsUrl}/${session}?token=${token}&events=1`)
  ws.binaryType = 'nodebuffer'
  ws.on('message', (data) => {
    const d = decoding.createDecoder(new Uint8Array(data))
    if (decoding.readVarUint(d) === 100) events.push({ ...JSON.parse(decoding.readVarString(d)), at: Date.now() })
  })
  return { ws, events, open: new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject) }) }
}

async function setup () {
  server ??= await new Server({ args: ['--signup-credits', '1000000', '--models-dir', modelsDir, '--in-process-worker', 'on'] }).start()
  const ada = await server.signup('Ada')
  const bob = await server.signup('Bob')
  const session = await server.createSession(ada.token)
  await server.addMember(ada.token, session, bob, 'editor')
  const link = await server.shareLink(ada.token, session)
  const a = server.provider(session, ada.token)
  await synced(a.provider)
  // A terrain refined 62 times in a chain: 63 one-step model runs (a job's most model nodes is
  // 64), longer than any lease here (one run is 0.1 to 1 s on a CPU core: at least 6.3 s), so
  // that stopping always finds the job running.
  a.doc.transact(() => {
    const nodes = a.doc.getMap('nodes')
    const edges = a.doc.getMap('edges')
    const node = (id, type, p = {}) => {
      const n = new Y.Map()
      n.set('type', type)
      const params = new Y.Map()
      for (const [k, v] of Object.entries(p)) params.set(k, v)
      n.set('params', params)
      nodes.set(id, n)
    }
    node('terrain0', 'terrain')
    for (let i = 1; i <= 62; i++) {
      node(`terrain${i}`, 'terrain-refine', { strength: 0.6 })
      const e = new Y.Map()
      e.set('source', `terrain${i - 1}`)
      e.set('source_port', 'heightmap')
      e.set('target', `terrain${i}`)
      e.set('target_port', 'heightmap')
      edges.set(`c${i}`, e)
    }
  })
  const watchers = [watch(session, ada.token), watch(session, bob.token), watch(session, link.token)]
  await Promise.all(watchers.map((w) => w.open))
  return { ada, session, a, watchers }
}

async function runJob (token, session, w) {
  const res = await server.call('POST', `/sessions/${session}/jobs`, { token })
  assert.equal(res.status, 201, JSON.stringify(res.body))
  await until(() => w.events.some((e) => e.job_id === res.body.id && e.type === 'job.progress'), 60_000, 'job progress')
  return res.body.id
}

test('a ~5 s lease with a job: stopping it interrupts the job and settles exactly', async () => {
  const { ada, session, a, watchers } = await setup()
  try {
    const started = await server.call('POST', `/sessions/${session}/runtime`, { token: ada.token, body: { gpu_class: 'cpu', prepaid_minutes: 10 } })
    assert.equal(started.status, 201, JSON.stringify(started.body))
    const t0 = Date.now()
    await until(async () => (await server.call('GET', `/sessions/${session}/runtime`, { token: ada.token })).body?.lease?.status === 'running', 5000, 'running')
    const job = await runJob(ada.token, session, watchers[0])
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, 5000 - (Date.now() - t0))))
    const stop = await server.call('DELETE', `/sessions/${session}/runtime`, { token: ada.token })
    const wall = Date.now() - t0
    assert.equal(stop.status, 200, JSON.stringify(stop.body))
    const { used_ms: used, charged, refunded } = stop.body
    assert.ok(Math.abs(wall - used) <= 1500, `used ${used} ms vs wall ${wall} ms`)
    assert.equal(charged + refunded, started.body.hold)
    for (const w of watchers) {
      await until(() => w.events.some((e) => e.job_id === job && e.type === 'job.cancelled'), 5000, 'job.cancelled to everyone')
      await until(() => w.events.some((e) => e.type === 'runtime.stopped'), 5000, 'runtime.stopped to everyone')
    }
    const cancelled = watchers[0].events.find((e) => e.job_id === job && e.type === 'job.cancelled')
    assert.ok(cancelled.reason, 'the cancellation says why')
    const balance = await server.call('GET', '/billing/balance', { token: ada.token })
    assert.equal(balance.body.balance, 1000000 - charged)
    assert.equal(balance.body.held, 0)
  } finally {
    for (const w of watchers) w.ws.close()
    destroyAll(a.provider)
  }
})

test('prepaid time running out stops the lease and interrupts its job, and everyone is told', async () => {
  const { ada, session, a, watchers } = await setup()
  try {
    // 6 seconds of prepaid time: enough for the job to start on a loaded machine, far less than
    // the job needs.
    const started = await server.call('POST', `/sessions/${session}/runtime`, { token: ada.token, body: { gpu_class: 'cpu', prepaid_minutes: 0.1 } })
    assert.equal(started.status, 201, JSON.stringify(started.body))
    await until(async () => (await server.call('GET', `/sessions/${session}/runtime`, { token: ada.token })).body?.lease?.status === 'running', 5000, 'running')
    const job = await runJob(ada.token, session, watchers[0])
    for (const w of watchers) {
      await until(() => w.events.some((e) => e.type === 'runtime.stopped'), 15_000, 'runtime.stopped')
      await until(() => w.events.some((e) => e.job_id === job && e.type === 'job.cancelled'), 5000,
        () => `job interrupted; events seen: ${w.events.map((e) => e.type).join(', ')}`)
    }
    const stopped = watchers[2].events.find((e) => e.type === 'runtime.stopped')
    assert.ok(stopped.reason.length > 0)
    assert.equal(stopped.charged + stopped.refunded, started.body.hold)
    // The next job is refused until a new runtime starts.
    const refused = await server.call('POST', `/sessions/${session}/jobs`, { token: ada.token })
    assert.equal(refused.status, 402)
  } finally {
    for (const w of watchers) w.ws.close()
    destroyAll(a.provider)
  }
})

test('extending a running lease keeps its job running; charged + refunded = the sum of the holds', async () => {
  const { ada, session, a, watchers } = await setup()
  try {
    // 8 seconds of prepaid time, extended before they run out.
    const started = await server.call('POST', `/sessions/${session}/runtime`, { token: ada.token, body: { gpu_class: 'cpu', prepaid_minutes: 8 / 60 } })
    assert.equal(started.status, 201, JSON.stringify(started.body))
    const t0 = Date.now()
    await until(async () => (await server.call('GET', `/sessions/${session}/runtime`, { token: ada.token })).body?.lease?.status === 'running', 5000, 'running')
    // The job starts 4 s into the lease, so that even on a fast CPU (6.3 s for the job) it is
    // still running well past the original end; it is extended while the job runs.
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, 4000 - (Date.now() - t0))))
    const submitted = await server.call('POST', `/sessions/${session}/jobs`, { token: ada.token })
    assert.equal(submitted.status, 201, JSON.stringify(submitted.body))
    const job = submitted.body.id
    const extended = await server.call('PATCH', `/sessions/${session}/runtime`, { token: ada.token, body: { add_minutes: 0.5 } })
    assert.equal(extended.status, 200, JSON.stringify(extended.body))
    assert.equal(extended.body.prepaid_ms, 38_000)
    assert.ok(Date.now() - t0 < 8000, 'extended before the first prepaid time ran out')
    for (const w of watchers) await until(() => w.events.some((e) => e.type === 'runtime.extended'), 5000, 'runtime.extended to everyone')
    // Past the original end (8 s after the start), the same job still makes progress and
    // nothing stopped.
    const originalEnd = t0 + 8000
    await until(() => watchers[0].events.some((e) => e.job_id === job && e.type === 'job.progress' && e.at > originalEnd + 1000), 30_000, 'progress after the original end')
    for (const w of watchers) {
      assert.ok(!w.events.some((e) => e.type === 'runtime.stopped'), 'the runtime did not stop')
      assert.ok(!w.events.some((e) => e.job_id === job && ['job.cancelled', 'job.failed'].includes(e.type)), 'the job was not interrupted')
    }
    const stop = await server.call('DELETE', `/sessions/${session}/runtime`, { token: ada.token })
    assert.equal(stop.status, 200, JSON.stringify(stop.body))
    const ledger = await server.call('GET', '/billing/ledger?limit=500', { token: ada.token })
    const holds = ledger.body.entries
      .filter((e) => e.lease_id === started.body.lease_id && e.kind === 'hold')
      .reduce((sum, e) => sum + e.held_delta, 0)
    assert.equal(holds, extended.body.hold)
    assert.equal(holds, started.body.hold + (extended.body.hold - started.body.hold))
    assert.ok(holds > started.body.hold)
    assert.equal(stop.body.charged + stop.body.refunded, holds)
  } finally {
    for (const w of watchers) w.ws.close()
    destroyAll(a.provider)
  }
})
