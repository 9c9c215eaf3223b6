// What the studio events tell: jobs with their progress, the Pro runtime meter, who is here,
// and why the session ended for us. A pure reducer, fed by EventsSocket.
import type { Role } from '../lib/api'
import type { StudioEvent } from '../lib/events'

/** `ended`: finished while we were disconnected (the outcome is in the document's outputs). */
export type JobStatus = 'submitted' | 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled' | 'ended'

export interface NodeProgress {
  step: number
  total: number
  done: boolean
}

export interface JobState {
  id: string
  status: JobStatus
  position?: number
  device?: string
  workerId?: string
  currentNode?: string
  nodes: Record<string, NodeProgress>
  outputs: string[]
  error?: string
  reason?: string
  updatedAt: number
}

export interface RuntimeState {
  leaseId: string
  gpuClass?: string
  usedMs: number
  charged: number
  balance?: number
  running: boolean
  reason?: string
  refunded?: number
  prepaidMinutes?: number
  /** The lease's own word for its state when known (starting, running, stopping, stopped). */
  status?: string
  pricePerMinute?: number
  /** Prepaid time left, from the meter. */
  remainingMs?: number
  /** Set by `runtime.low_balance`: the prepaid time is about to run out. */
  lowBalance?: boolean
  /** Set by `runtime.queued`: every machine of the class is taken; the lease's place in line
   * (1 = next). Not billed while it waits. */
  queuePosition?: number
  payerId?: string
  payerName?: string
}

export interface Notice {
  id: number
  level: 'error' | 'info'
  text: string
}

export interface LiveState {
  role?: Role
  hello: boolean
  jobs: Record<string, JobState>
  order: string[]
  runtime: RuntimeState | null
  balance?: number
  kicked: string | null
  notices: Notice[]
}

export const initialLiveState: LiveState = { hello: false, jobs: {}, order: [], runtime: null, kicked: null, notices: [] }

export type LiveAction =
  | { kind: 'event'; event: StudioEvent }
  | { kind: 'submitted'; job: unknown }
  /** The session's runs from the server (GET /sessions/{id}/jobs, newest first): what a reload
   *  would otherwise forget. Finished jobs the events did not tell us about are added after the
   *  ones they did; a job the server records as finished is finished here too. */
  | { kind: 'history'; jobs: unknown[] }
  | { kind: 'runtime'; runtime: RuntimeState | null }
  | { kind: 'dismiss'; id: number }
  | { kind: 'notice'; level: 'error' | 'info'; text: string }

let noticeSeq = 1

const LOW_BALANCE_NOTICE = "The Pro runtime's prepaid time is almost used up: extend it in the runtime panel to keep the job running."
const s = (v: unknown): string | undefined => (typeof v === 'string' ? v : typeof v === 'number' ? String(v) : undefined)
const n = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined)

function statusFrom(raw: unknown): JobStatus {
  const t = typeof raw === 'string' ? raw.toLowerCase() : ''
  if (['queued', 'pending', 'waiting'].includes(t)) return 'queued'
  if (['running', 'started', 'assigned', 'in_progress'].includes(t)) return 'running'
  if (['succeeded', 'success', 'done', 'completed', 'finished'].includes(t)) return 'succeeded'
  if (['failed', 'error'].includes(t)) return 'failed'
  if (['cancelled', 'canceled'].includes(t)) return 'cancelled'
  return 'queued'
}

/** A job as the job system reports it (session.hello, POST /jobs): lenient about its shape. */
export function jobFromSnapshot(raw: unknown, prev?: JobState): JobState | null {
  if (!raw || typeof raw !== 'object') return null
  const o = raw as Record<string, unknown>
  const id = s(o.id) ?? s(o.job_id)
  if (!id) return null
  const job: JobState = prev ? { ...prev, nodes: { ...prev.nodes } } : { id, status: 'queued', nodes: {}, outputs: [], updatedAt: Date.now() }
  if (o.status !== undefined || o.state !== undefined) job.status = statusFrom(o.status ?? o.state)
  const pos = n(o.position) ?? n(o.queue_position)
  if (pos !== undefined) job.position = pos
  job.device = s(o.device) ?? job.device
  job.workerId = s(o.worker_id) ?? job.workerId
  if (typeof o.error === 'string') job.error = o.error
  if (Array.isArray(o.outputs)) job.outputs = o.outputs.filter((x): x is string => typeof x === 'string')
  const prog = (o.progress && typeof o.progress === 'object' ? o.progress : o) as Record<string, unknown>
  const nodeId = s(prog.node_id)
  const step = n(prog.step)
  const total = n(prog.total)
  if (nodeId && step !== undefined && total !== undefined) {
    job.nodes[nodeId] = { step, total, done: step >= total && total > 0 }
    job.currentNode = nodeId
    if (job.status === 'queued') job.status = 'running'
  }
  job.updatedAt = Date.now()
  return job
}

function withJob(state: LiveState, id: string, f: (j: JobState) => JobState): LiveState {
  const prev = state.jobs[id] ?? { id, status: 'queued' as JobStatus, nodes: {}, outputs: [], updatedAt: Date.now() }
  const next = f({ ...prev, nodes: { ...prev.nodes } })
  next.updatedAt = Date.now()
  const order = state.order.includes(id) ? state.order : [id, ...state.order].slice(0, 50)
  return { ...state, jobs: { ...state.jobs, [id]: next }, order }
}

function notice(state: LiveState, level: 'error' | 'info', text: string): LiveState {
  return { ...state, notices: [...state.notices.slice(-4), { id: noticeSeq++, level, text }] }
}

export function liveReducer(state: LiveState, action: LiveAction): LiveState {
  switch (action.kind) {
    case 'dismiss':
      return { ...state, notices: state.notices.filter((x) => x.id !== action.id) }
    case 'notice':
      return notice(state, action.level, action.text)
    case 'runtime': {
      // runtime.started can overtake the POST /runtime answer (status `starting`): keep `running`.
      const prev = state.runtime
      const next = action.runtime
      if (next && prev && prev.leaseId === next.leaseId && next.running && prev.running && prev.status === 'running' && next.status === 'starting') {
        return { ...state, runtime: { ...next, status: 'running', gpuClass: next.gpuClass ?? prev.gpuClass } }
      }
      // runtime.queued can overtake it too: keep the place in line.
      if (next && prev && prev.leaseId === next.leaseId && next.status === 'starting' && prev.queuePosition !== undefined) {
        return { ...state, runtime: { ...next, queuePosition: prev.queuePosition } }
      }
      return { ...state, runtime: next }
    }
    case 'submitted': {
      const job = jobFromSnapshot(action.job)
      if (!job) return state
      const prev = state.jobs[job.id]
      // Events may have overtaken the HTTP answer: keep what they said.
      if (prev) return state
      if (job.status === 'queued' && (action.job as Record<string, unknown>).status === undefined) job.status = 'submitted'
      return withJob(state, job.id, () => job)
    }
    case 'history': {
      const jobs: Record<string, JobState> = { ...state.jobs }
      const order = [...state.order]
      for (const raw of action.jobs) {
        const record = jobFromSnapshot(raw)
        if (!record) continue
        const known = jobs[record.id]
        const finished = ['succeeded', 'failed', 'cancelled'].includes(record.status)
        if (!known) {
          jobs[record.id] = record
          order.push(record.id)
        } else if (finished && known.status !== record.status) {
          jobs[record.id] = { ...known, status: record.status, error: record.error ?? known.error, outputs: record.outputs.length ? record.outputs : known.outputs, position: undefined }
        }
      }
      return { ...state, jobs, order: order.slice(0, 50) }
    }
    case 'event':
      return applyEvent(state, action.event)
  }
}

function applyEvent(state: LiveState, e: StudioEvent): LiveState {
  const jobId = s(e.job_id)
  switch (e.type) {
    case 'session.hello': {
      const jobs: Record<string, JobState> = { ...state.jobs }
      const order = [...state.order]
      if (Array.isArray(e.jobs)) {
        for (const raw of e.jobs) {
          const j = jobFromSnapshot(raw, undefined)
          if (!j) continue
          jobs[j.id] = jobFromSnapshot(raw, state.jobs[j.id]) ?? j
          if (!order.includes(j.id)) order.unshift(j.id)
        }
      }
      // Jobs we thought were unfinished but the server no longer lists finished while we were away.
      const listed = new Set(Array.isArray(e.jobs) ? e.jobs.map((j) => s((j as Record<string, unknown>)?.id) ?? s((j as Record<string, unknown>)?.job_id)) : [])
      for (const id of order) {
        const j = jobs[id]
        if (j && (j.status === 'queued' || j.status === 'running') && !listed.has(id) && state.hello) {
          jobs[id] = { ...j, status: 'ended', position: undefined, updatedAt: Date.now() }
        }
      }
      const role = e.role === 'owner' || e.role === 'editor' || e.role === 'viewer' ? e.role : state.role
      return { ...state, hello: true, role, jobs, order, kicked: null }
    }
    case 'role.changed': {
      const role = e.role === 'owner' || e.role === 'editor' || e.role === 'viewer' ? e.role : state.role
      const next = { ...state, role }
      return role === 'viewer' ? notice(next, 'info', 'Your role is now viewer: the studio is read-only for you.') : next
    }
    case 'session.kicked':
      return { ...state, kicked: s(e.reason) ?? 'access revoked' }
    case 'job.queued':
      if (!jobId) return state
      return withJob(state, jobId, (j) => ({ ...j, status: j.status === 'running' ? j.status : 'queued', position: n(e.position) }))
    case 'job.started':
      if (!jobId) return state
      return withJob(state, jobId, (j) => ({ ...j, status: 'running', position: undefined, device: s(e.device), workerId: s(e.worker_id) }))
    case 'job.progress': {
      const nodeId = s(e.node_id)
      if (!jobId || !nodeId) return state
      const step = n(e.step) ?? 0
      const total = n(e.total) ?? 0
      return withJob(state, jobId, (j) => {
        j.nodes[nodeId] = { step, total, done: total > 0 && step >= total }
        return { ...j, status: j.status === 'queued' || j.status === 'submitted' ? 'running' : j.status, position: undefined, currentNode: nodeId }
      })
    }
    case 'job.node_done': {
      const nodeId = s(e.node_id)
      if (!jobId || !nodeId) return state
      const outs = Array.isArray(e.outputs) ? e.outputs.filter((x): x is string => typeof x === 'string') : []
      return withJob(state, jobId, (j) => {
        const prev = j.nodes[nodeId]
        j.nodes[nodeId] = { step: prev?.total ?? prev?.step ?? 1, total: prev?.total ?? 1, done: true }
        return { ...j, outputs: [...j.outputs, ...outs.filter((o) => !j.outputs.includes(o))] }
      })
    }
    case 'job.succeeded': {
      if (!jobId) return state
      const outs = Array.isArray(e.outputs) ? e.outputs.filter((x): x is string => typeof x === 'string') : []
      return withJob(state, jobId, (j) => {
        for (const k of Object.keys(j.nodes)) j.nodes[k] = { ...j.nodes[k], done: true, step: j.nodes[k].total || j.nodes[k].step }
        return { ...j, status: 'succeeded', position: undefined, outputs: [...j.outputs, ...outs.filter((o) => !j.outputs.includes(o))] }
      })
    }
    case 'job.failed': {
      if (!jobId) return state
      const error = s(e.error) ?? 'the job failed'
      const next = withJob(state, jobId, (j) => ({ ...j, status: 'failed', position: undefined, error }))
      return notice(next, 'error', `Job ${jobId.slice(0, 8)} failed: ${error}`)
    }
    case 'job.cancelled':
      if (!jobId) return state
      return withJob(state, jobId, (j) => ({ ...j, status: 'cancelled', position: undefined, reason: s(e.reason) }))
    case 'job.requeued':
      // Its worker was lost before it ran anything: back in the queue, to run elsewhere.
      if (!jobId) return state
      return withJob(state, jobId, (j) => ({ ...j, status: 'queued', position: undefined, device: undefined, workerId: undefined }))
    case 'runtime.queued': {
      const leaseId = s(e.lease_id) ?? ''
      const prev = state.runtime && state.runtime.leaseId === leaseId ? state.runtime : null
      if (prev && prev.status === 'running') return state
      return { ...state, runtime: { ...(prev ?? { usedMs: 0, charged: 0 }), leaseId, gpuClass: s(e.gpu_class), running: true, status: 'starting', queuePosition: n(e.position) } }
    }
    case 'runtime.started': {
      const leaseId = s(e.lease_id) ?? ''
      const prev = state.runtime && state.runtime.leaseId === leaseId ? state.runtime : null
      return { ...state, runtime: { ...(prev ?? { usedMs: 0, charged: 0 }), leaseId, gpuClass: s(e.gpu_class), running: true, status: 'running', reason: undefined, refunded: undefined, queuePosition: undefined } }
    }
    case 'runtime.meter': {
      const leaseId = s(e.lease_id) ?? state.runtime?.leaseId ?? ''
      const prev = state.runtime && state.runtime.leaseId === leaseId ? state.runtime : null
      // Only the payer's own connections get the balance.
      const balance = n(e.balance)
      return {
        ...state,
        balance: balance ?? state.balance,
        // The meter only ticks for a running lease: a `starting` one has started.
        runtime: {
          ...(prev ?? { leaseId, running: true }),
          ...(prev?.status === 'starting' ? { status: 'running' } : {}),
          leaseId,
          gpuClass: s(e.gpu_class) ?? prev?.gpuClass,
          usedMs: n(e.used_ms) ?? prev?.usedMs ?? 0,
          charged: n(e.charged) ?? prev?.charged ?? 0,
          remainingMs: n(e.remaining_ms) ?? prev?.remainingMs,
          payerId: s(e.payer_id) ?? prev?.payerId,
          payerName: s(e.payer_name) ?? prev?.payerName,
          balance: balance ?? prev?.balance,
          running: prev?.running ?? true,
        },
      }
    }
    case 'runtime.low_balance': {
      const leaseId = s(e.lease_id) ?? ''
      const prev = state.runtime && state.runtime.leaseId === leaseId ? state.runtime : null
      if (!prev) return state
      const left = n(e.remaining_ms) ?? 0
      return notice({ ...state, runtime: { ...prev, lowBalance: true, remainingMs: left } }, 'info', LOW_BALANCE_NOTICE)
    }
    case 'runtime.extended': {
      const leaseId = s(e.lease_id) ?? ''
      const prev = state.runtime && state.runtime.leaseId === leaseId ? state.runtime : null
      if (!prev) return state
      const prepaid = n(e.prepaid_ms)
      return {
        ...state,
        // The warning is answered: it goes.
        notices: state.notices.filter((x) => x.text !== LOW_BALANCE_NOTICE),
        runtime: { ...prev, lowBalance: false, remainingMs: n(e.remaining_ms) ?? prev.remainingMs, prepaidMinutes: prepaid !== undefined ? prepaid / 60000 : prev.prepaidMinutes },
      }
    }
    case 'runtime.stopped': {
      const leaseId = s(e.lease_id) ?? state.runtime?.leaseId ?? ''
      const prev = state.runtime && state.runtime.leaseId === leaseId ? state.runtime : null
      const reason = s(e.reason) ?? 'stopped'
      const next: LiveState = {
        ...state,
        runtime: { ...(prev ?? { leaseId }), leaseId, running: false, status: 'stopped', reason, lowBalance: false, usedMs: n(e.used_ms) ?? prev?.usedMs ?? 0, charged: n(e.charged) ?? prev?.charged ?? 0, refunded: n(e.refunded), balance: prev?.balance },
      }
      if (reason === 'prepaid_time_used') return notice(next, 'error', 'Prepaid time used up: the Pro runtime stopped and the running job was interrupted.')
      if (/credit/i.test(reason)) return notice(next, 'error', 'Pro runtime stopped: out of credits. The running job was interrupted.')
      return next
    }
    default:
      return state
  }
}

export const isActive = (j: JobState) => j.status === 'submitted' || j.status === 'queued' || j.status === 'running'

/** Per node: the progress of the newest job that touches it. */
export function nodeProgress(state: LiveState): Record<string, NodeProgress & { jobId: string; status: JobStatus }> {
  const out: Record<string, NodeProgress & { jobId: string; status: JobStatus }> = {}
  for (const id of [...state.order].reverse()) {
    const j = state.jobs[id]
    if (!j) continue
    for (const [nodeId, p] of Object.entries(j.nodes)) out[nodeId] = { ...p, jobId: id, status: j.status }
  }
  return out
}
