// The selected node: its parameters (labelled inputs, written to the Y.Doc), its connections,
// and keyboard-reachable ways to connect and delete — everything the canvas does by mouse.
// A value outside the node type's range (GET /node-types) is refused where it is typed, with
// the reason, and never written to the document.
import { useEffect, useId, useState } from 'react'
import type * as Y from 'yjs'
import { connect, deleteEdges, deleteNodes, deleteParam, setParam, type GraphNode, type GraphState } from '../lib/graph'
import { paramProblem, SEED_PARAM, type NodeTypeDef, type ParamDef } from '../lib/nodeTypes'
import { MediaField } from './MediaField'
import { portsOf } from './Graph'

function inferParam(name: string, value: unknown): ParamDef {
  const kind = typeof value === 'number' ? (Number.isInteger(value) ? 'int' : 'float') : typeof value === 'boolean' ? 'bool' : 'string'
  return { name, label: name, kind, default: value, step: kind === 'float' ? 'any' : undefined }
}

interface ParamFieldProps {
  nodeId: string
  def: ParamDef
  value: unknown
  readOnly: boolean
  sessionId: string
  token: string | null
  /** `undefined` removes the parameter (its default applies; a seed becomes random). */
  onChange: (v: unknown) => void
}

function ParamField({ nodeId, def, value, readOnly, sessionId, token, onChange }: ParamFieldProps) {
  const uid = useId()
  const id = `param-${uid}`
  const numeric = def.kind === 'int' || def.kind === 'float'
  const [draft, setDraft] = useState<string>(value === undefined || value === null ? '' : String(value))
  const [focused, setFocused] = useState(false)
  const [refused, setRefused] = useState<string | null>(null)
  useEffect(() => {
    if (!focused) setDraft(value === undefined || value === null ? '' : String(value))
  }, [value, focused])
  const range = def.min !== undefined || def.max !== undefined ? ` (${def.min ?? '…'}–${def.max ?? '…'})` : ''
  const hint = def.description ? <span className="hint">{def.description}</span> : null
  const common = { id, disabled: readOnly, 'aria-describedby': undefined, 'data-param-input': def.name, 'data-node-id': nodeId }
  if (def.kind === 'media') {
    return <MediaField id={id} nodeId={nodeId} def={def} value={typeof value === 'string' ? value : null} readOnly={readOnly} sessionId={sessionId} token={token} onChange={onChange} />
  }
  if (def.kind === 'bool') {
    return (
      <div className="field field-check">
        <input type="checkbox" {...common} checked={value === true} onChange={(e) => onChange(e.target.checked)} />
        <label htmlFor={id}>{def.label}</label>
        {hint}
      </div>
    )
  }
  if (def.kind === 'enum' && def.options) {
    const cur = value === undefined || value === null ? '' : String(value)
    return (
      <div className="field">
        <label htmlFor={id}>{def.label}</label>
        <select {...common} value={cur} onChange={(e) => onChange(e.target.value)}>
          {!def.options.includes(cur) && <option value={cur}>{cur || '—'}</option>}
          {def.options.map((o) => (
            <option key={o} value={o}>
              {o}
            </option>
          ))}
        </select>
        {hint}
      </div>
    )
  }
  if (numeric) {
    // Every keystroke is checked; only a valid value reaches the document. Empty clears a
    // parameter that may be empty (the seed: random), and is otherwise left unwritten.
    const commit = (raw: string) => {
      if (raw.trim() === '') {
        setRefused(null)
        if (def.default === undefined) onChange(undefined)
        return
      }
      const n = Number(raw)
      const problem = paramProblem(def, n)
      if (problem) {
        setRefused(`${raw} is refused: ${problem.charAt(0).toLowerCase()}${problem.slice(1).replace(/\.$/, '')}; not saved.`)
        return
      }
      setRefused(null)
      onChange(n)
    }
    return (
      <div className="field">
        <label htmlFor={id}>
          {def.label}
          <span className="range">{range}</span>
        </label>
        <input
          type="number"
          inputMode={def.kind === 'int' ? 'numeric' : 'decimal'}
          {...common}
          value={draft}
          min={def.min}
          max={def.max}
          step={def.step ?? (def.kind === 'int' ? 1 : 'any')}
          placeholder={def.default === undefined ? 'random' : undefined}
          aria-invalid={refused ? true : undefined}
          aria-errormessage={refused ? `${id}-refused` : undefined}
          onFocus={() => setFocused(true)}
          onBlur={() => {
            setFocused(false)
            setDraft(value === undefined || value === null ? '' : String(value))
          }}
          onChange={(e) => {
            setDraft(e.target.value)
            commit(e.target.value)
          }}
        />
        {refused && (
          <span className="hint warn" role="alert" id={`${id}-refused`} data-param-refused={def.name}>
            {refused}
          </span>
        )}
        {hint}
      </div>
    )
  }
  const str = value === undefined || value === null ? '' : typeof value === 'string' ? value : JSON.stringify(value)
  return (
    <div className="field">
      <label htmlFor={id}>{def.label}</label>
      {def.kind === 'text' ? (
        <textarea {...common} rows={3} value={str} onChange={(e) => onChange(e.target.value)} />
      ) : (
        <input type="text" {...common} value={str} onChange={(e) => onChange(e.target.value)} />
      )}
      {hint}
    </div>
  )
}

export interface InspectorProps {
  sessionId: string
  token: string | null
  doc: Y.Doc
  graph: GraphState
  node: GraphNode | null
  defs: Map<string, NodeTypeDef>
  readOnly: boolean
  onSelect: (id: string | null) => void
}

export function Inspector({ sessionId, token, doc, graph, node, defs, readOnly, onSelect }: InspectorProps) {
  const [target, setTarget] = useState<Record<string, string>>({})
  if (!node) {
    return (
      <section className="panel" aria-labelledby="inspector-h">
        <h2 id="inspector-h">Node</h2>
        <p className="muted">
          {graph.nodes.length === 0
            ? readOnly
              ? 'The graph is empty.'
              : 'The graph is empty: add a node from the list.'
            : 'Select a node (click it, or Tab to it and press Enter) to see its parameters.'}
        </p>
      </section>
    )
  }
  const def = defs.get(node.type)
  const params: ParamDef[] = def ? [...def.params] : []
  if (def?.stochastic && !params.some((p) => p.name === 'seed')) params.push(SEED_PARAM)
  for (const [k, v] of Object.entries(node.params)) if (!params.some((p) => p.name === k)) params.push(inferParam(k, v))
  const { outputs } = portsOf(node.id, node.type, defs, graph)
  const incoming = graph.edges.filter((e) => e.target === node.id)
  const outgoing = graph.edges.filter((e) => e.source === node.id)
  const label = (id: string) => {
    const n = graph.nodes.find((x) => x.id === id)
    return n ? `${defs.get(n.type)?.label ?? n.type} (${id})` : id
  }
  const candidates = graph.nodes
    .filter((n) => n.id !== node.id)
    .flatMap((n) => portsOf(n.id, n.type, defs, graph).inputs.map((p) => ({ value: `${n.id}\u0000${p.name}`, text: `${label(n.id)} → ${p.name}` })))
  return (
    <section className="panel" aria-labelledby="inspector-h">
      <h2 id="inspector-h">
        {def?.label ?? node.type} <span className="muted mono">{node.id}</span>
      </h2>
      {def?.description && <p className="muted">{def.description}</p>}
      {!def && <p className="muted">Unknown node type “{node.type}”.</p>}
      <form className="params" onSubmit={(e) => e.preventDefault()} aria-label="Parameters">
        {params.length === 0 && <p className="muted">No parameters.</p>}
        {params.map((p) => (
          <ParamField
            key={`${node.id}/${p.name}`}
            nodeId={node.id}
            def={p}
            value={node.params[p.name] ?? p.default}
            readOnly={readOnly}
            sessionId={sessionId}
            token={token}
            onChange={(v) => {
              if (readOnly) return
              if (v === undefined) deleteParam(doc, node.id, p.name)
              else setParam(doc, node.id, p.name, v)
            }}
          />
        ))}
      </form>
      <h3>Connections</h3>
      {incoming.length + outgoing.length === 0 && <p className="muted">None.</p>}
      <ul className="connections">
        {incoming.map((e) => (
          <li key={e.id}>
            <span>
              {e.target_port} ← {label(e.source)}.{e.source_port}
            </span>
            {!readOnly && (
              <button type="button" className="small" onClick={() => deleteEdges(doc, [e.id])} aria-label={`Remove connection into ${e.target_port} from ${e.source}`}>
                Remove
              </button>
            )}
          </li>
        ))}
        {outgoing.map((e) => (
          <li key={e.id}>
            <span>
              {e.source_port} → {label(e.target)}.{e.target_port}
            </span>
            {!readOnly && (
              <button type="button" className="small" onClick={() => deleteEdges(doc, [e.id])} aria-label={`Remove connection from ${e.source_port} to ${e.target}`}>
                Remove
              </button>
            )}
          </li>
        ))}
      </ul>
      {!readOnly && outputs.length > 0 && candidates.length > 0 && (
        <div className="connect-forms">
          {outputs.map((port) => {
            const fid = `connect-${node.id}-${port.name}`
            return (
              <form
                key={port.name}
                className="row"
                onSubmit={(e) => {
                  e.preventDefault()
                  const v = target[port.name] ?? candidates[0]?.value
                  if (!v) return
                  const [tid, tport] = v.split('\u0000')
                  connect(doc, node.id, port.name, tid, tport)
                }}
              >
                <label htmlFor={fid}>Connect {port.name} to</label>
                <select id={fid} value={target[port.name] ?? candidates[0]?.value} onChange={(e) => setTarget({ ...target, [port.name]: e.target.value })}>
                  {candidates.map((c) => (
                    <option key={c.value} value={c.value}>
                      {c.text}
                    </option>
                  ))}
                </select>
                <button type="submit" className="small">
                  Connect
                </button>
              </form>
            )
          })}
        </div>
      )}
      {!readOnly && (
        <div className="row">
          <button
            type="button"
            className="danger"
            onClick={() => {
              deleteNodes(doc, [node.id])
              onSelect(null)
            }}
          >
            Delete node
          </button>
        </div>
      )}
    </section>
  )
}
