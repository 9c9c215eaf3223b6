// Run without a Pro runtime: instead of failing, offer to start one — the class, the minutes
// and what they hold shown up front — and run as soon as it is up.
import { useEffect, useState } from 'react'
import { api, type Balance } from '../lib/api'
import { classLabel, credits, creditsPhrase } from '../lib/format'
import type { LiveAction, RuntimeState } from './liveState'
import { loadPrices, normalizeLease, startError, startRuntime, type GpuClass } from './RuntimePanel'

/** How long a started runtime may take to get its machine before the offer gives up. */
const START_TIMEOUT_MS = 60_000

export interface RuntimeOfferProps {
  sessionId: string
  token: string | null
  dispatch: (a: LiveAction) => void
  /** The runtime is running: run the job now. */
  onReady: () => void
  onCancel: () => void
}

async function waitRunning(sessionId: string, token: string | null): Promise<RuntimeState | null> {
  const deadline = Date.now() + START_TIMEOUT_MS
  while (Date.now() < deadline) {
    const lease = normalizeLease(await api<unknown>('GET', `/sessions/${sessionId}/runtime`, undefined, { token }))
    if (lease && !lease.running) return lease
    if (lease?.status === 'running') return lease
    await new Promise((r) => setTimeout(r, 300))
  }
  return null
}

export function RuntimeOffer({ sessionId, token, dispatch, onReady, onCancel }: RuntimeOfferProps) {
  const [prices, setPrices] = useState<GpuClass[] | null>(null)
  const [available, setAvailable] = useState<number | undefined>()
  const [gpuClass, setGpuClass] = useState('')
  const [minutes, setMinutes] = useState('10')
  const [phase, setPhase] = useState<'choose' | 'starting'>('choose')
  const [error, setError] = useState<string | null>(null)

  useEffect(() => {
    let live = true
    ;(async () => {
      const list = (await loadPrices(token)).sort((a, b) => (a.pricePerMinute ?? 0) - (b.pricePerMinute ?? 0))
      let avail: number | undefined
      try {
        avail = (await api<Balance>('GET', '/billing/balance', undefined, { token })).available
      } catch {
        avail = undefined
      }
      if (!live) return
      setPrices(list)
      setAvailable(avail)
      const cheapest = list[0]
      setGpuClass(cheapest?.id ?? '')
      // As many minutes as the credits allow, up to ten.
      if (cheapest?.pricePerMinute && avail !== undefined) {
        const affordable = Math.floor(avail / cheapest.pricePerMinute)
        if (affordable >= 1 && affordable < 10) setMinutes(String(affordable))
      }
    })()
    return () => {
      live = false
    }
  }, [token])

  const price = prices?.find((p) => p.id === gpuClass)?.pricePerMinute
  const m = Number(minutes)
  const cost = price !== undefined && Number.isFinite(m) && m > 0 ? Math.ceil(price * m) : undefined
  const short = cost !== undefined && available !== undefined && cost > available

  const accept = async () => {
    if (!gpuClass) return setError('Choose a runtime class.')
    if (!Number.isInteger(m) || m < 1) return setError('Minutes must be a whole number, at least 1.')
    setError(null)
    setPhase('starting')
    try {
      const lease = await startRuntime(sessionId, token, gpuClass, m)
      if (lease) dispatch({ kind: 'runtime', runtime: { ...lease, running: true } })
      const running = await waitRunning(sessionId, token)
      if (!running) throw new Error('The runtime did not get a machine within a minute. Try again later.')
      if (!running.running) throw new Error(`The runtime stopped before it could run the job.`)
      onReady()
    } catch (e) {
      setPhase('choose')
      setError(e instanceof Error && !('status' in e) ? e.message : startError(e))
    }
  }

  return (
    <div className="offer" role="dialog" aria-labelledby="offer-h" data-testid="runtime-offer">
      <h3 id="offer-h">{price !== undefined ? `Start a Pro runtime (${credits(price)} credits/min) to run` : 'Start a Pro runtime to run'}</h3>
      <p className="muted small-text">Jobs run on a Pro runtime leased to this session. Unused prepaid time is refunded when it stops.</p>
      {prices === null ? (
        <p className="muted">Loading prices…</p>
      ) : prices.length === 0 ? (
        <p className="error-text">This server offers no runtime class.</p>
      ) : (
        <form
          className="runtime-form"
          onSubmit={(e) => {
            e.preventDefault()
            void accept()
          }}
        >
          <div className="field">
            <label htmlFor="offer-class">Runtime class</label>
            <select id="offer-class" value={gpuClass} onChange={(e) => setGpuClass(e.target.value)} disabled={phase === 'starting'}>
              {prices.map((p) => (
                <option key={p.id} value={p.id}>
                  {classLabel(p.id)}
                  {p.pricePerMinute !== undefined ? ` — ${credits(p.pricePerMinute)} credits/min` : ''}
                </option>
              ))}
            </select>
          </div>
          <div className="field">
            <label htmlFor="offer-minutes">Minutes</label>
            <input id="offer-minutes" type="number" min={1} step={1} inputMode="numeric" value={minutes} onChange={(e) => setMinutes(e.target.value)} disabled={phase === 'starting'} />
          </div>
          {cost !== undefined && (
            <p data-testid="offer-cost">
              {m} min of {classLabel(gpuClass)} holds <strong>{creditsPhrase(cost)}</strong>
              {available !== undefined ? ` (you have ${credits(available)})` : ''}.
            </p>
          )}
          {short && (
            <p className="alert alert-warn">
              Not enough credits for {m} min. Choose fewer minutes, or <a href="#/sessions">buy credits on the dashboard</a>.
            </p>
          )}
          <div className="row wrap">
            <button type="submit" className="primary" disabled={phase === 'starting'}>
              {phase === 'starting' ? 'Starting the runtime…' : 'Start runtime and run'}
            </button>
            <button type="button" onClick={onCancel} disabled={phase === 'starting'}>
              Not now
            </button>
          </div>
        </form>
      )}
      {error && (
        <p className="error-text" role="alert">
          {error}
        </p>
      )}
    </div>
  )
}
