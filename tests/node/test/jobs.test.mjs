// GPU jobs end to end: the real in-process worker (ONNX Runtime on the CPU) and a remote
// `atelier worker` process; every participant sees the same ordered events.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, execFileSync } from 'node:child_process'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { homedir } from 'node:os'
import WebSocket from 'ws'
import * as Y from 'yjs'
import * as decoding from 'lib0/decoding'
import { Server, until, synced, destroyAll } from '../lib/server.mjs'

const repo = join(dirname(fileURLToPath(import.meta.url)), '../../..')
const modelsDir = process.env.ATELIER_MODELS_DIR || join(repo, 'models')
const bin = process.env.ATELIER_BIN ||
  join(process.env.CARGO_TARGET_DIR || join(homedir(), '.cache/atelier/target'), 'debug/atelier')
process.env.ORT_DYLIB_PATH ||= join(repo, '.tools/onnxruntime/libonnxruntime.so.1.31.1')

const servers = []
after(async () => { for (const s of servers) await s.stop() })

async function startServer (args = []) {
  const s = new Server({
    args: ['--signup-credits', '1000000', '--models-dir', modelsDir, '--preview-min-interval-ms', '0', ...args]
  })
  servers.push(s)
  return s.start()
}

/** Collects studio events (type 100) and previews (type 101) of one participant. */
function watch (server, session, token) {
  const events = []
  const previews = []
  const ws = new WebSocket(`${server.wsUrl}/${session}?token=${token}&events=1`)
  ws.binaryType = 'nodebuffer'
  ws.on('message', (data) => {
    const bytes = new Uint8Array(data)
    const d = decoding.createDecoder(bytes)
    const type = decoding.readVarUint(d)
    if (type === 100) events.push(JSON.parse(decoding.readVarString(d)))
    if (type === 101) {
      const jobId = decoding.readVarString(d)
      const step = decoding.readVarUint(d)
      const mime = decoding.readVarString(d)
      const image = decoding.readVarUint8Array(d)
      previews.push({ jobId, step, mime, image })
    }
  })
  const open = new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject) })
  return { ws, events, previews, open }
}

const jobEvents = (w, jobId) => w.events.filter((e) => e.job_id === jobId)
const ended = (w, jobId) => jobEvents(w, jobId).find((e) => ['job.succeeded', 'job.failed', 'job.cancelled'].includes(e.type))

function pngSize (buf) {
  assert.deepEqual([...buf.subarray(0, 8)], [137, 80, 78, 71, 13, 10, 26, 10], 'PNG signature')
  return { width: buf.readUInt32BE(16), height: buf.readUInt32BE(20) }
}

function addNode (doc, id, type, params = {}) {
  const nodes = doc.getMap('nodes')
  doc.transact(() => {
    const node = new Y.Map()
    node.set('type', type)
    node.set('x', 0)
    node.set('y', 0)
    const p = new Y.Map()
    for (const [k, v] of Object.entries(params)) p.set(k, v)
    node.set('params', p)
    nodes.set(id, node)
  })
}

function addEdge (doc, id, source, sourcePort, target, targetPort) {
  const edge = new Y.Map()
  doc.transact(() => {
    edge.set('source', source)
    edge.set('source_port', sourcePort)
    edge.set('target', target)
    edge.set('target_port', targetPort)
    doc.getMap('edges').set(id, edge)
  })
}

async function studio (server) {
  const ada = await server.signup('Ada')
  const bob = await server.signup('Bob')
  const session = await server.createSession(ada.token)
  await server.addMember(ada.token, session, bob, 'editor')
  const link = await server.shareLink(ada.token, session)
  const a = server.provider(session, ada.token)
  await synced(a.provider)
  return { ada, bob, session, link, a }
}

async function startRuntime (server, token, session) {
  const res = await server.call('POST', `/sessions/${session}/runtime`, { token, body: { gpu_class: 'cpu', prepaid_minutes: 30 } })
  assert.equal(res.status, 201, JSON.stringify(res.body))
  // A remote worker may still be loading its models: the lease waits for a worker of its class.
  await until(async () => (await server.call('GET', `/sessions/${session}/runtime`, { token })).body?.lease?.status === 'running', 30_000, 'runtime running')
}

async function fetchMedia (server, id, token) {
  const res = await fetch(`${server.base}/api/v1/media/${id}`, { headers: { authorization: `Bearer ${token}` } })
  return { status: res.status, body: Buffer.from(await res.arrayBuffer()) }
}

test('two editors and a share-link viewer see the same ordered events of a terrain job and a tiny job', async () => {
  const server = await startServer(['--in-process-worker', 'on'])
  const { ada, bob, session, link, a } = await studio(server)
  const watchers = [watch(server, session, ada.token), watch(server, session, bob.token), watch(server, session, link.token)]
  try {
    await Promise.all(watchers.map((w) => w.open))
    addNode(a.doc, 'terrain', 'terrain', { difficulty: 60, seed: 7 })
    addNode(a.doc, 'tiny', 'tiny-denoiser', { steps: 3, width: 128, height: 128 })
    addNode(a.doc, 'out', 'output')
    addEdge(a.doc, 'e1', 'terrain', 'heightmap', 'out', 'image')
    // Without a Pro runtime jobs are refused before anything runs.
    await new Promise((resolve) => setTimeout(resolve, 300))
    const refused = await server.call('POST', `/sessions/${session}/jobs`, { token: ada.token, body: { nodes: ['out'] } })
    assert.equal(refused.status, 402, JSON.stringify(refused.body))
    await startRuntime(server, ada.token, session)

    for (const [selection, expectOutputs] of [[['out'], 1], [['tiny'], 1]]) {
      const res = await server.call('POST', `/sessions/${session}/jobs`, { token: bob.token, body: { nodes: selection } })
      assert.equal(res.status, 201, JSON.stringify(res.body))
      const jobId = res.body.id
      await until(() => watchers.every((w) => ended(w, jobId)), 120_000, `job ${selection} to end everywhere`)
      const sequences = watchers.map((w) => jobEvents(w, jobId).map((e) => JSON.stringify(e)))
      assert.deepEqual(sequences[1], sequences[0], 'editor 2 saw other events than editor 1')
      assert.deepEqual(sequences[2], sequences[0], 'the viewer saw other events than editor 1')
      const types = jobEvents(watchers[0], jobId).map((e) => e.type)
      assert.ok(types.includes('job.started'), types.join())
      assert.ok(types.includes('job.progress'), types.join())
      assert.ok(types.includes('job.node_done'), types.join())
      const done = ended(watchers[0], jobId)
      assert.equal(done.type, 'job.succeeded', JSON.stringify(done))
      assert.equal(done.outputs.length, expectOutputs)
      const started = jobEvents(watchers[0], jobId).find((e) => e.type === 'job.started')
      assert.equal(started.device, 'cpu')
      if (selection[0] === 'out') {
        const steps = jobEvents(watchers[0], jobId).filter((e) => e.type === 'job.progress').map((e) => e.step)
        // The terrain model is a one-step model.
        assert.deepEqual(steps, [1])
      }
      for (const w of watchers) assert.ok(w.previews.some((p) => p.jobId === jobId && p.mime === 'image/png'), 'a preview')
      for (const token of [ada.token, bob.token, link.token]) {
        const media = await fetchMedia(server, done.outputs[0], token)
        assert.equal(media.status, 200)
        assert.deepEqual(pngSize(media.body), { width: 128, height: 128 })
      }
      const node = selection[0] === 'out' ? 'terrain' : 'tiny'
      await until(() => a.doc.getMap('outputs').get(node)?.toArray().includes(done.outputs[0]), 3000, 'outputs in the document')
    }
    // A late joiner's hello has no unfinished jobs now.
    const late = watch(server, session, link.token)
    await late.open
    await until(() => late.events.length > 0, 3000, 'hello')
    assert.deepEqual(late.events[0].jobs, [])
    late.ws.close()
  } finally {
    for (const w of watchers) w.ws.close()
    destroyAll(a.provider)
  }
})

/** A terrain followed by `n` terrain-refine nodes: about a second per node on a CPU. */
function terrainChain (doc, n) {
  addNode(doc, 'terrain', 'terrain')
  let last = 'terrain'
  for (let i = 1; i <= n; i++) {
    addNode(doc, `r${i}`, 'terrain-refine', { strength: 0.6 })
    addEdge(doc, `c${i}`, last, 'heightmap', `r${i}`, 'heightmap')
    last = `r${i}`
  }
}

test('cancel reaches the running step within one step', async () => {
  const server = await startServer(['--in-process-worker', 'on'])
  const { ada, session, link, a } = await studio(server)
  const w = watch(server, session, ada.token)
  try {
    await w.open
    terrainChain(a.doc, 12)
    await startRuntime(server, ada.token, session)
    const viewerTry = await server.call('POST', `/sessions/${session}/jobs`, { token: link.token })
    assert.equal(viewerTry.status, 403)
    const res = await server.call('POST', `/sessions/${session}/jobs`, { token: ada.token })
    assert.equal(res.status, 201, JSON.stringify(res.body))
    const jobId = res.body.id
    await until(() => jobEvents(w, jobId).some((e) => e.type === 'job.progress'), 60_000, 'first progress')
    const progress = jobEvents(w, jobId).filter((e) => e.type === 'job.progress')
    const denied = await server.call('POST', `/jobs/${jobId}/cancel`, { token: link.token })
    assert.equal(denied.status, 403)
    const t0 = Date.now()
    const cancel = await server.call('POST', `/jobs/${jobId}/cancel`, { token: ada.token })
    assert.equal(cancel.status, 202, JSON.stringify(cancel.body))
    await until(() => ended(w, jobId), 10_000, 'job.cancelled')
    assert.equal(ended(w, jobId).type, 'job.cancelled')
    const after = jobEvents(w, jobId).filter((e) => e.type === 'job.progress')
    assert.ok(after.length <= progress.length + 1, `ran ${after.length - progress.length} more steps after cancel`)
    console.log(`cancelled ${Date.now() - t0} ms after the request`)
    const again = await server.call('POST', `/jobs/${jobId}/cancel`, { token: ada.token })
    assert.equal(again.status, 409)
    assert.equal((await server.call('GET', `/jobs/${jobId}`, { token: ada.token })).body.status, 'cancelled')
  } finally {
    w.ws.close()
    destroyAll(a.provider)
  }
})

test('invalid graphs are refused with a 4xx naming the problem, before anything runs', async () => {
  const server = await startServer(['--in-process-worker', 'on'])
  const { ada, session, a } = await studio(server)
  try {
    await startRuntime(server, ada.token, session)
    const post = (body) => server.call('POST', `/sessions/${session}/jobs`, { token: ada.token, body })
    const empty = await post({})
    assert.equal(empty.status, 400)
    assert.match(empty.body.error.message, /no nodes/)
    const nodes = a.doc.getMap('nodes')
    const cases = [
      [() => addNode(a.doc, 'x', 'no-such-model'), /node x: unknown node type/],
      [() => addNode(a.doc, 'x', 'terrain', { difficulty: 500 }), /node x: parameter difficulty/],
      [() => addNode(a.doc, 'x', 'terrain', { bogus: 1 }), /node x: parameter bogus/],
      [() => addNode(a.doc, 'x', 'output'), /node x: input 'image' is not connected/],
      [() => { addNode(a.doc, 'x', 'output'); addNode(a.doc, 'y', 'output'); addEdge(a.doc, 'e', 'x', 'image', 'y', 'image') }, /edge e: node x has no output port/],
      [() => { addNode(a.doc, 'x', 'terrain'); addNode(a.doc, 'y', 'tiny-denoiser'); addEdge(a.doc, 'e1', 'x', 'heightmap', 'y', 'image') }, /edge e1: node y has no input port/]
    ]
    for (const [build, pattern] of cases) {
      a.doc.transact(() => { nodes.clear(); a.doc.getMap('edges').clear() })
      build()
      await new Promise((resolve) => setTimeout(resolve, 200))
      const res = await post({})
      assert.equal(res.status, 400, `${pattern}: ${JSON.stringify(res.body)}`)
      assert.match(res.body.error.message, pattern)
    }
    const unknownSel = await post({ nodes: ['nope'] })
    assert.equal(unknownSel.status, 400)
    assert.equal((await server.call('GET', `/sessions/${session}/jobs`, { token: ada.token })).body.length, 0)
  } finally {
    destroyAll(a.provider)
  }
})

test('a remote worker killed mid-job: the job fails with "worker lost" within the heartbeat timeout; a second worker runs the next job', async () => {
  const server = await startServer(['--in-process-worker', 'off', '--worker-heartbeat-timeout-s', '3'])
  const token = execFileSync(bin, ['admin', 'create-worker-token', '--database-url', server.databaseUrl, '--name', 'gpu-1'], { env: { ...process.env, RUST_LOG: 'warn' } }).toString().trim()
  assert.match(token, /^atw_/)
  const startWorker = () => spawn(bin, ['worker', '--server', server.base, '--token', token, '--models-dir', modelsDir], { stdio: ['ignore', 'inherit', 'inherit'], env: { ...process.env, RUST_LOG: 'warn' } })
  const { ada, session, a } = await studio(server)
  const w = watch(server, session, ada.token)
  let worker = startWorker()
  try {
    await w.open
    terrainChain(a.doc, 12)
    addNode(a.doc, 'tiny', 'tiny-denoiser', { steps: 2 })
    await startRuntime(server, ada.token, session)
    const res = await server.call('POST', `/sessions/${session}/jobs`, { token: ada.token, body: { nodes: ['r12'] } })
    assert.equal(res.status, 201)
    const jobId = res.body.id
    await until(() => jobEvents(w, jobId).some((e) => e.type === 'job.progress'), 60_000, 'progress from the remote worker')
    const t0 = Date.now()
    worker.kill('SIGKILL')
    await until(() => ended(w, jobId), 8_000, 'the job to end after the worker died')
    const end = ended(w, jobId)
    assert.equal(end.type, 'job.failed')
    assert.match(end.error, /worker lost/)
    assert.ok(Date.now() - t0 <= 4_000, `took ${Date.now() - t0} ms`)
    assert.equal((await server.call('GET', '/healthz')).status, 200)
    // The lease was on that worker: it stops, billed up to the worker's last heartbeat.
    await until(() => w.events.some((e) => e.type === 'runtime.stopped'), 8_000, 'runtime.stopped after the worker died')
    assert.equal(w.events.find((e) => e.type === 'runtime.stopped').reason, 'worker_lost')
    assert.equal((await server.call('POST', `/sessions/${session}/jobs`, { token: ada.token, body: { nodes: ['tiny'] } })).status, 402)
    worker = startWorker()
    await startRuntime(server, ada.token, session)
    const next = await server.call('POST', `/sessions/${session}/jobs`, { token: ada.token, body: { nodes: ['tiny'] } })
    assert.equal(next.status, 201)
    await until(() => ended(w, next.body.id), 60_000, 'next job on the second worker')
    assert.equal(ended(w, next.body.id).type, 'job.succeeded')
  } finally {
    worker.kill('SIGKILL')
    w.ws.close()
    destroyAll(a.provider)
  }
})
