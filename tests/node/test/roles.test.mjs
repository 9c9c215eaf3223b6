// Roles live on the socket: viewers are read-only, revocation disconnects, bad tokens are refused.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import WebSocket from 'ws'
import { Server, until, synced, destroyAll } from '../lib/server.mjs'

let server
before(async () => { server = await new Server().start() })
after(async () => { await server.stop() })

/** A WebSocket class that records every binary message it receives. */
function recordingSocket (log) {
  return class extends WebSocket {
    constructor (...args) {
      super(...args)
      this.addEventListener('message', (e) => log.push(new Uint8Array(e.data)))
    }
  }
}

const isReadOnlyAuth = (m) =>
  m[0] === 2 && m[1] === 0 && Buffer.from(m.subarray(3)).toString().includes('read-only')

test("a viewer's edit is refused with [2,0,reason] and never stored", async () => {
  const ada = await server.signup('Ada')
  const vic = await server.signup('Vic')
  const session = await server.createSession(ada.token)
  await server.addMember(ada.token, session, vic, 'viewer')
  const link = await server.shareLink(ada.token, session)

  const editor = server.provider(session, ada.token)
  const vicLog = []
  const linkLog = []
  const viewer = server.provider(session, vic.token, { provider: { WebSocketPolyfill: recordingSocket(vicLog) } })
  const linked = server.provider(session, link.token, { provider: { WebSocketPolyfill: recordingSocket(linkLog) } })
  try {
    await Promise.all([synced(editor.provider), synced(viewer.provider), synced(linked.provider)])
    editor.doc.getText('t').insert(0, 'by editor')
    // Viewers receive everything.
    await until(() => viewer.doc.getText('t').toString() === 'by editor', 3000, 'viewer receives')
    await until(() => linked.doc.getText('t').toString() === 'by editor', 3000, 'share link receives')
    viewer.doc.getText('t').insert(0, 'VIEWER ')
    linked.doc.getText('t').insert(0, 'LINK ')
    await until(() => vicLog.some(isReadOnlyAuth), 3000, 'read-only answer to the viewer')
    await until(() => linkLog.some(isReadOnlyAuth), 3000, 'read-only answer to the share link')
    // Viewers may still talk awareness.
    viewer.provider.awareness.setLocalStateField('user', { name: 'Vic' })
    await until(() => [...editor.provider.awareness.getStates().values()].some((s) => s.user?.name === 'Vic'), 3000, 'viewer awareness')
    await new Promise((resolve) => setTimeout(resolve, 300))
    assert.equal(editor.doc.getText('t').toString(), 'by editor')
  } finally {
    destroyAll(editor.provider, viewer.provider, linked.provider)
  }
  // After a restart the refused edits are nowhere.
  await server.kill()
  await server.start()
  const fresh = server.provider(session, ada.token)
  try {
    await synced(fresh.provider)
    await until(() => fresh.doc.getText('t').length > 0, 3000, 'state after restart')
    assert.equal(fresh.doc.getText('t').toString(), 'by editor')
  } finally {
    destroyAll(fresh.provider)
  }
})

test('revoking a share link disconnects its viewer within 1 s', async () => {
  const ada = await server.signup('Ada')
  const session = await server.createSession(ada.token)
  const link = await server.shareLink(ada.token, session)
  const viewer = server.provider(session, link.token)
  try {
    await synced(viewer.provider)
    const closed = new Promise((resolve) => viewer.provider.on('connection-close', (event) => resolve(event)))
    const started = Date.now()
    const res = await server.call('DELETE', `/sessions/${session}/share-links/${link.id}`, { token: ada.token })
    assert.equal(res.status, 204)
    const event = await Promise.race([closed, new Promise((resolve) => setTimeout(() => resolve('timeout'), 1000))])
    assert.notEqual(event, 'timeout', 'viewer still connected 1 s after revocation')
    assert.ok(Date.now() - started <= 1000)
    // 4403 is in the range stock y-websocket treats as permanent: it does not hammer us.
    assert.equal(event.code, 4403)
  } finally {
    destroyAll(viewer.provider)
  }
})

test('removing or downgrading a member takes effect on the open socket', async () => {
  const ada = await server.signup('Ada')
  const bob = await server.signup('Bob')
  const cat = await server.signup('Cat')
  const session = await server.createSession(ada.token)
  await server.addMember(ada.token, session, bob, 'editor')
  await server.addMember(ada.token, session, cat, 'editor')
  const editor = server.provider(session, ada.token)
  const bobLog = []
  const b = server.provider(session, bob.token, { provider: { WebSocketPolyfill: recordingSocket(bobLog) } })
  const c = server.provider(session, cat.token)
  try {
    await Promise.all([synced(editor.provider), synced(b.provider), synced(c.provider)])
    // Downgrade Bob: his next edit is refused.
    assert.equal((await server.call('PATCH', `/sessions/${session}/members/${bob.id}`, { token: ada.token, body: { role: 'viewer' } })).status, 200)
    await new Promise((resolve) => setTimeout(resolve, 200))
    b.doc.getText('t').insert(0, 'bob after downgrade')
    await until(() => bobLog.some(isReadOnlyAuth), 3000, 'read-only after downgrade')
    // Remove Cat: her socket closes.
    const closed = new Promise((resolve) => c.provider.on('connection-close', (event) => resolve(event)))
    assert.equal((await server.call('DELETE', `/sessions/${session}/members/${cat.id}`, { token: ada.token })).status, 204)
    const event = await Promise.race([closed, new Promise((resolve) => setTimeout(() => resolve('timeout'), 1000))])
    assert.notEqual(event, 'timeout')
    assert.equal(event.code, 4403)
    await new Promise((resolve) => setTimeout(resolve, 200))
    assert.equal(editor.doc.getText('t').toString(), '')
  } finally {
    destroyAll(editor.provider, b.provider, c.provider)
  }
})

test('unknown, revoked and foreign tokens are refused at the upgrade', async () => {
  const ada = await server.signup('Ada')
  const eve = await server.signup('Eve')
  const session = await server.createSession(ada.token)
  const other = await server.createSession(eve.token)
  const link = await server.shareLink(ada.token, session)
  await server.call('DELETE', `/sessions/${session}/share-links/${link.id}`, { token: ada.token })
  const otherLink = await server.shareLink(eve.token, other)
  const attempt = (token, sid = session) => new Promise((resolve) => {
    const ws = new WebSocket(`${server.wsUrl}/${sid}${token ? `?token=${token}` : ''}`)
    ws.on('unexpected-response', (_req, res) => resolve(res.statusCode))
    ws.on('open', () => { ws.close(); resolve('opened') })
    ws.on('error', () => {})
  })
  assert.equal(await attempt(null), 401)
  assert.equal(await attempt('atl_nonsense'), 401)
  assert.equal(await attempt(link.token), 401)
  assert.equal(await attempt(otherLink.token), 403)
  assert.equal(await attempt(eve.token), 403)
  assert.equal(await attempt(ada.token, 'not-a-uuid'), 404)
  assert.equal(await attempt(ada.token), 'opened')
})
