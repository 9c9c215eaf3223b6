// The session document (DESIGN.md "The session document"):
//   nodes:   Y.Map node_id → Y.Map {type, x, y, params: Y.Map}
//   edges:   Y.Map edge_id → Y.Map {source, source_port, target, target_port}
//   outputs: Y.Map node_id → Y.Array of media ids (written by the server)
//   meta:    Y.Map (title, …)
// Every edit goes through these functions, inside one transaction each, so every participant
// sees it as one change.
import * as Y from 'yjs'

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
  doc.transact(() => {
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
  })
}

/** Deletes nodes and every edge that touches them. */
export function deleteNodes(doc: Y.Doc, ids: string[]): void {
  if (ids.length === 0) return
  const gone = new Set(ids)
  doc.transact(() => {
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

export function deleteEdges(doc: Y.Doc, ids: string[]): void {
  if (ids.length === 0) return
  doc.transact(() => {
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
  doc.transact(() => {
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
  })
}

/** Removes a parameter: its default applies again (for a seed: a random one per run). */
export function deleteParam(doc: Y.Doc, nodeId: string, name: string): void {
  const node = nodesOf(doc).get(nodeId)
  if (!(node instanceof Y.Map)) return
  const params = node.get('params')
  if (params instanceof Y.Map && params.has(name)) doc.transact(() => params.delete(name))
}

export function setTitle(doc: Y.Doc, title: string): void {
  metaOf(doc).set('title', title)
}
