// Run and Cancel, each job's state and progress, queue position, and the live preview.
import { useState } from 'react'
import { api, ApiError, errorDetails, errorMessage } from '../lib/api'
import { shortId } from '../lib/format'
import type { GraphState } from '../lib/graph'
import type { NodeTypeDef } from '../lib/nodeTypes'
import { isActive, type JobState, type LiveAction, type LiveState } from './liveState'
import { RuntimeOffer } from './RuntimeOffer'
import type { Preview } from './useEvents'

/** Most variations one run may ask for (the server's MAX_BATCH). */
const MAX_BATCH = 16

const STATUS_TEXT: Record<string, string> = {
  submitted: 'Submitted',
  queued: 'Queued',
  running: 'Running',
  succeeded: 'Done',
  failed: 'Failed',
  cancelled: 'Cancelled',
  ended: 'Finished',
}

export interface RunError {
  text: string
  details: string[]
  kind: 'error' | 'unavailable' | 'credits'
}

function runError(e: unknown, what: string): RunError {
  if (e instanceof ApiError) {
    if (e.notAvailable) return { kind: 'unavailable', text: `${what} is not available on this server yet.`, details: [] }
    if (e.insufficientCredits) return { kind: 'credits', text: 'Not enough credits to run this.', details: [] }
    if (e.needsRuntime) return { kind: 'credits', text: 'This session has no Pro runtime running. The person who can edit it can start one.', details: [] }
    if (e.status === 409) return { kind: 'error', text: 'The Pro runtime is still starting: run again in a moment.', details: [] }
    if (e.status === 400 || e.status === 422) return { kind: 'error', text: `The graph cannot run: ${e.message}`, details: errorDetails(e) }
    if (e.status === 403) return { kind: 'error', text: `Not allowed: ${e.message}`, details: [] }
  }
  return { kind: 'error', text: errorMessage(e), details: errorDetails(e) }
}

function JobRow({ job, graph, defs, canCancel, onCancel }: { job: JobState; graph: GraphState; defs: Map<string, NodeTypeDef>; canCancel: boolean; onCancel: (id: string) => void }) {
  const nodeLabel = (id: string) => {
    const n = graph.nodes.find((x) => x.id === id)
    return n ? (defs.get(n.type)?.label ?? n.type) : id
  }
  const cur = job.currentNode ? job.nodes[job.currentNode] : undefined
  const nodeIds = Object.keys(job.nodes)
  const doneCount = nodeIds.filter((k) => job.nodes[k].done).length
  const pct = cur && cur.total > 0 ? Math.min(100, Math.round((cur.step / cur.total) * 100)) : job.status === 'succeeded' ? 100 : 0
  return (
    <li className={`job job-${job.status}`} data-job-id={job.id} data-status={job.status}>
      <div className="job-head">
        <span className={`badge badge-${job.status}`}>{STATUS_TEXT[job.status] ?? job.status}</span>
        <span className="mono" title={job.id}>
          job {shortId(job.id)}
        </span>
        {job.device && <span className="muted">on {job.device}</span>}
        {canCancel && isActive(job) && (
          <button type="button" className="small" onClick={() => onCancel(job.id)} aria-label={`Cancel job ${shortId(job.id)}`}>
            Cancel
          </button>
        )}
      </div>
      {job.status === 'queued' && job.position !== undefined && (
        <p className="queue" data-queue-position={job.position}>
          Position in queue: <strong>{job.position}</strong>
        </p>
      )}
      {(job.status === 'running' || cur) && (
        <div className="job-progress">
          <div className="bar" role="progressbar" aria-label={`Job ${shortId(job.id)} progress`} aria-valuemin={0} aria-valuemax={100} aria-valuenow={pct}>
            <div className={`bar-fill${job.status === 'succeeded' ? ' done' : ''}`} style={{ width: `${pct}%` }} />
          </div>
          <span className="muted">
            {cur && job.currentNode ? `${nodeLabel(job.currentNode)}: step ${cur.step}/${cur.total}` : 'starting…'}
            {nodeIds.length > 1 ? ` · ${doneCount}/${nodeIds.length} nodes done` : ''}
          </span>
        </div>
      )}
      {job.status === 'failed' && job.error && (
        <p className="error-text" role="alert">
          {/lost|heartbeat|worker/i.test(job.error) ? 'Worker lost: ' : 'Failed: '}
          {job.error}
        </p>
      )}
      {job.status === 'cancelled' && job.reason && <p className="muted">{job.reason}</p>}
    </li>
  )
}

export interface JobsPanelProps {
  sessionId: string
  token: string | null
  canRun: boolean
  live: LiveState
  dispatch: (a: LiveAction) => void
  previews: Record<string, Preview>
  graph: GraphState
  defs: Map<string, NodeTypeDef>
  selectedId: string | null
  eventsConnected: boolean
  /** The node or edge a refused run names (400/404 "node x: …", "edge e: …"), or null. */
  onGraphError?: (target: GraphErrorTarget | null) => void
}

/** What a run runs: the whole graph (what feeds its outputs), some nodes and what they need,
 *  or everything from a node on (`from`: run again whatever the cache holds). */
interface Target {
  nodes?: string[]
  from?: string
}

export interface GraphErrorTarget {
  kind: 'node' | 'edge'
  id: string
}

/** What a refusal names: the server's messages start with "node <id>:" or "edge <id>:". */
export function graphErrorTarget(e: unknown): GraphErrorTarget | null {
  if (!(e instanceof ApiError) || (e.status !== 400 && e.status !== 404)) return null
  const m = /^(node|edge) ([^\s:]+):/.exec(e.message)
  return m ? { kind: m[1] as 'node' | 'edge', id: m[2] } : null
}

export function JobsPanel({ sessionId, token, canRun, live, dispatch, previews, graph, defs, selectedId, eventsConnected, onGraphError }: JobsPanelProps) {
  const [busy, setBusy] = useState(false)
  // Variations per run: more than 1 runs a batch (`{"batch": n}`), one job per variation.
  const [variations, setVariations] = useState('1')
  const batch = Math.trunc(Number(variations))
  const batchProblem = Number.isInteger(Number(variations)) && batch >= 1 && batch <= MAX_BATCH ? null : `Variations: a whole number from 1 to ${MAX_BATCH}.`
  const [error, setError] = useState<RunError | null>(null)
  // Run without a running runtime: the offer to start one, then run these nodes.
  const [offer, setOffer] = useState<Target | null>(null)
  const jobs = live.order.map((id) => live.jobs[id]).filter(Boolean)
  const active = jobs.filter(isActive)

  const submit = async (target: Target = {}) => {
    setBusy(true)
    setError(null)
    onGraphError?.(null)
    try {
      const body: Record<string, unknown> = target.nodes ? { nodes: target.nodes } : target.from ? { from: target.from } : {}
      if (batch > 1) body.batch = batch
      const answer = await api<unknown>('POST', `/sessions/${sessionId}/jobs`, body, { token })
      const list = batch > 1 ? ((answer as { jobs?: unknown[] } | null)?.jobs ?? []) : [answer]
      for (const job of list) dispatch({ kind: 'submitted', job })
    } catch (e) {
      onGraphError?.(graphErrorTarget(e))
      if (e instanceof ApiError && e.needsRuntime && canRun) setOffer(target)
      else setError(runError(e, 'Running jobs'))
    } finally {
      setBusy(false)
    }
  }
  // Without a runtime the run is still tried: a graph whose every node is cached runs free,
  // with no runtime; anything else is answered 402 and the offer to start one appears.
  const run = async (target: Target = {}) => {
    if (batchProblem) {
      setError({ kind: 'error', text: batchProblem, details: [] })
      return
    }
    await submit(target)
  }
  const cancel = async (id: string) => {
    setError(null)
    try {
      await api('POST', `/jobs/${id}/cancel`, {}, { token })
    } catch (e) {
      setError(runError(e, 'Cancelling jobs'))
    }
  }
  const latest = Object.values(previews).sort((a, b) => b.at - a.at)[0]
  return (
    <section className="panel" aria-labelledby="run-h">
      <h2 id="run-h">Run</h2>
      {canRun && (
        <div className="row wrap">
          <button type="button" className="primary" onClick={() => run()} disabled={busy || graph.nodes.length === 0}>
            {busy ? 'Starting…' : 'Run'}
          </button>
          <button type="button" onClick={() => selectedId && run({ nodes: [selectedId] })} disabled={busy || !selectedId} title="Run the selected node and what it needs">
            Run selected
          </button>
          <button
            type="button"
            onClick={() => selectedId && run({ from: selectedId })}
            disabled={busy || !selectedId}
            title="Run the selected node and everything that depends on it again, whatever the cache holds"
          >
            Run from selected
          </button>
          <button type="button" onClick={() => active.forEach((j) => cancel(j.id))} disabled={active.length === 0}>
            Cancel
          </button>
          <label className="inline-field">
            Variations
            <input
              type="number"
              min={1}
              max={MAX_BATCH}
              step={1}
              value={variations}
              onChange={(e) => setVariations(e.target.value)}
              aria-invalid={batchProblem ? true : undefined}
              title="Run this many variations at once, each with the next seed: a batch, shown as a grid"
              data-testid="variations"
              style={{ width: '4.5em', marginLeft: '0.4em' }}
            />
          </label>
        </div>
      )}
      {offer && (
        <RuntimeOffer
          sessionId={sessionId}
          token={token}
          dispatch={dispatch}
          onCancel={() => setOffer(null)}
          onReady={() => {
            const target = offer
            setOffer(null)
            void submit(target)
          }}
        />
      )}
      {error && (
        <div className={`alert ${error.kind === 'unavailable' ? 'alert-info' : 'alert-error'}`} role="alert">
          <p>{error.text}</p>
          {error.kind === 'credits' && (
            <p>
              <a href="#/sessions">Buy credits on the dashboard</a>
            </p>
          )}
          {error.details.length > 0 && (
            <ul>
              {error.details.map((d, i) => (
                <li key={i}>{d}</li>
              ))}
            </ul>
          )}
        </div>
      )}
      {!eventsConnected && <p className="muted">Live progress is reconnecting…</p>}
      {jobs.length === 0 ? (
        <p className="muted">No jobs yet.</p>
      ) : (
        <ul className="jobs" aria-label="Jobs">
          {jobs.slice(0, 6).map((j) => (
            <JobRow key={j.id} job={j} graph={graph} defs={defs} canCancel={canRun} onCancel={cancel} />
          ))}
        </ul>
      )}
      {latest && (
        <figure className="preview" data-preview-job={latest.jobId} data-preview-step={latest.step}>
          <img src={latest.url} alt={`Live preview of job ${shortId(latest.jobId)}, step ${latest.step}`} />
          <figcaption>
            Preview · job {shortId(latest.jobId)} · step {latest.step}
          </figcaption>
        </figure>
      )}
    </section>
  )
}
