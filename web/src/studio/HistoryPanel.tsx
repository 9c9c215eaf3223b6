// Version history: the session's versions (kind, name, who, when), a preview of the graph at a
// version (its size and what differs from the graph now), restoring one (editors; the restore
// reaches everyone connected and can itself be undone) and naming the current state.
import { useCallback, useEffect, useRef, useState } from 'react'
import type * as Y from 'yjs'
import { client, errorMessage, type VersionContent, type VersionRecord } from '../lib/api'
import { forgetRestore, rememberRestore } from '../lib/restoreUndo'
import { dateTime, shortId } from '../lib/format'
import { readGraph } from '../lib/graph'

const KIND_LABEL: Record<VersionRecord['kind'], string> = {
  auto: 'Autosave',
  named: 'Named',
  job: 'Job run',
  restore: 'Restore',
}

interface Changes {
  nodesAdded: number
  nodesRemoved: number
  nodesChanged: number
  edgesAdded: number
  edgesRemoved: number
}

/** What restoring `version` would change in the graph as it is now. */
function changesFromNow(doc: Y.Doc, version: VersionContent): Changes {
  const now = readGraph(doc)
  const nowNodes = new Map(now.nodes.map((n) => [n.id, n]))
  const nowEdges = new Set(now.edges.map((e) => e.id))
  const thenNodes = version.graph.nodes ?? {}
  const thenEdges = version.graph.edges ?? {}
  let nodesChanged = 0
  for (const [id, n] of Object.entries(thenNodes)) {
    const cur = nowNodes.get(id)
    if (cur && (cur.type !== n.type || cur.x !== n.x || cur.y !== n.y || JSON.stringify(cur.params) !== JSON.stringify(n.params ?? {}))) nodesChanged++
  }
  return {
    nodesAdded: Object.keys(thenNodes).filter((id) => !nowNodes.has(id)).length,
    nodesRemoved: now.nodes.filter((n) => !(n.id in thenNodes)).length,
    nodesChanged,
    edgesAdded: Object.keys(thenEdges).filter((id) => !nowEdges.has(id)).length,
    edgesRemoved: now.edges.filter((e) => !(e.id in thenEdges)).length,
  }
}

function who(v: VersionRecord): string {
  return v.created_by?.name ?? (v.kind === 'auto' ? 'editing' : 'someone')
}

export function HistoryPanel({
  sessionId,
  doc,
  canEdit,
  focus,
  onClose,
}: {
  sessionId: string
  doc: Y.Doc
  canEdit: boolean
  /** A version to preview at once (the gallery's "open this graph"). */
  focus: string | null
  onClose: () => void
}) {
  const dialogRef = useRef<HTMLDialogElement>(null)
  const [versions, setVersions] = useState<VersionRecord[] | null>(null)
  const [nextOffset, setNextOffset] = useState<number | null>(null)
  const [preview, setPreview] = useState<{ content: VersionContent; changes: Changes } | null>(null)
  const [error, setError] = useState<string | null>(null)
  const [notice, setNotice] = useState<{ text: string; undo?: string } | null>(null)
  const [name, setName] = useState('')
  const [busy, setBusy] = useState(false)

  const load = useCallback(async () => {
    try {
      const list = await client.versions(sessionId, { limit: 50 })
      setVersions(list.versions)
      setNextOffset(list.next_offset)
    } catch (e) {
      setError(errorMessage(e))
    }
  }, [sessionId])

  const more = async () => {
    if (nextOffset === null) return
    try {
      const list = await client.versions(sessionId, { limit: 50, offset: nextOffset })
      setVersions((v) => [...(v ?? []), ...list.versions])
      setNextOffset(list.next_offset)
    } catch (e) {
      setError(errorMessage(e))
    }
  }

  const show = useCallback(
    async (id: string) => {
      setError(null)
      try {
        const content = await client.version(sessionId, id)
        setPreview({ content, changes: changesFromNow(doc, content) })
      } catch (e) {
        setError(errorMessage(e))
      }
    },
    [sessionId, doc],
  )

  useEffect(() => {
    const d = dialogRef.current
    if (d && !d.open) d.showModal()
    void load()
  }, [load])

  useEffect(() => {
    if (focus) void show(focus)
  }, [focus, show])

  const restore = async (id: string) => {
    setBusy(true)
    setError(null)
    try {
      const done = await client.restoreVersion(sessionId, id)
      // Undoing a restore (this button, or Ctrl/Cmd+Z) ends there; a new restore is what
      // Ctrl/Cmd+Z undoes next.
      if (id === notice?.undo) {
        forgetRestore(doc)
        setNotice({ text: `Undid the restore: back to version ${shortId(id)} for everyone.` })
      } else {
        rememberRestore(doc, sessionId, done.undo)
        setNotice({ text: `Restored version ${shortId(id)} for everyone (Ctrl/Cmd+Z undoes it).`, undo: done.undo })
      }
      setPreview(null)
      await load()
    } catch (e) {
      setError(errorMessage(e))
    } finally {
      setBusy(false)
    }
  }

  const nameCurrent = async () => {
    setError(null)
    try {
      const v = await client.nameVersion(sessionId, name.trim())
      setName('')
      setNotice({ text: `Named the current state “${v.name}”.` })
      await load()
    } catch (e) {
      setError(errorMessage(e))
    }
  }

  return (
    <dialog ref={dialogRef} className="dialog history" aria-labelledby="history-h" onClose={onClose} onCancel={onClose}>
      <div className="dialog-head">
        <h2 id="history-h">History</h2>
        <button type="button" className="small" onClick={() => dialogRef.current?.close()} aria-label="Close history">
          Close
        </button>
      </div>
      {error && (
        <p className="alert alert-error" role="alert">
          {error}
        </p>
      )}
      {notice && (
        <p className="alert alert-info" role="status">
          {notice.text}{' '}
          {notice.undo && canEdit && (
            <button type="button" className="small" disabled={busy} onClick={() => void restore(notice.undo!)}>
              Undo this restore
            </button>
          )}
        </p>
      )}
      {canEdit && (
        <form
          className="row wrap"
          onSubmit={(e) => {
            e.preventDefault()
            void nameCurrent()
          }}
        >
          <label htmlFor="version-name">Name the current state</label>
          <input id="version-name" type="text" required maxLength={200} value={name} onChange={(e) => setName(e.target.value)} />
          <button type="submit">Save version</button>
        </form>
      )}
      {preview && (
        <section className="card" aria-labelledby="preview-h" data-preview-version={preview.content.id}>
          <h3 id="preview-h">
            {preview.content.name ?? KIND_LABEL[preview.content.kind]} · {dateTime(preview.content.created_at)}
          </h3>
          <p data-testid="version-size">
            {Object.keys(preview.content.graph.nodes ?? {}).length} nodes, {Object.keys(preview.content.graph.edges ?? {}).length} connections:{' '}
            {[...new Set(Object.values(preview.content.graph.nodes ?? {}).map((n) => n.type))].join(', ') || 'empty'}
          </p>
          <p className="muted" data-testid="version-changes">
            Compared with now, restoring it would add {preview.changes.nodesAdded} and remove {preview.changes.nodesRemoved} nodes, change {preview.changes.nodesChanged}, add{' '}
            {preview.changes.edgesAdded} and remove {preview.changes.edgesRemoved} connections.
          </p>
          {canEdit && (
            <button type="button" className="primary" disabled={busy} onClick={() => void restore(preview.content.id)}>
              Restore this version
            </button>
          )}
        </section>
      )}
      {versions === null ? (
        <p className="muted">Loading…</p>
      ) : versions.length === 0 ? (
        <p className="muted">No versions yet: they are kept as you edit, when you name one, and for every run.</p>
      ) : (
        <ul className="link-list" aria-label="Versions">
          {versions.map((v) => (
            <li key={v.id} data-version-id={v.id} data-kind={v.kind}>
              <span>
                <strong>{v.name ?? KIND_LABEL[v.kind]}</strong> <span className="muted">{v.name ? KIND_LABEL[v.kind] : ''}</span> · {who(v)} · {dateTime(v.created_at)}
                {v.jobs.length > 0 && <span className="muted"> · {v.jobs.length} run{v.jobs.length > 1 ? 's' : ''}</span>}
              </span>
              <span className="row">
                <button type="button" className="small" onClick={() => void show(v.id)} aria-label={`Preview version ${shortId(v.id)}`}>
                  Preview
                </button>
                {canEdit && (
                  <button type="button" className="small" disabled={busy} onClick={() => void restore(v.id)} aria-label={`Restore version ${shortId(v.id)}`}>
                    Restore
                  </button>
                )}
              </span>
            </li>
          ))}
        </ul>
      )}
      {nextOffset !== null && (
        <button type="button" className="small" onClick={more}>
          Older versions
        </button>
      )}
    </dialog>
  )
}
