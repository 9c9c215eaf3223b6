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

/** A media record as `GET /media` and `POST /media` return it. */
export interface MediaRecord {
  id: string
  session_id?: string | null
  content_type: string
  size_bytes: number
  filename?: string | null
  created_at: number
}

async function failure(res: Response): Promise<Error> {
  let msg = `${res.status}`
  try {
    msg = ((await res.json()) as { error?: { message?: string } }).error?.message ?? msg
  } catch {
    /* not JSON */
  }
  return new Error(msg)
}

/** Uploads a file for a session (POST /media, multipart `file` and `session_id`). */
export async function uploadMedia(file: File, sessionId: string, token: string | null): Promise<MediaRecord> {
  const form = new FormData()
  form.append('session_id', sessionId)
  form.append('file', file, file.name)
  const res = await fetch('/api/v1/media', { method: 'POST', body: form, headers: authHeaders(token, 'POST'), credentials: 'same-origin' })
  if (!res.ok) throw await failure(res)
  return (await res.json()) as MediaRecord
}

/** The session's PNG images (every member's uploads, and its runs' outputs), newest first. */
export async function sessionImages(sessionId: string, token: string | null): Promise<MediaRecord[]> {
  const res = await fetch(`/api/v1/sessions/${encodeURIComponent(sessionId)}/media`, { headers: authHeaders(token), credentials: 'same-origin' })
  if (!res.ok) throw await failure(res)
  const all = (await res.json()) as MediaRecord[]
  // The image-input node reads PNG.
  return all.filter((m) => m.content_type === 'image/png')
}
