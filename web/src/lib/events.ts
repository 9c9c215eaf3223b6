// The studio events channel: a second, raw WebSocket to /ws/{id}?events=1. It receives the
// y-sync frames too (ignored here: the stock provider on the first socket owns the document),
// plus type 100 = varString(JSON event) and type 101 = varString(job_id) varUint(step)
// varString(mime) varBytes(image).
import * as decoding from 'lib0/decoding'

export const MESSAGE_EVENT = 100
export const MESSAGE_PREVIEW = 101

export interface StudioEvent {
  type: string
  [key: string]: unknown
}

export interface PreviewFrame {
  jobId: string
  step: number
  mime: string
  bytes: Uint8Array
}

export type Decoded = { kind: 'event'; event: StudioEvent } | { kind: 'preview'; preview: PreviewFrame } | { kind: 'other' }

export function decodeFrame(buf: Uint8Array): Decoded {
  try {
    const d = decoding.createDecoder(buf)
    const type = decoding.readVarUint(d)
    if (type === MESSAGE_EVENT) {
      const event = JSON.parse(decoding.readVarString(d)) as StudioEvent
      if (event && typeof event === 'object' && typeof event.type === 'string') return { kind: 'event', event }
      return { kind: 'other' }
    }
    if (type === MESSAGE_PREVIEW) {
      const jobId = decoding.readVarString(d)
      const step = decoding.readVarUint(d)
      const mime = decoding.readVarString(d)
      const bytes = decoding.readVarUint8Array(d)
      return { kind: 'preview', preview: { jobId, step, mime, bytes } }
    }
  } catch {
    /* a malformed frame is ignored */
  }
  return { kind: 'other' }
}

export function wsBase(): string {
  const proto = window.location.protocol === 'https:' ? 'wss:' : 'ws:'
  return `${proto}//${window.location.host}/ws`
}

export type SocketStatus = 'connecting' | 'open' | 'closed' | 'stopped'

export interface EventsHandlers {
  onEvent: (e: StudioEvent) => void
  onPreview: (p: PreviewFrame) => void
  onStatus: (status: SocketStatus, close?: { code: number; reason: string }) => void
  /** Asked after an unexpected close: resolve false to stop reconnecting (access is gone). */
  shouldReconnect?: (close: { code: number; reason: string }) => Promise<boolean>
}

export class EventsSocket {
  private ws: WebSocket | null = null
  private stopped = false
  private attempts = 0
  private timer: ReturnType<typeof setTimeout> | null = null
  private readonly url: string
  private readonly h: EventsHandlers

  constructor(sessionId: string, token: string | null, handlers: EventsHandlers) {
    const params = new URLSearchParams()
    if (token) params.set('token', token)
    params.set('events', '1')
    this.url = `${wsBase()}/${encodeURIComponent(sessionId)}?${params.toString()}`
    this.h = handlers
  }

  connect(): void {
    if (this.stopped || this.ws) return
    this.h.onStatus('connecting')
    let ws: WebSocket
    try {
      ws = new WebSocket(this.url)
    } catch {
      this.scheduleReconnect({ code: 1006, reason: 'could not open the socket' })
      return
    }
    ws.binaryType = 'arraybuffer'
    this.ws = ws
    ws.onopen = () => {
      if (this.ws !== ws) return
      this.h.onStatus('open')
    }
    ws.onmessage = (ev) => {
      if (this.ws !== ws || !(ev.data instanceof ArrayBuffer)) return
      const frame = decodeFrame(new Uint8Array(ev.data))
      if (frame.kind === 'event') {
        this.attempts = 0
        this.h.onEvent(frame.event)
      } else if (frame.kind === 'preview') this.h.onPreview(frame.preview)
    }
    ws.onerror = () => {
      /* followed by close */
    }
    ws.onclose = (ev) => {
      if (this.ws !== ws) return
      this.ws = null
      const info = { code: ev.code, reason: ev.reason }
      if (this.stopped) return
      // 4400–4499: the server decided (revoked, removed, not found); reconnecting cannot help.
      if (ev.code >= 4400 && ev.code < 4500) {
        this.stopped = true
        this.h.onStatus('stopped', info)
        return
      }
      this.h.onStatus('closed', info)
      this.scheduleReconnect(info)
    }
  }

  private scheduleReconnect(info: { code: number; reason: string }): void {
    if (this.stopped) return
    this.attempts++
    const delay = Math.min(2 ** this.attempts * 150, 5000)
    this.timer = setTimeout(async () => {
      this.timer = null
      if (this.stopped) return
      if (this.h.shouldReconnect) {
        let ok = true
        try {
          ok = await this.h.shouldReconnect(info)
        } catch {
          ok = true
        }
        if (!ok) {
          this.stopped = true
          this.h.onStatus('stopped', info)
          return
        }
      }
      this.connect()
    }, delay)
  }

  close(): void {
    this.stopped = true
    if (this.timer) clearTimeout(this.timer)
    this.timer = null
    const ws = this.ws
    this.ws = null
    if (ws) {
      ws.onclose = null
      ws.onmessage = null
      ws.close()
    }
  }
}
