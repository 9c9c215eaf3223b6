// Pro runtime: lease a GPU class for prepaid minutes; the meter's events show used time,
// charged credits and the balance as they change.
import { useEffect, useState } from 'react'
import { api, ApiError, errorMessage } from '../lib/api'
import { credits, duration } from '../lib/format'
import type { LiveAction, RuntimeState } from './liveState'

interface GpuClass {
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
    prepaidMinutes: n(o.prepaid_minutes) ?? (n(o.prepaid_ms) !== undefined ? Math.round(n(o.prepaid_ms)! / 60000) : undefined),
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
  runtime: RuntimeState | null
  liveBalance?: number
  dispatch: (a: LiveAction) => void
}

export function RuntimePanel({ sessionId, token, canManage, isAccount, runtime, liveBalance, dispatch }: RuntimePanelProps) {
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
        try {
          const list = normalizePrices(await api('GET', '/billing/prices', undefined, { token }))
          if (!live) return
          setPrices(list)
          setGpuClass((g) => g || list[0]?.id || '')
        } catch {
          /* prices missing: the class can still be typed */
        }
        const b = await loadBalance(token)
        if (live) setBalance(b.balance)
      }
    })()
    return () => {
      live = false
    }
  }, [sessionId, token, isAccount, dispatch])

  const start = async () => {
    const m = Number(minutes)
    if (!gpuClass.trim()) return setError('Choose a GPU class.')
    if (!Number.isInteger(m) || m < 1) return setError('Prepaid minutes must be a whole number, at least 1.')
    setBusy(true)
    setError(null)
    setResult(null)
    try {
      const lease = await api<unknown>('POST', `/sessions/${sessionId}/runtime`, { gpu_class: gpuClass.trim(), prepaid_minutes: m }, { token })
      const st = normalizeLease(lease)
      if (st) dispatch({ kind: 'runtime', runtime: { ...st, running: true } })
    } catch (e) {
      if (e instanceof ApiError && e.notAvailable) setAvailable(false)
      else if (e instanceof ApiError && e.insufficientCredits) setError(`Insufficient credits: ${e.message}`)
      else setError(errorMessage(e))
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
      setResult(`Stopped after ${duration(used)}: charged ${credits(charged)}, refunded ${credits(refunded)} credits.`)
      if (runtime) dispatch({ kind: 'runtime', runtime: { ...runtime, running: false, usedMs: used ?? runtime.usedMs, charged: charged ?? runtime.charged, refunded } })
      const b = await loadBalance(token)
      setBalance(b.balance)
    } catch (e) {
      setError(errorMessage(e))
    } finally {
      setBusy(false)
    }
  }

  const shownBalance = liveBalance ?? runtime?.balance ?? balance
  return (
    <section className="panel" aria-labelledby="runtime-h">
      <h2 id="runtime-h">Pro runtime</h2>
      {available === false && <p className="muted" role="status">Pro runtime is not available on this server yet.</p>}
      {available !== false && (
        <>
          {runtime ? (
            <dl className="stats" data-runtime-running={runtime.running ? 'yes' : 'no'}>
              <div>
                <dt>GPU</dt>
                <dd>{runtime.gpuClass ?? '—'}</dd>
              </div>
              <div>
                <dt>State</dt>
                <dd data-runtime-state={runtime.status ?? (runtime.running ? 'running' : 'stopped')}>
                  {runtime.running
                    ? runtime.status === 'starting'
                      ? 'starting — waiting for a worker'
                      : (runtime.status ?? 'running')
                    : `stopped${runtime.reason ? ` (${runtime.reason.replace(/_/g, ' ')})` : ''}`}
                </dd>
              </div>
              {runtime.pricePerMinute !== undefined && (
                <div>
                  <dt>Price</dt>
                  <dd>{credits(runtime.pricePerMinute)} / min</dd>
                </div>
              )}
              {runtime.prepaidMinutes !== undefined && (
                <div>
                  <dt>Prepaid</dt>
                  <dd>{runtime.prepaidMinutes} min</dd>
                </div>
              )}
              <div>
                <dt>Used</dt>
                <dd data-runtime-used>{duration(runtime.usedMs)}</dd>
              </div>
              <div>
                <dt>Charged</dt>
                <dd data-runtime-charged>{credits(runtime.charged)}</dd>
              </div>
              {runtime.refunded !== undefined && (
                <div>
                  <dt>Refunded</dt>
                  <dd>{credits(runtime.refunded)}</dd>
                </div>
              )}
              <div>
                <dt>Balance</dt>
                <dd data-runtime-balance>{credits(shownBalance)}</dd>
              </div>
            </dl>
          ) : (
            <p className="muted">No runtime is leased for this session.{isAccount && shownBalance !== undefined ? ` Balance: ${credits(shownBalance)} credits.` : ''}</p>
          )}
          {canManage && (!runtime || !runtime.running) && available && (
            <form
              className="runtime-form"
              onSubmit={(e) => {
                e.preventDefault()
                void start()
              }}
            >
              <div className="field">
                <label htmlFor="gpu-class">GPU class</label>
                {prices.length > 0 ? (
                  <select id="gpu-class" value={gpuClass} onChange={(e) => setGpuClass(e.target.value)}>
                    {prices.map((p) => (
                      <option key={p.id} value={p.id}>
                        {p.label}
                        {p.pricePerMinute !== undefined ? ` — ${credits(p.pricePerMinute)} credits/min` : ''}
                      </option>
                    ))}
                  </select>
                ) : (
                  <input id="gpu-class" type="text" value={gpuClass} onChange={(e) => setGpuClass(e.target.value)} placeholder="e.g. a10g" />
                )}
              </div>
              <div className="field">
                <label htmlFor="prepaid-minutes">Prepaid minutes</label>
                <input id="prepaid-minutes" type="number" min={1} step={1} inputMode="numeric" value={minutes} onChange={(e) => setMinutes(e.target.value)} />
              </div>
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
