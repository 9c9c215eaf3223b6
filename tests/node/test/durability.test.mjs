// Durability: an update another peer has received survives kill -9.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { Server, until, synced, destroyAll } from '../lib/server.mjs'

let server
after(async () => { await server?.stop() })

test('kill -9 loses no update that another peer received', async () => {
  server = await new Server().start()
  const ada = await server.signup('Ada')
  const bob = await server.signup('Bob')
  const session = await server.createSession(ada.token)
  await server.addMember(ada.token, session, bob.email, 'editor')
  const a = server.provider(session, ada.token)
  const b = server.provider(session, bob.token)
  try {
    await Promise.all([synced(a.provider), synced(b.provider)])
    const items = a.doc.getArray('items')
    // 500 separate updates (one transaction each), sent as fast as the client can.
    for (let i = 0; i < 500; i++) items.push([i])
    await until(() => b.doc.getArray('items').length === 500, 20_000, 'second editor receives all 500')
    // Killed the moment the peer has everything, with both clients still connected.
    await server.kill('SIGKILL')
  } finally {
    destroyAll(a.provider, b.provider)
  }
  await server.start()
  const fresh = server.provider(session, bob.token)
  try {
    await synced(fresh.provider)
    await until(() => fresh.doc.getArray('items').length >= 500, 5000, 'all 500 after restart')
    assert.deepEqual(fresh.doc.getArray('items').toArray(), [...Array(500).keys()])
  } finally {
    destroyAll(fresh.provider)
  }
})
