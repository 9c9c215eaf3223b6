// Media needs auth (bearer token or cookie), so <img src> cannot point at /api/v1/media/{id}:
// each file is fetched once and shown through an object URL.
import { useEffect, useState } from 'react'
import { authHeaders } from './api'

export interface MediaBlob {
  url: string
  type: string
  size: number
}

const cache = new Map<string, Promise<MediaBlob>>()

export function fetchMedia(id: string, token: string | null): Promise<MediaBlob> {
  const key = `${token ?? ''}|${id}`
  let p = cache.get(key)
  if (!p) {
    p = (async () => {
      const res = await fetch(`/api/v1/media/${encodeURIComponent(id)}`, { headers: authHeaders(token), credentials: 'same-origin' })
      if (!res.ok) {
        let msg = `${res.status}`
        try {
          msg = ((await res.json()) as { error?: { message?: string } }).error?.message ?? msg
        } catch {
          /* not JSON */
        }
        throw new Error(msg)
      }
      const blob = await res.blob()
      return { url: URL.createObjectURL(blob), type: blob.type || res.headers.get('content-type') || '', size: blob.size }
    })()
    cache.set(key, p)
    p.catch(() => cache.delete(key))
  }
  return p
}

export function useMedia(id: string, token: string | null): { media: MediaBlob | null; error: string | null } {
  const [state, setState] = useState<{ media: MediaBlob | null; error: string | null }>({ media: null, error: null })
  useEffect(() => {
    let live = true
    setState({ media: null, error: null })
    fetchMedia(id, token).then(
      (media) => live && setState({ media, error: null }),
      (e: Error) => live && setState({ media: null, error: e.message }),
    )
    return () => {
      live = false
    }
  }, [id, token])
  return state
}

export function extensionFor(type: string): string {
  const map: Record<string, string> = {
    'image/png': 'png',
    'image/jpeg': 'jpg',
    'image/webp': 'webp',
    'video/mp4': 'mp4',
    'audio/x-wav': 'wav',
    'audio/wav': 'wav',
    'audio/mpeg': 'mp3',
  }
  return map[type] ?? 'bin'
}
