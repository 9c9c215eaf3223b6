// The graph over REST reaches live editors: a PATCH /sessions/{id}/graph made with an API key
// appears in a connected stock y-websocket client within a second, and merges with that client's
// own concurrent edits like another editor's change would.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Server, until, synced, destroyAll } from '../lib/server.mjs'

const repo = join(dirname(fileURLToPath(import.meta.url)), '../../..')
const modelsDir = process.env.ATELIER_MODELS_DIR || join(repo, 'models')

let server
before(async () => {
  server = await new Server({ args: ['--models-dir', modelsDir, '--in-process-worker', 'off'] }).start()
})
after(async () => { await server.stop() })

async function rest (method, path, { key, body, contentType = 'application/json', ifMatch } = {}) {
  const headers = { authorization: `Bearer ${key}`, 'content-type': contentType }
  if (ifMatch) headers['if-match'] = ifMatch
  const res = await fetch(`${server.base}/api/v1${path}`, { method, headers, body: JSON.stringify(body) })
  return { status: res.status, etag: res.headers.get('etag'), body: await res.json() }
}

const graph = {
  nodes: {
    tiny: { type: 'tiny-denoiser', x: 10, y: 20, params: { steps: 2 } },
    out: { type: 'output', x: 300, y: 20, params: {} }
  },
  edges: { e1: { source: 'tiny', source_port: 'image', target: 'out', target_port: 'image' } }
}

test('a graph PATCH appears in a connected y-websocket client within 1 s', async () => {
  const ada = await server.signup('Ada')
  const session = await server.createSession(ada.token)
  const made = await server.call('POST', '/me/api-keys', {
    token: ada.token, body: { name: 'script', scopes: ['sessions:read', 'sessions:write'] }
  })
  assert.equal(made.status, 201)
  const key = made.body.secret
  const a = server.provider(session, ada.token)
  try {
    await synced(a.provider)
    const nodes = a.doc.getMap('nodes')
    const path = `/sessions/${session}/graph`

    const put = await rest('PUT', path, { key, body: graph })
    assert.equal(put.status, 200, JSON.stringify(put.body))
    await until(() => nodes.get('tiny')?.get('params')?.get('steps') === 2, 1000, 'the PUT in the client')
    assert.deepEqual(a.doc.getMap('edges').toJSON(), graph.edges)

    const started = Date.now()
    const patched = await rest('PATCH', path, {
      key, contentType: 'application/merge-patch+json', body: { nodes: { tiny: { params: { steps: 5 } } } }
    })
    assert.equal(patched.status, 200, JSON.stringify(patched.body))
    await until(() => nodes.get('tiny').get('params').get('steps') === 5, 1000, 'the PATCH in the client')
    const ms = Date.now() - started
    console.log(`PATCH request to the client seeing it: ${ms} ms`)
    assert.ok(ms < 1000)
    // The nodes stay Y.Maps (the layout editors use), params a nested Y.Map.
    assert.equal(nodes.get('tiny').constructor.name, 'YMap')
    assert.equal(nodes.get('tiny').get('params').constructor.name, 'YMap')

    // A concurrent edit in the client and a REST patch of another field both survive.
    nodes.get('tiny').set('x', 77)
    const other = await rest('PATCH', path, {
      key, contentType: 'application/merge-patch+json', body: { nodes: { out: { y: 99 } } }
    })
    assert.equal(other.status, 200)
    await until(() => nodes.get('out').get('y') === 99, 1000, 'the second PATCH')
    const read = await rest('GET', path, { key })
    assert.equal(read.body.nodes.tiny.x, 77)
    assert.equal(read.body.nodes.out.y, 99)

    // A write conditional on an old version is refused and changes nothing.
    const stale = await rest('PATCH', path, {
      key, contentType: 'application/merge-patch+json', ifMatch: put.etag, body: { nodes: { tiny: { x: 1 } } }
    })
    assert.equal(stale.status, 412)
    await new Promise((resolve) => setTimeout(resolve, 200))
    assert.equal(nodes.get('tiny').get('x'), 77)
  } finally {
    destroyAll(a.provider)
  }
})
