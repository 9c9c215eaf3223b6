// Ctrl/Cmd+Z after a restore undoes the restore. A restore is the server's change (it reaches
// everyone as a collaborative update), so the Yjs undo manager, which tracks only this person's
// own edits, cannot revert it; instead the restore this person made last is remembered — with
// the version it answered as `undo`, the document just before — until they edit again (their
// next own change is then what Ctrl+Z undoes first, as in any editor). Undoing it restores that
// version, for everyone, as the history panel's "Undo this restore" does.
import type * as Y from 'yjs'
import { client } from './api'
import { undoManagerOf } from './graph'

interface Pending {
  sessionId: string
  /** The version to restore to undo the restore. */
  undo: string
  /** Stops watching for this person's next edit. */
  unwatch: () => void
}

const pending = new WeakMap<Y.Doc, Pending>()
const listeners = new WeakMap<Y.Doc, Set<() => void>>()

function changed(doc: Y.Doc): void {
  for (const listener of listeners.get(doc) ?? []) listener()
}

/** Whether Ctrl/Cmd+Z would now undo a restore. */
export function hasRestoreToUndo(doc: Y.Doc): boolean {
  return pending.has(doc)
}

/** Calls `listener` whenever that changes; returns the function that stops it. */
export function watchRestoreUndo(doc: Y.Doc, listener: () => void): () => void {
  let set = listeners.get(doc)
  if (!set) listeners.set(doc, (set = new Set()))
  set.add(listener)
  return () => set.delete(listener)
}

/** This person restored a version; `undo` is the version that undoes it. */
export function rememberRestore(doc: Y.Doc, sessionId: string, undo: string): void {
  forgetRestore(doc)
  const um = undoManagerOf(doc)
  // Their own edits before the restore are undone after it, each as its own step.
  um.stopCapturing()
  const onEdit = () => forgetRestore(doc)
  um.on('stack-item-added', onEdit)
  pending.set(doc, { sessionId, undo, unwatch: () => um.off('stack-item-added', onEdit) })
  changed(doc)
}

export function forgetRestore(doc: Y.Doc): void {
  const p = pending.get(doc)
  if (!p) return
  p.unwatch()
  pending.delete(doc)
  changed(doc)
}

/**
 * Undoes the remembered restore, if there is one (then true: the caller does not also undo an
 * edit). A failure (e.g. the version is gone) is passed to `onError`.
 */
export function undoLastRestore(doc: Y.Doc, onError: (e: unknown) => void): boolean {
  const p = pending.get(doc)
  if (!p) return false
  forgetRestore(doc)
  client.restoreVersion(p.sessionId, p.undo).catch(onError)
  return true
}
