import { useState } from 'react'
import { api, errorMessage, setLogin, type Account, type LoginResponse } from '../lib/api'
import { navigate } from '../lib/router'

export function AuthPage({ mode, next, onLoggedIn }: { mode: 'login' | 'signup'; next: string | null; onLoggedIn: (a: Account) => void }) {
  const [name, setName] = useState('')
  const [email, setEmail] = useState('')
  const [password, setPassword] = useState('')
  const [error, setError] = useState<string | null>(null)
  const [busy, setBusy] = useState(false)
  const signup = mode === 'signup'

  const submit = async () => {
    setBusy(true)
    setError(null)
    try {
      const res = signup
        ? await api<LoginResponse>('POST', '/auth/signup', { email, password, name }, { token: null })
        : await api<LoginResponse>('POST', '/auth/login', { email, password }, { token: null })
      setLogin(res.token, res.csrf_token)
      onLoggedIn(res.account)
      // Back to where the person was going (a session, an invitation) before logging in.
      navigate(next ?? '/sessions')
    } catch (e) {
      setError(errorMessage(e).replace(/^Not signed in or the link is no longer valid: /, ''))
    } finally {
      setBusy(false)
    }
  }

  return (
    <div className="page narrow auth">
      <header className="auth-head">
        <span className="logo" aria-hidden="true">◆</span>
        <h1>Atelier</h1>
        <p className="muted">A collaborative AI studio</p>
      </header>
      <form
        className="card"
        aria-labelledby="auth-h"
        onSubmit={(e) => {
          e.preventDefault()
          void submit()
        }}
      >
        <h2 id="auth-h">{signup ? 'Create an account' : 'Log in'}</h2>
        {signup && (
          <div className="field">
            <label htmlFor="auth-name">Name</label>
            <input id="auth-name" type="text" autoComplete="name" required maxLength={100} value={name} onChange={(e) => setName(e.target.value)} />
          </div>
        )}
        <div className="field">
          <label htmlFor="auth-email">Email</label>
          <input id="auth-email" type="email" autoComplete="email" required value={email} onChange={(e) => setEmail(e.target.value)} />
        </div>
        <div className="field">
          <label htmlFor="auth-password">Password</label>
          <input
            id="auth-password"
            type="password"
            autoComplete={signup ? 'new-password' : 'current-password'}
            required
            minLength={signup ? 10 : undefined}
            aria-describedby={signup ? 'pw-hint' : undefined}
            value={password}
            onChange={(e) => setPassword(e.target.value)}
          />
          {signup && (
            <span id="pw-hint" className="hint">
              At least 10 characters.
            </span>
          )}
        </div>
        {error && (
          <p className="alert alert-error" role="alert">
            {error}
          </p>
        )}
        <button type="submit" className="primary wide" disabled={busy}>
          {busy ? 'Please wait…' : signup ? 'Sign up' : 'Log in'}
        </button>
        <p className="muted center">
          {signup ? (
            <>
              Already have an account? <a href={next ? `#/login?next=${encodeURIComponent(next)}` : '#/login'}>Log in</a>
            </>
          ) : (
            <>
              New here? <a href={next ? `#/signup?next=${encodeURIComponent(next)}` : '#/signup'}>Create an account</a>
            </>
          )}
        </p>
      </form>
    </div>
  )
}
