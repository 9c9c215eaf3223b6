// API keys: make one (its secret shown once), see each key's scopes and use (last used, requests
// in the last 24 hours), revoke one (it stops working at once, its live connections close).
import { useCallback, useEffect, useState } from 'react'
import { SCOPES, type ApiKey, type CreatedApiKey, type Scope } from '@atelier/client'
import { client, errorMessage } from '../lib/api'
import { dateTime } from '../lib/format'

const SCOPE_TEXT: Record<Scope, string> = {
  'sessions:read': 'read sessions, graphs, jobs, media',
  'sessions:write': 'change sessions and graphs, upload media',
  'jobs:run': 'run jobs and Pro runtime (spends credits)',
  'billing:read': 'read balance, ledger and usage',
}

export function ApiKeys() {
  const [keys, setKeys] = useState<ApiKey[] | null>(null)
  const [name, setName] = useState('')
  const [scopes, setScopes] = useState<Scope[]>(['sessions:read'])
  const [made, setMade] = useState<CreatedApiKey | null>(null)
  const [error, setError] = useState<string | null>(null)

  const load = useCallback(async () => {
    try {
      setKeys(await client.apiKeys())
    } catch (e) {
      setError(errorMessage(e))
    }
  }, [])
  useEffect(() => {
    void load()
  }, [load])

  const create = async () => {
    setError(null)
    try {
      setMade(await client.createApiKey(name.trim(), scopes))
      setName('')
      await load()
    } catch (e) {
      setError(errorMessage(e))
    }
  }
  const revoke = async (id: string) => {
    setError(null)
    try {
      await client.revokeApiKey(id)
      await load()
    } catch (e) {
      setError(errorMessage(e))
    }
  }
  const toggle = (scope: Scope) =>
    setScopes((s) => (s.includes(scope) ? s.filter((x) => x !== scope) : [...s, scope]))

  return (
    <details aria-label="API keys">
      <summary>API keys</summary>
      <p className="muted small-text">
        For scripts and integrations: send a key as <code>Authorization: Bearer atk_…</code>. The API is
        described at <a href="/api/v1/openapi.json">/api/v1/openapi.json</a>.
      </p>
      {made && (
        <div className="alert" role="status">
          <p>
            Key <strong>{made.name}</strong> made. Copy its secret now; it is not shown again:
          </p>
          <code className="secret" data-testid="api-key-secret">
            {made.secret}
          </code>
        </div>
      )}
      <form
        className="stack"
        onSubmit={(e) => {
          e.preventDefault()
          void create()
        }}
      >
        <label htmlFor="api-key-name">Name</label>
        <input id="api-key-name" required maxLength={100} value={name} onChange={(e) => setName(e.target.value)} />
        <fieldset>
          <legend>Scopes</legend>
          {SCOPES.map((scope) => (
            <label key={scope} className="row">
              <input type="checkbox" checked={scopes.includes(scope)} onChange={() => toggle(scope)} />
              <code>{scope}</code> <span className="muted small-text">{SCOPE_TEXT[scope]}</span>
            </label>
          ))}
        </fieldset>
        <button type="submit" disabled={scopes.length === 0}>
          Make key
        </button>
      </form>
      {error && (
        <p className="error-text" role="alert">
          {error}
        </p>
      )}
      {keys && keys.length > 0 && (
        <table className="small-text">
          <thead>
            <tr>
              <th>Name</th>
              <th>Key</th>
              <th>Scopes</th>
              <th>Last used</th>
              <th>Requests (24 h)</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {keys.map((k) => (
              <tr key={k.id}>
                <td>{k.name}</td>
                <td>
                  <code>{k.prefix}…</code>
                </td>
                <td>{k.scopes.join(', ')}</td>
                <td>{k.last_used_at ? dateTime(k.last_used_at) : 'never'}</td>
                <td>{k.requests_24h}</td>
                <td>
                  {k.revoked_at ? (
                    <span className="muted">revoked</span>
                  ) : k.expires_at && k.expires_at < Date.now() ? (
                    <span className="muted">expired</span>
                  ) : (
                    <button type="button" className="small danger" onClick={() => void revoke(k.id)}>
                      Revoke
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </details>
  )
}
