import { useCallback, useEffect, useState } from 'react'
import { api, ApiError, getToken, setLogin, type Account } from './lib/api'
import { currentPath, navigate, useRoute } from './lib/router'
import { AdminPage } from './pages/Admin'
import { AuthPage } from './pages/AuthPage'
import { Dashboard } from './pages/Dashboard'
import { InvitePage } from './pages/InvitePage'
import { Studio } from './pages/Studio'

export function App() {
  const route = useRoute()
  // undefined: still checking; null: signed out.
  const [account, setAccount] = useState<Account | null | undefined>(undefined)
  const [token, setToken] = useState<string | null>(getToken())

  useEffect(() => {
    if (route.name === 'share') return
    let live = true
    ;(async () => {
      try {
        const me = await api<Account>('GET', '/me')
        if (live) setAccount(me)
      } catch (e) {
        if (e instanceof ApiError && e.status === 401 && getToken()) {
          // A stale token: forget it and try the session cookie.
          setLogin(null, null)
          setToken(null)
          try {
            const me = await api<Account>('GET', '/me', undefined, { token: null })
            if (live) setAccount(me)
            return
          } catch {
            /* signed out */
          }
        }
        if (live) setAccount(null)
      }
    })()
    return () => {
      live = false
    }
    // Checked once per page load (and again after login/logout through the handlers below).
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [route.name === 'share'])

  const onLoggedIn = useCallback((a: Account) => {
    setToken(getToken())
    setAccount(a)
  }, [])

  const onLogout = useCallback(async () => {
    try {
      await api('POST', '/auth/logout', {})
    } catch {
      /* signed out either way */
    }
    setLogin(null, null)
    setToken(null)
    setAccount(null)
    navigate('/login')
  }, [])

  useEffect(() => {
    document.title =
      route.name === 'login' ? 'Log in · Atelier' : route.name === 'signup' ? 'Sign up · Atelier' : route.name === 'sessions' ? 'Sessions · Atelier' : route.name === 'admin' ? 'Admin · Atelier' : 'Atelier'
  }, [route.name])

  if (route.name === 'share') {
    if (!route.token) {
      return (
        <div className="page narrow">
          <h1>Atelier</h1>
          <p className="alert alert-error" role="alert">
            This viewer link is incomplete: it has no token. Ask for the full link.
          </p>
        </div>
      )
    }
    return <Studio key={`share-${route.sessionId}`} sessionId={route.sessionId} token={route.token} account={null} shareLink />
  }

  if (account === undefined) {
    return (
      <div className="page narrow" aria-busy="true">
        <p className="muted">Loading…</p>
      </div>
    )
  }

  if (route.name === 'login' || route.name === 'signup') {
    if (account) return <Redirect to={route.next ?? '/sessions'} />
    return <AuthPage key={route.name} mode={route.name} next={route.next} onLoggedIn={onLoggedIn} />
  }

  // A logged-out person opening a session or invitation link comes back to it after logging in.
  if (!account) {
    const wanted = route.name === 'studio' || route.name === 'invite' ? currentPath() : null
    return <Redirect to={wanted ? `/login?next=${encodeURIComponent(wanted)}` : '/login'} />
  }

  if (route.name === 'invite') {
    return <InvitePage token={route.token} />
  }

  if (route.name === 'studio') {
    return <Studio key={`s-${route.sessionId}`} sessionId={route.sessionId} token={token} account={account} shareLink={false} onLogout={onLogout} />
  }
  if (route.name === 'admin') {
    if (account.role !== 'admin') {
      return (
        <div className="page narrow">
          <h1>Not available</h1>
          <p>
            This page is for the operators of this server. <a href="#/sessions">Go to your sessions</a>.
          </p>
        </div>
      )
    }
    return <AdminPage account={account} onLogout={onLogout} />
  }
  if (route.name === 'unknown') {
    return (
      <div className="page narrow">
        <h1>Not found</h1>
        <p>
          There is no page at “{route.path}”. <a href="#/sessions">Go to your sessions</a>.
        </p>
      </div>
    )
  }
  return <Dashboard account={account} onLogout={onLogout} />
}

function Redirect({ to }: { to: string }) {
  useEffect(() => navigate(to), [to])
  return null
}
