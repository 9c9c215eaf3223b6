// (13) The gallery's "Open this graph": an output links to the version of the graph that made it.
// A run's output, after the graph has changed since, opens the history panel on the run's
// version — the graph as it ran (its nodes and connection), not as it is now.
// The server runs the in-process worker on the repository's models (see 04-jobs).
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { Server, PASSWORD, withModels } from '../lib/server.mjs'
import { launch, openPage, loginViaUi, openStudio, artifact, until } from '../lib/browser.mjs'
import { addNode, selectNode } from '../lib/studio.mjs'

const JOB_TIMEOUT_MS = Number(process.env.ATELIER_BROWSER_JOB_TIMEOUT_MS || 120000)

let server, browser, ada, session
before(async () => {
  server = await new Server(withModels({ worker: true })).start()
  browser = await launch()
  ada = await server.signup('Ada')
  session = (await server.call('POST', '/sessions', { token: ada.token, body: { title: 'Open this graph' } })).body.id
})
after(async () => {
  await browser?.close()
  await server?.stop()
})

test('an output opens the version of the graph that made it', async () => {
  const { context, page, problems } = await openPage(browser, server.base, { name: 'ada' })
  try {
    await loginViaUi(page, { email: ada.email, password: PASSWORD })
    await openStudio(page, session)
    const terrain = await addNode(page, 'Terrain diffusion')
    const out = await addNode(page, 'Output')
    await selectNode(page, terrain)
    const connect = page.getByLabel('Connect heightmap to')
    await connect.selectOption(`${out}\u0000image`)
    await page.locator('.connect-forms form').filter({ has: connect }).getByRole('button', { name: 'Connect' }).click()
    await page.locator('.react-flow__edge').first().waitFor({ timeout: 3000 })

    const rt = await server.call('POST', `/sessions/${session}/runtime`, { token: ada.token, body: { gpu_class: 'cpu', prepaid_minutes: 10 } })
    assert.equal(rt.status, 201, JSON.stringify(rt.body))
    await page.locator('[data-runtime-state="running"]').waitFor({ timeout: 15000 })
    await page.getByRole('button', { name: 'Run', exact: true }).click()
    const output = page.locator('.gallery .output').first()
    await until(async () => (await page.locator('.gallery .output img').count()) === 1, JOB_TIMEOUT_MS, 'the run\'s output in the gallery')
    const jobs = (await server.call('GET', `/sessions/${session}/jobs`, { token: ada.token })).body
    assert.equal(jobs.length, 1)
    const ranVersion = jobs[0].version_id
    assert.ok(ranVersion, `the job records its version: ${JSON.stringify(jobs[0])}`)

    // The graph moves on after the run: a third node.
    await addNode(page, 'Output')
    await until(async () => (await page.locator('.react-flow__node').count()) === 3, 3000, 'the third node')

    // "Open this graph" on the output: the history panel previews the run's version.
    await output.getByRole('button', { name: /^Open the graph that made output/ }).click()
    const preview = page.locator(`[data-preview-version="${ranVersion}"]`)
    await preview.waitFor({ timeout: 5000 })
    const size = await preview.getByTestId('version-size').textContent()
    assert.match(size, /^2 nodes, 1 connections:/, size)
    assert.match(size, /output/, size)
    // Compared with now, going back to it would remove the node added since and keep the
    // connection (a run also writes into its nodes, e.g. their latest output: "change" varies).
    const changes = await preview.getByTestId('version-changes').textContent()
    assert.match(changes, /add 0 and remove 1 nodes, change \d+, add 0 and remove 0 connections/, changes)
    // The version the panel shows is the server's record of what ran.
    const version = (await server.call('GET', `/sessions/${session}/versions/${ranVersion}`, { token: ada.token })).body
    assert.deepEqual(Object.keys(version.graph.nodes).sort(), [terrain, out].sort())
    await page.screenshot({ path: artifact('13-open-this-graph.png') })
    assert.deepEqual(problems, [])
  } finally {
    await context.close()
  }
})
