// (3) A share link opened in a third browser context: the graph read-only, no editing controls,
// presence both ways; an attempted edit reaches no one; revoking the link ends the live view.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { Server, withModels, PASSWORD } from '../lib/server.mjs'
import { launch, openPage, loginViaUi, openStudio, artifact, until, PHONE } from '../lib/browser.mjs'
import { addNode, selectNode, nodeSel, nodeIds, nodePosition, paramShown, editFirstParam } from '../lib/studio.mjs'

let server, browser, ada, bob, session, live
before(async () => {
  server = await new Server(withModels()).start()
  browser = await launch()
  ada = await server.signup('Ada')
  bob = await server.signup('Bob')
  session = (await server.call('POST', '/sessions', { token: ada.token, body: { title: 'Shared study' } })).body.id
  await server.addMember(ada.token, session, bob, 'editor')
  live = await server.hasLiveSocket(session, ada.token)
})
after(async () => {
  await browser?.close()
  await server?.stop()
})

/** The link's page on this server (the server may print another public origin). */
const onServer = (url) => `${server.base}/${new URL(url).hash}`

async function assertReadOnly (page) {
  assert.equal(await page.getByRole('button', { name: /^Add node:/ }).count(), 0, 'no palette')
  assert.equal(await page.getByRole('button', { name: 'Run', exact: true }).count(), 0, 'no Run')
  assert.equal(await page.getByRole('button', { name: 'Share' }).count(), 0, 'no Share')
  assert.equal(await page.getByRole('button', { name: 'Delete node' }).count(), 0, 'no delete')
  assert.equal(await page.getByRole('button', { name: 'Start runtime' }).count(), 0, 'no runtime start')
  assert.equal(await page.locator('.react-flow__node.draggable').count(), 0, 'nodes are not draggable')
  assert.equal(await page.locator('.react-flow__handle.connectable').count(), 0, 'ports are not connectable')
  assert.equal(await page.locator('[data-param-input]:enabled').count(), 0, 'no enabled parameter input')
}

test('a viewer link shows the graph read-only with presence; edits never reach others; revoking ends the view', async (t) => {
  assert.ok(live, 'the server has no live WebSocket (/ws)')
  const a = await openPage(browser, server.base, { name: 'ada' })
  const v = await openPage(browser, server.base, { name: 'viewer' })
  try {
    await loginViaUi(a.page, { email: ada.email, password: PASSWORD })
    await openStudio(a.page, session)
    const n1 = await addNode(a.page, 0)
    const n2 = await addNode(a.page, 1)
    await selectNode(a.page, n1)
    const param = await editFirstParam(a.page, n1, 'Ada')

    // Ada creates a viewer link in the share dialog.
    await a.page.getByRole('button', { name: 'Share' }).click()
    const dialog = a.page.getByRole('dialog', { name: 'Share this session' })
    await dialog.getByRole('button', { name: 'Create viewer link' }).click()
    const url = await dialog.getByLabel(/New viewer link/).inputValue()
    assert.match(url, new RegExp(`#/share/${session}\\?token=ats_`))
    await dialog.locator('[data-state="active"]').first().waitFor()
    await a.page.screenshot({ path: artifact('share-dialog.png') })
    await dialog.getByRole('button', { name: 'Close sharing' }).click()

    // The viewer: the graph, read-only.
    await v.page.goto(onServer(url))
    await v.page.locator('.studio[data-conn="live"]').waitFor({ timeout: 15000 })
    await until(async () => (await nodeIds(v.page)).length === 2, 5000, 'the graph at the viewer')
    assert.equal(await paramShown(v.page, n1, param.name), param.value)
    await v.page.getByText('View only').waitFor()
    await assertReadOnly(v.page)
    // Selecting a node shows its parameters, disabled.
    await selectNode(v.page, n1)
    assert.ok((await v.page.locator(`[data-param-input][data-node-id="${n1}"]`).count()) > 0)
    await assertReadOnly(v.page)

    // Presence both ways.
    await v.page.locator('[data-participant="Ada"]').waitFor({ timeout: 5000 })
    await a.page.locator('[data-participant="Guest viewer"]').waitFor({ timeout: 5000 })
    // The viewer's selection shows at Ada's too (awareness is allowed for viewers).
    await a.page.locator(`${nodeSel(n1)} .sn[data-remote-selected*="Guest viewer"]`).waitFor({ timeout: 3000 })

    // Live: Ada's changes reach the viewer.
    const n3 = await addNode(a.page, 2)
    await until(async () => (await v.page.locator(nodeSel(n3)).count()) === 1, 1000, 'a new node at the viewer')

    // An attempted edit (drag, Delete key, a forced document change) reaches no one.
    const posAtAda = await nodePosition(a.page, n2)
    const box = await v.page.locator(`${nodeSel(n2)} .sn-head`).boundingBox()
    await v.page.mouse.move(box.x + 10, box.y + 5)
    await v.page.mouse.down()
    await v.page.mouse.move(box.x + 120, box.y + 100, { steps: 6 })
    await v.page.mouse.up()
    await v.page.locator(nodeSel(n2)).focus()
    await v.page.keyboard.press('Delete')
    await new Promise((resolve) => setTimeout(resolve, 700))
    assert.equal(await nodePosition(a.page, n2), posAtAda)
    assert.equal(await a.page.locator(nodeSel(n2)).count(), 1)
    assert.equal(await v.page.locator(nodeSel(n2)).count(), 1)

    await v.page.screenshot({ path: artifact('viewer.png') })
    await v.page.setViewportSize(PHONE)
    await v.page.screenshot({ path: artifact('viewer-phone.png'), fullPage: true })

    // Ada revokes the link: the viewer's page says so, and stops showing live presence.
    await a.page.getByRole('button', { name: 'Share' }).click()
    await dialog.getByRole('button', { name: /^Revoke link/ }).first().click()
    await dialog.locator('[data-state="revoked"]').first().waitFor()
    const ended = v.page.getByTestId('ended')
    await ended.waitFor({ timeout: 5000 })
    assert.match(await ended.textContent(), /revoked/i)
    assert.equal(await v.page.locator('.studio').getAttribute('data-conn'), 'ended')
    await v.page.screenshot({ path: artifact('viewer-revoked.png'), fullPage: true })
    // Ada's edits no longer reach the revoked viewer.
    await dialog.getByRole('button', { name: 'Close sharing' }).click()
    const n4 = await addNode(a.page, 0)
    await new Promise((resolve) => setTimeout(resolve, 700))
    assert.equal(await v.page.locator(nodeSel(n4)).count(), 0)
    // Opening the link again: refused, with a clear message.
    await v.page.reload()
    await v.page.getByRole('alert').filter({ hasText: /revoked or has expired/ }).waitFor({ timeout: 5000 })
    assert.deepEqual([...a.problems, ...v.problems], [])
  } finally {
    await a.context.close()
    await v.context.close()
  }
})

test('a member with the viewer role gets the same read-only studio', async (t) => {
  assert.ok(live, 'the server has no live WebSocket (/ws)')
  const vic = await server.signup('Vic')
  await server.addMember(ada.token, session, vic, 'viewer')
  const p = await openPage(browser, server.base, { name: 'vic' })
  try {
    await loginViaUi(p.page, { email: vic.email, password: PASSWORD })
    await openStudio(p.page, session)
    await until(async () => (await nodeIds(p.page)).length > 0, 5000, 'the graph')
    await assertReadOnly(p.page)
    await p.page.getByText('You are a viewer in this session: read-only.').waitFor()
  } finally {
    await p.context.close()
  }
})
