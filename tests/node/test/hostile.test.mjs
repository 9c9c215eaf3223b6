// Hostile live-session clients close only their own connection: deeply nested shared types,
// viewers asking for a large document without ever reading, presence that is not theirs.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import * as Y from 'yjs'
import * as encoding from 'lib0/encoding'
import WebSocket from 'ws'
import { Server, until, synced, destroyAll } from '../lib/server.mjs'

let server
before(async () => { server = await new Server().start() })
after(async () => { await server.stop() })

function rawSocket (session, token) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${server.wsUrl}/${session}?token=${token}`)
    ws.binaryType = 'nodebuffer'
    ws.once('open', () => resolve(ws))
    ws.once('error', reject)
  })
}

/** `promise`, or `null` once `ms` have passed without it settling. */
const within = (promise, ms) => Promise.race([promise, new Promise((resolve) => setTimeout(() => resolve(null), ms))])

const serverAlive = () => server.proc.exitCode === null && server.proc.signalCode === null

const closeOf = (ws) => new Promise((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })))

/** The server process's resident memory, in bytes. */
function serverRss () {
  const status = readFileSync(`/proc/${server.proc.pid}/status`, 'utf8')
  return Number(status.match(/VmRSS:\s+(\d+) kB/)[1]) * 1024
}

async function metric (name) {
  const text = await (await fetch(`${server.base}/metrics`)).text()
  const line = text.split('\n').find((l) => l.startsWith(name))
  return line ? Number(line.split(' ').pop()) : 0
}

test('a stock client nesting 20,000 maps is refused with 4422; the server and other sessions carry on', async () => {
  const ada = await server.signup('Ada')
  const hostileSession = await server.createSession(ada.token)
  const otherSession = await server.createSession(ada.token)
  const deep = server.provider(hostileSession, ada.token)
  const a = server.provider(otherSession, ada.token)
  const b = server.provider(otherSession, ada.token)
  const closed = new Promise((resolve) => deep.provider.once('closed', resolve))
  try {
    await Promise.all([synced(deep.provider), synced(a.provider), synced(b.provider)])
    // One update of about 200 KB.
    deep.doc.transact(() => {
      let map = deep.doc.getMap('nodes')
      for (let i = 0; i < 20000; i++) {
        const next = new Y.Map()
        map.set('k', next)
        map = next
      }
    })
    const refusal = await within(closed, 10000)

    // A server that stored it turned the graph into JSON here, recursing 20,000 levels deep: the
    // stack overflowed and the process aborted.
    const run = await server.call('POST', `/sessions/${hostileSession}/jobs`, { token: ada.token })
      .catch((error) => ({ status: 0, body: String(error) }))
    await new Promise((resolve) => setTimeout(resolve, 200))
    assert.ok(serverAlive(), `the server died (${server.proc.signalCode ?? server.proc.exitCode})`)
    assert.ok(run.status >= 400 && run.status < 500, `jobs: ${run.status} ${JSON.stringify(run.body)}`)
    assert.ok(refusal, 'the update was not refused')
    assert.equal(refusal.code, 4422)
    assert.match(refusal.reason, /nested deeper than 32/)

    // Other sessions never noticed; the refused one works on, without the nesting.
    a.doc.getText('t').insert(0, 'still here')
    await until(() => b.doc.getText('t').toString() === 'still here', 3000, 'edits in another session')
    const fresh = server.provider(hostileSession, ada.token)
    try {
      await synced(fresh.provider)
      assert.equal(fresh.doc.getMap('nodes').get('k'), undefined)
      fresh.doc.getMap('nodes').set('n1', 'fine')
      const again = server.provider(hostileSession, ada.token)
      try {
        await synced(again.provider)
        await until(() => again.doc.getMap('nodes').get('n1') === 'fine', 3000, 'edit after the refusal')
      } finally {
        destroyAll(again.provider)
      }
    } finally {
      destroyAll(fresh.provider)
    }
  } finally {
    destroyAll(deep.provider, a.provider, b.provider)
  }
})

test('a viewer asking for a large document without reading is closed with 1008; memory stays bounded, editors keep up', async () => {
  const ada = await server.signup('Ada')
  const session = await server.createSession(ada.token)
  const link = await server.shareLink(ada.token, session)
  const writer = server.provider(session, ada.token)
  const watcher = server.provider(session, ada.token)
  try {
    await Promise.all([synced(writer.provider), synced(watcher.provider)])
    // A 4.5 MB document, in updates under the message limit.
    for (let i = 0; i < 5; i++) writer.doc.getMap('nodes').set(`big${i}`, String(i).repeat(900_000))
    await until(() => watcher.doc.getMap('nodes').size === 5, 20000, 'the large document')

    // A state vector naming an item the server does not have: every answer is the whole document.
    const other = new Y.Doc()
    other.getMap('x').set('y', 1)
    const step1 = encoding.createEncoder()
    encoding.writeVarUint(step1, 0)
    encoding.writeVarUint(step1, 0)
    encoding.writeVarUint8Array(step1, Y.encodeStateVector(other))
    const frame = encoding.toUint8Array(step1)

    const overflowsBefore = await metric('atelier_outbound_overflows_total')
    const rssBefore = serverRss()
    let rssMax = rssBefore
    const sampler = setInterval(() => { rssMax = Math.max(rssMax, serverRss()) }, 20)
    const latencies = []
    watcher.doc.getMap('nodes').observe((event) => {
      if (event.keysChanged.has('tick')) latencies.push(Date.now() - watcher.doc.getMap('nodes').get('tick'))
    })
    const viewer = await rawSocket(session, link.token)
    const viewerClosed = closeOf(viewer)
    const MiB = 1024 * 1024
    try {
      // It never reads: what the server sends piles up. It keeps asking (answers to step 1s
      // that arrive while one is being encoded are merged into one), until the server gives up
      // on it — or, on a server without a byte budget, until it holds 200 MiB more.
      viewer._socket.pause()
      const spam = (async () => {
        const started = Date.now()
        while (Date.now() - started < 30000 && rssMax - rssBefore < 200 * MiB) {
          if ((await metric('atelier_outbound_overflows_total')) > overflowsBefore) return true
          for (let i = 0; i < 5; i++) viewer.send(frame)
          await new Promise((resolve) => setTimeout(resolve, 50))
        }
        return false
      })()
      // Meanwhile an editor keeps editing.
      for (let i = 0; i < 40; i++) {
        writer.doc.getMap('nodes').set('tick', Date.now())
        await new Promise((resolve) => setTimeout(resolve, 50))
      }
      assert.ok(await spam, 'the viewer was not counted as too slow')
    } finally {
      clearInterval(sampler)
      viewer._socket.resume()
    }
    const close = await within(viewerClosed, 15000)
    assert.ok(close, 'not closed')
    assert.equal(close.code, 1008, close.reason)
    assert.equal(close.reason, 'too slow; resync')

    const grew = (rssMax - rssBefore) / MiB
    latencies.sort((x, y) => x - y)
    const worst = latencies[latencies.length - 1]
    console.log(`server RSS grew by ${grew.toFixed(1)} MiB at most; editor latency p50 ${latencies[latencies.length >> 1]} ms, max ${worst} ms (${latencies.length} edits)`)
    // 300 whole-document answers are 1.35 GB; what may wait for one connection is its 4 MiB
    // budget plus two large frames, and two diffs are encoded at once.
    assert.ok(grew < 100, `RSS grew by ${grew.toFixed(1)} MiB`)
    assert.ok(latencies.length >= 30, `only ${latencies.length} of 40 edits arrived`)
    assert.ok(worst < 1000, `an edit took ${worst} ms to arrive`)
  } finally {
    destroyAll(writer.provider, watcher.provider)
  }
})

/** An awareness frame setting `state` (or removing it, with null) for `clientID` at `clock`. */
function awarenessFrame (clientID, clock, state) {
  const payload = encoding.createEncoder()
  encoding.writeVarUint(payload, 1)
  encoding.writeVarUint(payload, clientID)
  encoding.writeVarUint(payload, clock)
  encoding.writeVarString(payload, JSON.stringify(state))
  const frame = encoding.createEncoder()
  encoding.writeVarUint(frame, 1)
  encoding.writeVarUint8Array(frame, encoding.toUint8Array(payload))
  return encoding.toUint8Array(frame)
}

test("a viewer can neither rewrite nor remove someone else's presence", async () => {
  const ada = await server.signup('Ada')
  const session = await server.createSession(ada.token)
  const link = await server.shareLink(ada.token, session)
  const alice = server.provider(session, ada.token)
  const bob = server.provider(session, ada.token)
  try {
    await Promise.all([synced(alice.provider), synced(bob.provider)])
    alice.provider.awareness.setLocalStateField('user', { name: 'Alice' })
    const aliceId = alice.doc.clientID
    await until(() => bob.provider.awareness.getStates().get(aliceId)?.user?.name === 'Alice', 3000, 'Alice is shown')

    const viewer = await rawSocket(session, link.token)
    viewer.send(awarenessFrame(aliceId, 1000, { user: { name: 'Mallory' } }))
    viewer.send(awarenessFrame(aliceId, 1001, null))
    await new Promise((resolve) => setTimeout(resolve, 500))
    assert.equal(bob.provider.awareness.getStates().get(aliceId)?.user?.name, 'Alice')
    assert.equal(alice.provider.awareness.getLocalState()?.user?.name, 'Alice')
    // The viewer's own presence works.
    viewer.send(awarenessFrame(4242, 1, { user: { name: 'Guest' } }))
    await until(() => bob.provider.awareness.getStates().get(4242)?.user?.name === 'Guest', 3000, "the viewer's own presence")
    viewer.close()
  } finally {
    destroyAll(alice.provider, bob.provider)
  }
})

test('presence larger than 64 KiB per connection closes that connection with 1008', async () => {
  const ada = await server.signup('Ada')
  const session = await server.createSession(ada.token)
  const big = server.provider(session, ada.token)
  const bob = server.provider(session, ada.token)
  const closed = new Promise((resolve) => big.provider.on('connection-close', (event) => event && resolve(event)))
  try {
    await Promise.all([synced(big.provider), synced(bob.provider)])
    big.provider.awareness.setLocalStateField('blob', 'x'.repeat(100_000))
    const close = await within(closed, 5000)
    assert.ok(close, 'not closed')
    assert.equal(close.code, 1008)
    assert.equal(close.reason, 'presence too large')
    assert.equal(bob.provider.awareness.getStates().get(big.doc.clientID), undefined)
  } finally {
    destroyAll(big.provider, bob.provider)
  }
})
