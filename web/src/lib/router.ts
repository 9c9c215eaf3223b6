// Hash routes: #/login, #/signup, #/sessions, #/admin, #/s/{id}, #/share/{id}?token=ats_…,
// #/invite/{token}. #/login and #/signup take ?next=<route> to go back to after logging in.
import { useEffect, useState } from 'react'

export type Route =
  | { name: 'login'; next: string | null }
  | { name: 'signup'; next: string | null }
  | { name: 'invite'; token: string }
  | { name: 'sessions' }
  | { name: 'admin' }
  | { name: 'studio'; sessionId: string }
  | { name: 'share'; sessionId: string; token: string | null }
  | { name: 'home' }
  | { name: 'unknown'; path: string }

export function parseHash(hash: string): Route {
  const raw = hash.replace(/^#/, '') || '/'
  const [pathPart, query = ''] = raw.split('?', 2)
  const params = new URLSearchParams(query)
  const parts = pathPart.split('/').filter(Boolean).map(decodeURIComponent)
  if (parts.length === 0) return { name: 'home' }
  switch (parts[0]) {
    case 'login':
      return { name: 'login', next: safeNext(params.get('next')) }
    case 'signup':
      return { name: 'signup', next: safeNext(params.get('next')) }
    case 'invite':
      if (parts[1]) return { name: 'invite', token: parts[1] }
      break
    case 'sessions':
      return { name: 'sessions' }
    case 'admin':
      return { name: 'admin' }
    case 's':
      if (parts[1]) return { name: 'studio', sessionId: parts[1] }
      break
    case 'share':
      if (parts[1]) return { name: 'share', sessionId: parts[1], token: params.get('token') }
      break
  }
  return { name: 'unknown', path: pathPart }
}

/** A route inside this app to return to after logging in (never another site). */
function safeNext(next: string | null): string | null {
  if (!next || !next.startsWith('/') || next.startsWith('//')) return null
  return next
}

/** The current route as a `next` value: where a logged-out person wanted to go. */
export function currentPath(): string {
  return window.location.hash.replace(/^#/, '') || '/sessions'
}

export function navigate(path: string): void {
  const target = path.startsWith('#') ? path : `#${path}`
  if (window.location.hash !== target) window.location.hash = target
}

export function useRoute(): Route {
  const [route, setRoute] = useState<Route>(() => parseHash(window.location.hash))
  useEffect(() => {
    const onChange = () => setRoute(parseHash(window.location.hash))
    window.addEventListener('hashchange', onChange)
    return () => window.removeEventListener('hashchange', onChange)
  }, [])
  return route
}
