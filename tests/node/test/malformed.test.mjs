// Malformed and abusive frames close only the connection that sent them.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import WebSocket from 'ws'
import { Server, until, synced, destroyAll } from '../lib/server.mjs'

let server
before(async () => {
  server = await new Server({ args: ['--ws-max-message-bytes', '65536', '--ws-max-messages-per-sec', '100'] }).start()
})
after(async () => { await server.stop() })

function rawSocket (session, token) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${server.wsUrl}/${session}?token=${token}`)
    ws.binaryType = 'nodebuffer'
    ws.once('open', () => resolve(ws))
    ws.once('error', reject)
  })
}

const closeOf = (ws) => new Promise((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })))

test('bad frames close their own connection with the matching code; others carry on', async () => {
  const ada = await server.signup('Ada')
  const bob = await server.signup('Bob')
  const session = await server.createSession(ada.token)
  await server.addMember(ada.token, session, bob, 'editor')
  const a = server.provider(session, ada.token)
  const b = server.provider(session, bob.token)
  try {
    await Promise.all([synced(a.provider), synced(b.provider)])
    const cases = [
      { name: 'truncated varint', bytes: Buffer.from([0x80]), codes: [1002] },
      { name: 'sync message with a truncated varint', bytes: Buffer.from([0, 0, 0xff, 0xff]), codes: [1002] },
      { name: 'absurd length prefix', bytes: Buffer.from([0, 2, 0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2, 3]), codes: [1002] },
      { name: 'garbage update payload', bytes: Buffer.from([0, 2, 5, 1, 2, 3, 4, 5]), codes: [1002, 1003] },
      { name: 'unknown message type', bytes: Buffer.from([42, 1, 2, 3]), codes: [1003] },
      { name: 'text frame', bytes: 'hello', codes: [1003] },
      { name: 'oversize frame', bytes: Buffer.alloc(200_000, 1), codes: [1009] }
    ]
    let round = 0
    for (const c of cases) {
      const ws = await rawSocket(session, ada.token)
      const closed = closeOf(ws)
      ws.send(c.bytes)
      const { code, reason } = await closed
      assert.ok(c.codes.includes(code), `${c.name}: closed with ${code} (${reason})`)
      assert.ok(reason.length > 0, `${c.name}: close without a reason`)
      // The session and its other participants are unaffected.
      round++
      a.doc.getText('t').insert(0, `${round}`)
      await until(() => b.doc.getText('t').toString() === a.doc.getText('t').toString(), 3000, `sync after ${c.name}`)
      assert.equal(a.provider.wsconnected && b.provider.wsconnected, true)
    }
  } finally {
    destroyAll(a.provider, b.provider)
  }
})

test('a client that floods messages is closed with 1008', async () => {
  const ada = await server.signup('Ada')
  const session = await server.createSession(ada.token)
  const ws = await rawSocket(session, ada.token)
  const closed = closeOf(ws)
  // query-awareness is cheap and valid: only the rate is wrong.
  for (let i = 0; i < 2000 && ws.readyState === WebSocket.OPEN; i++) ws.send(Buffer.from([3]))
  const { code, reason } = await closed
  assert.equal(code, 1008, reason)
})
