// Pro runtime: lease a class (CPU or a GPU) for prepaid minutes; the meter's events show used
// time and charged credits as they change (the balance to the payer only), warn before the
// prepaid time runs out, and the payer can extend it without stopping the running job.
import { useEffect, useState } from 'react'
import { api, ApiError, errorMessage } from '../lib/api'
import { classLabel, credits, duration, spokenDuration, stopReasonText } from '../lib/format'
import type { LiveAction, RuntimeState } from './liveState'

export interface GpuClass {
  id: string
  label: string
  pricePerMinute?: number
}

const n = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined)
const s = (v: unknown): string | undefined => (typeof v === 'string' && v ? v : undefined)

export function normalizePrices(raw: unknown): GpuClass[] {
  let list: unknown = raw
  if (raw && typeof raw === 'object' && !Array.isArray(raw)) {
    const o = raw as Record<string, unknown>
    list = o.prices ?? o.gpu_classes ?? o.classes ?? o.items
    if (!list) list = Object.entries(o).map(([k, v]) => (typeof v === 'number' ? { gpu_class: k, price_per_minute: v } : { gpu_class: k, ...(v as object) }))
  }
  if (!Array.isArray(list)) return []
  return list
    .map((x): GpuClass | null => {
      if (typeof x === 'string') return { id: x, label: x }
      if (!x || typeof x !== 'object') return null
      const o = x as Record<string, unknown>
      const id = s(o.gpu_class) ?? s(o.class) ?? s(o.id) ?? s(o.name)
      if (!id) return null
      return {
        id,
        label: s(o.label) ?? s(o.display_name) ?? s(o.gpu) ?? id,
        pricePerMinute: n(o.price_per_minute) ?? n(o.millicredits_per_minute) ?? n(o.price_per_minute_millicredits) ?? n(o.price),
      }
    })
    .filter((x): x is GpuClass => x !== null)
}

export function normalizeLease(raw: unknown): RuntimeState | null {
  if (!raw || typeof raw !== 'object') return null
  const o = (('lease' in (raw as object) ? (raw as { lease: unknown }).lease : raw) ?? null) as Record<string, unknown> | null
  if (!o || typeof o !== 'object') return null
  const leaseId = s(o.lease_id) ?? s(o.id)
  if (!leaseId) return null
  const status = (s(o.status) ?? s(o.state) ?? '').toLowerCase()
  const running = o.active === false ? false : !['stopped', 'ended', 'settled', 'expired'].includes(status)
  return {
    leaseId,
    gpuClass: s(o.gpu_class),
    usedMs: n(o.used_ms) ?? 0,
    charged: n(o.charged) ?? 0,
    balance: n(o.balance),
    running,
    reason: s(o.stop_reason) ?? s(o.reason),
    refunded: n(o.refunded),
    prepaidMinutes: n(o.prepaid_minutes) ?? (n(o.prepaid_ms) !== undefined ? n(o.prepaid_ms)! / 60000 : undefined),
    remainingMs: n(o.remaining_ms),
    status: status || undefined,
    pricePerMinute: n(o.price_per_minute),
  }
}

function balanceOf(raw: unknown): number | undefined {
  if (typeof raw === 'number') return raw
  if (raw && typeof raw === 'object') {
    const o = raw as Record<string, unknown>
    return n(o.balance) ?? n(o.millicredits) ?? n(o.balance_millicredits) ?? n(o.available)
  }
  return undefined
}

export async function loadBalance(token?: string | null): Promise<{ available: boolean; balance?: number; error?: string }> {
  try {
    return { available: true, balance: balanceOf(await api('GET', '/billing/balance', undefined, { token })) }
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) return { available: false }
    return { available: true, error: errorMessage(e) }
  }
}

export interface RuntimePanelProps {
  sessionId: string
  token: string | null
  canManage: boolean
  isAccount: boolean
  accountId?: string
  runtime: RuntimeState | null
  liveBalance?: number
  dispatch: (a: LiveAction) => void
}

/** The classes offered with their prices (public). */
export async function loadPrices(token?: string | null): Promise<GpuClass[]> {
  try {
    return normalizePrices(await api('GET', '/billing/prices', undefined, { token }))
  } catch {
    return []
  }
}

/** Starts a Pro runtime; throws the API's error. */
export async function startRuntime(sessionId: string, token: string | null, gpuClass: string, minutes: number): Promise<RuntimeState | null> {
  const lease = await api<unknown>('POST', `/sessions/${sessionId}/runtime`, { gpu_class: gpuClass, prepaid_minutes: minutes }, { token })
  return normalizeLease(lease)
}

/** The message for a refused start, in the user's words. */
export function startError(e: unknown): string {
  if (e instanceof ApiError && e.insufficientCredits) return 'Not enough credits for this runtime. Buy credits on the dashboard, or choose fewer minutes.'
  if (e instanceof ApiError && e.status === 409) return 'This session already has a Pro runtime.'
  return errorMessage(e)
}

function ExtendForm({ sessionId, token, dispatch, runtime }: { sessionId: string; token: string | null; dispatch: (a: LiveAction) => void; runtime: RuntimeState }) {
  const [minutes, setMinutes] = useState('10')
  const [busy, setBusy] = useState(false)
  const [error, setError] = useState<string | null>(null)
  const [done, setDone] = useState<string | null>(null)
  const extend = async () => {
    const m = Number(minutes)
    if (!Number.isFinite(m) || m <= 0) return setError('Enter how many minutes to add.')
    setBusy(true)
    setError(null)
    setDone(null)
    try {
      const lease = normalizeLease(await api<unknown>('PATCH', `/sessions/${sessionId}/runtime`, { add_minutes: m }, { token }))
      if (lease) dispatch({ kind: 'runtime', runtime: { ...runtime, ...lease, running: true, status: 'running', lowBalance: false, balance: runtime.balance, payerId: runtime.payerId, payerName: runtime.payerName } })
      setDone(`Added ${m} min; the running job goes on.`)
    } catch (e) {
      if (e instanceof ApiError && e.insufficientCredits) setError(`Not enough credits to add ${m} min. Buy credits on the dashboard.`)
      else if (e instanceof ApiError && e.status === 403) setError('Only the person paying for this runtime can extend it.')
      else setError(errorMessage(e))
    } finally {
      setBusy(false)
    }
  }
  return (
    <form
      className="row wrap extend-form"
      onSubmit={(e) => {
        e.preventDefault()
        void extend()
      }}
    >
      <label htmlFor="extend-minutes">Add minutes</label>
      <input id="extend-minutes" type="number" min={1} step={1} inputMode="numeric" value={minutes} onChange={(e) => setMinutes(e.target.value)} />
      <button type="submit" disabled={busy}>
        Extend
      </button>
      {done && <span role="status">{done}</span>}
      {error && (
        <span className="error-text" role="alert">
          {error}
        </span>
      )}
    </form>
  )
}

export function RuntimePanel({ sessionId, token, canManage, isAccount, accountId, runtime, liveBalance, dispatch }: RuntimePanelProps) {
  const [available, setAvailable] = useState<boolean | null>(null)
  const [prices, setPrices] = useState<GpuClass[]>([])
  const [gpuClass, setGpuClass] = useState('')
  const [minutes, setMinutes] = useState('10')
  const [balance, setBalance] = useState<number | undefined>()
  const [busy, setBusy] = useState(false)
  const [error, setError] = useState<string | null>(null)
  const [result, setResult] = useState<string | null>(null)

  useEffect(() => {
    let live = true
    ;(async () => {
      try {
        const lease = await api<unknown>('GET', `/sessions/${sessionId}/runtime`, undefined, { token })
        if (!live) return
        setAvailable(true)
        dispatch({ kind: 'runtime', runtime: normalizeLease(lease) })
      } catch (e) {
        if (!live) return
        if (e instanceof ApiError && e.notAvailable) {
          setAvailable(false)
          return
        }
        // No lease (404) or not ours to see: the feature exists.
        setAvailable(e instanceof ApiError && e.status < 500 ? true : null)
        if (!(e instanceof ApiError && (e.status === 404 || e.status === 403))) setError(errorMessage(e))
      }
      if (isAccount) {
        const list = await loadPrices(token)
        if (!live) return
        setPrices(list)
        setGpuClass((g) => g || list[0]?.id || '')
        const b = await loadBalance(token)
        if (live) setBalance(b.balance)
      }
    })()
    return () => {
      live = false
    }
  }, [sessionId, token, isAccount, dispatch])

  const price = prices.find((p) => p.id === gpuClass)?.pricePerMinute
  const start = async () => {
    const m = Number(minutes)
    if (!gpuClass.trim()) return setError('Choose a runtime class.')
    if (!Number.isInteger(m) || m < 1) return setError('Prepaid minutes must be a whole number, at least 1.')
    setBusy(true)
    setError(null)
    setResult(null)
    try {
      const st = await startRuntime(sessionId, token, gpuClass.trim(), m)
      if (st) dispatch({ kind: 'runtime', runtime: { ...st, running: true } })
    } catch (e) {
      if (e instanceof ApiError && e.notAvailable) setAvailable(false)
      else setError(startError(e))
    } finally {
      setBusy(false)
    }
  }
  const stop = async () => {
    setBusy(true)
    setError(null)
    try {
      const r = (await api<Record<string, unknown>>('DELETE', `/sessions/${sessionId}/runtime`, undefined, { token })) ?? {}
      const used = n(r.used_ms)
      const charged = n(r.charged)
      const refunded = n(r.refunded)
      setResult(`Stopped after ${spokenDuration(used)}: ${credits(charged)} credits charged, ${credits(refunded)} refunded.`)
      if (runtime) dispatch({ kind: 'runtime', runtime: { ...runtime, running: false, status: 'stopped', reason: 'stopped_by_user', usedMs: used ?? runtime.usedMs, charged: charged ?? runtime.charged, refunded } })
      const b = await loadBalance(token)
      setBalance(b.balance)
    } catch (e) {
      setError(errorMessage(e))
    } finally {
      setBusy(false)
    }
  }

  // The balance is the payer's business: the meter sends it only to them.
  const payerIsMe = !!runtime?.payerId && runtime.payerId === accountId
  const shownBalance = liveBalance ?? runtime?.balance ?? balance
  const prepaidMs = runtime?.prepaidMinutes !== undefined ? runtime.prepaidMinutes * 60000 : undefined
  const leftMs = runtime?.remainingMs ?? (prepaidMs !== undefined ? Math.max(0, prepaidMs - (runtime?.usedMs ?? 0)) : undefined)
  return (
    <section className="panel" aria-labelledby="runtime-h">
      <h2 id="runtime-h">Pro runtime</h2>
      {available === false && <p className="muted" role="status">Pro runtime is not available on this server yet.</p>}
      {available !== false && (
        <>
          {runtime ? (
            <dl className="stats" data-runtime-running={runtime.running ? 'yes' : 'no'}>
              <div>
                <dt>Class</dt>
                <dd>{classLabel(runtime.gpuClass)}</dd>
              </div>
              <div>
                <dt>State</dt>
                <dd data-runtime-state={runtime.status ?? (runtime.running ? 'running' : 'stopped')}>
                  {runtime.running
                    ? runtime.status === 'starting'
                      ? runtime.queuePosition !== undefined
                        ? `In line for a machine: position ${runtime.queuePosition} (not billed while waiting; stop to leave the line)`
                        : 'Starting — waiting for a machine'
                      : 'Running'
                    : stopReasonText(runtime.reason)}
                </dd>
              </div>
              {runtime.pricePerMinute !== undefined && (
                <div>
                  <dt>Price</dt>
                  <dd>{credits(runtime.pricePerMinute)} credits/min</dd>
                </div>
              )}
              {prepaidMs !== undefined && (
                <div>
                  <dt>Prepaid</dt>
                  <dd>{spokenDuration(prepaidMs)}</dd>
                </div>
              )}
              <div>
                <dt>Used</dt>
                <dd data-runtime-used>{duration(runtime.usedMs)}</dd>
              </div>
              {runtime.running && leftMs !== undefined && (
                <div>
                  <dt>Left</dt>
                  <dd data-runtime-left>{duration(leftMs)}</dd>
                </div>
              )}
              <div>
                <dt>Charged</dt>
                <dd data-runtime-charged>{credits(runtime.charged)} credits</dd>
              </div>
              {runtime.refunded !== undefined && (
                <div>
                  <dt>Refunded</dt>
                  <dd>{credits(runtime.refunded)} credits</dd>
                </div>
              )}
              {runtime.payerName && !payerIsMe && (
                <div>
                  <dt>Paid by</dt>
                  <dd data-runtime-payer>{runtime.payerName}</dd>
                </div>
              )}
              {isAccount && (payerIsMe || !runtime.payerId) && shownBalance !== undefined && (
                <div>
                  <dt>Your balance</dt>
                  <dd data-runtime-balance>{credits(shownBalance)} credits</dd>
                </div>
              )}
            </dl>
          ) : (
            <p className="muted">No runtime is running for this session.{isAccount && shownBalance !== undefined ? ` Your balance: ${credits(shownBalance)} credits.` : ''}</p>
          )}
          {runtime?.running && runtime.lowBalance && (
            <p className="alert alert-warn" role="alert" data-testid="low-balance">
              Prepaid time is almost used up{leftMs !== undefined ? ` (${spokenDuration(leftMs)} left)` : ''}. {canManage ? 'Extend it to keep the job running.' : 'The person paying can extend it.'}
            </p>
          )}
          {canManage && runtime?.running && <ExtendForm sessionId={sessionId} token={token} dispatch={dispatch} runtime={runtime} />}
          {canManage && (!runtime || !runtime.running) && available && (
            <form
              className="runtime-form"
              onSubmit={(e) => {
                e.preventDefault()
                void start()
              }}
            >
              <div className="field">
                <label htmlFor="gpu-class">Runtime class</label>
                {prices.length > 0 ? (
                  <select id="gpu-class" value={gpuClass} onChange={(e) => setGpuClass(e.target.value)}>
                    {prices.map((p) => (
                      <option key={p.id} value={p.id}>
                        {classLabel(p.id)}
                        {p.pricePerMinute !== undefined ? ` — ${credits(p.pricePerMinute)} credits/min` : ''}
                      </option>
                    ))}
                  </select>
                ) : (
                  <input id="gpu-class" type="text" value={gpuClass} onChange={(e) => setGpuClass(e.target.value)} placeholder="e.g. cpu" />
                )}
              </div>
              <div className="field">
                <label htmlFor="prepaid-minutes">Prepaid minutes</label>
                <input id="prepaid-minutes" type="number" min={1} step={1} inputMode="numeric" value={minutes} onChange={(e) => setMinutes(e.target.value)} />
              </div>
              {price !== undefined && Number(minutes) > 0 && (
                <p className="muted small-text" data-testid="runtime-cost">
                  Holds {credits(Math.ceil(price * Number(minutes)))} credits; unused time is refunded when it stops.
                </p>
              )}
              <button type="submit" className="primary" disabled={busy}>
                Start runtime
              </button>
            </form>
          )}
          {canManage && runtime?.running && (
            <button type="button" onClick={stop} disabled={busy}>
              Stop runtime
            </button>
          )}
        </>
      )}
      {result && <p role="status">{result}</p>}
      {error && (
        <p className="error-text" role="alert">
          {error}
        </p>
      )}
    </section>
  )
}
