// (10) Undo per person and the keyboard habits of node editors: two editors each make changes,
// and each one's undo removes only their own (also after a drag, which is one step); copy/paste
// of two connected nodes keeps the edge (new ids, params kept); Ctrl/Cmd+A, Escape, Delete.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { Server, withModels, PASSWORD } from '../lib/server.mjs'
import { launch, openPage, loginViaUi, openStudio, artifact, until } from '../lib/browser.mjs'
import { addNode, selectNode, nodeSel, nodeIds, nodePosition } from '../lib/studio.mjs'

const WITHIN_MS = 1000
const MOD = process.platform === 'darwin' ? 'Meta' : 'Control'

let server, browser, ada, bob
before(async () => {
  server = await new Server(withModels()).start()
  browser = await launch()
  ada = await server.signup('Ada')
  bob = await server.signup('Bob')
})
after(async () => {
  await browser?.close()
  await server?.stop()
})

async function sessionFor (title) {
  const session = (await server.call('POST', '/sessions', { token: ada.token, body: { title } })).body.id
  await server.addMember(ada.token, session, bob, 'editor')
  return session
}

async function pair (session) {
  const a = await openPage(browser, server.base, { name: 'ada' })
  const b = await openPage(browser, server.base, { name: 'bob' })
  await loginViaUi(a.page, { email: ada.email, password: PASSWORD })
  await loginViaUi(b.page, { email: bob.email, password: PASSWORD })
  await openStudio(a.page, session)
  await openStudio(b.page, session)
  return { a, b, close: async () => { await a.context.close(); await b.context.close() } }
}

const has = (page, id) => page.locator(nodeSel(id)).count().then((n) => n === 1)
const edgeCount = (page) => page.locator('.react-flow__edge').count()

test("each editor's undo removes only their own changes; a drag is one step", async (t) => {
  const session = await sessionFor('Undo')
  const { a, b, close } = await pair(session)
  try {
    const mine = await addNode(a.page, 0)
    const theirs = await addNode(b.page, 1)
    for (const p of [a.page, b.page]) {
      await until(async () => (await has(p, mine)) && (await has(p, theirs)), WITHIN_MS, 'both nodes everywhere')
    }

    // Ada's undo removes her node, at both; Bob's stays.
    await a.page.keyboard.press(`${MOD}+z`)
    const took = await until(async () => !(await has(b.page, mine)), WITHIN_MS, "Ada's undo at Bob")
    t.diagnostic(`Ada's undo reached Bob in ${took} ms`)
    assert.ok(await has(a.page, theirs), "Bob's node survives Ada's undo")
    assert.ok(await has(b.page, theirs))
    // Ada has nothing more of hers to undo: another undo leaves Bob's node alone.
    await a.page.keyboard.press(`${MOD}+z`)
    await new Promise((resolve) => setTimeout(resolve, 300))
    assert.ok(await has(b.page, theirs))

    // Bob's undo (the button) removes his; Ada's redo brings hers back.
    await b.page.getByRole('button', { name: 'Undo my last change' }).click()
    await until(async () => !(await has(a.page, theirs)), WITHIN_MS, "Bob's undo at Ada")
    await a.page.keyboard.press(`${MOD}+Shift+z`)
    await until(async () => (await has(b.page, mine)), WITHIN_MS, "Ada's redo at Bob")
    assert.ok(!(await has(a.page, theirs)), "Ada's redo does not bring back Bob's node")

    // A drag with pauses is still one step: one undo puts the node back where it was.
    const start = await nodePosition(a.page, mine)
    const box = await a.page.locator(`${nodeSel(mine)} .sn-head`).boundingBox()
    await a.page.mouse.move(box.x + 20, box.y + box.height / 2)
    await a.page.mouse.down()
    for (const [dx, dy] of [[60, 40], [120, 80], [180, 120]]) {
      await a.page.mouse.move(box.x + 20 + dx, box.y + box.height / 2 + dy, { steps: 6 })
      await new Promise((resolve) => setTimeout(resolve, 700))
    }
    await a.page.mouse.up()
    const moved = await nodePosition(a.page, mine)
    assert.notEqual(moved, start)
    await until(async () => (await nodePosition(b.page, mine)) === moved, WITHIN_MS, 'the drag at Bob')
    await a.page.keyboard.press(`${MOD}+z`)
    await until(async () => (await nodePosition(b.page, mine)) === start, WITHIN_MS, 'the undone drag at Bob')
    assert.equal(await nodePosition(a.page, mine), start)
    assert.ok(await has(a.page, mine), 'one undo undid the drag only, not the node')
    assert.deepEqual([...a.problems, ...b.problems], [])
  } finally {
    await close()
  }
})

test('copy/paste of two connected nodes keeps the edge; select all, Escape, Delete and its undo', async (t) => {
  const session = await sessionFor('Clipboard')
  const { a, b, close } = await pair(session)
  try {
    // Two nodes joined by an edge (the inspector's connect form picks a fitting target).
    const types = await a.page.getByRole('button', { name: /^Add node:/ }).count()
    const ids = []
    for (let i = 0; i < Math.min(types, 4) && (await edgeCount(a.page)) === 0; i++) {
      ids.push(await addNode(a.page, i))
      for (const id of ids) {
        await selectNode(a.page, id)
        const form = a.page.locator('.connect-forms form').first()
        if ((await form.count()) === 0) continue
        await form.getByRole('button', { name: 'Connect' }).click()
        await until(async () => (await edgeCount(a.page)) === 1, 3000, 'the edge')
        break
      }
    }
    assert.equal(await edgeCount(a.page), 1, 'two node types fit together')
    const before = (await server.call('GET', `/sessions/${session}/graph`, { token: ada.token })).body
    const edge = Object.values(before.edges)[0]
    // Keep only the two connected nodes.
    for (const id of ids.filter((x) => x !== edge.source && x !== edge.target)) {
      await selectNode(a.page, id)
      await a.page.keyboard.press('Delete')
      await until(async () => !(await has(a.page, id)), WITHIN_MS, 'the spare node deleted')
    }
    const originals = [edge.source, edge.target]

    // Select all, copy, paste: two new nodes, joined like the originals, with the same params.
    await a.page.keyboard.press('Escape')
    await a.page.keyboard.press(`${MOD}+a`)
    await until(async () => (await a.page.locator('.react-flow__node.selected').count()) === 2, 2000, 'both selected')
    await a.page.keyboard.press(`${MOD}+c`)
    await a.page.keyboard.press(`${MOD}+v`)
    await until(async () => (await nodeIds(b.page)).length === 4 && (await edgeCount(b.page)) === 2, WITHIN_MS, 'the paste at Bob')
    const after = (await server.call('GET', `/sessions/${session}/graph`, { token: ada.token })).body
    const pasted = Object.keys(after.nodes).filter((id) => !originals.includes(id))
    assert.equal(pasted.length, 2)
    const newEdge = Object.values(after.edges).find((e) => pasted.includes(e.source))
    assert.ok(newEdge, 'the pasted nodes are connected')
    assert.ok(pasted.includes(newEdge.target))
    assert.equal(newEdge.source_port, edge.source_port)
    assert.equal(newEdge.target_port, edge.target_port)
    assert.equal(after.nodes[newEdge.source].type, after.nodes[edge.source].type)
    assert.deepEqual(after.nodes[newEdge.source].params, after.nodes[edge.source].params)
    assert.deepEqual(after.nodes[newEdge.target].params, after.nodes[edge.target].params)
    // The pasted nodes are the selection; Escape clears it.
    assert.equal(await a.page.locator('.react-flow__node.selected').count(), 2)
    await a.page.keyboard.press('Escape')
    await until(async () => (await a.page.locator('.react-flow__node.selected').count()) === 0, 2000, 'selection cleared')

    // Select all and Delete: everything goes, at both; one undo brings it all back.
    await a.page.keyboard.press(`${MOD}+a`)
    await a.page.keyboard.press('Delete')
    await until(async () => (await nodeIds(b.page)).length === 0, WITHIN_MS, 'the delete at Bob')
    await a.page.keyboard.press(`${MOD}+z`)
    await until(async () => (await nodeIds(b.page)).length === 4 && (await edgeCount(b.page)) === 2, WITHIN_MS, 'the undone delete at Bob')
    await a.page.screenshot({ path: artifact('10-clipboard.png') })
    assert.deepEqual([...a.problems, ...b.problems], [])
  } finally {
    await close()
  }
})
