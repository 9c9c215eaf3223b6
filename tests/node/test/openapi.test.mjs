// The published OpenAPI document (GET /api/v1/openapi.json) is a valid OpenAPI document (checked
// against the specification's JSON Schema by @seriousme/openapi-schema-validator, references
// resolved), and says what the server enforces: security schemes, each operation's API-key
// scopes, the error shape, the public API of issue 15 complete.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { Validator } from '@seriousme/openapi-schema-validator'
import { Server } from '../lib/server.mjs'

let server
let doc
before(async () => {
  server = await new Server({ args: ['--in-process-worker', 'off'] }).start()
  const res = await fetch(`${server.base}/api/v1/openapi.json`)
  assert.equal(res.status, 200)
  doc = await res.json()
})
after(async () => { await server.stop() })

const METHODS = ['get', 'put', 'post', 'patch', 'delete']
const SCOPES = new Set(['sessions:read', 'sessions:write', 'jobs:run', 'billing:read'])

function operations () {
  const ops = []
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const method of METHODS) if (item[method]) ops.push({ path, method, op: item[method] })
  }
  return ops
}

test('the document validates against the OpenAPI schema', async () => {
  const validator = new Validator()
  const res = await validator.validate(doc)
  assert.equal(res.valid, true, JSON.stringify(res.errors, null, 2))
  assert.match(doc.openapi, /^3\.1\./)
})

test('security schemes, scopes and error shapes are declared for every operation', () => {
  const schemes = doc.components.securitySchemes
  assert.equal(schemes.bearer.scheme, 'bearer')
  assert.equal(schemes.api_key.scheme, 'bearer')
  assert.equal(schemes.cookie.in, 'cookie')
  let keyed = 0
  for (const { path, method, op } of operations()) {
    const where = `${method.toUpperCase()} ${path}`
    const security = op.security ?? doc.security
    assert.ok(Array.isArray(security), `${where}: no security`)
    for (const requirement of security) {
      for (const [scheme, scopes] of Object.entries(requirement)) {
        assert.ok(scheme in schemes, `${where}: unknown scheme ${scheme}`)
        for (const scope of scopes) assert.ok(SCOPES.has(scope), `${where}: unknown scope ${scope}`)
      }
    }
    if (security.some((r) => 'api_key' in r)) {
      keyed++
      // A login may call whatever a key may.
      assert.ok(security.some((r) => 'bearer' in r), `${where}: keys but no login`)
      assert.ok(op.responses['429']?.headers?.['Retry-After'], `${where}: no 429 with Retry-After`)
    }
    for (const [status, response] of Object.entries(op.responses)) {
      if (!/^[45]/.test(status)) continue
      const schema = response.content?.['application/json']?.schema
      assert.ok(schema, `${where}: ${status} without a body`)
    }
  }
  assert.ok(keyed >= 30, `only ${keyed} operations take API keys`)
  assert.deepEqual(Object.keys(doc.components.schemas.Error.properties), ['error'])
})

test('the public API is in the document', () => {
  const expect = {
    '/me/api-keys': ['get', 'post'],
    '/me/api-keys/{id}': ['delete'],
    '/sessions/{id}/graph': ['get', 'put', 'patch'],
    '/sessions/{id}/jobs': ['get', 'post'],
    '/jobs/{id}/webhook-deliveries': ['get'],
    '/me/webhook-secret': ['get'],
    '/sessions/{id}/versions': ['get', 'post'],
    '/sessions/{id}/versions/{version}/restore': ['post'],
    '/sessions/{id}/members/{account_id}': ['patch', 'delete'],
    '/sessions/{id}/invitations': ['get', 'post'],
    '/sessions/{id}/invitations/{invitation_id}': ['delete'],
    '/invitations/{token}': ['get'],
    '/invitations/{token}/accept': ['post'],
    '/me/invitations': ['get'],
    '/me/invitations/{id}/accept': ['post'],
    '/me/invitations/{id}/decline': ['post']
  }
  for (const [path, methods] of Object.entries(expect)) {
    for (const method of methods) assert.ok(doc.paths[path]?.[method], `${method} ${path} missing`)
  }
  const scopesOf = (path, method) => (doc.paths[path][method].security ?? doc.security).find((r) => 'api_key' in r)?.api_key
  assert.deepEqual(scopesOf('/sessions/{id}/graph', 'patch'), ['sessions:write'])
  assert.deepEqual(scopesOf('/sessions/{id}/jobs', 'post'), ['jobs:run'])
  assert.equal(scopesOf('/me/api-keys', 'post'), undefined, 'keys are made with a login only')
  assert.equal(scopesOf('/invitations/{token}/accept', 'post'), undefined, 'invitations are accepted with a login only')
  assert.equal(scopesOf('/me/invitations/{id}/accept', 'post'), undefined, 'email invitations are accepted with a login only')
  assert.ok(doc.paths['/invitations/{token}/accept'].post.responses['410'], 'a spent invitation answers 410')
  const patch = doc.paths['/sessions/{id}/graph'].patch
  assert.ok(patch.requestBody.content['application/merge-patch+json'])
  assert.ok(patch.responses['412'])
  const run = doc.components.schemas.RunJob.properties
  assert.ok(run.webhook, 'RunJob has webhook')
  assert.ok(doc.components.schemas.WebhookEvent.enum.includes('progress'))
})
