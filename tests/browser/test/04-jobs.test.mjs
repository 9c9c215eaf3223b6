// (4) Jobs: a run started in one member's studio shows its progress moving, the live preview and
// the output image in both members' studios and in a viewer's. Needs the server's job system
// (GET /node-types) and a worker.
// The server runs the in-process worker (ONNX Runtime on the CPU) on the repository's models:
// ATELIER_MODELS_DIR (else <repo>/models) and ORT_DYLIB_PATH (else the one scripts/setup fetches).
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { Server, PASSWORD, withModels } from '../lib/server.mjs'
import { launch, openPage, loginViaUi, openStudio, artifact, until } from '../lib/browser.mjs'
import { addNode, selectNode, nodeSel, paramShown } from '../lib/studio.mjs'

const JOB_TIMEOUT_MS = Number(process.env.ATELIER_BROWSER_JOB_TIMEOUT_MS || 120000)
// Terrain steps: enough (each ~0.3–1 s on the CPU) to catch the job mid-way.
const STEPS = 8

let server, browser, ada, bob, session, live, jobs, types
before(async () => {
  server = await new Server(withModels({ worker: true })).start()
  browser = await launch()
  ada = await server.signup('Ada')
  bob = await server.signup('Bob')
  session = (await server.call('POST', '/sessions', { token: ada.token, body: { title: 'Job run' } })).body.id
  await server.addMember(ada.token, session, bob, 'editor')
  live = await server.hasLiveSocket(session, ada.token)
  const res = await server.call('GET', '/node-types', { token: ada.token })
  jobs = res.status === 200
  if (jobs) types = normalize(res.body)
})
after(async () => {
  await browser?.close()
  await server?.stop()
})

/** The node-type listing, in the shapes the page accepts (see web/src/lib/nodeTypes.ts). */
function normalize (raw) {
  const list = Array.isArray(raw) ? raw : (raw?.node_types ?? raw?.types ?? raw?.nodes ?? [])
  const ports = (ps) => (Array.isArray(ps) ? ps : []).map((p) => (typeof p === 'string' ? { name: p } : { name: p.name ?? p.id, type: p.type }))
  return list.map((t) => ({ type: t.type ?? t.name ?? t.id, inputs: ports(t.inputs ?? t.ports?.inputs), outputs: ports(t.outputs ?? t.ports?.outputs) }))
}

/**
 * A small graph that ends in an image: the first type with an image output, each of its inputs
 * fed by a type whose output has the same port type (recursively). Returns
 * [{type, index}] nodes and [{from, fromPort, to, toPort}] edges by node position.
 */
function plan (types) {
  const isImage = (p) => /image/i.test(p.type ?? p.name ?? '')
  // The terrain model needs no inputs (workflow nodes such as image-input need an upload).
  const goal = types.find((t) => t.type === 'terrain') ?? types.find((t) => t.outputs.some(isImage)) ?? types.find((t) => t.outputs.length > 0)
  assert.ok(goal, 'a node type with an output')
  const nodes = []
  const edges = []
  const add = (t, depth) => {
    const at = nodes.length
    nodes.push({ type: t.type, index: types.indexOf(t) })
    for (const input of t.inputs) {
      if (depth > 4) break
      const feeder = types.find((s) => s !== t && s.outputs.some((o) => (o.type ?? o.name) === (input.type ?? input.name)))
      if (!feeder) continue
      const port = feeder.outputs.find((o) => (o.type ?? o.name) === (input.type ?? input.name))
      const from = add(feeder, depth + 1)
      edges.push({ from, fromPort: port.name, to: at, toPort: input.name })
    }
    return at
  }
  const last = add(goal, 0)
  // The job system's built-in sink (listed by the server, or added by the page) marks the output.
  const image = goal.outputs.find(isImage)
  if (image) {
    const at = types.findIndex((t) => t.type === 'output')
    nodes.push({ type: 'output', index: at >= 0 ? at : 'Output' })
    edges.push({ from: last, fromPort: image.name, to: nodes.length - 1, toPort: 'image' })
  }
  return { nodes, edges }
}

/** Records, inside the page, every job progress value and whether a preview was shown. */
async function recordProgress (page) {
  await page.evaluate(() => {
    window.__seen = { progress: [], preview: false, statuses: [] }
    const look = () => {
      for (const bar of document.querySelectorAll('[role="progressbar"]')) {
        const v = Number(bar.getAttribute('aria-valuenow'))
        const key = `${bar.getAttribute('aria-label')}=${v}`
        if (!window.__seen.progress.includes(key)) window.__seen.progress.push(key)
      }
      if (document.querySelector('.preview img')) window.__seen.preview = true
      for (const j of document.querySelectorAll('[data-job-id]')) {
        const s = j.getAttribute('data-status')
        if (!window.__seen.statuses.includes(s)) window.__seen.statuses.push(s)
      }
    }
    new MutationObserver(look).observe(document.body, { subtree: true, childList: true, attributes: true })
  })
}
const seen = (page) => page.evaluate(() => window.__seen)

test('a run shows progress, preview and output in both studios and in the viewer', async (t) => {
  assert.ok(live, 'the server has no live WebSocket (/ws)')
  assert.ok(jobs, 'the server has no job system (GET /api/v1/node-types)')
  const a = await openPage(browser, server.base, { name: 'ada' })
  const b = await openPage(browser, server.base, { name: 'bob' })
  const v = await openPage(browser, server.base, { name: 'viewer' })
  try {
    await loginViaUi(a.page, { email: ada.email, password: PASSWORD })
    await loginViaUi(b.page, { email: bob.email, password: PASSWORD })
    await openStudio(a.page, session)
    await openStudio(b.page, session)
    const link = (await server.call('POST', `/sessions/${session}/share-links`, { token: ada.token, body: { role: 'viewer' } })).body
    await v.page.goto(`${server.base}/${new URL(link.url).hash}`)
    await v.page.locator('.studio[data-conn="live"]').waitFor({ timeout: 15000 })

    // Ada builds the graph with the palette and the inspector's connect form.
    const { nodes, edges } = plan(types)
    const ids = []
    for (const n of nodes) ids.push(await addNode(a.page, n.index))
    for (const e of edges) {
      await selectNode(a.page, ids[e.from])
      const select = a.page.getByLabel(`Connect ${e.fromPort} to`)
      const value = await select.locator('option').evaluateAll(
        (opts, want) => opts.map((o) => o.value).find((x) => x === want),
        `${ids[e.to]}\u0000${e.toPort}`
      )
      assert.ok(value, `an option to connect ${e.fromPort} to ${ids[e.to]}.${e.toPort}`)
      await select.selectOption(value)
      await a.page.locator('.connect-forms form').filter({ has: select }).getByRole('button', { name: 'Connect' }).click()
    }
    await until(async () => (await v.page.locator('.react-flow__edge').count()) === edges.length, 3000, 'the edges at the viewer')

    // Enough steps to see the job mid-way (the first node is the model).
    await selectNode(a.page, ids[0])
    const steps = a.page.locator(`[data-param-input="steps"][data-node-id="${ids[0]}"]`)
    if (await steps.count()) {
      await steps.fill(String(STEPS))
      await steps.blur()
      await until(async () => (await paramShown(v.page, ids[0], 'steps')) === String(STEPS), 3000, 'the steps at the viewer')
    }

    // Ada starts the Pro runtime (CPU) from the studio's runtime panel.
    const runtime = a.page.locator('section[aria-labelledby="runtime-h"]')
    const gpu = runtime.getByLabel('Runtime class')
    if ((await gpu.evaluate((e) => e.tagName.toLowerCase())) === 'select') await gpu.selectOption('cpu')
    else await gpu.fill('cpu')
    await runtime.getByLabel('Prepaid minutes').fill('10')
    await runtime.getByRole('button', { name: 'Start runtime' }).click()
    await runtime.locator('[data-runtime-state="running"]').waitFor({ timeout: 15000 }).catch(async (e) => {
      throw new Error(`the runtime is not running: ${e.message}\n${await runtime.textContent()}`)
    })
    // The other member sees it too (runtime.started).
    await b.page.locator('section[aria-labelledby="runtime-h"] [data-runtime-state="running"]').waitFor({ timeout: 5000 })
    // Money is private: Ada sees her balance; Bob and the viewer see who pays, never her credits.
    await runtime.locator('[data-runtime-balance]').waitFor({ timeout: 5000 })
    for (const p of [b.page, v.page]) {
      const panel = p.locator('section[aria-labelledby="runtime-h"]')
      await panel.locator('[data-runtime-payer]').filter({ hasText: 'Ada' }).waitFor({ timeout: 5000 })
      assert.equal(await panel.locator('[data-runtime-balance]').count(), 0, 'no one else sees the payer\'s balance')
    }

    for (const p of [a.page, b.page, v.page]) await recordProgress(p)
    const runAt = Date.now()
    await a.page.getByRole('button', { name: 'Run', exact: true }).click()
    const alert = a.page.locator('.panel [role="alert"]')
    const started = await Promise.race([
      a.page.locator('[data-job-id]').first().waitFor({ timeout: 15000 }).then(() => true),
      alert.first().waitFor({ timeout: 15000 }).then(() => false)
    ])
    assert.ok(started, `the run was refused: ${started ? '' : await alert.first().textContent()}`)

    // Mid-job: a progress bar with a value, in every page.
    await until(async () => (await seen(a.page)).progress.some((k) => /^Job .*=[1-9]/.test(k)), JOB_TIMEOUT_MS, 'job progress at Ada')
    // Best effort: a few steps in, still running, for a telling screenshot.
    await until(async () => {
      const bar = a.page.locator('[data-job-id][data-status="running"] [role="progressbar"]').first()
      return (await bar.count()) > 0 && Number(await bar.getAttribute('aria-valuenow')) >= 30
    }, 6000, 'a few steps').catch(() => {})
    await a.page.screenshot({ path: artifact('studio-mid-job.png') })
    await v.page.screenshot({ path: artifact('viewer-mid-job.png') })
    const timings = { midJobMs: Date.now() - runAt }

    // The output image everywhere.
    for (const [name, p] of [['Ada', a.page], ['Bob', b.page], ['viewer', v.page]]) {
      await p.locator('.output img').first().waitFor({ timeout: JOB_TIMEOUT_MS }).catch(async (e) => {
        throw new Error(`no output image at ${name}: ${e.message}\n${JSON.stringify(await seen(p))}`)
      })
    }
    timings.outputsMs = Date.now() - runAt
    t.diagnostic(`run → progress at Ada ${timings.midJobMs} ms, → output image in all three ${timings.outputsMs} ms`)
    for (const [name, p] of [['Ada', a.page], ['Bob', b.page], ['viewer', v.page]]) {
      const s = await seen(p)
      const values = new Set(s.progress.filter((k) => k.startsWith('Job ')).map((k) => k.split('=')[1]))
      assert.ok(values.size >= 2, `progress moved at ${name}: ${[...values]}`)
      assert.ok(s.statuses.includes('succeeded'), `the job succeeded at ${name}: ${s.statuses}`)
      t.diagnostic(`${name}: progress ${[...values].join(',')}; preview shown: ${s.preview}`)
    }
    assert.ok((await seen(a.page)).preview, 'a live preview was shown')
    // The download link serves the image through an object URL (media needs auth).
    const href = await v.page.locator('.output a[download]').first().getAttribute('href')
    assert.match(href, /^blob:/)
    // A node's output count on the canvas comes from the document.
    await v.page.locator(`${nodeSel(ids[0])} .sn-outputs`).waitFor({ timeout: 5000 })

    await a.page.screenshot({ path: artifact('studio-job-done.png') })
    await v.page.screenshot({ path: artifact('viewer-job-done.png') })
    // The viewer page with the output image in sight (docs/screenshots/viewer-job.png).
    await v.page.locator('.output img').first().scrollIntoViewIfNeeded()
    await v.page.screenshot({ path: artifact('viewer-job.png') })
    assert.deepEqual([...a.problems, ...b.problems, ...v.problems], [])
  } finally {
    await a.context.close()
    await b.context.close()
    await v.context.close()
  }
})
