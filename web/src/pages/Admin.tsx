// The operator's page (admins only; the API refuses everyone else): accounts with their
// credits (grant, deduct, suspend, role), workers (drain, tokens), running runtimes (stop),
// unfinished jobs (cancel) and the audit log of every admin action.
import { useCallback, useEffect, useState } from 'react'
import { api, errorMessage, type Account } from '../lib/api'
import { classLabel, credits, dateTime, duration, shortId, signedCredits, toMillicredits } from '../lib/format'

interface AccountRow {
  id: string
  email: string
  name: string
  role: 'user' | 'admin'
  suspended_at?: number
  suspended_reason?: string
  balance: number
  held: number
  available: number
  sessions: number
}

interface LedgerEntry {
  id: number
  kind: string
  amount: number
  balance_after: number
  note?: string
  created_at: number
}

interface WorkerRow {
  worker_id: string
  name: string
  device: string
  gpu_class: string
  in_process: boolean
  token_id?: string
  slots: number
  current_job?: string
  leases: number
  draining: boolean
}

interface TokenRow {
  id: string
  name: string
  created_at: number
  revoked_at?: number
}

interface LeaseRow {
  lease_id: string
  session_id: string
  account_id: string
  gpu_class: string
  status: string
  used_ms: number
  charged: number
  remaining_ms: number
}

interface JobRow {
  job_id: string
  session_id: string
  account_id: string
  status: string
  position?: number
  step: number
  total: number
}

interface AuditRow {
  id: number
  actor: string
  action: string
  target?: string
  reason?: string
  at: number
}

function useReload(): [number, () => void] {
  const [n, setN] = useState(0)
  return [n, useCallback(() => setN((x) => x + 1), [])]
}

function AccountDetail({ row, onChanged }: { row: AccountRow; onChanged: () => void }) {
  const [ledger, setLedger] = useState<LedgerEntry[]>([])
  const [amount, setAmount] = useState('')
  const [reason, setReason] = useState('')
  const [suspendReason, setSuspendReason] = useState('')
  const [msg, setMsg] = useState<string | null>(null)
  const [error, setError] = useState<string | null>(null)
  const [reload, bump] = useReload()

  useEffect(() => {
    api<{ ledger: LedgerEntry[] }>('GET', `/admin/accounts/${row.id}`).then(
      (d) => setLedger(d.ledger),
      (e) => setError(errorMessage(e)),
    )
  }, [row.id, reload])

  const act = async (what: () => Promise<unknown>, done: string) => {
    setMsg(null)
    setError(null)
    try {
      await what()
      setMsg(done)
      bump()
      onChanged()
    } catch (e) {
      setError(errorMessage(e))
    }
  }
  const grant = () => {
    const milli = toMillicredits(amount)
    if (milli === null || milli === 0) return setError('Enter an amount of credits (negative to deduct).')
    void act(
      () => api('POST', `/admin/accounts/${row.id}/credits`, { amount: milli, reason, idempotency_key: `studio-${crypto.randomUUID()}` }),
      `${signedCredits(milli)} credits ${milli > 0 ? 'granted' : 'deducted'}.`,
    ).then(() => (setAmount(''), setReason('')))
  }
  return (
    <div className="offer" data-testid="admin-account">
      <h3>
        {row.name} · {row.email}
      </h3>
      <p>
        {credits(row.available)} credits available ({credits(row.held)} held) · {row.sessions} sessions · {row.role}
        {row.suspended_at ? ` · suspended ${dateTime(row.suspended_at)}: ${row.suspended_reason ?? ''}` : ''}
      </p>
      <form
        className="row wrap"
        onSubmit={(e) => {
          e.preventDefault()
          grant()
        }}
      >
        <label htmlFor="grant-amount">Credits</label>
        <input id="grant-amount" type="text" inputMode="decimal" placeholder="e.g. 10 or -2.5" value={amount} onChange={(e) => setAmount(e.target.value)} required />
        <label htmlFor="grant-reason">Reason</label>
        <input id="grant-reason" type="text" maxLength={500} value={reason} onChange={(e) => setReason(e.target.value)} required placeholder="shown in their history" />
        <button type="submit" className="primary">
          Grant or deduct
        </button>
      </form>
      {row.suspended_at ? (
        <button type="button" onClick={() => void act(() => api('POST', `/admin/accounts/${row.id}/unsuspend`, {}), 'Suspension lifted.')}>
          Lift suspension
        </button>
      ) : (
        <form
          className="row wrap"
          onSubmit={(e) => {
            e.preventDefault()
            void act(() => api('POST', `/admin/accounts/${row.id}/suspend`, { reason: suspendReason }), 'Suspended: their sockets are closed and their runtimes settled.')
          }}
        >
          <label htmlFor="suspend-reason">Suspend because</label>
          <input id="suspend-reason" type="text" maxLength={500} required value={suspendReason} onChange={(e) => setSuspendReason(e.target.value)} />
          <button type="submit" className="danger">
            Suspend
          </button>
        </form>
      )}
      <button type="button" className="small" onClick={() => void act(() => api('PUT', `/admin/accounts/${row.id}/role`, { role: row.role === 'admin' ? 'user' : 'admin' }), 'Role changed.')}>
        {row.role === 'admin' ? 'Make user' : 'Make admin'}
      </button>
      {msg && <p role="status">{msg}</p>}
      {error && (
        <p className="error-text" role="alert">
          {error}
        </p>
      )}
      {ledger.length > 0 && (
        <table aria-label={`Ledger of ${row.email}`}>
          <tbody>
            {ledger.slice(0, 10).map((e) => (
              <tr key={e.id}>
                <td>{dateTime(e.created_at)}</td>
                <td>
                  {e.kind}
                  {e.note ? `: ${e.note}` : ''}
                </td>
                <td className="num mono">{signedCredits(e.amount)}</td>
                <td className="num mono">{credits(e.balance_after)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  )
}

function Accounts() {
  const [search, setSearch] = useState('')
  const [rows, setRows] = useState<AccountRow[] | null>(null)
  const [open, setOpen] = useState<string | null>(null)
  const [error, setError] = useState<string | null>(null)
  const [reload, bump] = useReload()
  useEffect(() => {
    const t = setTimeout(() => {
      api<{ accounts: AccountRow[] }>('GET', `/admin/accounts?search=${encodeURIComponent(search)}`).then(
        (r) => (setRows(r.accounts), setError(null)),
        (e) => setError(errorMessage(e)),
      )
    }, 200)
    return () => clearTimeout(t)
  }, [search, reload])
  const current = rows?.find((r) => r.id === open)
  return (
    <section className="card" aria-labelledby="admin-accounts-h">
      <h2 id="admin-accounts-h">Accounts</h2>
      <div className="row filters">
        <label htmlFor="account-search">Search by email</label>
        <input id="account-search" type="search" value={search} onChange={(e) => setSearch(e.target.value)} />
      </div>
      {error && <p className="error-text">{error}</p>}
      {current && <AccountDetail row={current} onChanged={bump} />}
      {rows && (
        <div className="table-wrap">
          <table aria-label="Accounts">
            <thead>
              <tr>
                <th scope="col">Email</th>
                <th scope="col">Name</th>
                <th scope="col" className="num">
                  Available
                </th>
                <th scope="col" className="num">
                  Sessions
                </th>
                <th scope="col">Status</th>
                <th scope="col" />
              </tr>
            </thead>
            <tbody>
              {rows.map((r) => (
                <tr key={r.id} data-account-email={r.email}>
                  <td>{r.email}</td>
                  <td>{r.name}</td>
                  <td className="num mono">{credits(r.available)}</td>
                  <td className="num">{r.sessions}</td>
                  <td>{r.suspended_at ? 'suspended' : r.role}</td>
                  <td>
                    <button type="button" className="small" onClick={() => setOpen(open === r.id ? null : r.id)} aria-label={`Manage ${r.email}`}>
                      Manage
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  )
}

function Fleet() {
  const [data, setData] = useState<{ workers: WorkerRow[]; tokens: TokenRow[] } | null>(null)
  const [error, setError] = useState<string | null>(null)
  const [name, setName] = useState('')
  const [created, setCreated] = useState<string | null>(null)
  const [reload, bump] = useReload()
  useEffect(() => {
    api<{ workers: WorkerRow[]; tokens: TokenRow[] }>('GET', '/admin/workers').then(setData, (e) => setError(errorMessage(e)))
  }, [reload])
  const act = async (f: () => Promise<unknown>) => {
    setError(null)
    try {
      await f()
      bump()
    } catch (e) {
      setError(errorMessage(e))
    }
  }
  return (
    <section className="card" aria-labelledby="admin-workers-h">
      <h2 id="admin-workers-h">Workers</h2>
      {error && <p className="error-text">{error}</p>}
      {data && (
        <table aria-label="Workers">
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Class</th>
              <th scope="col">Device</th>
              <th scope="col">Running</th>
              <th scope="col">Runtimes</th>
              <th scope="col" />
            </tr>
          </thead>
          <tbody>
            {data.workers.map((w) => (
              <tr key={w.worker_id}>
                <td>
                  {w.name}
                  {w.in_process ? ' (in-process)' : ''}
                </td>
                <td>{classLabel(w.gpu_class)}</td>
                <td>{w.device}</td>
                <td>{w.current_job ? `job ${shortId(w.current_job)}` : `idle (${w.slots} slot)`}</td>
                <td>{w.leases}</td>
                <td>
                  <button type="button" className="small" onClick={() => void act(() => api('POST', `/admin/workers/${w.worker_id}/drain`, { draining: !w.draining }))}>
                    {w.draining ? 'Put back' : 'Drain'}
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <h3>Worker tokens</h3>
      <form
        className="row wrap"
        onSubmit={(e) => {
          e.preventDefault()
          void act(async () => {
            const t = await api<{ token: string }>('POST', '/admin/worker-tokens', { name })
            setCreated(t.token)
            setName('')
          })
        }}
      >
        <label htmlFor="token-name">New token named</label>
        <input id="token-name" type="text" required maxLength={100} value={name} onChange={(e) => setName(e.target.value)} />
        <button type="submit">Create</button>
      </form>
      {created && (
        <p className="alert alert-info">
          Shown once: <code>{created}</code>
        </p>
      )}
      {data && (
        <table aria-label="Worker tokens">
          <tbody>
            {data.tokens.map((t) => (
              <tr key={t.id}>
                <td>{t.name}</td>
                <td className="mono">{shortId(t.id)}</td>
                <td>{t.revoked_at ? `revoked ${dateTime(t.revoked_at)}` : `created ${dateTime(t.created_at)}`}</td>
                <td>
                  {!t.revoked_at && (
                    <button type="button" className="small danger" onClick={() => void act(() => api('POST', `/admin/worker-tokens/${t.id}/revoke`, {}))}>
                      Revoke
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  )
}

function Running() {
  const [leases, setLeases] = useState<LeaseRow[] | null>(null)
  const [jobs, setJobs] = useState<JobRow[] | null>(null)
  const [reason, setReason] = useState('')
  const [error, setError] = useState<string | null>(null)
  const [reload, bump] = useReload()
  useEffect(() => {
    api<LeaseRow[]>('GET', '/admin/leases').then(setLeases, (e) => setError(errorMessage(e)))
    api<JobRow[]>('GET', '/admin/jobs').then(setJobs, (e) => setError(errorMessage(e)))
  }, [reload])
  const act = async (f: () => Promise<unknown>) => {
    setError(null)
    try {
      await f()
      bump()
    } catch (e) {
      setError(errorMessage(e))
    }
  }
  return (
    <section className="card" aria-labelledby="admin-running-h">
      <div className="row">
        <h2 id="admin-running-h" className="grow">
          Running now
        </h2>
        <button type="button" className="small" onClick={bump}>
          Refresh
        </button>
      </div>
      <div className="row filters">
        <label htmlFor="stop-reason">Reason for stopping or cancelling</label>
        <input id="stop-reason" type="text" maxLength={500} value={reason} onChange={(e) => setReason(e.target.value)} />
      </div>
      {error && <p className="error-text">{error}</p>}
      <h3>Runtimes</h3>
      {leases && leases.length === 0 && <p className="muted">None.</p>}
      {leases && leases.length > 0 && (
        <table aria-label="Runtimes">
          <tbody>
            {leases.map((l) => (
              <tr key={l.lease_id}>
                <td>{classLabel(l.gpu_class)}</td>
                <td>{l.status}</td>
                <td>
                  {duration(l.used_ms)} used, {duration(l.remaining_ms)} left
                </td>
                <td className="num mono">{credits(l.charged)}</td>
                <td className="mono">session {shortId(l.session_id)}</td>
                <td>
                  <button type="button" className="small danger" disabled={!reason.trim()} onClick={() => void act(() => api('POST', `/admin/leases/${l.lease_id}/stop`, { reason }))}>
                    Stop
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <h3>Jobs</h3>
      {jobs && jobs.length === 0 && <p className="muted">None.</p>}
      {jobs && jobs.length > 0 && (
        <table aria-label="Jobs">
          <tbody>
            {jobs.map((j) => (
              <tr key={j.job_id}>
                <td className="mono">job {shortId(j.job_id)}</td>
                <td>{j.status === 'queued' ? `queued #${j.position ?? '?'}` : `running ${j.step}/${j.total}`}</td>
                <td className="mono">session {shortId(j.session_id)}</td>
                <td>
                  <button type="button" className="small" onClick={() => void act(() => api('POST', `/admin/jobs/${j.job_id}/cancel`, reason.trim() ? { reason } : {}))}>
                    Cancel
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  )
}

function Audit() {
  const [rows, setRows] = useState<AuditRow[] | null>(null)
  const [reload, bump] = useReload()
  useEffect(() => {
    api<{ entries: AuditRow[] }>('GET', '/admin/audit?limit=100').then(
      (p) => setRows(p.entries.filter((e) => !['list_accounts', 'view_account', 'list_workers', 'list_leases', 'list_jobs', 'view_audit'].includes(e.action))),
      () => setRows([]),
    )
  }, [reload])
  return (
    <section className="card" aria-labelledby="admin-audit-h">
      <div className="row">
        <h2 id="admin-audit-h" className="grow">
          Audit log
        </h2>
        <button type="button" className="small" onClick={bump}>
          Refresh
        </button>
      </div>
      <p className="muted small-text">Changes made by admins (the API also records every read).</p>
      {rows && (
        <table aria-label="Audit log">
          <tbody>
            {rows.map((r) => (
              <tr key={r.id}>
                <td>{dateTime(r.at)}</td>
                <td>{r.actor}</td>
                <td>{r.action.replace(/_/g, ' ')}</td>
                <td className="mono">{r.target ? shortId(r.target) : ''}</td>
                <td>{r.reason ?? ''}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  )
}

export function AdminPage({ account, onLogout }: { account: Account; onLogout: () => void }) {
  return (
    <div className="page admin">
      <header className="topbar">
        <a href="#/sessions" className="brand">
          ← Atelier
        </a>
        <span className="grow" />
        <span className="muted">Admin: {account.email}</span>
        <button type="button" className="subtle" onClick={onLogout}>
          Log out
        </button>
      </header>
      <div className="dash">
        <div className="dash-main">
          <Accounts />
          <Running />
        </div>
        <div className="dash-side">
          <Fleet />
          <Audit />
        </div>
      </div>
    </div>
  )
}
