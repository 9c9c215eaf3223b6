// A restore is a normal collaborative update: two stock y-websocket clients editing while an
// editor restores a version end identical, equal to the restored version plus what they did
// after it — and both see the restore at once.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import * as Y from 'yjs'
import { Server, until, synced, destroyAll } from '../lib/server.mjs'

let server
before(async () => {
  server = await new Server({ args: ['--version-settle-ms', '200'] }).start()
})
after(async () => { await server.stop() })

function addNode (doc, id, x, params = {}) {
  doc.transact(() => {
    const node = new Y.Map()
    node.set('type', 'blur')
    node.set('x', x)
    node.set('y', 0)
    const p = new Y.Map()
    for (const [k, v] of Object.entries(params)) p.set(k, v)
    node.set('params', p)
    doc.getMap('nodes').set(id, node)
  })
}

// JSON with keys sorted: two replicas of one Y.Map may list their keys in different orders.
const canonical = (v) => JSON.stringify(v, (_, x) =>
  x && typeof x === 'object' && !Array.isArray(x) ? Object.fromEntries(Object.entries(x).sort()) : x)

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

test('a restore during concurrent edits converges for every client', async () => {
  const ada = await server.signup('Ada')
  const bo = await server.signup('Bo')
  const session = await server.createSession(ada.token)
  await server.addMember(ada.token, session, bo, 'editor')
  const A = server.provider(session, ada.token)
  const B = server.provider(session, bo.token)
  try {
    await Promise.all([synced(A.provider), synced(B.provider)])
    const nodesA = A.doc.getMap('nodes')
    const nodesB = B.doc.getMap('nodes')

    addNode(A.doc, 'a', 10, { radius: 2 })
    addNode(A.doc, 'b', 20, { radius: 3 })
    await until(() => nodesB.has('b'), 2000, 'B sees a and b')
    const named = await server.call('POST', `/sessions/${session}/versions`, {
      token: ada.token, body: { name: 'two nodes' }
    })
    assert.equal(named.status, 201, JSON.stringify(named.body))
    const version = await server.call('GET', `/sessions/${session}/versions/${named.body.id}`, { token: bo.token })
    assert.equal(version.status, 200)
    const restored = version.body.graph.nodes
    assert.deepEqual(Object.keys(restored).sort(), ['a', 'b'])

    // The graph moves on: a node added, one deleted, one moved.
    addNode(A.doc, 'c', 30)
    nodesB.delete('b')
    nodesB.get('a').set('x', 500)
    await until(() => nodesA.get('a').get('x') === 500 && !nodesA.has('b') && nodesB.has('c'), 2000, 'both see the edits')

    // Both keep editing while Bo restores.
    let editing = true
    const loops = [
      (async () => { for (let i = 0; editing; i++) { addNode(A.doc, `live-a-${i}`, i); await sleep(5) } })(),
      (async () => { for (let i = 0; editing; i++) { nodesB.get('a')?.get('params')?.set(`k${i % 5}`, i); await sleep(5) } })()
    ]
    await sleep(100)
    const started = Date.now()
    const restore = await server.call('POST', `/sessions/${session}/versions/${named.body.id}/restore`, { token: bo.token })
    assert.equal(restore.status, 201, JSON.stringify(restore.body))
    assert.equal(restore.body.version.kind, 'restore')
    // The restore reaches both clients at once.
    await until(() => nodesA.has('b') && !nodesA.has('c') && nodesB.has('b') && !nodesB.has('c'), 1000, 'the restore at both clients')
    console.log(`restore request to both clients seeing it: ${Date.now() - started} ms`)
    editing = false
    await Promise.all(loops)

    // What they do after it.
    addNode(A.doc, 'after-a', 1)
    addNode(B.doc, 'after-b', 2)
    await until(() => nodesA.has('after-b') && nodesB.has('after-a'), 2000, 'edits after the restore')
    await until(() => canonical(nodesA.toJSON()) === canonical(nodesB.toJSON()) &&
      canonical(A.doc.getMap('edges').toJSON()) === canonical(B.doc.getMap('edges').toJSON()),
    3000, 'the two clients identical')

    const final = nodesA.toJSON()
    // The restored version: b back as it was, a's move undone, c gone…
    assert.deepEqual(final.b, restored.b)
    assert.equal(final.a.x, restored.a.x)
    assert.equal(final.a.type, restored.a.type)
    assert.equal(final.c, undefined)
    // …plus the later edits.
    assert.ok(final['after-a'] && final['after-b'])
    // Anything else is an edit made concurrently with the restore (it merges like any edit).
    for (const id of Object.keys(final)) {
      assert.ok(['a', 'b', 'after-a', 'after-b'].includes(id) || id.startsWith('live-a-'), id)
    }
    for (const k of Object.keys(final.a.params)) {
      assert.ok(k === 'radius' || /^k\d$/.test(k), k)
    }
    // The server's document is the same one.
    const live = await server.call('GET', `/sessions/${session}/graph`, { token: ada.token })
    assert.deepEqual(live.body.nodes, final)

    // The restore is undoable: restoring its `undo` version brings back the state before it.
    const undo = await server.call('GET', `/sessions/${session}/versions/${restore.body.undo}`, { token: ada.token })
    assert.equal(undo.body.graph.nodes.c?.type, 'blur')
    assert.equal(undo.body.graph.nodes.b, undefined)
  } finally {
    destroyAll(A.provider, B.provider)
  }
})
