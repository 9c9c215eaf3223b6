// (5) First start to first image: the server exactly as `scripts/serve` starts it (no flag, no
// variable: SQLite under ./data, the models and ONNX Runtime where setup puts them, the
// in-process CPU worker, 127.0.0.1:8080). A new user signs up, adds a terrain node and an
// output, presses Run, accepts the offered runtime, and the heightmap appears in the outputs.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { copyFileSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { Server, PASSWORD, REPO } from '../lib/server.mjs'
import { launch, openPage, signupViaUi, artifact } from '../lib/browser.mjs'
import { addNode, selectNode } from '../lib/studio.mjs'

const JOB_TIMEOUT_MS = Number(process.env.ATELIER_BROWSER_JOB_TIMEOUT_MS || 120000)

let server, browser
before(async () => {
  server = await new Server({ embedded: true }).start()
  browser = await launch()
})
after(async () => {
  await browser?.close()
  await server?.stop()
})

test('on the embedded defaults a new account runs the terrain model from the studio', async () => {
  assert.equal(server.base, 'http://127.0.0.1:8080', 'the embedded default address')
  const { context, page, problems } = await openPage(browser, server.base, { name: 'first-run' })
  try {
    await page.goto('/')
    await signupViaUi(page, { name: 'Grace Hopper', email: `grace-${randomUUID()}@example.com`, password: PASSWORD })
    // Starter credits: an hour of the CPU class.
    await page.getByTestId('balance').filter({ hasText: /^6 credits available$/ }).waitFor({ timeout: 5000 })
    await page.getByLabel('New session title').fill('First terrain')
    await page.getByRole('button', { name: 'Create session' }).click()
    await page.waitForURL(/#\/s\/[0-9a-f-]{36}$/)
    await page.locator('.studio[data-conn="live"]').waitFor({ timeout: 15000 })

    const terrain = await addNode(page, 'Terrain diffusion')
    const output = await addNode(page, 'Output')
    await selectNode(page, terrain)
    const connect = page.getByLabel(/^Connect .+ to$/).first()
    const value = await connect.locator('option').evaluateAll(
      (opts, to) => opts.map((o) => o.value).find((v) => v.startsWith(`${to}\u0000`)),
      output
    )
    assert.ok(value, 'the terrain can feed the output')
    await connect.selectOption(value)
    await page.locator('.connect-forms form').filter({ has: connect }).getByRole('button', { name: 'Connect' }).click()
    await page.locator('.react-flow__edge').first().waitFor({ timeout: 5000 })

    // Run without a runtime: the studio offers one, with its class, minutes and cost.
    await page.getByRole('button', { name: 'Run', exact: true }).click()
    const offer = page.getByTestId('runtime-offer')
    await offer.waitFor({ timeout: 5000 })
    await offer.getByRole('heading', { name: 'Start a Pro runtime (0.1 credits/min) to run' }).waitFor()
    const cost = await offer.getByTestId('offer-cost').textContent()
    assert.match(cost, /10 min of CPU holds 1 credits? \(you have 6\)/)
    assert.doesNotMatch(await offer.textContent(), /GPU|millicredit|\/api\//)
    await page.screenshot({ path: artifact('first-run-offer.png') })
    await offer.getByRole('button', { name: 'Start runtime and run' }).click()

    // The heightmap appears in the outputs.
    const image = page.locator('section[aria-labelledby="outputs-h"] .output img')
    await image.waitFor({ timeout: JOB_TIMEOUT_MS })
    const size = await image.evaluate(async (img) => {
      await img.decode()
      return [img.naturalWidth, img.naturalHeight]
    })
    assert.deepEqual(size, [128, 128])
    const runtime = page.locator('section[aria-labelledby="runtime-h"]')
    assert.match(await runtime.textContent(), /CPU/)
    assert.doesNotMatch(await runtime.textContent(), /GPU/)
    await page.screenshot({ path: artifact('first-run-image.png') })
    mkdirSync(join(REPO, 'docs/screenshots'), { recursive: true })
    copyFileSync(artifact('first-run-image.png'), join(REPO, 'docs/screenshots/first-run.png'))
    assert.deepEqual(problems, [])
  } finally {
    await context.close()
  }
})
