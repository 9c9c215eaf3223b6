// Hash routes: #/login, #/signup, #/sessions, #/admin, #/s/{id}, #/share/{id}?token=ats_…
import { useEffect, useState } from 'react'

export type Route =
  | { name: 'login' }
  | { name: 'signup' }
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
      return { name: 'login' }
    case 'signup':
      return { name: 'signup' }
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
