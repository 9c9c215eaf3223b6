// The dashboard's credits: the balance (live after a purchase), buying a pack through Stripe
// Checkout, the statement (one line per runtime lease) with its CSV, and runtime use per
// session and day. Amounts are credits, with the ledger's exact rounding.
import { useCallback, useEffect, useRef, useState } from 'react'
import { api, errorMessage, type Balance, type CreditPack, type RuntimeUsage, type StatementLine } from '../lib/api'
import { classLabel, credits, dateTime, money, signedCredits, spokenDuration } from '../lib/format'

/** How long the dashboard watches for a purchase to be credited after Checkout. */
const PURCHASE_WATCH_MS = 120_000
/** The balance before leaving for Checkout (the webhook may land before the user is back). */
const BEFORE_CHECKOUT_KEY = 'atelier_balance_before_checkout'

function balanceBeforeCheckout(): number | null {
  try {
    const v = sessionStorage.getItem(BEFORE_CHECKOUT_KEY)
    return v === null ? null : Number(v)
  } catch {
    return null
  }
}

function rememberBalance(balance: number | null): void {
  try {
    if (balance === null) sessionStorage.removeItem(BEFORE_CHECKOUT_KEY)
    else sessionStorage.setItem(BEFORE_CHECKOUT_KEY, String(balance))
  } catch {
    /* storage disabled: the watch starts from the balance on return */
  }
}

function checkoutOutcome(): 'success' | 'cancelled' | null {
  const q = window.location.hash.split('?')[1] ?? ''
  const v = new URLSearchParams(q).get('checkout')
  return v === 'success' || v === 'cancelled' ? v : null
}

/** `onCredited`: a purchase was credited (the history and usage should reload). */
export function CreditsCard({ onCredited }: { onCredited?: () => void }) {
  const [balance, setBalance] = useState<Balance | null>(null)
  const [error, setError] = useState<string | null>(null)
  const [packs, setPacks] = useState<{ enabled: boolean; packs: CreditPack[] } | null>(null)
  const [buyMsg, setBuyMsg] = useState<string | null>(null)
  const [busy, setBusy] = useState<string | null>(null)
  const [outcome, setOutcome] = useState(checkoutOutcome)
  const [credited, setCredited] = useState<number | null>(null)
  const startBalance = useRef<number | null>(null)

  // Checkout sends the user back to this page (often only the hash changes).
  useEffect(() => {
    const onHash = () => {
      setOutcome(checkoutOutcome())
      setBusy(null)
    }
    window.addEventListener('hashchange', onHash)
    return () => window.removeEventListener('hashchange', onHash)
  }, [])

  const load = useCallback(async () => {
    try {
      const b = await api<Balance>('GET', '/billing/balance')
      setBalance(b)
      setError(null)
      return b
    } catch (e) {
      setError(errorMessage(e))
      return null
    }
  }, [])

  useEffect(() => {
    void load()
    api<{ enabled: boolean; packs: CreditPack[] }>('GET', '/billing/packs').then(setPacks, () => setPacks({ enabled: false, packs: [] }))
  }, [load])

  // Back from Checkout: the webhook credits the purchase within moments; watch for it.
  useEffect(() => {
    if (outcome !== 'success') return
    let stop = false
    const until = Date.now() + PURCHASE_WATCH_MS
    ;(async () => {
      const first = await load()
      startBalance.current = balanceBeforeCheckout() ?? first?.balance ?? null
      let b = first
      while (!stop && Date.now() < until) {
        if (b && startBalance.current !== null && b.balance > startBalance.current) {
          setCredited(b.balance - startBalance.current)
          rememberBalance(null)
          onCredited?.()
          return
        }
        await new Promise((r) => setTimeout(r, 1000))
        b = await load()
      }
    })()
    return () => {
      stop = true
    }
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [outcome, load])

  const buy = async (pack: string) => {
    setBuyMsg(null)
    setBusy(pack)
    try {
      const res = await api<{ url: string }>('POST', '/billing/checkout', { pack })
      rememberBalance(balance?.balance ?? null)
      window.location.href = res.url
    } catch (e) {
      setBuyMsg(errorMessage(e))
      setBusy(null)
    }
  }

  return (
    <section className="card" aria-labelledby="credits-h">
      <h2 id="credits-h">Credits</h2>
      {balance === null ? (
        <p className="muted">{error ?? 'Loading…'}</p>
      ) : (
        <>
          <p className="balance" data-testid="balance">
            <strong>{credits(balance.available)}</strong> credits available
          </p>
          {balance.held > 0 && <p className="muted small-text">{credits(balance.held)} credits are held by running runtimes (unused time comes back).</p>}
        </>
      )}
      {outcome === 'success' && (
        <p className="alert alert-info" role="status" data-testid="checkout-status">
          {credited !== null ? `Payment received: ${signedCredits(credited)} credits.` : 'Thank you! Waiting for the payment to be confirmed…'}
        </p>
      )}
      {outcome === 'cancelled' && (
        <p className="muted" role="status">
          The purchase was cancelled; nothing was charged.
        </p>
      )}
      <h3>Buy credits</h3>
      {packs === null ? (
        <p className="muted">Loading…</p>
      ) : !packs.enabled || packs.packs.length === 0 ? (
        <>
          <button type="button" onClick={() => setBuyMsg('Buying credits is not available here: the operator of this server has not set up payments.')}>
            Buy credits
          </button>
        </>
      ) : (
        <ul className="packs">
          {packs.packs.map((p) => (
            <li key={p.name}>
              <button type="button" onClick={() => void buy(p.name)} disabled={busy !== null} aria-label={`Buy ${credits(p.credits)} credits for ${money(p.price, p.currency)}`}>
                {credits(p.credits)} credits — {money(p.price, p.currency)}
              </button>
            </li>
          ))}
        </ul>
      )}
      {buyMsg && (
        <p className="muted" role="status">
          {buyMsg}
        </p>
      )}
    </section>
  )
}

export function LedgerCard({ refresh = 0 }: { refresh?: number }) {
  const [lines, setLines] = useState<StatementLine[] | null>(null)
  const [error, setError] = useState<string | null>(null)
  useEffect(() => {
    api<{ lines: StatementLine[] }>('GET', '/billing/statement?entries=2000').then(
      (s) => setLines(s.lines),
      (e) => setError(errorMessage(e)),
    )
  }, [refresh])
  return (
    <section className="card" aria-labelledby="ledger-h">
      <div className="row">
        <h2 id="ledger-h" className="grow">
          Credits history
        </h2>
        <a className="button small" href="/api/v1/billing/ledger.csv" download>
          Download CSV
        </a>
      </div>
      {error ? (
        <p className="error-text">{error}</p>
      ) : lines === null ? (
        <p className="muted">Loading…</p>
      ) : lines.length === 0 ? (
        <p className="muted">Nothing yet.</p>
      ) : (
        <div className="table-wrap">
          <table className="ledger-table" aria-label="Credits history">
            <thead>
              <tr>
                <th scope="col">Date</th>
                <th scope="col">What</th>
                <th scope="col">Session</th>
                <th scope="col" className="num">
                  Credits
                </th>
                <th scope="col" className="num">
                  Balance
                </th>
              </tr>
            </thead>
            <tbody>
              {lines.slice(0, 25).map((l, i) => (
                <tr key={l.lease_id ?? `${l.kind}-${l.at}-${i}`} data-kind={l.kind}>
                  <td>{dateTime(l.at)}</td>
                  <td>
                    {l.kind === 'runtime' ? `Pro runtime (${classLabel(l.gpu_class)}), ${spokenDuration(l.used_ms)}${l.open ? ', running' : ''}` : l.description}
                    {l.note && <div className="muted small-text">{l.note}</div>}
                  </td>
                  <td>{l.session_id ? <a href={`#/s/${l.session_id}`}>{l.session_title ?? 'deleted session'}</a> : ''}</td>
                  <td className="num mono">{signedCredits(l.amount)}</td>
                  <td className="num mono">{credits(l.balance_after)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  )
}

export function UsageCard() {
  const [rows, setRows] = useState<RuntimeUsage[] | null>(null)
  useEffect(() => {
    api<{ usage: RuntimeUsage[] }>('GET', '/billing/usage?days=30').then(
      (u) => setRows(u.usage),
      () => setRows([]),
    )
  }, [])
  return (
    <section className="card" aria-labelledby="runtime-usage-h">
      <h2 id="runtime-usage-h">Runtime use (30 days)</h2>
      {rows === null ? (
        <p className="muted">Loading…</p>
      ) : rows.length === 0 ? (
        <p className="muted">No runtime used yet.</p>
      ) : (
        <div className="table-wrap">
          <table>
            <thead>
              <tr>
                <th scope="col">Day (UTC)</th>
                <th scope="col">Session</th>
                <th scope="col">Class</th>
                <th scope="col" className="num">
                  Time
                </th>
                <th scope="col" className="num">
                  Credits
                </th>
              </tr>
            </thead>
            <tbody>
              {rows.map((r, i) => (
                <tr key={i}>
                  <td>{r.day}</td>
                  <td>{r.session_title ?? 'deleted session'}</td>
                  <td>{classLabel(r.gpu_class)}</td>
                  <td className="num">{spokenDuration(r.used_ms)}</td>
                  <td className="num mono">{credits(r.charged)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  )
}
