// Node types: what can be added to a graph, with their ports and parameters. They come from
// GET /api/v1/node-types when the server has it; otherwise a built-in list lets people sketch
// a graph (running it needs the server's job system anyway).
import { api, ApiError } from './api'

export type ParamKind = 'int' | 'float' | 'string' | 'text' | 'bool' | 'enum'

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

export const FALLBACK_NODE_TYPES: NodeTypeDef[] = [
  {
    type: 'prompt',
    label: 'Prompt',
    description: 'Text that describes what to make',
    inputs: [],
    outputs: [{ name: 'text', type: 'text' }],
    params: [{ name: 'text', label: 'Text', kind: 'text', default: 'a misty mountain range at dawn' }],
  },
  {
    type: 'noise',
    label: 'Noise',
    description: 'Seeded random latent',
    inputs: [],
    outputs: [{ name: 'latent', type: 'latent' }],
    params: [
      { name: 'seed', label: 'Seed', kind: 'int', default: 42, min: 0, max: 2147483647, step: 1 },
      { name: 'size', label: 'Size (px)', kind: 'int', default: 128, min: 32, max: 1024, step: 32 },
    ],
  },
  {
    type: 'sampler',
    label: 'Sampler',
    description: 'Denoises a latent step by step with a model',
    inputs: [
      { name: 'latent', type: 'latent' },
      { name: 'prompt', type: 'text' },
    ],
    outputs: [{ name: 'image', type: 'image' }],
    params: [
      { name: 'model', label: 'Model', kind: 'string', default: 'tiny-denoiser' },
      { name: 'steps', label: 'Steps', kind: 'int', default: 20, min: 1, max: 200, step: 1 },
      { name: 'guidance', label: 'Guidance', kind: 'float', default: 7.5, min: 0, max: 30, step: 0.5 },
    ],
  },
  {
    type: 'save_image',
    label: 'Save image',
    description: 'Stores the image as session media',
    inputs: [{ name: 'image', type: 'image' }],
    outputs: [],
    params: [{ name: 'name', label: 'File name', kind: 'string', default: 'output' }],
  },
]

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
  return {
    name: pname,
    label: str(o.label) ?? str(o.title) ?? humanize(pname),
    kind,
    default: dflt ?? (kind === 'int' || kind === 'float' ? (min ?? 0) : kind === 'bool' ? false : ''),
    min,
    max,
    step: num(o.step) ?? (kind === 'int' ? 1 : kind === 'float' ? 'any' : undefined),
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
  types: NodeTypeDef[]
  /** False when the server has no node-type listing yet and the built-in list is used. */
  fromServer: boolean
  message?: string
}

export async function loadNodeTypes(token?: string | null): Promise<NodeTypesResult> {
  try {
    const raw = await api<unknown>('GET', '/node-types', undefined, { token })
    const types = normalizeNodeTypes(raw)
    if (types.length === 0) {
      return { types: FALLBACK_NODE_TYPES, fromServer: false, message: 'The server lists no node types; showing the built-in list.' }
    }
    // The job system's built-in sink marks which images are a job's outputs (src/jobs/graph.rs).
    if (!types.some((t) => t.type === OUTPUT_NODE.type)) types.push(OUTPUT_NODE)
    // Only the sink: the server has no models installed, so nothing can run yet.
    if (types.every((t) => t.type === OUTPUT_NODE.type)) {
      return { types, fromServer: true, message: 'This server has no models installed yet: there is nothing to run.' }
    }
    return { types, fromServer: true }
  } catch (e) {
    const msg =
      e instanceof ApiError && e.status === 404
        ? 'Node types are not available from this server yet; showing a built-in list.'
        : `Could not load node types (${(e as Error).message}); showing a built-in list.`
    return { types: FALLBACK_NODE_TYPES, fromServer: false, message: msg }
  }
}

export function defaultParams(def: NodeTypeDef): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const p of def.params) out[p.name] = p.default
  return out
}
