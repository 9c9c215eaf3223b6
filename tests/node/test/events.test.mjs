// The studio events channel: only for clients that ask with ?events=1.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import WebSocket from 'ws'
import * as decoding from 'lib0/decoding'
import { Server, until, synced, destroyAll } from '../lib/server.mjs'

let server
before(async () => { server = await new Server().start() })
after(async () => { await server.stop() })

function collect (url) {
  const frames = []
  const ws = new WebSocket(url)
  ws.binaryType = 'nodebuffer'
  ws.on('message', (data) => frames.push(new Uint8Array(data)))
  return { ws, frames, open: new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject) }) }
}

const events = (frames) => frames.filter((f) => f[0] === 100).map((f) => {
  const d = decoding.createDecoder(f)
  decoding.readVarUint(d)
  return JSON.parse(decoding.readVarString(d))
})

test('events clients get session.hello first and presence; stock clients get no type 100', async () => {
  const ada = await server.signup('Ada')
  const session = await server.createSession(ada.token)
  const link = await server.shareLink(ada.token, session)
  const watcher = collect(`${server.wsUrl}/${session}?token=${link.token}&events=1`)
  const plain = collect(`${server.wsUrl}/${session}?token=${ada.token}`)
  await Promise.all([watcher.open, plain.open])
  await until(() => events(watcher.frames).length > 0, 3000, 'session.hello')
  const hello = events(watcher.frames)[0]
  assert.equal(hello.type, 'session.hello')
  assert.equal(hello.role, 'viewer')
  assert.equal(hello.session_id, session)
  assert.deepEqual(hello.jobs, [])
  // A stock provider joining is announced to the events client.
  const p = server.provider(session, ada.token)
  try {
    await synced(p.provider)
    await until(() => events(watcher.frames).some((e) => e.type === 'participant.joined'), 3000, 'participant.joined')
  } finally {
    destroyAll(p.provider)
  }
  await new Promise((resolve) => setTimeout(resolve, 200))
  assert.equal(plain.frames.filter((f) => f[0] === 100 || f[0] === 101).length, 0, 'stock client got studio events')
  watcher.ws.close()
  plain.ws.close()
})
