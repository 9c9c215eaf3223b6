// Three real nodes on one PostgreSQL database and one Redis, with the stock yjs / y-websocket
// clients: what one node's clients do reaches the clients of every other node.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'
import { Cluster, LoadBalancer } from '../lib/cluster.mjs'
import { until, synced, destroyAll } from '../lib/server.mjs'

let cluster
// No periodic head checks here: what converges below converges through the relay (and the
// repairs it triggers), not through the slow safety net.
before(async () => { cluster = await new Cluster({ nodes: 3, env: { ATELIER_CLUSTER_HEAD_CHECK_INTERVAL_S: '3600' } }).start() })
after(async () => { await cluster?.stop() })

const text = (c) => c.doc.getText('t').toString()
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/** An editor's account and a session everybody below joins as editor. */
async function sessionWithEditors (count) {
  const [n1] = cluster.nodes
  const owner = await n1.signup('Owner')
  const session = await n1.createSession(owner.token)
  const editors = [owner]
  for (let i = 1; i < count; i++) {
    const editor = await cluster.nodes[i % cluster.nodes.length].signup(`Editor${i}`)
    await n1.addMember(owner.token, session, editor, 'editor')
    editors.push(editor)
  }
  return { session, owner, editors }
}

/** Types `count` characters, one transaction each, a few ms apart. */
async function type (client, label, count) {
  for (let i = 0; i < count; i++) {
    client.doc.getText('t').insert(0, `${label}${i};`)
    await sleep(5)
  }
}

function expectAll (doc, labels, count) {
  const t = doc.getText('t').toString()
  for (const label of labels) for (let i = 0; i < count; i++) assert.ok(t.includes(`${label}${i};`), `${label}${i} missing`)
}

test('editors on three nodes converge on concurrent edits', async () => {
  const { session, editors } = await sessionWithEditors(3)
  const clients = editors.map((e, i) => cluster.nodes[i].provider(session, e.token))
  try {
    await Promise.all(clients.map((c) => synced(c.provider)))
    await Promise.all(clients.map((c, i) => type(c, `n${i + 1}-`, 40)))
    await until(() => clients.every((c) => text(c) === text(clients[0])) && text(clients[0]).length > 0, 10000, 'convergence')
    for (const c of clients) expectAll(c.doc, ['n1-', 'n2-', 'n3-'], 40)
  } finally {
    destroyAll(...clients.map((c) => c.provider))
  }
  // What the cluster stored is what the clients saw: a fresh client on any node gets it all.
  const fresh = cluster.nodes[2].provider(session, editors[0].token)
  try {
    await synced(fresh.provider)
    await until(() => text(fresh).length > 0, 5000, 'fresh client state')
    expectAll(fresh.doc, ['n1-', 'n2-', 'n3-'], 40)
  } finally {
    destroyAll(fresh.provider)
  }
})

test('presence crosses nodes and disappears when its client leaves', async () => {
  const { session, editors } = await sessionWithEditors(2)
  const a = cluster.nodes[0].provider(session, editors[0].token)
  const b = cluster.nodes[2].provider(session, editors[1].token)
  try {
    await Promise.all([synced(a.provider), synced(b.provider)])
    b.provider.awareness.setLocalStateField('user', { name: 'Bea' })
    const bId = b.doc.clientID
    await until(() => a.provider.awareness.getStates().get(bId)?.user?.name === 'Bea', 3000, 'presence from node 3 at node 1')
    destroyAll(b.provider)
    await until(() => !a.provider.awareness.getStates().has(bId), 3000, 'presence removed at node 1')
  } finally {
    destroyAll(a.provider, b.provider)
  }
})

test('a share link revoked on node 1 closes its viewer on node 3 within 1 s', async () => {
  const [n1, , n3] = cluster.nodes
  const owner = await n1.signup('Owner')
  const session = await n1.createSession(owner.token)
  const link = await n1.shareLink(owner.token, session)
  const viewer = n3.provider(session, link.token)
  try {
    await synced(viewer.provider)
    const closed = new Promise((resolve) => viewer.provider.on('connection-close', (event) => resolve(event)))
    const started = Date.now()
    const res = await n1.call('DELETE', `/sessions/${session}/share-links/${link.id}`, { token: owner.token })
    assert.equal(res.status, 204)
    const event = await Promise.race([closed, sleep(1000).then(() => 'timeout')])
    assert.notEqual(event, 'timeout', 'viewer on node 3 still connected 1 s after revocation on node 1')
    assert.equal(event.code, 4403)
    assert.ok(Date.now() - started <= 1000)
  } finally {
    destroyAll(viewer.provider)
  }
})

/** Resolves with the close event of a provider's socket, or 'timeout' after `ms`. */
function closedWithin (provider, ms) {
  const closed = new Promise((resolve) => provider.on('connection-close', (event) => resolve(event)))
  return Promise.race([closed, sleep(ms).then(() => 'timeout')])
}

test('removal, logout and session deletion on node 1 close sockets on nodes 2 and 3 within 1 s', async () => {
  const [n1, n2, n3] = cluster.nodes
  const { session, owner, editors } = await sessionWithEditors(3)
  const [, removed, loggedOut] = editors
  const onRemoved = n2.provider(session, removed.token)
  const onLoggedOut = n3.provider(session, loggedOut.token)
  const ownerOn3 = n3.provider(session, owner.token)
  try {
    await Promise.all([synced(onRemoved.provider), synced(onLoggedOut.provider), synced(ownerOn3.provider)])
    let closing = closedWithin(onRemoved.provider, 1000)
    assert.equal((await n1.call('DELETE', `/sessions/${session}/members/${removed.id}`, { token: owner.token })).status, 204)
    let event = await closing
    assert.notEqual(event, 'timeout', 'removed member still connected on node 2')
    assert.equal(event.code, 4403)

    closing = closedWithin(onLoggedOut.provider, 1000)
    assert.equal((await n1.call('POST', '/auth/logout', { token: loggedOut.token })).status, 204)
    event = await closing
    assert.notEqual(event, 'timeout', 'logged-out editor still connected on node 3')
    assert.equal(event.code, 4401)

    closing = closedWithin(ownerOn3.provider, 1000)
    assert.equal((await n1.call('DELETE', `/sessions/${session}`, { token: owner.token })).status, 204)
    event = await closing
    assert.notEqual(event, 'timeout', 'socket of a deleted session still open on node 3')
    assert.equal(event.code, 4404)
  } finally {
    destroyAll(onRemoved.provider, onLoggedOut.provider, ownerOn3.provider)
  }
})

/** The account's live channel (`GET /me/events`) on one node: its events as they come. */
async function accountEvents (node, token) {
  const stop = new AbortController()
  const res = await fetch(`${node.base}/api/v1/me/events`, { headers: { authorization: `Bearer ${token}` }, signal: stop.signal })
  assert.equal(res.status, 200)
  const events = []
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader()
  void (async () => {
    let buffer = ''
    try {
      for (;;) {
        const { value, done } = await reader.read()
        if (done) return
        buffer += value
        let end
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const data = buffer.slice(0, end).split('\n').filter((l) => l.startsWith('data: ')).map((l) => l.slice(6)).join('\n')
          buffer = buffer.slice(end + 2)
          if (data) events.push(JSON.parse(data))
        }
      }
    } catch {}
  })()
  await until(() => events.some((e) => e.type === 'ready'), 3000, 'the channel ready')
  return { events, close: () => stop.abort() }
}

test('account events reach the account\'s channel on another node within 1 s', async () => {
  const [n1, n2, n3] = cluster.nodes
  const owner = await n1.signup('Owner')
  const bea = await n2.signup('Bea')
  const session = await n1.createSession(owner.token)
  const channel = await accountEvents(n3, bea.token)
  try {
    const invited = await n1.call('POST', `/sessions/${session}/members`, { token: owner.token, body: { email: bea.email, role: 'editor' } })
    assert.equal(invited.status, 200)
    await until(() => channel.events.some((e) => e.type === 'invitation.received' && e.session_id === session), 1000, 'invitation.received on node 3')
    const mine = await n2.call('GET', '/me/invitations', { token: bea.token })
    const accepted = await n2.call('POST', `/me/invitations/${mine.body[0].id}/accept`, { token: bea.token })
    assert.equal(accepted.status, 200)
    await until(() => channel.events.some((e) => e.type === 'membership.added' && e.session_id === session && e.role === 'editor'), 1000, 'membership.added on node 3')
    const removed = await n1.call('DELETE', `/sessions/${session}/members/${bea.id}`, { token: owner.token })
    assert.equal(removed.status, 204)
    await until(() => channel.events.some((e) => e.type === 'membership.removed' && e.session_id === session), 1000, 'membership.removed on node 3')
    // Each event arrived once, though every node hears the control channel.
    assert.equal(channel.events.filter((e) => e.type === 'membership.added').length, 1)
  } finally {
    channel.close()
  }
})

test('relayed updates that Redis loses are repaired from the database', async () => {
  // Every second published batch is dropped on purpose by these two nodes.
  const lossy = new Cluster({ nodes: 2, env: { ATELIER_CLUSTER_DROP_RELAY_EVERY: '2' } })
  await lossy.start()
  try {
    const [n1, n2] = lossy.nodes
    const owner = await n1.signup('Owner')
    const other = await n2.signup('Other')
    const session = await n1.createSession(owner.token)
    await n1.addMember(owner.token, session, other, 'editor')
    const a = n1.provider(session, owner.token)
    const b = n2.provider(session, other.token)
    try {
      await Promise.all([synced(a.provider), synced(b.provider)])
      await Promise.all([type(a, 'a', 30), type(b, 'b', 30)])
      await until(() => text(a) === text(b) && text(a).length > 0, 10000, 'convergence despite lost relay messages')
      expectAll(a.doc, ['a', 'b'], 30)
      const metrics = await (await fetch(`${n2.base}/metrics`)).text()
      const repairs = Number(metrics.match(/^atelier_cluster_gap_repairs_total (\d+)/m)?.[1] ?? 0)
      assert.ok(repairs > 0, 'node 2 repaired no gap')
    } finally {
      destroyAll(a.provider, b.provider)
    }
  } finally {
    await lossy.stop()
  }
})

test('Redis restarted mid-edit: every node converges without client action', async () => {
  const { session, editors } = await sessionWithEditors(3)
  const clients = editors.map((e, i) => cluster.nodes[i].provider(session, e.token))
  try {
    await Promise.all(clients.map((c) => synced(c.provider)))
    const typing = Promise.all(clients.map((c, i) => type(c, `r${i + 1}-`, 60)))
    await sleep(100)
    await cluster.redis.stop()
    const ready = await cluster.nodes[0].call('GET', '/readyz')
    await until(async () => (await cluster.nodes[0].call('GET', '/readyz')).body?.redis === 'degraded', 5000, 'readyz degraded')
    assert.equal(ready.status, 200)
    await sleep(500)
    await cluster.redis.start()
    await typing
    await until(() => clients.every((c) => text(c) === text(clients[0])) && text(clients[0]).length > 0, 15000, 'convergence after Redis returned')
    for (const c of clients) expectAll(c.doc, ['r1-', 'r2-', 'r3-'], 60)
    await until(async () => (await cluster.nodes[0].call('GET', '/readyz')).body?.redis === 'ok', 5000, 'readyz ok again')
  } finally {
    destroyAll(...clients.map((c) => c.provider))
  }
})

test('kill -9 of a node mid-edit loses nothing a peer received; its clients converge through the load balancer', async () => {
  const victimCluster = new Cluster({ nodes: 3 })
  await victimCluster.start()
  const lb = await new LoadBalancer(victimCluster.nodes).start()
  try {
    const [n1, n2, n3] = victimCluster.nodes
    const owner = await n1.signup('Owner')
    const other = await n2.signup('Other')
    const session = await n1.createSession(owner.token)
    await n1.addMember(owner.token, session, other, 'editor')
    // The watcher sits on node 1; the editor's connection is pinned to node 3 first.
    const watcher = n1.provider(session, owner.token)
    const victimDoc = new Y.Doc()
    const onVictim = new WebsocketProvider(n3.wsUrl, session, victimDoc, { params: { token: other.token }, WebSocketPolyfill: WebSocket, disableBc: true })
    try {
      await Promise.all([synced(watcher.provider), synced(onVictim)])
      onVictim.awareness.setLocalStateField('user', { name: 'Victim' })
      await until(() => watcher.provider.awareness.getStates().get(victimDoc.clientID)?.user?.name === 'Victim', 3000, 'victim presence at node 1')
      for (let i = 0; i < 50; i++) { victimDoc.getText('t').insert(0, `v${i};`); await sleep(5) }
      await sleep(50)
      await n3.kill()
      const received = watcher.doc.getText('t').toString()
      // The dead node's client presence disappears from the survivors.
      await until(() => !watcher.provider.awareness.getStates().has(victimDoc.clientID), 8000, 'dead node presence withdrawn')
      onVictim.destroy()
      // The same document reconnects through the load balancer (to node 1 or 2) and converges.
      const back = new WebsocketProvider(lb.wsUrl, session, victimDoc, { params: { token: other.token }, WebSocketPolyfill: WebSocket, disableBc: true })
      try {
        await synced(back)
        await until(() => watcher.doc.getText('t').toString() === victimDoc.getText('t').toString(), 10000, 'convergence after reconnecting')
        const after = watcher.doc.getText('t').toString()
        for (const piece of received.split(';').filter(Boolean)) assert.ok(after.includes(`${piece};`), `${piece} lost`)
        expectAll(watcher.doc, ['v'], 50)
      } finally {
        destroyAll(back)
      }
      // And after the cluster restarts entirely, everything any peer received is stored.
      await n3.start()
      const check = n3.provider(session, owner.token)
      try {
        await synced(check.provider)
        await until(() => text(check).length > 0, 5000, 'state on the restarted node')
        expectAll(check.doc, ['v'], 50)
      } finally {
        destroyAll(check.provider)
      }
    } finally {
      destroyAll(watcher.provider, onVictim)
    }
  } finally {
    await lb.stop()
    await victimCluster.stop()
  }
})

test('a node refuses cluster mode on SQLite or memory storage, naming the settings', async () => {
  const { spawnSync } = await import('node:child_process')
  const bin = process.env.ATELIER_BIN
  const run = (extra) => spawnSync(bin, ['serve', '--bind', '127.0.0.1:0', ...extra], {
    env: { PATH: process.env.PATH, ATELIER_REDIS_URL: cluster.redis.url }, encoding: 'utf8', timeout: 20000
  })
  const sqlite = run(['--database-url', `sqlite://${cluster.dir}/single.db`])
  assert.notEqual(sqlite.status, 0)
  assert.match(sqlite.stderr, /ATELIER_REDIS_URL/)
  assert.match(sqlite.stderr, /ATELIER_DATABASE_URL/)
  const memory = run(['--database-url', cluster.databaseUrl, '--storage-url', 'memory://'])
  assert.notEqual(memory.status, 0)
  assert.match(memory.stderr, /ATELIER_STORAGE_URL/)
})
