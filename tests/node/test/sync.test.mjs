// Stock yjs / y-websocket clients against the real server: convergence, late joiners, awareness,
// idle connections.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import * as Y from 'yjs'
import { Server, until, synced, destroyAll } from '../lib/server.mjs'

let server
before(async () => { server = await new Server().start() })
after(async () => { await server.stop() })

async function twoEditors () {
  const ada = await server.signup('Ada')
  const bob = await server.signup('Bob')
  const session = await server.createSession(ada.token)
  await server.addMember(ada.token, session, bob, 'editor')
  return { ada, bob, session }
}

test('two editors converge on concurrent Y.Text and nodes edits', async () => {
  const { ada, bob, session } = await twoEditors()
  const a = server.provider(session, ada.token)
  const b = server.provider(session, bob.token)
  try {
    await Promise.all([synced(a.provider), synced(b.provider)])
    const ta = a.doc.getText('prompt')
    const tb = b.doc.getText('prompt')
    const na = a.doc.getMap('nodes')
    const nb = b.doc.getMap('nodes')
    // Concurrent edits from both sides, interleaved without waiting.
    for (let i = 0; i < 50; i++) {
      ta.insert(0, 'a')
      tb.insert(tb.length, 'b')
      const node = new Y.Map()
      node.set('type', 'sampler')
      node.set('x', i)
      ;(i % 2 ? na : nb).set(`node-${i}`, node)
    }
    na.delete('node-3')
    await until(() => ta.toString() === tb.toString() && ta.length === 100, 5000, 'text convergence')
    await until(() => na.size === 49 && nb.size === 49, 5000, 'nodes convergence')
    assert.deepEqual(na.toJSON(), nb.toJSON())
    assert.equal(ta.toString().split('a').length - 1, 50)
  } finally {
    destroyAll(a.provider, b.provider)
  }
})

test('a late joiner gets the full state', async () => {
  const { ada, bob, session } = await twoEditors()
  const a = server.provider(session, ada.token)
  try {
    await synced(a.provider)
    const nodes = a.doc.getMap('nodes')
    for (let i = 0; i < 20; i++) {
      const node = new Y.Map()
      node.set('type', 'terrain')
      node.set('params', new Y.Map())
      nodes.set(`n${i}`, node)
    }
    a.doc.getText('prompt').insert(0, 'mountains at dawn')
    // Give the server the updates, then join late.
    const late = server.provider(session, bob.token)
    try {
      await synced(late.provider)
      await until(() => late.doc.getMap('nodes').size === 20, 3000, 'late joiner state')
      assert.equal(late.doc.getText('prompt').toString(), 'mountains at dawn')
    } finally {
      destroyAll(late.provider)
    }
  } finally {
    destroyAll(a.provider)
  }
})

test('awareness crosses between participants and leaves with them', async () => {
  const { ada, bob, session } = await twoEditors()
  const a = server.provider(session, ada.token)
  const b = server.provider(session, bob.token)
  try {
    await Promise.all([synced(a.provider), synced(b.provider)])
    a.provider.awareness.setLocalStateField('user', { name: 'Ada', color: '#f00' })
    b.provider.awareness.setLocalStateField('user', { name: 'Bob', color: '#00f' })
    const names = (p) => [...p.awareness.getStates().values()].map((s) => s.user?.name).filter(Boolean).sort()
    await until(() => names(a.provider).join() === 'Ada,Bob' && names(b.provider).join() === 'Ada,Bob', 5000, 'awareness')
    b.provider.destroy()
    await until(() => names(a.provider).join() === 'Ada', 5000, 'awareness removal after leave')
  } finally {
    destroyAll(a.provider, b.provider)
  }
})

test('an idle stock client stays connected past its 30 s watchdog', async () => {
  const { ada, session } = await twoEditors()
  const a = server.provider(session, ada.token)
  try {
    await synced(a.provider)
    let closes = 0
    a.provider.on('connection-close', () => { closes++ })
    await new Promise((resolve) => setTimeout(resolve, 36_000))
    assert.equal(closes, 0, 'the provider dropped its connection while idle')
    assert.equal(a.provider.wsconnected, true)
  } finally {
    destroyAll(a.provider)
  }
})
