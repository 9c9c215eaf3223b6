// Durability: an update another peer has received survives kill -9.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import WebSocket from 'ws'
import { Server, until, synced, destroyAll } from '../lib/server.mjs'

let server
after(async () => { await server?.stop() })

test('kill -9 loses no update that another peer received', async () => {
  server = await new Server().start()
  const ada = await server.signup('Ada')
  const bob = await server.signup('Bob')
  const session = await server.createSession(ada.token)
  await server.addMember(ada.token, session, bob, 'editor')
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

test('SIGTERM closes every live socket with 1001 and keeps what was sent', async () => {
  const s = await new Server().start()
  try {
    const ada = await s.signup('Ada')
    const session = await s.createSession(ada.token)
    const editor = s.provider(session, ada.token)
    await synced(editor.provider)
    // Raw sockets: the stock client reconnects by itself, which would hide the close code.
    const closes = []
    const opened = []
    for (let i = 0; i < 20; i++) {
      const ws = new WebSocket(`${s.wsUrl}/${session}?token=${ada.token}`)
      ws.on('close', (code, reason) => closes.push(`${code} ${reason}`))
      opened.push(new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject) }))
    }
    await Promise.all(opened)
    const peer = s.provider(session, ada.token)
    await synced(peer.provider)
    editor.doc.getMap('nodes').set('kept', 'yes')
    await until(() => peer.doc.getMap('nodes').get('kept') === 'yes', 5000, 'the edit at a peer')
    destroyAll(peer.provider)
    const exited = new Promise((resolve) => s.proc.once('exit', resolve))
    s.proc.kill('SIGTERM')
    assert.equal(await exited, 0, 'a clean exit')
    await until(() => closes.length === 20, 2000, 'every socket closed')
    assert.deepEqual([...new Set(closes)], ['1001 server shutting down'])
    destroyAll(editor.provider)
    await s.start()
    const fresh = s.provider(session, ada.token)
    try {
      await synced(fresh.provider)
      assert.equal(fresh.doc.getMap('nodes').get('kept'), 'yes')
    } finally {
      destroyAll(fresh.provider)
    }
  } finally {
    await s.stop()
  }
})
