// Account settings: change the password, API keys, download everything (export), delete the
// account.
import { useState } from 'react'
import { api, ApiError, errorMessage, type Account } from '../lib/api'
import { ApiKeys } from './ApiKeys'

export function AccountSettings({ account, onLogout }: { account: Account; onLogout: () => void }) {
  const [current, setCurrent] = useState('')
  const [next, setNext] = useState('')
  const [msg, setMsg] = useState<{ ok: boolean; text: string } | null>(null)
  const [confirming, setConfirming] = useState(false)
  const [deleteError, setDeleteError] = useState<string | null>(null)

  const change = async () => {
    setMsg(null)
    try {
      await api('POST', '/me/password', { current_password: current, new_password: next })
      setCurrent('')
      setNext('')
      setMsg({ ok: true, text: 'Password changed. Your other logins were signed out.' })
    } catch (e) {
      setMsg({ ok: false, text: e instanceof ApiError && e.status === 403 ? 'The current password is wrong.' : errorMessage(e) })
    }
  }
  const remove = async () => {
    setDeleteError(null)
    try {
      await api('DELETE', '/me')
      onLogout()
    } catch (e) {
      setDeleteError(errorMessage(e))
    }
  }
  return (
    <section className="card" aria-labelledby="settings-h">
      <h2 id="settings-h">Account</h2>
      <p className="muted small-text">{account.email}</p>
      <details>
        <summary>Change password</summary>
        <form
          className="stack"
          onSubmit={(e) => {
            e.preventDefault()
            void change()
          }}
        >
          <label htmlFor="current-password">Current password</label>
          <input id="current-password" type="password" autoComplete="current-password" required value={current} onChange={(e) => setCurrent(e.target.value)} />
          <label htmlFor="new-password">New password (at least 10 characters)</label>
          <input id="new-password" type="password" autoComplete="new-password" required minLength={10} value={next} onChange={(e) => setNext(e.target.value)} />
          <button type="submit">Change password</button>
          {msg && (
            <p className={msg.ok ? 'muted' : 'error-text'} role={msg.ok ? 'status' : 'alert'}>
              {msg.text}
            </p>
          )}
        </form>
      </details>
      <ApiKeys />
      <p>
        <a className="button small" href="/api/v1/me/export" download>
          Export my data
        </a>
      </p>
      {confirming ? (
        <div className="alert alert-error">
          <p>Delete your account, its sessions and media for good? Credits you have left are lost.</p>
          <div className="row">
            <button type="button" className="danger small" onClick={() => void remove()}>
              Delete my account
            </button>
            <button type="button" className="small" onClick={() => setConfirming(false)}>
              Keep it
            </button>
          </div>
          {deleteError && <p className="error-text">{deleteError}</p>}
        </div>
      ) : (
        <button type="button" className="small danger" onClick={() => setConfirming(true)}>
          Delete account…
        </button>
      )}
    </section>
  )
}
