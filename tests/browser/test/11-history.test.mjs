// (11) The history panel: an editor names the current state, previews it (its size and what
// restoring it would change), restores it — and the restore reaches the other editor within
// 1 s — then undoes the restore. Ctrl/Cmd+Z undoes a restore too (until its author edits again,
// when it undoes that edit first). A viewer sees the history but cannot restore.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { Server, withModels, PASSWORD } from '../lib/server.mjs'
import { launch, openPage, loginViaUi, openStudio, artifact, until } from '../lib/browser.mjs'
import { addNode, nodeSel } from '../lib/studio.mjs'

const WITHIN_MS = 1000

let server, browser, ada, bob, cy, session
before(async () => {
  server = await new Server(withModels()).start()
  browser = await launch()
  ada = await server.signup('Ada')
  bob = await server.signup('Bob')
  cy = await server.signup('Cy')
  session = (await server.call('POST', '/sessions', { token: ada.token, body: { title: 'History' } })).body.id
  await server.addMember(ada.token, session, bob, 'editor')
  await server.addMember(ada.token, session, cy, 'viewer')
})
after(async () => {
  await browser?.close()
  await server?.stop()
})

const has = (page, id) => page.locator(nodeSel(id)).count().then((n) => n === 1)

test('an editor names, previews and restores a version; the other editor has it within 1 s; the restore is undone', async (t) => {
  const a = await openPage(browser, server.base, { name: 'ada' })
  const b = await openPage(browser, server.base, { name: 'bob' })
  try {
    await loginViaUi(a.page, { email: ada.email, password: PASSWORD })
    await loginViaUi(b.page, { email: bob.email, password: PASSWORD })
    await openStudio(a.page, session)
    await openStudio(b.page, session)

    const kept = await addNode(a.page, 0)
    await until(async () => await has(b.page, kept), WITHIN_MS, 'the first node at Bob')
    await a.page.getByRole('button', { name: 'History', exact: true }).click()
    await a.page.getByLabel('Name the current state').fill('one node')
    await a.page.getByRole('button', { name: 'Save version' }).click()
    const named = a.page.locator('[data-version-id][data-kind="named"]').filter({ hasText: 'one node' })
    await named.waitFor({ timeout: 5000 })
    const versionId = await named.getAttribute('data-version-id')
    assert.match(await named.textContent(), /Ada/)
    await a.page.getByRole('button', { name: 'Close history' }).click()

    // Bob adds a node after the version.
    const later = await addNode(b.page, 1)
    await until(async () => await has(a.page, later), WITHIN_MS, "Bob's node at Ada")

    // Ada previews the version: one node, and restoring it would remove Bob's.
    await a.page.getByRole('button', { name: 'History', exact: true }).click()
    await named.getByRole('button', { name: /^Preview version/ }).click()
    const preview = a.page.locator(`[data-preview-version="${versionId}"]`)
    await preview.waitFor({ timeout: 5000 })
    assert.match(await preview.getByTestId('version-size').textContent(), /^1 nodes, 0 connections/)
    assert.match(await preview.getByTestId('version-changes').textContent(), /add 0 and remove 1 nodes/)

    // She restores it: Bob's node is gone at Bob within 1 s.
    await preview.getByRole('button', { name: 'Restore this version' }).click()
    const took = await until(async () => !(await has(b.page, later)), WITHIN_MS, 'the restore at Bob')
    t.diagnostic(`the restore reached Bob in ${took} ms (from the click)`)
    assert.ok(await has(b.page, kept))
    // The restore is a version of its own, and it can be undone.
    await a.page.locator('[data-version-id][data-kind="restore"]').first().waitFor({ timeout: 5000 })
    await a.page.getByRole('button', { name: 'Undo this restore' }).click()
    await until(async () => await has(b.page, later), WITHIN_MS, 'the undone restore at Bob')
    await a.page.screenshot({ path: artifact('11-history.png') })
    assert.deepEqual([...a.problems, ...b.problems], [])
  } finally {
    await a.context.close()
    await b.context.close()
  }
})

test('Ctrl/Cmd+Z undoes a restore, until its author edits again', async () => {
  const a = await openPage(browser, server.base, { name: 'ada' })
  const b = await openPage(browser, server.base, { name: 'bob' })
  try {
    await loginViaUi(a.page, { email: ada.email, password: PASSWORD })
    await loginViaUi(b.page, { email: bob.email, password: PASSWORD })
    await openStudio(a.page, session)
    await openStudio(b.page, session)
    const named = await server.call('POST', `/sessions/${session}/versions`, { token: ada.token, body: { name: 'before Bob' } })
    assert.equal(named.status, 201, JSON.stringify(named.body))
    const bobs = await addNode(b.page, 1)
    await until(async () => await has(a.page, bobs), WITHIN_MS, "Bob's node at Ada")

    const restore = async () => {
      await a.page.getByRole('button', { name: 'History', exact: true }).click()
      await a.page.locator(`[data-version-id="${named.body.id}"]`).getByRole('button', { name: /^Preview version/ }).click()
      await a.page.locator(`[data-preview-version="${named.body.id}"]`).getByRole('button', { name: 'Restore this version' }).click()
      await until(async () => !(await has(b.page, bobs)), WITHIN_MS, 'the restore at Bob')
      await a.page.getByRole('button', { name: 'Close history' }).click()
    }
    // Restored, then Ctrl+Z on the canvas: Bob's node is back, at Bob too.
    await restore()
    await a.page.locator('.react-flow__pane').click()
    await a.page.keyboard.press('Control+z')
    await until(async () => await has(b.page, bobs), WITHIN_MS, 'the restore undone at Bob')

    // Restored again, then Ada edits: Ctrl+Z undoes her edit, not the restore.
    await restore()
    const hers = await addNode(a.page, 0)
    await until(async () => await has(b.page, hers), WITHIN_MS, "Ada's new node at Bob")
    await a.page.locator('.react-flow__pane').click()
    await a.page.keyboard.press('Control+z')
    await until(async () => !(await has(b.page, hers)), WITHIN_MS, "Ada's node undone at Bob")
    await a.page.waitForTimeout(300)
    assert.equal(await has(b.page, bobs), false, 'the restore stays')
    assert.deepEqual([...a.problems, ...b.problems], [])
  } finally {
    await a.context.close()
    await b.context.close()
  }
})

test('a viewer sees the history and previews, without restore or naming', async () => {
  const c = await openPage(browser, server.base, { name: 'cy' })
  try {
    await loginViaUi(c.page, { email: cy.email, password: PASSWORD })
    await openStudio(c.page, session)
    await c.page.getByRole('button', { name: 'History', exact: true }).click()
    const first = c.page.locator('[data-version-id]').first()
    await first.waitFor({ timeout: 5000 })
    assert.equal(await c.page.getByRole('button', { name: /^Restore/ }).count(), 0)
    assert.equal(await c.page.getByLabel('Name the current state').count(), 0)
    await first.getByRole('button', { name: /^Preview version/ }).click()
    await c.page.locator('[data-preview-version]').waitFor({ timeout: 5000 })
    assert.equal(await c.page.getByRole('button', { name: 'Restore this version' }).count(), 0)
    assert.deepEqual(c.problems, [])
  } finally {
    await c.context.close()
  }
})
