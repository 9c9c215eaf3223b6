// The session document (DESIGN.md "The session document"):
//   nodes:   Y.Map node_id → Y.Map {type, x, y, params: Y.Map}
//   edges:   Y.Map edge_id → Y.Map {source, source_port, target, target_port}
//   outputs: Y.Map node_id → Y.Array of media ids (written by the server)
//   meta:    Y.Map (title, …)
// Every edit goes through these functions, inside one transaction each, so every participant
// sees it as one change. Each transaction carries LOCAL_ORIGIN: the undo manager tracks only
// those, so a person's undo reverts their own edits and never a colleague's (whose updates
// arrive with the provider as origin) or the server's (outputs, restores).
import * as Y from 'yjs'

/** The origin of this person's own edits. */
export const LOCAL_ORIGIN = Symbol('local edit')
/** How long consecutive small edits (typing in a parameter) merge into one undo step. */
const TYPING_MERGE_MS = 500
/** While a drag lasts, its many position writes merge into one step whatever the pauses. */
const DRAG_MERGE_MS = 24 * 3600 * 1000

const undoManagers = new WeakMap<Y.Doc, Y.UndoManager>()

/** The document's undo manager for this person's edits (nodes, edges and meta; not outputs). */
export function undoManagerOf(doc: Y.Doc): Y.UndoManager {
  let um = undoManagers.get(doc)
  if (!um) {
    um = new Y.UndoManager([nodesOf(doc), edgesOf(doc), metaOf(doc)], {
      trackedOrigins: new Set([LOCAL_ORIGIN]),
      captureTimeout: TYPING_MERGE_MS,
    })
    undoManagers.set(doc, um)
  }
  return um
}

/** Runs one local edit that is an undo step of its own (not merged with the edits around it). */
function step(doc: Y.Doc, edit: () => void): void {
  const um = undoManagers.get(doc)
  um?.stopCapturing()
  doc.transact(edit, LOCAL_ORIGIN)
  um?.stopCapturing()
}

/** A drag begins: its position writes become one undo step. */
export function beginDrag(doc: Y.Doc): void {
  const um = undoManagerOf(doc)
  um.stopCapturing()
  um.captureTimeout = DRAG_MERGE_MS
}

/** The drag ended (after its last position write). */
export function endDrag(doc: Y.Doc): void {
  const um = undoManagerOf(doc)
  um.captureTimeout = TYPING_MERGE_MS
  um.stopCapturing()
}

export interface GraphNode {
  id: string
  type: string
  x: number
  y: number
  params: Record<string, unknown>
}

export interface GraphEdge {
  id: string
  source: string
  source_port: string
  target: string
  target_port: string
}

export interface GraphState {
  nodes: GraphNode[]
  edges: GraphEdge[]
  outputs: Record<string, string[]>
  title: string | null
}

export const nodesOf = (doc: Y.Doc) => doc.getMap<unknown>('nodes')
export const edgesOf = (doc: Y.Doc) => doc.getMap<unknown>('edges')
export const outputsOf = (doc: Y.Doc) => doc.getMap<unknown>('outputs')
export const metaOf = (doc: Y.Doc) => doc.getMap<unknown>('meta')

function randomHex(bytes: number): string {
  const a = new Uint8Array(bytes)
  crypto.getRandomValues(a)
  return Array.from(a, (b) => b.toString(16).padStart(2, '0')).join('')
}

export function newNodeId(type: string): string {
  const base = type.toLowerCase().replace(/[^a-z0-9]+/g, '_').replace(/^_+|_+$/g, '') || 'node'
  return `${base}_${randomHex(3)}`
}

export function newEdgeId(): string {
  return `e_${randomHex(4)}`
}

const finite = (v: unknown, d = 0): number => (typeof v === 'number' && Number.isFinite(v) ? v : d)
const text = (v: unknown): string => (typeof v === 'string' ? v : v === undefined || v === null ? '' : String(v))

export function readGraph(doc: Y.Doc): GraphState {
  const nodes: GraphNode[] = []
  nodesOf(doc).forEach((value, id) => {
    if (!(value instanceof Y.Map)) return
    const params: Record<string, unknown> = {}
    const p = value.get('params')
    if (p instanceof Y.Map) p.forEach((v, k) => (params[k] = v instanceof Y.AbstractType ? v.toJSON() : v))
    nodes.push({ id, type: text(value.get('type')) || 'unknown', x: finite(value.get('x')), y: finite(value.get('y')), params })
  })
  nodes.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
  const edges: GraphEdge[] = []
  edgesOf(doc).forEach((value, id) => {
    if (!(value instanceof Y.Map)) return
    const e = {
      id,
      source: text(value.get('source')),
      source_port: text(value.get('source_port')),
      target: text(value.get('target')),
      target_port: text(value.get('target_port')),
    }
    if (e.source && e.target) edges.push(e)
  })
  const outputs: Record<string, string[]> = {}
  outputsOf(doc).forEach((value, nodeId) => {
    if (value instanceof Y.Array) outputs[nodeId] = value.toArray().filter((x): x is string => typeof x === 'string')
    else if (Array.isArray(value)) outputs[nodeId] = value.filter((x): x is string => typeof x === 'string')
  })
  const title = metaOf(doc).get('title')
  return { nodes, edges, outputs, title: typeof title === 'string' ? title : null }
}

export function addNode(doc: Y.Doc, type: string, x: number, y: number, params: Record<string, unknown>): string {
  const id = newNodeId(type)
  step(doc, () => {
    const node = new Y.Map<unknown>()
    const p = new Y.Map<unknown>()
    for (const [k, v] of Object.entries(params)) if (v !== undefined) p.set(k, v)
    node.set('type', type)
    node.set('x', Math.round(x))
    node.set('y', Math.round(y))
    node.set('params', p)
    nodesOf(doc).set(id, node)
  })
  return id
}

export function moveNode(doc: Y.Doc, id: string, x: number, y: number): void {
  const node = nodesOf(doc).get(id)
  if (!(node instanceof Y.Map)) return
  const rx = Math.round(x)
  const ry = Math.round(y)
  if (node.get('x') === rx && node.get('y') === ry) return
  doc.transact(() => {
    node.set('x', rx)
    node.set('y', ry)
  }, LOCAL_ORIGIN)
}

/** Deletes nodes and every edge that touches them. */
export function deleteNodes(doc: Y.Doc, ids: string[]): void {
  if (ids.length === 0) return
  const gone = new Set(ids)
  step(doc, () => {
    const nodes = nodesOf(doc)
    for (const id of ids) nodes.delete(id)
    const edges = edgesOf(doc)
    const drop: string[] = []
    edges.forEach((value, id) => {
      if (value instanceof Y.Map && (gone.has(text(value.get('source'))) || gone.has(text(value.get('target'))))) drop.push(id)
    })
    for (const id of drop) edges.delete(id)
  })
}

/** Deletes nodes (with their edges) and edges, as one undo step. */
export function deleteSelection(doc: Y.Doc, nodeIds: string[], edgeIds: string[]): void {
  if (nodeIds.length === 0 && edgeIds.length === 0) return
  step(doc, () => {
    const edges = edgesOf(doc)
    for (const id of edgeIds) edges.delete(id)
    deleteNodes(doc, nodeIds)
  })
}

export function deleteEdges(doc: Y.Doc, ids: string[]): void {
  if (ids.length === 0) return
  step(doc, () => {
    const edges = edgesOf(doc)
    for (const id of ids) edges.delete(id)
  })
}

/**
 * Connects an output port to an input port. An input takes one connection: an edge already
 * feeding it is replaced. Returns the new edge's id, or null when the connection makes no sense.
 */
export function connect(doc: Y.Doc, source: string, sourcePort: string, target: string, targetPort: string): string | null {
  if (!source || !target || source === target) return null
  const nodes = nodesOf(doc)
  if (!(nodes.get(source) instanceof Y.Map) || !(nodes.get(target) instanceof Y.Map)) return null
  const id = newEdgeId()
  step(doc, () => {
    const edges = edgesOf(doc)
    const replaced: string[] = []
    edges.forEach((value, eid) => {
      if (value instanceof Y.Map && value.get('target') === target && value.get('target_port') === targetPort) replaced.push(eid)
    })
    for (const eid of replaced) edges.delete(eid)
    const edge = new Y.Map<unknown>()
    edge.set('source', source)
    edge.set('source_port', sourcePort)
    edge.set('target', target)
    edge.set('target_port', targetPort)
    edges.set(id, edge)
  })
  return id
}

export function setParam(doc: Y.Doc, nodeId: string, name: string, value: unknown): void {
  const node = nodesOf(doc).get(nodeId)
  if (!(node instanceof Y.Map)) return
  doc.transact(() => {
    let params = node.get('params')
    if (!(params instanceof Y.Map)) {
      params = new Y.Map<unknown>()
      node.set('params', params)
    }
    const p = params as Y.Map<unknown>
    if (p.get(name) !== value) p.set(name, value)
  }, LOCAL_ORIGIN)
}

/** Removes a parameter: its default applies again (for a seed: a random one per run). */
export function deleteParam(doc: Y.Doc, nodeId: string, name: string): void {
  const node = nodesOf(doc).get(nodeId)
  if (!(node instanceof Y.Map)) return
  const params = node.get('params')
  if (params instanceof Y.Map && params.has(name)) doc.transact(() => params.delete(name))
}

export function setTitle(doc: Y.Doc, title: string): void {
  step(doc, () => metaOf(doc).set('title', title))
}

/** Nodes with their params and the edges among them, as copied to the clipboard. */
export interface Fragment {
  nodes: GraphNode[]
  edges: GraphEdge[]
}

/** The given nodes and the edges that connect two of them. */
export function copyFragment(graph: GraphState, ids: Set<string>): Fragment {
  return {
    nodes: graph.nodes.filter((n) => ids.has(n.id)).map((n) => ({ ...n, params: structuredClone(n.params) })),
    edges: graph.edges.filter((e) => ids.has(e.source) && ids.has(e.target)).map((e) => ({ ...e })),
  }
}

/** Pastes a fragment with new ids, offset from the originals, as one step; returns the new node ids. */
export function pasteFragment(doc: Y.Doc, fragment: Fragment, offset = 40): string[] {
  const renamed = new Map<string, string>()
  for (const n of fragment.nodes) renamed.set(n.id, newNodeId(n.type))
  step(doc, () => {
    const nodes = nodesOf(doc)
    for (const n of fragment.nodes) {
      const node = new Y.Map<unknown>()
      const p = new Y.Map<unknown>()
      for (const [k, v] of Object.entries(n.params)) if (v !== undefined) p.set(k, v)
      node.set('type', n.type)
      node.set('x', Math.round(n.x + offset))
      node.set('y', Math.round(n.y + offset))
      node.set('params', p)
      nodes.set(renamed.get(n.id)!, node)
    }
    const edges = edgesOf(doc)
    for (const e of fragment.edges) {
      const source = renamed.get(e.source)
      const target = renamed.get(e.target)
      if (!source || !target) continue
      const edge = new Y.Map<unknown>()
      edge.set('source', source)
      edge.set('source_port', e.source_port)
      edge.set('target', target)
      edge.set('target_port', e.target_port)
      edges.set(newEdgeId(), edge)
    }
  })
  return [...renamed.values()]
}
