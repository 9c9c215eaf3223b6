// The studio: the session's graph bound to its Yjs document, presence, runs and their
// progress, Pro runtime, outputs and sharing. The same page, read-only, is the viewer page
// (share links and members with the viewer role).
import { useCallback, useEffect, useMemo, useState } from 'react'
import { ReactFlowProvider } from '@xyflow/react'
import { api, ApiError, errorMessage, type Account, type SessionView } from '../lib/api'
import { LOCAL_ORIGIN, nodesOf, readGraph, setParam, undoManagerOf, type GraphState } from '../lib/graph'
import { hasRestoreToUndo, undoLastRestore, watchRestoreUndo } from '../lib/restoreUndo'
import { loadNodeTypes, type NodeTypesResult } from '../lib/nodeTypes'
import { navigate } from '../lib/router'
import { Graph } from '../studio/Graph'
import { Inspector } from '../studio/Inspector'
import { JobsPanel, type GraphErrorTarget } from '../studio/JobsPanel'
import { nodeProgress } from '../studio/liveState'
import { Outputs, type OutputGroup, type OutputItem } from '../studio/Outputs'
import { Palette } from '../studio/Palette'
import { Presence } from '../studio/Presence'
import { RuntimePanel } from '../studio/RuntimePanel'
import { ShareDialog } from '../studio/ShareDialog'
import { HistoryPanel } from '../studio/HistoryPanel'
import { useStudioEvents } from '../studio/useEvents'
import { useLiveDoc } from '../studio/useLiveDoc'

export interface StudioProps {
  sessionId: string
  /** Bearer token for the API and sockets: the login token, a share link's token, or null (cookie). */
  token: string | null
  account: Account | null
  shareLink: boolean
  onLogout?: () => void
}

/** A job as `GET /sessions/{id}/jobs` shows it (the fields the gallery reads). */
interface JobRecord {
  id: string
  status: string
  /** The version of the document the job ran. */
  version_id?: string | null
  outputs?: string[]
  plan?: { node_id: string; model: string; params?: Record<string, unknown>; seed: number; cached?: boolean }[]
  /** Set for the variations of a batch run: the batch and this variation's place in it. */
  batch?: { id: string; index: number } | null
}

const EMPTY: GraphState = { nodes: [], edges: [], outputs: {}, title: null }

function endedText(reason: string, shareLink: boolean): string {
  const r = reason.toLowerCase()
  if (shareLink && /revok|expired|link|401|403|invalid/.test(r)) return 'This viewer link has been revoked or has expired. The live view has ended.'
  if (/revok/.test(r)) return `Your access to this session was revoked (${reason}). The live view has ended.`
  if (/remov|member/.test(r)) return 'You were removed from this session. The live view has ended.'
  if (/delet|not found|404/.test(r)) return 'This session no longer exists or you no longer have access. The live view has ended.'
  return `The live view has ended: ${reason}`
}

export function Studio({ sessionId, token, account, shareLink, onLogout }: StudioProps) {
  const [session, setSession] = useState<SessionView | null>(null)
  const [loadError, setLoadError] = useState<{ text: string; status: number } | null>(null)
  const [types, setTypes] = useState<NodeTypesResult | null>(null)
  const [ended, setEnded] = useState<string | null>(null)
  const [graph, setGraph] = useState<GraphState>(EMPTY)
  const [selectedId, setSelectedId] = useState<string | null>(null)
  const [shareOpen, setShareOpen] = useState(false)
  // The history panel, open (with the version to preview, if any) or closed (undefined).
  const [historyFocus, setHistoryFocus] = useState<string | null | undefined>(undefined)
  const [graphError, setGraphError] = useState<GraphErrorTarget | null>(null)

  useEffect(() => {
    let live = true
    setSession(null)
    setLoadError(null)
    setEnded(null)
    api<SessionView>('GET', `/sessions/${sessionId}`, undefined, { token }).then(
      (s) => live && setSession(s),
      (e) => {
        if (!live) return
        const status = e instanceof ApiError ? e.status : 0
        if (status === 401 && !shareLink) {
          navigate('/login')
          return
        }
        const text =
          status === 401
            ? 'This viewer link is not valid: it has been revoked or has expired.'
            : status === 404
              ? 'This session does not exist, or you do not have access to it.'
              : errorMessage(e)
        setLoadError({ text, status })
      },
    )
    loadNodeTypes(token).then((t) => live && setTypes(t))
    return () => {
      live = false
    }
  }, [sessionId, token, shareLink])

  const onAccessLost = useCallback((reason: string) => setEnded((prev) => prev ?? reason), [])

  const checkAccess = useCallback(async (): Promise<boolean> => {
    try {
      await api('GET', `/sessions/${sessionId}`, undefined, { token })
      return true
    } catch (e) {
      if (e instanceof ApiError && [401, 403, 404].includes(e.status)) {
        onAccessLost(e.status === 401 ? (shareLink ? 'link revoked' : 'signed out') : 'session not found')
        return false
      }
      return true
    }
  }, [sessionId, token, shareLink, onAccessLost])

  const user = useMemo(() => {
    if (!session) return null
    if (account) return { name: account.name, role: session.role, key: account.id }
    return { name: 'Guest viewer', role: 'viewer', key: `guest-${Math.random()}` }
  }, [session, account])

  const live = useLiveDoc(sessionId, token, ended ? null : user, {
    onTerminalClose: (code, reason) => onAccessLost(reason || (code === 4403 ? 'access revoked' : `closed (${code})`)),
    onConnectionLost: (code) => {
      if (code === 1006 || code === 1008) void checkAccess()
    },
  })
  const events = useStudioEvents(sessionId, token, !!session && !ended, { onTerminalClose: (code, reason) => onAccessLost(reason || `closed (${code})`), checkAccess })

  useEffect(() => {
    if (events.state.kicked) onAccessLost(events.state.kicked)
  }, [events.state.kicked, onAccessLost])

  useEffect(() => {
    if (!ended) return
    live.stop()
    events.stop()
    setShareOpen(false)
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [ended])

  // The document → graph state, at most once per frame.
  useEffect(() => {
    const doc = live.doc
    let frame = 0
    const refresh = () => {
      if (frame) return
      frame = requestAnimationFrame(() => {
        frame = 0
        setGraph(readGraph(doc))
      })
    }
    const maps = ['nodes', 'edges', 'outputs', 'meta'].map((k) => doc.getMap(k))
    for (const m of maps) m.observeDeep(refresh)
    setGraph(readGraph(doc))
    return () => {
      for (const m of maps) m.unobserveDeep(refresh)
      if (frame) cancelAnimationFrame(frame)
    }
  }, [live.doc])

  const role = events.state.role ?? session?.role ?? 'viewer'
  const readOnly = role === 'viewer' || !!ended || shareLink
  const canManage = !readOnly && !shareLink

  const select = useCallback(
    (id: string | null) => {
      setSelectedId(id)
      live.setSelected(id)
    },
    // eslint-disable-next-line react-hooks/exhaustive-deps
    [live.provider],
  )
  // A selected node that someone deletes is no longer selected.
  useEffect(() => {
    if (selectedId && !nodesOf(live.doc).has(selectedId)) select(null)
  }, [graph.nodes, selectedId, select, live.doc])

  const remote = useMemo(() => {
    const out: Record<string, { name: string; color: string }[]> = {}
    if (ended) return out
    for (const p of live.participants) {
      if (p.self || !p.selected) continue
      ;(out[p.selected] ??= []).push({ name: p.name, color: p.color })
    }
    return out
  }, [live.participants, ended])

  const progress = useMemo(() => nodeProgress(events.state), [events.state])
  const defs = useMemo(() => new Map((types?.types ?? []).map((t) => [t.type, t])), [types])

  // Every run of the session, from the server: the gallery survives a reload and shows what
  // produced each image. Reloaded whenever a job ends.
  const [history, setHistory] = useState<JobRecord[]>([])
  const finishedCount = useMemo(
    () => events.state.order.filter((j) => ['succeeded', 'failed', 'cancelled'].includes(String(events.state.jobs[j]?.status))).length,
    [events.state],
  )
  useEffect(() => {
    let on = true
    api<JobRecord[]>('GET', `/sessions/${sessionId}/jobs`, undefined, { token }).then(
      (jobs) => {
        if (!on || !Array.isArray(jobs)) return
        setHistory(jobs)
        // The run panel lists them too: it survives a reload.
        events.dispatch({ kind: 'history', jobs })
      },
      () => {},
    )
    return () => {
      on = false
    }
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [sessionId, token, finishedCount])

  // Undo and redo of this person's own edits (the keys are handled by the graph).
  const [undoable, setUndoable] = useState({ undo: false, redo: false })
  useEffect(() => {
    const um = undoManagerOf(live.doc)
    const update = () => setUndoable({ undo: um.undoStack.length > 0 || hasRestoreToUndo(live.doc), redo: um.redoStack.length > 0 })
    um.on('stack-item-added', update)
    um.on('stack-item-popped', update)
    um.on('stack-cleared', update)
    const unwatch = watchRestoreUndo(live.doc, update)
    update()
    return () => {
      um.off('stack-item-added', update)
      um.off('stack-item-popped', update)
      um.off('stack-cleared', update)
      unwatch()
    }
  }, [live.doc])

  const restore = useCallback(
    (job: JobRecord) => {
      const nodes = nodesOf(live.doc)
      live.doc.transact(() => {
        for (const step of job.plan ?? []) {
          if (!nodes.has(step.node_id)) continue
          for (const [k, v] of Object.entries(step.params ?? {})) if (v !== null && v !== undefined) setParam(live.doc, step.node_id, k, v)
          if (defs.get(step.model)?.stochastic) setParam(live.doc, step.node_id, 'seed', step.seed)
        }
      }, LOCAL_ORIGIN)
    },
    [live.doc, defs],
  )

  // Copies a variation's seeds into the graph: the next run makes that variation again.
  const copySeeds = useCallback(
    (job: JobRecord) => {
      const nodes = nodesOf(live.doc)
      live.doc.transact(() => {
        for (const step of job.plan ?? []) {
          if (nodes.has(step.node_id) && defs.get(step.model)?.stochastic) setParam(live.doc, step.node_id, 'seed', step.seed)
        }
      })
    },
    [live.doc, defs],
  )

  const outputGroups = useMemo(() => {
    const groups: OutputGroup[] = []
    const batches = new Map<string, { group: OutputGroup; order: number[] }>()
    const seen = new Set<string>()
    const single = (item: OutputItem) => groups.push({ key: item.id, items: [item] })
    // Newest run first; a batch's variations sit together in a grid, in variation order.
    for (const job of history) {
      if (job.status !== 'succeeded') continue
      const random = (job.plan ?? []).filter((s) => defs.get(s.model)?.stochastic)
      const seeds = random.map((s) => `${s.node_id} seed ${s.seed}`).join(', ')
      const cached = (job.plan ?? []).filter((s) => s.cached).length
      for (const id of job.outputs ?? []) {
        if (seen.has(id)) continue
        seen.add(id)
        const item: OutputItem = {
          id,
          caption: job.batch ? `variation ${job.batch.index + 1}` : `job ${job.id.slice(0, 8)}`,
          detail: [seeds, cached ? `${cached} cached` : ''].filter(Boolean).join(' · ') || undefined,
          values: (job.plan ?? []).map((step) => {
            const shown = Object.entries(step.params ?? {}).map(([k, v]) => `${k} ${typeof v === 'string' && v.length > 12 ? `${v.slice(0, 8)}…` : String(v)}`)
            if (defs.get(step.model)?.stochastic) shown.push(`seed ${step.seed}`)
            return `${step.node_id} (${step.model}): ${shown.join(', ') || 'no parameters'}`
          }),
          onRestore: readOnly ? undefined : () => restore(job),
          onOpenGraph: job.version_id && !shareLink ? () => setHistoryFocus(job.version_id) : undefined,
        }
        if (!job.batch) {
          single(item)
          continue
        }
        if (!readOnly && random.length > 0) {
          item.useSeed = {
            label: random.length === 1 ? `Use seed ${random[0].seed}` : 'Use these seeds',
            seeds: random.map((s) => `${s.node_id}=${s.seed}`).join(' '),
            apply: () => copySeeds(job),
          }
        }
        let b = batches.get(job.batch.id)
        if (!b) {
          b = { group: { key: `batch-${job.batch.id}`, batch: { id: job.batch.id, title: '' }, items: [] }, order: [] }
          batches.set(job.batch.id, b)
          groups.push(b.group)
        }
        const at = b.order.findIndex((i) => i > job.batch!.index)
        if (at < 0) {
          b.order.push(job.batch.index)
          b.group.items.push(item)
        } else {
          b.order.splice(at, 0, job.batch.index)
          b.group.items.splice(at, 0, item)
        }
        b.group.batch!.title = `Batch of ${b.group.items.length} variations`
      }
    }
    for (const n of graph.nodes) {
      for (const id of graph.outputs[n.id] ?? []) {
        if (seen.has(id)) continue
        seen.add(id)
        single({ id, caption: `${defs.get(n.type)?.label ?? n.type} ${n.id}` })
      }
    }
    for (const [nodeId, ids] of Object.entries(graph.outputs)) {
      for (const id of ids) if (!seen.has(id)) (seen.add(id), single({ id, caption: nodeId }))
    }
    for (const jid of events.state.order) {
      for (const id of events.state.jobs[jid]?.outputs ?? []) if (!seen.has(id)) (seen.add(id), single({ id, caption: `job ${jid.slice(0, 8)}` }))
    }
    return groups
  }, [graph, defs, events.state, history, readOnly, restore, copySeeds])

  if (loadError) {
    return (
      <div className="page narrow">
        <h1>Atelier</h1>
        <div className="alert alert-error" role="alert">
          <p>{loadError.text}</p>
        </div>
        {account ? <a href="#/sessions">Back to your sessions</a> : <a href="#/login">Log in</a>}
      </div>
    )
  }
  if (!session) {
    return (
      <div className="page narrow" aria-busy="true">
        <p className="muted">Opening the session…</p>
      </div>
    )
  }

  const title = graph.title || session.title
  const selectedNode = graph.nodes.find((n) => n.id === selectedId) ?? null
  const connState = ended ? 'ended' : live.status === 'connected' ? (live.synced ? 'live' : 'syncing') : live.status
  const deniedRecently = live.denied && !shareLink && role !== 'viewer'

  return (
    <ReactFlowProvider>
      <div className={`studio${readOnly ? ' read-only' : ''}${ended ? ' ended' : ''}`} data-role={role} data-conn={connState}>
        <header className="studio-bar">
          {account && !shareLink ? (
            <a href="#/sessions" className="brand" aria-label="Back to your sessions">
              ← Atelier
            </a>
          ) : (
            <span className="brand">Atelier</span>
          )}
          <h1 className="studio-title" title={title}>
            {title}
          </h1>
          <span className={`pill pill-${connState}`} role="status" aria-label={`Connection: ${connState}`} data-testid="connection">
            {connState === 'live' ? 'Live' : connState === 'syncing' ? 'Syncing…' : connState === 'connecting' ? 'Connecting…' : connState === 'ended' ? 'Ended' : 'Disconnected'}
          </span>
          {readOnly && (
            <span className="pill pill-readonly" aria-label="You are viewing: read-only">
              View only
            </span>
          )}
          <Presence participants={ended ? [] : live.participants} />
          <div className="bar-actions">
            {!readOnly && (
              <>
                <button type="button" className="subtle" disabled={!undoable.undo} onClick={() => undoLastRestore(live.doc, (e) => console.warn('could not undo the restore', e)) || undoManagerOf(live.doc).undo()} aria-label="Undo my last change" title="Undo (Ctrl/Cmd+Z)">
                  Undo
                </button>
                <button type="button" className="subtle" disabled={!undoable.redo} onClick={() => undoManagerOf(live.doc).redo()} aria-label="Redo" title="Redo (Shift+Ctrl/Cmd+Z)">
                  Redo
                </button>
              </>
            )}
            {!shareLink && account && (
              <button type="button" onClick={() => setHistoryFocus(null)}>
                History
              </button>
            )}
            {canManage && (
              <button type="button" onClick={() => setShareOpen(true)}>
                Share
              </button>
            )}
            {account && !shareLink && onLogout && (
              <button type="button" className="subtle" onClick={onLogout}>
                Log out
              </button>
            )}
          </div>
        </header>
        <div className="banners">
          {ended && (
            <div className="alert alert-error" role="alert" data-testid="ended">
              <strong>{endedText(ended, shareLink)}</strong>
              {account && !shareLink && (
                <p>
                  <a href="#/sessions">Back to your sessions</a>
                </p>
              )}
            </div>
          )}
          {!ended && live.status === 'disconnected' && (
            <div className="alert alert-warn" role="alert">
              Disconnected from the server — reconnecting. Changes you make now are kept and sent when the connection is back.
            </div>
          )}
          {!ended && readOnly && (
            <div className="alert alert-info" role="note">
              {shareLink ? 'You are watching through a viewer link: read-only.' : 'You are a viewer in this session: read-only.'}
            </div>
          )}
          {!ended && deniedRecently && (
            <div className="alert alert-error" role="alert">
              <span>The server refused your change ({live.denied!.reason}): you cannot edit this session. What you see may differ from the saved document.</span>
              <button type="button" className="small" onClick={() => window.location.reload()}>
                Reload
              </button>
            </div>
          )}
          {types?.message && !readOnly && <div className="alert alert-info small-text">{types.message}</div>}
          {events.state.notices.map((n) => (
            <div key={n.id} className={`alert ${n.level === 'error' ? 'alert-error' : 'alert-info'}`} role="alert">
              <span>{n.text}</span>
              <button type="button" className="small subtle" onClick={() => events.dispatch({ kind: 'dismiss', id: n.id })} aria-label="Dismiss message">
                ×
              </button>
            </div>
          ))}
        </div>
        <div className="studio-body">
          {!readOnly && types && (
            <aside className="side side-left">
              <Palette doc={live.doc} types={types.types} onAdded={select} />
            </aside>
          )}
          <main className="canvas" aria-label="Graph canvas">
            <Graph doc={live.doc} graph={graph} defs={defs} readOnly={readOnly} selectedId={selectedId} onSelect={select} remote={remote} progress={progress} token={token} graphError={graphError} />
            {graph.nodes.length === 0 && !ended && (
              <div className="canvas-note">
                {!live.synced ? 'Connecting to the live session…' : readOnly ? 'The graph is empty.' : 'The graph is empty: add a node from “Add a node”.'}
              </div>
            )}
          </main>
          <aside className="side side-right">
            <Inspector sessionId={sessionId} token={token} doc={live.doc} graph={graph} node={selectedNode} defs={defs} readOnly={readOnly} onSelect={select} />
            <JobsPanel
              onGraphError={setGraphError}
              sessionId={sessionId}
              token={token}
              canRun={!readOnly}
              live={events.state}
              dispatch={events.dispatch}
              previews={events.previews}
              graph={graph}
              defs={defs}
              selectedId={selectedId}
              eventsConnected={events.status === 'open' || !!ended}
            />
            <RuntimePanel sessionId={sessionId} token={token} canManage={canManage} isAccount={!!account && !shareLink} accountId={account?.id} runtime={events.state.runtime} liveBalance={events.state.balance} dispatch={events.dispatch} />
            <Outputs groups={outputGroups} token={token} />
          </aside>
        </div>
        {historyFocus !== undefined && (
          <HistoryPanel sessionId={sessionId} doc={live.doc} canEdit={!readOnly} focus={historyFocus} onClose={() => setHistoryFocus(undefined)} />
        )}
        {shareOpen && <ShareDialog sessionId={sessionId} role={role} onClose={() => setShareOpen(false)} />}
      </div>
    </ReactFlowProvider>
  )
}
