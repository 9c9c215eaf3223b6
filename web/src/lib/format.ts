/** Millicredits as credits, e.g. 12345 → "12.345". */
export function credits(milli: number | null | undefined): string {
  if (milli === null || milli === undefined || !Number.isFinite(milli)) return '—'
  const sign = milli < 0 ? '-' : ''
  const abs = Math.abs(Math.trunc(milli))
  const whole = Math.floor(abs / 1000)
  const frac = String(abs % 1000).padStart(3, '0')
  return `${sign}${whole.toLocaleString('en-US')}.${frac}`
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
