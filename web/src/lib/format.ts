/**
 * Millicredits as credits, exactly as the ledger has them (1000 millicredits = 1 credit, no
 * rounding): 12345 → "12.345", 100 → "0.1", 6000 → "6". The one unit the studio shows.
 */
export function credits(milli: number | null | undefined): string {
  if (milli === null || milli === undefined || !Number.isFinite(milli)) return '—'
  const sign = milli < 0 ? '-' : ''
  const abs = Math.abs(Math.trunc(milli))
  const whole = Math.floor(abs / 1000).toLocaleString('en-US')
  const frac = String(abs % 1000).padStart(3, '0').replace(/0+$/, '')
  return frac ? `${sign}${whole}.${frac}` : `${sign}${whole}`
}

/** "1 credit", "0.5 credits", "12 credits". */
export function creditsPhrase(milli: number): string {
  return `${credits(milli)} ${milli === 1000 ? 'credit' : 'credits'}`
}

/** A signed amount of credits for ledgers: "+6", "-0.25". */
export function signedCredits(milli: number): string {
  return milli > 0 ? `+${credits(milli)}` : credits(milli)
}

/** Credits → millicredits (what the API takes), or null when it is not a number. */
export function toMillicredits(text: string): number | null {
  const v = Number(text.trim())
  if (!text.trim() || !Number.isFinite(v)) return null
  return Math.round(v * 1000)
}

/** "12 min 5 s", "45 s", "2 h 3 min": time as people say it. */
export function spokenDuration(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '—'
  const t = Math.max(0, Math.floor(ms / 1000))
  const h = Math.floor(t / 3600)
  const m = Math.floor((t % 3600) / 60)
  const s = t % 60
  if (h > 0) return `${h} h ${m} min`
  if (m > 0) return `${m} min ${s} s`
  return `${s} s`
}

/** A runtime class as people know it: the `cpu` class is a CPU, the others GPUs. */
export function classLabel(gpuClass: string | undefined): string {
  if (!gpuClass) return '—'
  if (gpuClass === 'cpu') return 'CPU'
  return `GPU (${gpuClass.toUpperCase()})`
}

/** A price in a currency's minor unit: 500 usd → "$5.00". */
export function money(minor: number, currency: string): string {
  try {
    return new Intl.NumberFormat('en-US', { style: 'currency', currency: currency.toUpperCase() }).format(minor / 100)
  } catch {
    return `${(minor / 100).toFixed(2)} ${currency.toUpperCase()}`
  }
}

/** Why a runtime stopped, in the user's words. */
export function stopReasonText(reason: string | undefined): string {
  switch (reason) {
    case undefined:
    case '':
      return 'Stopped'
    case 'stopped_by_user':
      return 'Stopped'
    case 'prepaid_time_used':
      return 'Prepaid time used up'
    case 'out_of_credits':
      return 'Out of credits'
    case 'idle':
      return 'Stopped after a while without jobs'
    case 'worker_lost':
      return 'The machine running it stopped answering'
    case 'no_worker':
      return 'No machine of this class was free; nothing was charged'
    case 'session_deleted':
      return 'The session was deleted'
    case 'payment_reversed':
      return 'A payment was reversed'
    case 'server_shutdown':
    case 'server_restarted':
      return 'The server restarted'
    case 'stopped_by_admin':
      return 'Stopped by the operator'
    case 'account_suspended':
      return 'The paying account was suspended'
    default:
      return `Stopped (${reason.replace(/_/g, ' ')})`
  }
}

/** Milliseconds as m:ss (or h:mm:ss). */
export function duration(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '—'
  const total = Math.max(0, Math.floor(ms / 1000))
  const h = Math.floor(total / 3600)
  const m = Math.floor((total % 3600) / 60)
  const s = total % 60
  const ss = String(s).padStart(2, '0')
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`
}

export function dateTime(ms: number | null | undefined): string {
  if (!ms) return '—'
  const d = new Date(ms)
  return d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' })
}

/** A stable colour for a participant. */
const PALETTE = ['#d9480f', '#1971c2', '#2f9e44', '#ae3ec9', '#e8590c', '#0c8599', '#c2255c', '#5f3dc4', '#66a80f', '#f08c00']
export function colorFor(key: string | number): string {
  const s = String(key)
  let h = 0
  for (let i = 0; i < s.length; i++) h = (h * 31 + s.charCodeAt(i)) >>> 0
  return PALETTE[h % PALETTE.length]
}

export function initials(name: string): string {
  const parts = name.trim().split(/\s+/).filter(Boolean)
  if (parts.length === 0) return '?'
  if (parts.length === 1) return parts[0].slice(0, 2).toUpperCase()
  return (parts[0][0] + parts[parts.length - 1][0]).toUpperCase()
}

export function shortId(id: string): string {
  return id.length > 8 ? id.slice(0, 8) : id
}
