// The events socket as React state: jobs, runtime meter, previews, kicks.
import { useEffect, useReducer, useRef, useState } from 'react'
import { EventsSocket, type SocketStatus } from '../lib/events'
import { initialLiveState, liveReducer, type LiveAction, type LiveState } from './liveState'

export interface Preview {
  jobId: string
  step: number
  mime: string
  url: string
  at: number
}

export interface EventsCallbacks {
  onTerminalClose?: (code: number, reason: string) => void
  /** After an unexpected drop: resolve false when access is gone (stops reconnecting). */
  checkAccess?: () => Promise<boolean>
}

export function useStudioEvents(
  sessionId: string,
  token: string | null,
  enabled: boolean,
  cb: EventsCallbacks,
): { state: LiveState; dispatch: (a: LiveAction) => void; previews: Record<string, Preview>; status: SocketStatus; stop: () => void } {
  const [state, dispatch] = useReducer(liveReducer, initialLiveState)
  const [previews, setPreviews] = useState<Record<string, Preview>>({})
  const [status, setStatus] = useState<SocketStatus>('connecting')
  const socketRef = useRef<EventsSocket | null>(null)
  const cbRef = useRef(cb)
  cbRef.current = cb

  useEffect(() => {
    if (!enabled) return
    const socket = new EventsSocket(sessionId, token, {
      onEvent: (event) => dispatch({ kind: 'event', event }),
      onPreview: (p) => {
        const blob = new Blob([p.bytes.slice().buffer as ArrayBuffer], { type: p.mime || 'image/png' })
        const url = URL.createObjectURL(blob)
        setPreviews((prev) => {
          const old = prev[p.jobId]
          // Frames can arrive out of order across reconnects: keep the newest step.
          if (old && old.step > p.step) {
            URL.revokeObjectURL(url)
            return prev
          }
          if (old) setTimeout(() => URL.revokeObjectURL(old.url), 2000)
          return { ...prev, [p.jobId]: { jobId: p.jobId, step: p.step, mime: p.mime, url, at: Date.now() } }
        })
      },
      onStatus: (st, close) => {
        setStatus(st)
        if (st === 'stopped' && close) cbRef.current.onTerminalClose?.(close.code, close.reason)
      },
      shouldReconnect: async () => (cbRef.current.checkAccess ? cbRef.current.checkAccess() : true),
    })
    socketRef.current = socket
    socket.connect()
    return () => {
      socket.close()
      socketRef.current = null
    }
  }, [sessionId, token, enabled])

  useEffect(
    () => () => {
      setPreviews((prev) => {
        for (const p of Object.values(prev)) URL.revokeObjectURL(p.url)
        return {}
      })
    },
    [sessionId],
  )

  const stop = () => {
    socketRef.current?.close()
    setStatus('stopped')
  }
  return { state, dispatch, previews, status, stop }
}
