// Node types: what can be added to a graph, with their ports and parameters, from
// GET /api/v1/node-types. The studio offers only what the server lists: a node it cannot run
// would only be refused at Run.
import { api, ApiError } from './api'

/** `media`: the id of an image uploaded to the session (picked or uploaded in the inspector). */
export type ParamKind = 'int' | 'float' | 'string' | 'text' | 'bool' | 'enum' | 'media'

export interface ParamDef {
  name: string
  label: string
  kind: ParamKind
  default: unknown
  min?: number
  max?: number
  step?: number | 'any'
  options?: string[]
  description?: string
}

export interface PortDef {
  name: string
  type?: string
}

export interface NodeTypeDef {
  type: string
  label: string
  description?: string
  category?: string
  inputs: PortDef[]
  outputs: PortDef[]
  params: ParamDef[]
  /** Draws noise: takes a `seed` (recorded in every job's plan). */
  stochastic?: boolean
}

/** The built-in sink: one `image` input; what is wired to it is the job's output. */
export const OUTPUT_NODE: NodeTypeDef = {
  type: 'output',
  label: 'Output',
  description: 'Marks the images that are the job’s outputs',
  inputs: [{ name: 'image', type: 'image' }],
  outputs: [],
  params: [],
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' && v.length > 0 ? v : undefined
}

function num(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isFinite(v) ? v : undefined
}

function humanize(name: string): string {
  const s = name.replace(/[_-]+/g, ' ').trim()
  return s.charAt(0).toUpperCase() + s.slice(1)
}

function kindOf(rawType: unknown, dflt: unknown, options: unknown): ParamKind {
  const t = typeof rawType === 'string' ? rawType.toLowerCase() : ''
  if (Array.isArray(options) && options.length > 0) return 'enum'
  if (t === 'media') return 'media'
  if (['int', 'integer', 'i32', 'i64', 'u32', 'u64', 'seed'].includes(t)) return 'int'
  if (['float', 'number', 'f32', 'f64', 'double', 'real'].includes(t)) return 'float'
  if (['bool', 'boolean'].includes(t)) return 'bool'
  if (['enum', 'choice', 'select'].includes(t)) return 'enum'
  if (['text', 'prompt', 'multiline'].includes(t)) return 'text'
  if (['string', 'str', 'model'].includes(t)) return 'string'
  if (typeof dflt === 'number') return Number.isInteger(dflt) ? 'int' : 'float'
  if (typeof dflt === 'boolean') return 'bool'
  return 'string'
}

function normalizeParam(name: string, raw: unknown): ParamDef {
  const o = (raw && typeof raw === 'object' ? raw : {}) as Record<string, unknown>
  const pname = str(o.name) ?? name
  const options = o.options ?? o.choices ?? o.values ?? o.enum
  const range = o.range
  let min = num(o.min) ?? num(o.minimum)
  let max = num(o.max) ?? num(o.maximum)
  if (Array.isArray(range)) {
    min = num(range[0]) ?? min
    max = num(range[1]) ?? max
  } else if (range && typeof range === 'object') {
    const r = range as Record<string, unknown>
    min = num(r.min) ?? min
    max = num(r.max) ?? max
  }
  const dflt = o.default ?? o.default_value ?? (raw !== null && typeof raw !== 'object' ? raw : undefined)
  const kind = kindOf(o.type ?? o.kind, dflt, options)
  if (kind === 'media') {
    // No default: the node needs an image of the session, picked by someone.
    return { name: pname, label: str(o.label) ?? str(o.title) ?? humanize(pname), kind, default: undefined, description: str(o.description) }
  }
  return {
    name: pname,
    label: str(o.label) ?? str(o.title) ?? humanize(pname),
    kind,
    default: dflt ?? (kind === 'int' || kind === 'float' ? (min ?? 0) : kind === 'bool' ? false : ''),
    min,
    max,
    step: num(o.step) ?? num(o.multiple_of) ?? (kind === 'int' ? 1 : kind === 'float' ? 'any' : undefined),
    options: Array.isArray(options) ? options.map((x) => String(x)) : undefined,
    description: str(o.description),
  }
}

function normalizePorts(raw: unknown): PortDef[] {
  if (!raw) return []
  if (Array.isArray(raw)) {
    return raw
      .map((p) => {
        if (typeof p === 'string') return { name: p }
        if (p && typeof p === 'object') {
          const o = p as Record<string, unknown>
          const name = str(o.name) ?? str(o.id) ?? str(o.port)
          return name ? { name, type: str(o.type) } : null
        }
        return null
      })
      .filter((p): p is PortDef => p !== null)
  }
  if (typeof raw === 'object') {
    return Object.entries(raw as Record<string, unknown>).map(([name, v]) => ({
      name,
      type: typeof v === 'string' ? v : str((v as Record<string, unknown> | null)?.type),
    }))
  }
  return []
}

/** Accepts the shapes a node-type listing may reasonably have. */
export function normalizeNodeTypes(raw: unknown): NodeTypeDef[] {
  let list: unknown = raw
  if (raw && !Array.isArray(raw) && typeof raw === 'object') {
    const o = raw as Record<string, unknown>
    list = o.node_types ?? o.types ?? o.nodes ?? o.items
    if (!list) {
      // A map of type name → definition.
      list = Object.entries(o).map(([type, def]) => ({ type, ...(def as object) }))
    }
  }
  if (!Array.isArray(list)) return []
  const out: NodeTypeDef[] = []
  for (const item of list) {
    if (!item || typeof item !== 'object') continue
    const o = item as Record<string, unknown>
    const type = str(o.type) ?? str(o.name) ?? str(o.id)
    if (!type) continue
    const ports = (o.ports && typeof o.ports === 'object' ? o.ports : {}) as Record<string, unknown>
    const rawParams = o.params ?? o.parameters ?? o.inputs_params ?? []
    let params: ParamDef[] = []
    if (Array.isArray(rawParams)) {
      params = rawParams
        .filter((p) => p && typeof p === 'object')
        .map((p) => normalizeParam(String((p as Record<string, unknown>).name ?? ''), p))
        .filter((p) => p.name)
    } else if (rawParams && typeof rawParams === 'object') {
      params = Object.entries(rawParams as Record<string, unknown>).map(([name, def]) => normalizeParam(name, def))
    }
    out.push({
      type,
      label: str(o.label) ?? str(o.title) ?? str(o.display_name) ?? (str(o.name) !== type ? str(o.name) : undefined) ?? humanize(type),
      description: str(o.description),
      category: str(o.category),
      inputs: normalizePorts(o.inputs ?? ports.inputs ?? ports.in),
      outputs: normalizePorts(o.outputs ?? ports.outputs ?? ports.out),
      params,
      stochastic: o.stochastic === true,
    })
  }
  return out
}

export interface NodeTypesResult {
  /** What the server lists (empty when it lists none or could not be asked). */
  types: NodeTypeDef[]
  /** Why the palette is empty or cannot run anything, for people. */
  message?: string
}

export async function loadNodeTypes(token?: string | null): Promise<NodeTypesResult> {
  try {
    const raw = await api<unknown>('GET', '/node-types', undefined, { token })
    const types = normalizeNodeTypes(raw)
    if (types.length === 0) {
      return { types: [], message: 'This server lists no node types: there is nothing to add or run.' }
    }
    // The job system's built-in sink marks which images are a job's outputs (src/jobs/graph.rs).
    if (!types.some((t) => t.type === OUTPUT_NODE.type)) types.push(OUTPUT_NODE)
    // Only the sink: the server has no models installed, so nothing can run yet.
    if (types.every((t) => t.type === OUTPUT_NODE.type)) {
      return { types, message: 'This server has no models installed yet: there is nothing to run.' }
    }
    return { types }
  } catch (e) {
    const msg =
      e instanceof ApiError && e.status === 404
        ? 'This server has no job system: there are no node types to add.'
        : `Could not load the node types (${(e as Error).message}): reload the page to try again.`
    return { types: [], message: msg }
  }
}

export function defaultParams(def: NodeTypeDef): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const p of def.params) if (p.default !== undefined) out[p.name] = p.default
  return out
}

/** Largest seed: integers a JavaScript number holds exactly (the server's limit too). */
export const MAX_SEED = 2 ** 53 - 1

/** The `seed` every random node takes: empty means a random one, recorded in the job. */
export const SEED_PARAM: ParamDef = {
  name: 'seed',
  label: 'Seed',
  kind: 'int',
  default: undefined,
  min: 0,
  max: MAX_SEED,
  step: 1,
  description: 'Empty: a new random seed every run (recorded with the run). A number makes the run repeatable.',
}

/**
 * Why `value` cannot be this parameter's value, or null when it can: the node type's range
 * (from GET /node-types), whole numbers for ints, and `step` for sizes made of whole tiles.
 * The server checks the same at Run; this stops a bad value where it is typed.
 */
export function paramProblem(def: ParamDef, value: number): string | null {
  if (!Number.isFinite(value)) return 'Not a number.'
  if (def.kind === 'int' && !Number.isInteger(value)) return 'Must be a whole number.'
  const lo = def.min
  const hi = def.max
  if ((lo !== undefined && value < lo) || (hi !== undefined && value > hi)) {
    return `Must be between ${lo ?? '…'} and ${hi ?? '…'}.`
  }
  if (def.kind === 'int' && typeof def.step === 'number' && def.step > 1 && value % def.step !== 0) {
    return `Must be a multiple of ${def.step}.`
  }
  return null
}
