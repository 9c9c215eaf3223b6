// The session document over the stock y-websocket provider, and presence over its awareness.
import { useEffect, useRef, useState } from 'react'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import * as authProtocol from 'y-protocols/auth'
import { wsBase } from '../lib/events'
import { colorFor } from '../lib/format'

export interface Participant {
  clientId: number
  name: string
  color: string
  role: string
  selected: string | null
  self: boolean
}

export interface LocalUser {
  name: string
  role: string
  /** Stable key for the colour (account id, or the connection for guests). */
  key: string
}

export type DocStatus = 'connecting' | 'connected' | 'disconnected'

export interface LiveDoc {
  doc: Y.Doc
  provider: WebsocketProvider | null
  status: DocStatus
  synced: boolean
  participants: Participant[]
  /** The reason of the server's last permission-denied answer (e.g. "read-only"). */
  denied: { reason: string; at: number } | null
  setSelected: (nodeId: string | null) => void
  stop: () => void
}

export interface LiveDocCallbacks {
  /** The server closed for good (4400–4499: revoked, removed). */
  onTerminalClose?: (code: number, reason: string) => void
  /** Any other drop; the page may check whether access is gone. */
  onConnectionLost?: (code: number) => void
}

function readParticipants(provider: WebsocketProvider): Participant[] {
  const self = provider.awareness.clientID
  const out: Participant[] = []
  provider.awareness.getStates().forEach((state, clientId) => {
    const user = (state as { user?: { name?: unknown; color?: unknown; role?: unknown } }).user
    if (!user || typeof user.name !== 'string') return
    const selected = (state as { selected?: unknown }).selected
    out.push({
      clientId,
      name: user.name.slice(0, 60),
      color: typeof user.color === 'string' && /^#[0-9a-f]{3,8}$/i.test(user.color) ? user.color : colorFor(clientId),
      role: typeof user.role === 'string' ? user.role : '',
      selected: typeof selected === 'string' ? selected : null,
      self: clientId === self,
    })
  })
  out.sort((a, b) => (a.self ? -1 : b.self ? 1 : a.name.localeCompare(b.name) || a.clientId - b.clientId))
  return out
}

export function useLiveDoc(sessionId: string, token: string | null, user: LocalUser | null, cb: LiveDocCallbacks): LiveDoc {
  const [doc, setDoc] = useState(() => new Y.Doc())
  const [provider, setProvider] = useState<WebsocketProvider | null>(null)
  const [status, setStatus] = useState<DocStatus>('connecting')
  const [synced, setSynced] = useState(false)
  const [participants, setParticipants] = useState<Participant[]>([])
  const [denied, setDenied] = useState<{ reason: string; at: number } | null>(null)
  const cbRef = useRef(cb)
  cbRef.current = cb
  const userRef = useRef(user)
  userRef.current = user

  useEffect(() => {
    if (!user) return
    const ydoc = new Y.Doc()
    setDoc(ydoc)
    const p = new WebsocketProvider(wsBase(), sessionId, ydoc, {
      params: token ? { token } : {},
      // Never share edits between tabs behind the server's back (a viewer tab must not leak).
      disableBc: true,
      maxBackoffTime: 4000,
    })
    // Type 2: [2, 0, reason] = permission denied (a viewer's edit was refused).
    p.messageHandlers[2] = (_enc, dec, prov) => {
      authProtocol.readAuthMessage(dec, prov.doc, (_y, reason) => setDenied({ reason: String(reason), at: Date.now() }))
    }
    const u = userRef.current!
    p.awareness.setLocalState({ user: { name: u.name, color: colorFor(u.key), role: u.role }, selected: null })
    const onStatus = ({ status: st }: { status: DocStatus }) => setStatus(st)
    const onSync = (isSynced: boolean) => setSynced(isSynced)
    const onAwareness = () => setParticipants(readParticipants(p))
    const onClose = (event: CloseEvent | null) => {
      if (!event) return
      setSynced(false)
      if (!(event.code >= 4400 && event.code < 4500)) cbRef.current.onConnectionLost?.(event.code)
    }
    const onClosed = ({ code, reason }: { code: number; reason: string }) => cbRef.current.onTerminalClose?.(code, reason)
    p.on('status', onStatus)
    p.on('sync', onSync)
    p.on('connection-close', onClose)
    p.on('closed', onClosed)
    p.awareness.on('change', onAwareness)
    setProvider(p)
    setParticipants(readParticipants(p))
    const onUnload = () => p.awareness.setLocalState(null)
    window.addEventListener('beforeunload', onUnload)
    return () => {
      window.removeEventListener('beforeunload', onUnload)
      p.awareness.off('change', onAwareness)
      p.off('status', onStatus)
      p.off('sync', onSync)
      p.off('connection-close', onClose)
      p.off('closed', onClosed)
      p.awareness.setLocalState(null)
      p.destroy()
      ydoc.destroy()
      setProvider(null)
      setSynced(false)
      setStatus('connecting')
    }
    // The user's name and role are announced below; a new socket only for a new session/token.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [sessionId, token, user === null])

  useEffect(() => {
    if (!provider || !user) return
    const cur = provider.awareness.getLocalState() ?? {}
    provider.awareness.setLocalState({ ...cur, user: { name: user.name, color: colorFor(user.key), role: user.role } })
  }, [provider, user?.name, user?.role, user?.key])

  const setSelected = (nodeId: string | null) => {
    if (!provider) return
    if ((provider.awareness.getLocalState() as { selected?: unknown } | null)?.selected === nodeId) return
    provider.awareness.setLocalStateField('selected', nodeId)
  }
  const stop = () => {
    if (!provider) return
    provider.awareness.setLocalState(null)
    provider.disconnect()
    setStatus('disconnected')
  }
  return { doc, provider, status, synced, participants, denied, setSelected, stop }
}
