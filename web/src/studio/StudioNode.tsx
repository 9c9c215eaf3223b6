import { memo } from 'react'
import { Handle, Position, type Node, type NodeProps } from '@xyflow/react'
import type { GraphNode } from '../lib/graph'
import type { NodeTypeDef, PortDef } from '../lib/nodeTypes'
import { portColor } from '../lib/portTypes'
import { useMedia } from '../lib/media'

/** The node's latest output, small. Media needs auth: loaded as an object URL. */
function Thumbnail({ id, token }: { id: string; token: string | null }) {
  const { media } = useMedia(id, token)
  if (!media || !media.type.startsWith('image/')) return null
  return <img className="sn-thumb" src={media.url} alt="latest output" data-thumbnail-of={id} width={96} height={96} style={{ objectFit: 'cover', display: 'block', margin: '4px auto' }} />
}

export interface StudioNodeData extends Record<string, unknown> {
  graphNode: GraphNode
  def: NodeTypeDef | undefined
  inputs: PortDef[]
  outputs: PortDef[]
  remote: { name: string; color: string }[]
  progress?: { step: number; total: number; done: boolean; status: string }
  outputCount: number
  /** The node's latest output (a media id), shown as a thumbnail. */
  latest?: string
  token: string | null
  /** The last refused run named this node. */
  hasError?: boolean
  readOnly: boolean
}

export type StudioFlowNode = Node<StudioNodeData, 'studio'>

function show(v: unknown): string {
  if (typeof v === 'string') return v.length > 40 ? `${v.slice(0, 39)}…` : v
  if (typeof v === 'number' || typeof v === 'boolean') return String(v)
  if (v === null || v === undefined) return '—'
  const j = JSON.stringify(v)
  return j.length > 40 ? `${j.slice(0, 39)}…` : j
}

function StudioNodeView({ id, data, selected }: NodeProps<StudioFlowNode>) {
  const { graphNode, def, inputs, outputs, remote, progress, outputCount, latest, token, hasError, readOnly } = data
  const label = def?.label ?? graphNode.type
  const ring = remote[0]?.color
  const paramNames = def ? def.params.map((p) => p.name) : Object.keys(graphNode.params)
  for (const k of Object.keys(graphNode.params)) if (!paramNames.includes(k)) paramNames.push(k)
  const pct = progress && progress.total > 0 ? Math.min(100, Math.round((progress.step / progress.total) * 100)) : 0
  return (
    <div
      className={`sn${selected ? ' sn-selected' : ''}${remote.length ? ' sn-remote-selected' : ''}${progress && !progress.done && progress.status === 'running' ? ' sn-running' : ''}`}
      style={{ ...(ring ? ({ '--ring': ring } as React.CSSProperties) : {}), ...(hasError ? { outline: '2px solid #d9534f', outlineOffset: 2 } : {}) }}
      data-graph-error={hasError ? 'true' : undefined}
      data-node-id={id}
      data-node-type={graphNode.type}
      data-remote-selected={remote.map((r) => r.name).join(',') || undefined}
    >
      {remote.length > 0 && (
        <div className="sn-tags" aria-label={`Selected by ${remote.map((r) => r.name).join(', ')}`}>
          {remote.map((r, i) => (
            <span key={i} className="sn-tag" style={{ background: r.color }}>
              {r.name}
            </span>
          ))}
        </div>
      )}
      <div className="sn-head">
        <span className="sn-title">{label}</span>
        <span className="sn-id">{id}</span>
      </div>
      {(inputs.length > 0 || outputs.length > 0) && (
        <div className="sn-ports">
          <div className="sn-col">
            {inputs.map((p) => (
              <div key={p.name} className="sn-port sn-in" title={p.type ? `${p.name}: ${p.type}` : p.name}>
                <Handle type="target" position={Position.Left} id={p.name} isConnectable={!readOnly} className="sn-handle" data-port-type={p.type} style={{ background: portColor(p.type) }} />
                <span>{p.name}</span>
              </div>
            ))}
          </div>
          <div className="sn-col sn-col-out">
            {outputs.map((p) => (
              <div key={p.name} className="sn-port sn-out" title={p.type ? `${p.name}: ${p.type}` : p.name}>
                <span>{p.name}</span>
                <Handle type="source" position={Position.Right} id={p.name} isConnectable={!readOnly} className="sn-handle" data-port-type={p.type} style={{ background: portColor(p.type) }} />
              </div>
            ))}
          </div>
        </div>
      )}
      {paramNames.length > 0 && (
        <dl className="sn-params">
          {paramNames.slice(0, 6).map((name) => (
            <div key={name} className="sn-param">
              <dt>{name}</dt>
              <dd data-param={name}>{show(graphNode.params[name])}</dd>
            </div>
          ))}
        </dl>
      )}
      {progress && (
        <div className="sn-progress">
          <div
            className="bar"
            role="progressbar"
            aria-label={`${label} progress`}
            aria-valuemin={0}
            aria-valuemax={progress.total}
            aria-valuenow={progress.step}
          >
            <div className={`bar-fill${progress.done ? ' done' : ''}`} style={{ width: `${progress.done ? 100 : pct}%` }} />
          </div>
          <span className="sn-step">
            {progress.done ? 'done' : `${progress.step}/${progress.total}`}
          </span>
        </div>
      )}
      {latest && <Thumbnail id={latest} token={token} />}
      {outputCount > 0 && <div className="sn-outputs">{outputCount} output{outputCount === 1 ? '' : 's'}</div>}
    </div>
  )
}

export const StudioNode = memo(StudioNodeView)
