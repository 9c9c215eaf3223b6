// The account's live channel (GET /api/v1/me/events): server-sent events read over fetch, so
// that the tab's own bearer token is sent (EventSource can send only the cookie, which may be
// another tab's account). Reconnects with a growing delay (1 s doubling to 30 s, back to 1 s once
// connected); every (re)connection starts with a `ready` event, on which the caller reads its
// lists again, so nothing missed while disconnected stays missing.
import type { AccountEvent } from '@atelier/client'
import { authHeaders } from './api'

const FIRST_DELAY_MS = 1000
const MAX_DELAY_MS = 30_000

/** Calls `onEvent` for every event until the returned function is called. */
export function watchAccountEvents(onEvent: (e: AccountEvent) => void): () => void {
  const stop = new AbortController()
  let delay = FIRST_DELAY_MS

  const readOnce = async () => {
    const res = await fetch('/api/v1/me/events', {
      headers: { ...authHeaders(), accept: 'text/event-stream' },
      credentials: 'same-origin',
      signal: stop.signal,
    })
    if (!res.ok || !res.body) throw new Error(`live channel refused: ${res.status}`)
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader()
    let buffer = ''
    for (;;) {
      const { value, done } = await reader.read()
      if (done) return
      buffer += value
      // Events end with a blank line; `data:` lines carry the JSON, `:` lines keep the
      // connection alive, `retry:` is for EventSource.
      let end: number
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end)
        buffer = buffer.slice(end + 2)
        const data = block
          .split('\n')
          .filter((line) => line.startsWith('data:'))
          .map((line) => line.slice(5).trimStart())
          .join('\n')
        if (!data) continue
        try {
          const event = JSON.parse(data) as AccountEvent
          if (event.type === 'ready') delay = FIRST_DELAY_MS
          onEvent(event)
        } catch {
          /* not ours: skip */
        }
      }
    }
  }

  void (async () => {
    while (!stop.signal.aborted) {
      try {
        await readOnce()
      } catch {
        /* refused or cut: wait and try again */
      }
      if (stop.signal.aborted) return
      await new Promise((resolve) => window.setTimeout(resolve, delay))
      delay = Math.min(delay * 2, MAX_DELAY_MS)
    }
  })()

  return () => stop.abort()
}
