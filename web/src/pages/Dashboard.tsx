// Your sessions (create, open, rename, delete), invitations addressed to your email (accept or
// decline) — both kept current by the account's live channel — credits (balance, buying packs, a statement
// with one line per runtime, usage per session and day), the API request log, and account
// settings (password, export, deletion).
import { useCallback, useEffect, useState } from 'react'
import { watchAccountEvents } from '../lib/accountEvents'
import { api, client, errorMessage, type Account, type InvitationToMe, type SessionView, type UsageEntry } from '../lib/api'
import { dateTime, shortId } from '../lib/format'
import { AccountSettings } from './AccountSettings'
import { CreditsCard, LedgerCard, UsageCard } from './Billing'

function SessionRow({ s, onChanged, onError }: { s: SessionView; onChanged: () => void; onError: (m: string) => void }) {
  const [renaming, setRenaming] = useState(false)
  const [title, setTitle] = useState(s.title)
  const [confirming, setConfirming] = useState(false)
  const canRename = s.role === 'owner' || s.role === 'editor'
  const rename = async () => {
    try {
      await api('PATCH', `/sessions/${s.id}`, { title })
      setRenaming(false)
      onChanged()
    } catch (e) {
      onError(errorMessage(e))
    }
  }
  const remove = async () => {
    try {
      await api('DELETE', `/sessions/${s.id}`)
      onChanged()
    } catch (e) {
      onError(errorMessage(e))
    }
  }
  return (
    <li className="session-row" data-session-id={s.id}>
      {renaming ? (
        <form
          className="row grow"
          onSubmit={(e) => {
            e.preventDefault()
            void rename()
          }}
        >
          <label htmlFor={`rename-${s.id}`} className="sr-only">
            New title for {s.title}
          </label>
          <input id={`rename-${s.id}`} type="text" value={title} maxLength={200} required autoFocus onChange={(e) => setTitle(e.target.value)} />
          <button type="submit" className="primary small">
            Save
          </button>
          <button type="button" className="small" onClick={() => (setRenaming(false), setTitle(s.title))}>
            Cancel
          </button>
        </form>
      ) : (
        <div className="grow">
          <a href={`#/s/${s.id}`} className="session-title">
            {s.title}
          </a>
          <div className="muted small-text">
            {s.role} · updated {dateTime(s.updated_at)}
          </div>
        </div>
      )}
      {!renaming && (
        <div className="row">
          <a className="button small" href={`#/s/${s.id}`} aria-label={`Open ${s.title}`}>
            Open
          </a>
          {canRename && (
            <button type="button" className="small" onClick={() => setRenaming(true)} aria-label={`Rename ${s.title}`}>
              Rename
            </button>
          )}
          {s.role === 'owner' &&
            (confirming ? (
              <>
                <button type="button" className="small danger" onClick={remove} aria-label={`Confirm deleting ${s.title}`}>
                  Delete for good
                </button>
                <button type="button" className="small" onClick={() => setConfirming(false)}>
                  Keep
                </button>
              </>
            ) : (
              <button type="button" className="small danger" onClick={() => setConfirming(true)} aria-label={`Delete ${s.title}`}>
                Delete
              </button>
            ))}
        </div>
      )}
    </li>
  )
}

/** Pending invitations addressed to your email: a session joins your list only when you accept. */
function InvitationsCard({ invitations, onAnswered, onError }: { invitations: InvitationToMe[]; onAnswered: () => void; onError: (m: string) => void }) {
  if (invitations.length === 0) return null
  const answer = async (id: string, accept: boolean) => {
    try {
      if (accept) await client.acceptMyInvitation(id)
      else await client.declineMyInvitation(id)
    } catch (e) {
      onError(errorMessage(e))
    }
    onAnswered()
  }
  return (
    <section className="card" aria-labelledby="invitations-h">
      <h2 id="invitations-h">Invitations</h2>
      <ul className="sessions" aria-label="Invitations">
        {invitations.map((i) => (
          <li key={i.id} className="session-row" data-my-invitation-id={i.id} data-invited-session-id={i.session_id}>
            <div className="grow">
              <span className="session-title">{i.session_title}</span>
              <div className="muted small-text">
                as {i.role}
                {i.invited_by ? ` · from ${i.invited_by}` : ''} · {dateTime(i.created_at)}
              </div>
            </div>
            <div className="row">
              <button type="button" className="primary small" onClick={() => void answer(i.id, true)} aria-label={`Accept the invitation to ${i.session_title}`}>
                Accept
              </button>
              <button type="button" className="small" onClick={() => void answer(i.id, false)} aria-label={`Decline the invitation to ${i.session_title}`}>
                Decline
              </button>
            </div>
          </li>
        ))}
      </ul>
    </section>
  )
}

export function Dashboard({ account, onLogout }: { account: Account; onLogout: () => void }) {
  const [sessions, setSessions] = useState<SessionView[] | null>(null)
  const [invitations, setInvitations] = useState<InvitationToMe[]>([])
  const [title, setTitle] = useState('')
  const [error, setError] = useState<string | null>(null)
  const [usage, setUsage] = useState<UsageEntry[] | null>(null)
  const [keyNames, setKeyNames] = useState<Map<string, string>>(new Map())
  // Bumped when a purchase is credited: the history reloads.
  const [creditsChanged, setCreditsChanged] = useState(0)

  const load = useCallback(async () => {
    try {
      const [list, mine] = await Promise.all([api<SessionView[]>('GET', '/sessions'), client.myInvitations()])
      setSessions(list)
      setInvitations(mine)
    } catch (e) {
      setError(errorMessage(e))
    }
  }, [])

  // Sessions shared with you (or taken away) and invitations addressed to you appear without a
  // reload: the account's live channel says when something changed, and the lists are read again
  // (also on every reconnection, its `ready` event, for whatever happened while it was down).
  useEffect(() => watchAccountEvents(() => void load()), [load])

  useEffect(() => {
    void load()
    api<UsageEntry[]>('GET', '/me/usage?limit=10').then(setUsage, () => setUsage([]))
    client.apiKeys().then(
      (keys) => setKeyNames(new Map(keys.map((k) => [k.id, k.name]))),
      () => setKeyNames(new Map()),
    )
  }, [load])

  const create = async () => {
    setError(null)
    try {
      const s = await api<SessionView>('POST', '/sessions', { title })
      setTitle('')
      await load()
      window.location.hash = `#/s/${s.id}`
    } catch (e) {
      setError(errorMessage(e))
    }
  }

  return (
    <div className="page">
      <header className="topbar">
        <span className="brand">
          <span className="logo" aria-hidden="true">◆</span> Atelier
        </span>
        <span className="grow" />
        {account.role === 'admin' && (
          <a href="#/admin" className="button subtle small">
            Admin
          </a>
        )}
        <span className="muted" data-testid="account-name">
          {account.name}
        </span>
        <button type="button" className="subtle" onClick={onLogout}>
          Log out
        </button>
      </header>
      <div className="dash">
        <div className="dash-main">
          <InvitationsCard invitations={invitations} onAnswered={load} onError={setError} />
          <section className="card" aria-labelledby="sessions-h">
            <h1 id="sessions-h">Your sessions</h1>
            <form
              className="row wrap"
              onSubmit={(e) => {
                e.preventDefault()
                void create()
              }}
            >
              <label htmlFor="new-title">New session title</label>
              <input id="new-title" type="text" required maxLength={200} value={title} onChange={(e) => setTitle(e.target.value)} placeholder="e.g. Terrain study" />
              <button type="submit" className="primary">
                Create session
              </button>
            </form>
            {error && (
              <p className="alert alert-error" role="alert">
                {error}
              </p>
            )}
            {sessions === null ? (
              <p className="muted">Loading…</p>
            ) : sessions.length === 0 ? (
              <p className="muted">No sessions yet. Create one above.</p>
            ) : (
              <ul className="sessions" aria-label="Sessions">
                {sessions.map((s) => (
                  <SessionRow key={s.id} s={s} onChanged={load} onError={setError} />
                ))}
              </ul>
            )}
          </section>
          <LedgerCard refresh={creditsChanged} />
          <UsageCard />
        </div>
        <div className="dash-side">
          <CreditsCard onCredited={() => setCreditsChanged((n) => n + 1)} />
          <AccountSettings account={account} onLogout={onLogout} />
          <section className="card" aria-labelledby="api-usage-h">
            <details>
              <summary>
                <h2 id="api-usage-h" className="inline-h">
                  API usage
                </h2>
              </summary>
              {usage === null ? (
                <p className="muted">Loading…</p>
              ) : usage.length === 0 ? (
                <p className="muted">Nothing recorded yet.</p>
              ) : (
                <div className="table-wrap">
                  <table className="usage">
                    <thead>
                      <tr>
                        <th scope="col">When</th>
                        <th scope="col">Request</th>
                        <th scope="col">Status</th>
                        <th scope="col">ms</th>
                        <th scope="col">By</th>
                      </tr>
                    </thead>
                    <tbody>
                      {usage.map((u, i) => (
                        <tr key={i}>
                          <td>{dateTime(u.at)}</td>
                          <td className="mono">
                            {u.method} {u.route.replace('/api/v1', '')}
                          </td>
                          <td>{u.status}</td>
                          <td>{u.duration_ms}</td>
                          <td>{u.api_key_id ? `key ${keyNames.get(u.api_key_id) ?? shortId(u.api_key_id)}` : 'login'}</td>
                        </tr>
                      ))}
                    </tbody>
                  </table>
                </div>
              )}
            </details>
          </section>
        </div>
      </div>
    </div>
  )
}
