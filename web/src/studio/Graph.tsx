// The node graph, bound to the Y.Doc: React Flow shows it, and every edit (move, connect,
// delete) is written to the document, which is what the other participants receive.
// Keyboard (outside text fields): Ctrl/Cmd+Z undo (of a restore this person just made, else of
// their last edit) and Shift+Ctrl/Cmd+Z (or Ctrl+Y) redo of this
// person's own edits, Delete/Backspace removes the selection, Ctrl/Cmd+C/V copies and pastes the
// selected nodes with the edges among them and their params, Ctrl/Cmd+A selects every node,
// Escape clears the selection. React Flow's own delete key is off so that a deletion of nodes
// and edges is one undo step.
import { useCallback, useEffect, useMemo, useRef, useState } from 'react'
import {
  Background,
  Controls,
  MiniMap,
  ReactFlow,
  applyNodeChanges,
  useNodesInitialized,
  useReactFlow,
  useStore,
  type Connection,
  type Edge,
  type EdgeChange,
  type NodeChange,
} from '@xyflow/react'
import type * as Y from 'yjs'
import { beginDrag, connect, copyFragment, deleteEdges, deleteNodes, deleteSelection, endDrag, moveNode, pasteFragment, undoManagerOf, type Fragment, type GraphState } from '../lib/graph'
import { undoLastRestore } from '../lib/restoreUndo'
import type { NodeTypeDef, PortDef } from '../lib/nodeTypes'
import { compatible } from '../lib/portTypes'
import { StudioNode, type StudioFlowNode } from './StudioNode'

const nodeTypes = { studio: StudioNode }
const DRAG_WRITE_MS = 60

/** What Ctrl/Cmd+C copied (kept for the page's lifetime, so it pastes into another session too). */
let clipboard: Fragment | null = null

/** Keys typed into a field, or while a dialog is open, are not graph commands. */
function typingElsewhere(e: KeyboardEvent): boolean {
  const t = e.target as HTMLElement | null
  if (document.querySelector('dialog[open]')) return true
  if (!t) return false
  return t.isContentEditable || ['INPUT', 'TEXTAREA', 'SELECT'].includes(t.tagName)
}

export interface GraphProps {
  doc: Y.Doc
  graph: GraphState
  defs: Map<string, NodeTypeDef>
  readOnly: boolean
  selectedId: string | null
  onSelect: (id: string | null) => void
  remote: Record<string, { name: string; color: string }[]>
  progress: Record<string, { step: number; total: number; done: boolean; status: string }>
  /** For the nodes' output thumbnails (media needs auth). */
  token: string | null
  /** The node or edge the last refused run named: highlighted. */
  graphError?: { kind: 'node' | 'edge'; id: string } | null
}

/** Ports of a node: from its type, plus any that edges in the document use (unknown types). */
export function portsOf(nodeId: string, type: string, defs: Map<string, NodeTypeDef>, graph: GraphState): { inputs: PortDef[]; outputs: PortDef[] } {
  const def = defs.get(type)
  const inputs = [...(def?.inputs ?? [])]
  const outputs = [...(def?.outputs ?? [])]
  for (const e of graph.edges) {
    if (e.target === nodeId && e.target_port && !inputs.some((p) => p.name === e.target_port)) inputs.push({ name: e.target_port })
    if (e.source === nodeId && e.source_port && !outputs.some((p) => p.name === e.source_port)) outputs.push({ name: e.source_port })
  }
  return { inputs, outputs }
}

export function Graph({ doc, graph, defs, readOnly, selectedId, onSelect, remote, progress, token, graphError }: GraphProps) {
  const [nodes, setNodes] = useState<StudioFlowNode[]>([])
  const [selectedEdges, setSelectedEdges] = useState<Set<string>>(new Set())
  // Nodes selected besides the inspected one (Ctrl/Cmd+A, a paste).
  const [picked, setPicked] = useState<Set<string>>(new Set())
  const dragging = useRef<Set<string>>(new Set())
  const selectedRef = useRef(selectedId)
  selectedRef.current = selectedId
  const lastWrite = useRef<Map<string, number>>(new Map())

  // The document is the truth; local drag positions win only while a drag is in progress.
  useEffect(() => {
    setNodes((prev) => {
      const old = new Map(prev.map((n) => [n.id, n]))
      return graph.nodes.map((g) => {
        const before = old.get(g.id)
        const { inputs, outputs } = portsOf(g.id, g.type, defs, graph)
        const p = progress[g.id]
        return {
          id: g.id,
          type: 'studio' as const,
          position: before && dragging.current.has(g.id) ? before.position : { x: g.x, y: g.y },
          measured: before?.measured,
          selected: g.id === selectedId || picked.has(g.id),
          draggable: !readOnly,
          connectable: !readOnly,
          deletable: !readOnly,
          ariaLabel: `${defs.get(g.type)?.label ?? g.type} node ${g.id}`,
          data: {
            graphNode: g,
            def: defs.get(g.type),
            inputs,
            outputs,
            remote: remote[g.id] ?? [],
            progress: p,
            outputCount: graph.outputs[g.id]?.length ?? 0,
            latest: graph.outputs[g.id]?.at(-1),
            token,
            hasError: graphError?.kind === 'node' && graphError.id === g.id,
            readOnly,
          },
        }
      })
    })
  }, [graph, defs, readOnly, selectedId, picked, remote, progress, token, graphError])

  const edges: Edge[] = useMemo(
    () =>
      graph.edges.map((e) => ({
        id: e.id,
        source: e.source,
        sourceHandle: e.source_port || null,
        target: e.target,
        targetHandle: e.target_port || null,
        selected: selectedEdges.has(e.id),
        deletable: !readOnly,
        focusable: true,
        animated: progress[e.target]?.status === 'running' && !progress[e.target]?.done,
        style: graphError?.kind === 'edge' && graphError.id === e.id ? { stroke: '#d9534f', strokeWidth: 3 } : undefined,
        ariaLabel: `Connection from ${e.source} ${e.source_port} to ${e.target} ${e.target_port}`,
      })),
    [graph.edges, selectedEdges, readOnly, progress, graphError],
  )

  const onNodesChange = useCallback(
    (changes: NodeChange<StudioFlowNode>[]) => {
      const local: NodeChange<StudioFlowNode>[] = []
      const removed: string[] = []
      // Selection is ours (it is also announced to the others): React Flow only proposes it,
      // on a click, Enter on a focused node, or a click on the empty pane.
      let picked: string | null | undefined
      let clearPicked = false
      for (const c of changes) {
        if (c.type === 'select') {
          // A click picks one node (or none, on the pane): a multiple selection ends.
          clearPicked = true
          if (c.selected) picked = c.id
          else if (c.id === selectedRef.current && picked === undefined) picked = null
          continue
        }
        if (c.type === 'remove') {
          if (!readOnly) removed.push(c.id)
          continue
        }
        if (c.type === 'position') {
          if (readOnly) continue
          // The document keeps whole pixels; so does the local copy, so both agree.
          if (c.position) c.position = { x: Math.round(c.position.x), y: Math.round(c.position.y) }
          if (c.dragging) {
            dragging.current.add(c.id)
            const now = performance.now()
            if (c.position && now - (lastWrite.current.get(c.id) ?? 0) >= DRAG_WRITE_MS) {
              lastWrite.current.set(c.id, now)
              moveNode(doc, c.id, c.position.x, c.position.y)
            }
          } else {
            dragging.current.delete(c.id)
            if (c.position) moveNode(doc, c.id, c.position.x, c.position.y)
          }
        }
        local.push(c)
      }
      if (local.length) setNodes((nds) => applyNodeChanges(local, nds))
      if (removed.length) deleteNodes(doc, removed)
      if (clearPicked) setPicked((p) => (p.size ? new Set() : p))
      if (picked !== undefined && picked !== selectedRef.current) onSelect(picked)
    },
    [doc, readOnly, onSelect],
  )

  const onNodeDragStart = useCallback(() => {
    if (!readOnly) beginDrag(doc)
  }, [doc, readOnly])

  const onNodeDragStop = useCallback(
    (_: unknown, _node: StudioFlowNode, dragged: StudioFlowNode[]) => {
      if (readOnly) return
      for (const n of dragged) {
        dragging.current.delete(n.id)
        moveNode(doc, n.id, n.position.x, n.position.y)
      }
      // The whole drag is one undo step.
      endDrag(doc)
    },
    [doc, readOnly],
  )

  // The keyboard habits of node editors (see the top of this file).
  const keyState = useRef({ graph, selectedId, picked, selectedEdges, readOnly })
  keyState.current = { graph, selectedId, picked, selectedEdges, readOnly }
  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      if (typingElsewhere(e)) return
      const k = keyState.current
      const mod = e.ctrlKey || e.metaKey
      const key = e.key.toLowerCase()
      const selection = new Set(k.picked)
      if (k.selectedId) selection.add(k.selectedId)
      if (mod && key === 'z' && !k.readOnly) {
        e.preventDefault()
        const um = undoManagerOf(doc)
        if (e.shiftKey) um.redo()
        else if (!undoLastRestore(doc, (err) => console.warn('could not undo the restore', err))) um.undo()
      } else if (mod && key === 'y' && !k.readOnly) {
        e.preventDefault()
        undoManagerOf(doc).redo()
      } else if (mod && key === 'a') {
        e.preventDefault()
        setPicked(new Set(k.graph.nodes.map((n) => n.id)))
      } else if (mod && key === 'c') {
        if (selection.size === 0) return
        e.preventDefault()
        clipboard = copyFragment(k.graph, selection)
      } else if (mod && key === 'v' && !k.readOnly) {
        if (!clipboard || clipboard.nodes.length === 0) return
        e.preventDefault()
        const pasted = pasteFragment(doc, clipboard)
        // A second paste lands beside the first, not on it.
        clipboard = { ...clipboard, nodes: clipboard.nodes.map((n) => ({ ...n, x: n.x + 40, y: n.y + 40 })) }
        onSelect(null)
        setPicked(new Set(pasted))
        setSelectedEdges(new Set())
      } else if ((e.key === 'Delete' || e.key === 'Backspace') && !mod && !k.readOnly) {
        if (selection.size === 0 && k.selectedEdges.size === 0) return
        e.preventDefault()
        deleteSelection(doc, [...selection], [...k.selectedEdges])
        onSelect(null)
        setPicked(new Set())
        setSelectedEdges(new Set())
      } else if (e.key === 'Escape') {
        if (selection.size === 0 && k.selectedEdges.size === 0) return
        onSelect(null)
        setPicked(new Set())
        setSelectedEdges(new Set())
      }
    }
    window.addEventListener('keydown', onKey)
    return () => window.removeEventListener('keydown', onKey)
  }, [doc, onSelect])

  const onEdgesChange = useCallback(
    (changes: EdgeChange[]) => {
      const removed: string[] = []
      let sel: Set<string> | null = null
      for (const c of changes) {
        if (c.type === 'remove' && !readOnly) removed.push(c.id)
        if (c.type === 'select') {
          sel = sel ?? new Set(selectedEdges)
          if (c.selected) sel.add(c.id)
          else sel.delete(c.id)
        }
      }
      if (sel) setSelectedEdges(sel)
      if (removed.length) deleteEdges(doc, removed)
    },
    [doc, readOnly, selectedEdges],
  )

  const onConnect = useCallback(
    (c: Connection) => {
      if (readOnly || !c.source || !c.target) return
      connect(doc, c.source, c.sourceHandle ?? '', c.target, c.targetHandle ?? '')
    },
    [doc, readOnly],
  )

  // Only ports of compatible types connect (the server refuses the others, naming the edge).
  const isValidConnection = useCallback(
    (c: Connection | Edge) => {
      if (c.source === c.target) return false
      const typeOf = (id: string) => graph.nodes.find((n) => n.id === id)?.type ?? ''
      const from = portsOf(c.source, typeOf(c.source), defs, graph).outputs.find((p) => p.name === c.sourceHandle)
      const to = portsOf(c.target, typeOf(c.target), defs, graph).inputs.find((p) => p.name === c.targetHandle)
      return compatible(from?.type, to?.type)
    },
    [defs, graph],
  )

  return (
    <ReactFlow<StudioFlowNode, Edge>
      nodes={nodes}
      edges={edges}
      nodeTypes={nodeTypes}
      onNodesChange={onNodesChange}
      onEdgesChange={onEdgesChange}
      onConnect={onConnect}
      onNodeDragStart={onNodeDragStart}
      onNodeDragStop={onNodeDragStop}
      isValidConnection={isValidConnection}
      nodesDraggable={!readOnly}
      nodesConnectable={!readOnly}
      elementsSelectable
      nodesFocusable
      edgesFocusable
      deleteKeyCode={null}
      multiSelectionKeyCode={null}
      selectionKeyCode={null}
      fitView
      fitViewOptions={{ padding: 0.3, maxZoom: 1.2 }}
      minZoom={0.2}
      maxZoom={2}
      aria-label={readOnly ? 'Workflow graph (read-only)' : 'Workflow graph'}
    >
      <AutoFit />
      <Background gap={20} />
      <Controls showInteractive={false} aria-label="Zoom controls" />
      <MiniMap pannable zoomable ariaLabel="Mini map" className="minimap" style={{ width: 150, height: 100 }} />
    </ReactFlow>
  )
}

/**
 * Fits the view when the first nodes of the synced document have been measured, and again when
 * the canvas changes size a lot (a phone turned, a window resized to half).
 */
function AutoFit() {
  const initialized = useNodesInitialized()
  const { fitView } = useReactFlow()
  const width = useStore((s) => s.width)
  const height = useStore((s) => s.height)
  const fitted = useRef<{ w: number; h: number } | null>(null)
  useEffect(() => {
    if (!initialized || width === 0 || height === 0) return
    const last = fitted.current
    const changed = !last || Math.abs(width - last.w) > last.w * 0.25 || Math.abs(height - last.h) > last.h * 0.25
    if (!changed) return
    fitted.current = { w: width, h: height }
    void fitView({ padding: 0.2, maxZoom: 1.2 })
  }, [initialized, width, height, fitView])
  return null
}
