// (2) Two members in two browser contexts co-edit one session: what one does appears in the
// other within 1 s, and each sees the other in the presence list and on the node they select.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { Server, withModels, PASSWORD } from '../lib/server.mjs'
import { launch, openPage, loginViaUi, openStudio, artifact, until, PHONE, LAPTOP } from '../lib/browser.mjs'
import { addNode, selectNode, editFirstParam, paramShown, nodeSel, nodeIds, nodePosition } from '../lib/studio.mjs'

const WITHIN_MS = 1000

let server, browser, ada, bob, session, live
before(async () => {
  server = await new Server(withModels()).start()
  browser = await launch()
  ada = await server.signup('Ada')
  bob = await server.signup('Bob')
  session = (await server.call('POST', '/sessions', { token: ada.token, body: { title: 'Co-edit' } })).body.id
  await server.addMember(ada.token, session, bob, 'editor')
  live = await server.hasLiveSocket(session, ada.token)
})
after(async () => {
  await browser?.close()
  await server?.stop()
})

async function pair () {
  const a = await openPage(browser, server.base, { name: 'ada' })
  const b = await openPage(browser, server.base, { name: 'bob' })
  await loginViaUi(a.page, { email: ada.email, password: PASSWORD })
  await loginViaUi(b.page, { email: bob.email, password: PASSWORD })
  await openStudio(a.page, session)
  await openStudio(b.page, session)
  return { a, b, close: async () => { await a.context.close(); await b.context.close() } }
}

test('two members co-edit: nodes, parameters, moves, connections and deletes reach the other within 1 s', async (t) => {
  assert.ok(live, 'the server has no live WebSocket (/ws)')
  const { a, b, close } = await pair()
  try {
    // Presence: both see both.
    for (const p of [a.page, b.page]) {
      await p.locator('[data-participant="Ada"]').waitFor({ timeout: 5000 })
      await p.locator('[data-participant="Bob"]').waitFor({ timeout: 5000 })
    }

    // Ada adds a node: Bob has it within 1 s.
    const first = await addNode(a.page, 0)
    const tAdd = await until(async () => (await b.page.locator(nodeSel(first)).count()) === 1, WITHIN_MS, 'the node at Bob')
    t.diagnostic(`node added by Ada reached Bob in ${tAdd} ms`)

    // Bob adds nodes of the other types: Ada has them within 1 s.
    const types = await b.page.getByRole('button', { name: /^Add node:/ }).count()
    const bobs = []
    for (let i = 1; i < Math.min(types, 4); i++) {
      const id = await addNode(b.page, i)
      bobs.push(id)
      await until(async () => (await a.page.locator(nodeSel(id)).count()) === 1, WITHIN_MS, `node ${id} at Ada`)
    }

    // Ada selects her node: Bob sees it highlighted with her name.
    await selectNode(a.page, first)
    await b.page.locator(`${nodeSel(first)} .sn[data-remote-selected*="Ada"]`).waitFor({ timeout: 3000 })

    // Ada changes a parameter: Bob's canvas shows the new value within 1 s.
    const edited = await editFirstParam(a.page, first, 'Ada')
    assert.ok(edited, 'the first node type has an editable text or number parameter')
    const tParam = await until(async () => (await paramShown(b.page, first, edited.name)) === edited.value, WITHIN_MS, `parameter ${edited.name} at Bob`)
    t.diagnostic(`parameter change reached Bob in ${tParam} ms`)

    // Bob changes it back from his inspector: Ada sees it.
    await selectNode(b.page, first)
    const back = await editFirstParam(b.page, first, 'Bob')
    await until(async () => (await paramShown(a.page, first, back.name)) === back.value, WITHIN_MS, 'parameter at Ada')

    // Ada drags a node: Bob sees the new position within 1 s.
    const before = await nodePosition(b.page, first)
    const box = await a.page.locator(`${nodeSel(first)} .sn-head`).boundingBox()
    await a.page.mouse.move(box.x + 20, box.y + box.height / 2)
    await a.page.mouse.down()
    await a.page.mouse.move(box.x + 80, box.y + 60, { steps: 8 })
    await a.page.mouse.move(box.x + 140, box.y + 110, { steps: 8 })
    await a.page.mouse.up()
    const moved = await nodePosition(a.page, first)
    assert.notEqual(moved, before)
    await until(async () => (await nodePosition(b.page, first)) === moved, WITHIN_MS, 'the move at Bob')

    // Ada connects two nodes with the inspector's keyboard-friendly form: Bob gets the edge.
    let connected = false
    for (const id of [first, ...bobs]) {
      await selectNode(a.page, id)
      const form = a.page.locator('.connect-forms form').first()
      if ((await form.count()) === 0) continue
      await form.getByRole('button', { name: 'Connect' }).click()
      connected = true
      break
    }
    if (connected) {
      await until(async () => (await b.page.locator('.react-flow__edge').count()) === 1, WITHIN_MS, 'the edge at Bob')
    } else {
      t.diagnostic('no two node types fit together: connection not exercised')
    }

    await a.page.screenshot({ path: artifact('studio-coedit-ada.png') })
    await b.page.screenshot({ path: artifact('studio-coedit-bob.png') })
    await b.page.setViewportSize(PHONE)
    await b.page.screenshot({ path: artifact('studio-phone.png'), fullPage: true })
    await b.page.setViewportSize(LAPTOP)

    // Bob deletes a node with the keyboard: gone at Ada within 1 s, with its edges.
    const victim = bobs[0] ?? first
    await selectNode(b.page, victim)
    await b.page.keyboard.press('Delete')
    await until(async () => (await a.page.locator(nodeSel(victim)).count()) === 0, WITHIN_MS, 'the delete at Ada')
    await until(async () => (await b.page.locator(nodeSel(victim)).count()) === 0, WITHIN_MS, 'the delete at Bob himself')
    assert.deepEqual((await nodeIds(a.page)).sort(), (await nodeIds(b.page)).sort())

    assert.deepEqual([...a.problems, ...b.problems], [])
  } finally {
    await close()
  }
})

test('a late joiner gets the whole graph, and a reload keeps it', async (t) => {
  assert.ok(live, 'the server has no live WebSocket (/ws)')
  const a = await openPage(browser, server.base, { name: 'ada' })
  try {
    await loginViaUi(a.page, { email: ada.email, password: PASSWORD })
    await openStudio(a.page, session)
    await until(async () => (await nodeIds(a.page)).length > 0, 5000, 'the graph from the first test')
    const ids = (await nodeIds(a.page)).sort()
    await a.page.reload()
    await a.page.locator('.studio[data-conn="live"]').waitFor({ timeout: 10000 })
    await until(async () => (await nodeIds(a.page)).length === ids.length, 5000, 'the graph after reload')
    assert.deepEqual((await nodeIds(a.page)).sort(), ids)
  } finally {
    await a.context.close()
  }
})
