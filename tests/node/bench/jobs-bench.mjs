// Job benchmarks against the real server (release build when ATELIER_BIN points at it):
//  1. server overhead per job with the tiny model: submit → job.started, submit → job.succeeded;
//  2. progress fan-out to 100 viewers of one session: for each job.progress, how much later the
//     last viewer got it than the first (p50/p99), and submit → first progress.
// Prints a markdown table.
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import WebSocket from 'ws'
import * as Y from 'yjs'
import * as decoding from 'lib0/decoding'
import { Server, until, synced, destroyAll } from '../lib/server.mjs'

const repo = join(dirname(fileURLToPath(import.meta.url)), '../../..')
process.env.ORT_DYLIB_PATH ||= join(repo, '.tools/onnxruntime/libonnxruntime.so.1.31.1')
const modelsDir = process.env.ATELIER_MODELS_DIR || join(repo, 'models')
const JOBS = Number(process.env.BENCH_JOBS || 30)
const VIEWERS = Number(process.env.BENCH_VIEWERS || 100)

const pct = (xs, p) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor(p / 100 * s.length))] }
const ms = (x) => x.toFixed(2)

function watch (server, session, token, onEvent) {
  const ws = new WebSocket(`${server.wsUrl}/${session}?token=${token}&events=1`)
  ws.binaryType = 'nodebuffer'
  ws.on('message', (data) => {
    const t = performance.now()
    const d = decoding.createDecoder(new Uint8Array(data))
    if (decoding.readVarUint(d) === 100) onEvent(JSON.parse(decoding.readVarString(d)), t)
  })
  return new Promise((resolve, reject) => { ws.once('open', () => resolve(ws)); ws.once('error', reject) })
}

const server = await new Server({ args: ['--signup-credits', '100000000', '--models-dir', modelsDir, '--in-process-worker', 'on', '--preview-min-interval-ms', '0', '--max-queued-jobs', '1000'] }).start()
const ada = await server.signup('Ada')
const session = await server.createSession(ada.token)
const link = await server.shareLink(ada.token, session)
const a = server.provider(session, ada.token)
await synced(a.provider)
a.doc.transact(() => {
  for (const [id, type, params] of [['tiny', 'tiny-denoiser', { steps: 4, width: 64, height: 64 }]]) {
    const node = new Y.Map(); node.set('type', type)
    const p = new Y.Map(); for (const [k, v] of Object.entries(params)) p.set(k, v)
    node.set('params', p); a.doc.getMap('nodes').set(id, node)
  }
})
await new Promise((resolve) => setTimeout(resolve, 300))
const rt = await server.call('POST', `/sessions/${session}/runtime`, { token: ada.token, body: { gpu_class: 'cpu', prepaid_minutes: 60 } })
if (rt.status !== 201) throw new Error(`runtime: ${rt.status}`)
await until(async () => (await server.call('GET', `/sessions/${session}/runtime`, { token: ada.token })).body?.lease?.status === 'running', 5000)

// Editor-side watcher for the job timeline.
const timeline = new Map()
const editorWs = await watch(server, session, ada.token, (e, t) => {
  if (!e.job_id) return
  const row = timeline.get(e.job_id) || {}
  if (!(e.type in row)) row[e.type] = t
  timeline.set(e.job_id, row)
})
// Viewers: per (job, step) arrival times.
const arrivals = new Map()
const viewers = []
for (let i = 0; i < VIEWERS; i++) {
  viewers.push(await watch(server, session, link.token, (e, t) => {
    if (e.type !== 'job.progress') return
    const key = `${e.job_id}:${e.step}`
    const list = arrivals.get(key) || []
    list.push(t)
    arrivals.set(key, list)
  }))
}

const started = []; const succeeded = []; const firstProgress = []
for (let i = 0; i < JOBS; i++) {
  const t0 = performance.now()
  const res = await server.call('POST', `/sessions/${session}/jobs`, { token: ada.token })
  if (res.status !== 201) throw new Error(`job: ${res.status} ${JSON.stringify(res.body)}`)
  const id = res.body.id
  await until(() => timeline.get(id)?.['job.succeeded'], 30_000, 'job end')
  const row = timeline.get(id)
  started.push(row['job.started'] - t0)
  firstProgress.push(row['job.progress'] - t0)
  succeeded.push(row['job.succeeded'] - t0)
}
await until(() => [...arrivals.values()].every((l) => l.length === VIEWERS), 5000, 'all viewers')
const spread = [...arrivals.values()].map((l) => Math.max(...l) - Math.min(...l))

console.log(`\n| job benchmark (${JOBS} tiny-model jobs, 4 steps 64×64; ${VIEWERS} viewers) | p50 ms | p99 ms |`)
console.log('|---|---|---|')
console.log(`| submit → job.started at the editor | ${ms(pct(started, 50))} | ${ms(pct(started, 99))} |`)
console.log(`| submit → first job.progress at the editor | ${ms(pct(firstProgress, 50))} | ${ms(pct(firstProgress, 99))} |`)
console.log(`| submit → job.succeeded (4 steps, PNG stored, outputs in the document) | ${ms(pct(succeeded, 50))} | ${ms(pct(succeeded, 99))} |`)
console.log(`| progress fan-out: last viewer − first viewer, per event (${spread.length} events) | ${ms(pct(spread, 50))} | ${ms(pct(spread, 99))} |`)

for (const v of viewers) v.close()
editorWs.close()
destroyAll(a.provider)
await server.stop()
