// (9) The studio's workflow parts: a parameter outside its node type's range is refused where
// it is typed (with the reason, and never written to the document); image-input's picker
// uploads a PNG and the node then uses it; a batch of 4 shows as a grid of 4 with distinct
// seeds, "Use seed" writes that seed into the node, "Run from selected" runs it again despite
// the cache, and the grid and the run panel survive a reload.
// The server runs the in-process worker on the repository's models (see 04-jobs).
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { deflateSync, crc32 } from 'node:zlib'
import { Server, PASSWORD, withModels } from '../lib/server.mjs'
import { launch, openPage, loginViaUi, openStudio, artifact, until } from '../lib/browser.mjs'
import { addNode, selectNode, nodeSel, paramShown } from '../lib/studio.mjs'

const JOB_TIMEOUT_MS = Number(process.env.ATELIER_BROWSER_JOB_TIMEOUT_MS || 120000)

let server, browser, ada, session
before(async () => {
  server = await new Server(withModels({ worker: true })).start()
  browser = await launch()
  ada = await server.signup('Ada')
  session = (await server.call('POST', '/sessions', { token: ada.token, body: { title: 'Workflow studio' } })).body.id
})
after(async () => {
  await browser?.close()
  await server?.stop()
})

/** A small grey-ramp RGB PNG, encoded here (no image library needed). */
function rampPng (w = 48, h = 32) {
  const chunk = (type, data) => {
    const len = Buffer.alloc(4)
    len.writeUInt32BE(data.length)
    const body = Buffer.concat([Buffer.from(type, 'latin1'), data])
    const crc = Buffer.alloc(4)
    crc.writeUInt32BE(crc32(body))
    return Buffer.concat([len, body, crc])
  }
  const ihdr = Buffer.alloc(13)
  ihdr.writeUInt32BE(w, 0)
  ihdr.writeUInt32BE(h, 4)
  ihdr.set([8, 2, 0, 0, 0], 8) // 8-bit RGB
  const rows = []
  for (let y = 0; y < h; y++) {
    const row = Buffer.alloc(1 + w * 3)
    for (let x = 0; x < w; x++) row.fill(Math.round((255 * x) / (w - 1)), 1 + x * 3, 4 + x * 3)
    rows.push(row)
  }
  const sig = Buffer.from([137, 80, 78, 71, 13, 10, 26, 10])
  return Buffer.concat([sig, chunk('IHDR', ihdr), chunk('IDAT', deflateSync(Buffer.concat(rows))), chunk('IEND', Buffer.alloc(0))])
}

/** The graph as the server's document has it (GET /sessions/{id}/graph). */
async function serverGraph () {
  const res = await server.call('GET', `/sessions/${session}/graph`, { token: ada.token })
  assert.equal(res.status, 200, JSON.stringify(res.body))
  return res.body.graph ?? res.body
}

/** A node's parameters as the server's document has them. */
async function serverParams (nodeId) {
  return (await serverGraph()).nodes?.[nodeId]?.params ?? {}
}

async function studio () {
  const p = await openPage(browser, server.base, { name: 'ada' })
  await loginViaUi(p.page, { email: ada.email, password: PASSWORD })
  await openStudio(p.page, session)
  return p
}

test('an out-of-range value typed in the inspector is refused with the reason and not written', async () => {
  const { context, page, problems } = await studio()
  try {
    const id = await addNode(page, 'Terrain diffusion')
    await selectNode(page, id)
    const input = page.locator(`[data-param-input="difficulty"][data-node-id="${id}"]`)
    // The node type's range, from GET /node-types, is shown next to the field.
    assert.equal(await input.getAttribute('min'), '1')
    assert.equal(await input.getAttribute('max'), '100')
    await input.fill('70')
    await until(async () => (await serverParams(id)).difficulty === 70, 3000, 'a valid value written')

    for (const [typed, reason] of [['500', /between 1 and 100/], ['0', /between 1 and 100/], ['7.5', /whole number/]]) {
      await input.fill(typed)
      const refused = page.locator(`[data-param-refused="difficulty"]`)
      await refused.waitFor({ timeout: 3000 })
      const text = await refused.textContent()
      assert.match(text, reason)
      assert.match(text, /not saved/)
      assert.equal(await refused.getAttribute('role'), 'alert')
      assert.equal(await input.getAttribute('aria-invalid'), 'true')
      // Give a wrong write time to arrive, then check it never did: canvas and server.
      await page.waitForTimeout(300)
      assert.equal(await paramShown(page, id, 'difficulty'), '70', `${typed} not on the canvas`)
      assert.equal((await serverParams(id)).difficulty, 70, `${typed} not in the document`)
    }
    await page.screenshot({ path: artifact('inspector-refused.png') })
    // Leaving the field puts the document's value back; a valid value clears the message.
    await input.blur()
    assert.equal(await input.inputValue(), '70')
    await input.fill('42')
    await until(async () => (await serverParams(id)).difficulty === 42, 3000, 'the valid value written')
    assert.equal(await page.locator('[data-param-refused="difficulty"]').count(), 0)
    assert.deepEqual(problems, [])
  } finally {
    await context.close()
  }
})

test('the image-input picker uploads a PNG and the node uses it; the session\'s images can be picked', async () => {
  const { context, page, problems } = await studio()
  try {
    const id = await addNode(page, 'Image input')
    await selectNode(page, id)
    // No media id is invented for a new node: it waits for a picked image.
    assert.equal((await serverParams(id)).media, undefined)
    await page.locator(`[data-media-param="media"][data-node-id="${id}"] [data-media-upload="media"]`).setInputFiles({ name: 'ramp.png', mimeType: 'image/png', buffer: rampPng() })
    let media = null
    await until(async () => {
      media = (await serverParams(id)).media ?? null
      return typeof media === 'string' && /^[0-9a-f-]{36}$/.test(media)
    }, 10000, 'the uploaded image as the node\'s media param')
    // The upload is the session's, and the node shows it.
    const mine = await server.call('GET', '/media', { token: ada.token })
    const record = mine.body.find((m) => m.id === media)
    assert.ok(record, 'the upload is listed')
    assert.equal(record.session_id, session)
    assert.equal(record.content_type, 'image/png')
    await page.locator(`[data-media-current="${media}"]`).waitFor({ timeout: 5000 })
    assert.equal(await paramShown(page, id, 'media'), media)

    // A second image-input node picks from the session's images: another member's upload too.
    const bob = await server.signup('Bob')
    await server.addMember(ada.token, session, bob, 'editor')
    const form = new FormData()
    form.append('session_id', session)
    form.append('file', new Blob([rampPng(20, 20)], { type: 'image/png' }), 'bobs.png')
    const up = await fetch(`${server.base}/api/v1/media`, { method: 'POST', body: form, headers: { authorization: `Bearer ${bob.token}` } })
    assert.equal(up.status, 201, await up.clone().text())
    const bobs = (await up.json()).id
    const other = await addNode(page, 'Image input')
    await selectNode(page, other)
    const pick = page.locator(`[data-media-param="media"][data-node-id="${other}"] [data-media-pick="media"]`)
    await until(async () => (await pick.locator(`option[value="${media}"]`).count()) === 1, 5000, 'the upload in the picker')
    assert.equal(await pick.locator(`option[value="${bobs}"]`).count(), 1, 'Bob\'s upload in the picker')
    await pick.selectOption(bobs)
    await until(async () => (await serverParams(other)).media === bobs, 3000, 'the picked image as the param')
    await page.screenshot({ path: artifact('image-input-picker.png') })
    assert.deepEqual(problems, [])
  } finally {
    await context.close()
  }
})

test('a batch of 4 shows as a grid of 4 with distinct seeds; "Use seed" writes the seed into the node; the grid survives a reload', async () => {
  const { context, page, problems } = await studio()
  try {
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

    await page.getByTestId('variations').fill('4')
    await page.getByRole('button', { name: 'Run', exact: true }).click()
    const grid = page.locator('[data-batch-id]')
    await until(async () => (await grid.locator('.output img').count()) === 4, JOB_TIMEOUT_MS, 'a grid of 4 images')
    assert.equal(await grid.count(), 1, 'one batch')
    assert.match(await grid.locator('.batch-title').textContent(), /Batch of 4/)
    const seeds = await grid.locator('[data-use-seed]').evaluateAll((els) => els.map((e) => e.getAttribute('data-use-seed')))
    assert.equal(seeds.length, 4)
    assert.equal(new Set(seeds).size, 4, `distinct seeds: ${seeds}`)
    const values = seeds.map((s) => Number(s.split('=')[1]))
    assert.ok(seeds.every((s) => s.startsWith(`${terrain}=`)), `${seeds}`)
    // Variations are in order: each the next seed.
    assert.deepEqual(values, values.map((_, i) => values[0] + i))
    // Each image says which graph values made it.
    const shown = await grid.locator('.output').first().locator('[data-output-values] li').allTextContents()
    assert.ok(shown.some((v) => v.startsWith(`${terrain} (terrain):`) && v.includes('difficulty 50') && v.includes(`seed ${values[0]}`)), `${shown}`)
    const media = await grid.locator('.output').evaluateAll((els) => els.map((e) => e.getAttribute('data-media-id')))
    assert.equal(new Set(media).size, 4)
    await grid.scrollIntoViewIfNeeded()
    await page.screenshot({ path: artifact('batch-grid.png') })
    // The node shows its latest output; "Full size" opens an image at its own size (128²).
    await page.locator(`${nodeSel(terrain)} img[data-thumbnail-of]`).waitFor({ timeout: 5000 })
    const full = await grid.locator('.output').first().getByRole('link', { name: /^Full size/ }).getAttribute('href')
    assert.match(full, /^blob:/)
    const natural = await page.evaluate(async (url) => {
      const img = new Image()
      img.src = url
      await img.decode()
      return [img.naturalWidth, img.naturalHeight]
    }, full)
    assert.deepEqual(natural, [128, 128])

    // "Use seed" on the third variation: the node's seed is now that seed, in the document.
    const third = grid.locator('.output').nth(2)
    await third.locator('[data-use-seed]').click()
    await until(async () => (await serverParams(terrain)).seed === values[2], 3000, 'the seed in the document')
    await until(async () => (await paramShown(page, terrain, 'seed')) === String(values[2]), 3000, 'the seed on the canvas')

    // "Run from selected" runs the node again although its result is cached (that seed's).
    await page.getByTestId('variations').fill('1')
    await selectNode(page, terrain)
    await page.getByRole('button', { name: 'Run from selected', exact: true }).click()
    let rerun = null
    await until(async () => {
      const list = (await server.call('GET', `/sessions/${session}/jobs`, { token: ada.token })).body
      rerun = list.length === 5 ? list[0] : null
      return rerun?.status === 'succeeded'
    }, JOB_TIMEOUT_MS, 'the run from the terrain node')
    assert.equal(rerun.batch, null)
    assert.equal(rerun.plan[0].node_id, terrain)
    assert.equal(rerun.plan[0].seed, values[2])
    assert.notEqual(rerun.plan[0].cached, true, 'run again, not taken from the cache')

    // The gallery reads the session's runs from the server: the grid is there after a reload.
    await page.reload()
    await page.locator('.studio[data-conn="live"]').waitFor({ timeout: 15000 })
    await until(async () => (await page.locator('[data-batch-id] .output img').count()) === 4, 15000, 'the grid after a reload')
    const after = await page.locator('[data-batch-id] [data-use-seed]').evaluateAll((els) => els.map((e) => e.getAttribute('data-use-seed')))
    assert.deepEqual(after, seeds)
    // So is the run panel: the five finished runs, from the server's record.
    const runs = page.locator('section[aria-labelledby="run-h"] [data-job-id][data-status="succeeded"]')
    await until(async () => (await runs.count()) === 5, 10000, 'the finished runs in the run panel after a reload')
    assert.deepEqual(problems, [])
  } finally {
    await context.close()
  }
})

test('a server without models: the palette offers only the output sink and says there is nothing to run', async () => {
  const { mkdtempSync, rmSync } = await import('node:fs')
  const { tmpdir } = await import('node:os')
  const { join } = await import('node:path')
  const empty = mkdtempSync(join(tmpdir(), 'atelier-no-models-'))
  const bare = await new Server({ args: ['--models-dir', empty, '--in-process-worker', 'off'] }).start()
  const p = await openPage(browser, bare.base, { name: 'bare' })
  try {
    const eve = await bare.signup('Eve')
    const id = (await bare.call('POST', '/sessions', { token: eve.token, body: { title: 'No models' } })).body.id
    await loginViaUi(p.page, { email: eve.email, password: PASSWORD })
    await openStudio(p.page, id)
    await p.page.getByText('This server has no models installed yet: there is nothing to run.').waitFor({ timeout: 5000 })
    const offered = await p.page.getByRole('button', { name: /^Add node:/ }).evaluateAll((els) => els.map((e) => e.getAttribute('aria-label')))
    // Nothing the server does not list: no built-in stand-ins (prompt, sampler, …).
    assert.deepEqual(offered, ['Add node: Output'])
    assert.deepEqual(p.problems, [])
  } finally {
    await p.context.close()
    await bare.stop()
    rmSync(empty, { recursive: true, force: true })
  }
})

test('a refused run highlights the node it names on the canvas', async () => {
  const { context, page, problems } = await studio()
  try {
    // An image input with no image, wired to an output: the run is refused naming the node.
    const input = await addNode(page, 'Image input')
    const out = await addNode(page, 'Output')
    await selectNode(page, input)
    const connect = page.getByLabel('Connect heightmap to')
    await connect.selectOption(`${out}\u0000image`)
    await page.locator('.connect-forms form').filter({ has: connect }).getByRole('button', { name: 'Connect' }).click()
    await until(async () => Object.values((await serverGraph()).edges ?? {}).some((e) => e.source === input), 3000, 'the edge in the document')
    await page.getByRole('button', { name: 'Run', exact: true }).click()
    const alert = page.locator('section[aria-labelledby="run-h"] [role="alert"]')
    await alert.waitFor({ timeout: 10000 })
    assert.match(await alert.textContent(), new RegExp(`node ${input}: parameter media`))
    await page.locator(`${nodeSel(input)} [data-graph-error="true"]`).waitFor({ timeout: 3000 })
    // Only that node.
    assert.equal(await page.locator('[data-graph-error="true"]').count(), 1)
    await page.screenshot({ path: artifact('graph-error.png') })
    assert.deepEqual(problems, [])
  } finally {
    await context.close()
  }
})
