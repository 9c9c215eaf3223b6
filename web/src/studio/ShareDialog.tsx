// Sharing: viewer links (create, copy, list, revoke) and members.
import { useCallback, useEffect, useRef, useState } from 'react'
import { api, errorMessage, type CreatedShareLink, type Member, type Role, type ShareLink } from '../lib/api'
import { dateTime, shortId } from '../lib/format'

const EXPIRY: { label: string; seconds: number | null }[] = [
  { label: 'Never (until revoked)', seconds: null },
  { label: '1 hour', seconds: 3600 },
  { label: '1 day', seconds: 86400 },
  { label: '7 days', seconds: 7 * 86400 },
  { label: '30 days', seconds: 30 * 86400 },
]

async function copyText(text: string, input: HTMLInputElement | null): Promise<boolean> {
  try {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text)
      return true
    }
  } catch {
    /* fall back */
  }
  if (input) {
    input.focus()
    input.select()
    try {
      return document.execCommand('copy')
    } catch {
      return false
    }
  }
  return false
}

/** The server's URL for the link; this page's own origin when the server has no usable public URL. */
function usableUrl(link: CreatedShareLink): string {
  try {
    const u = new URL(link.url)
    if (u.port === '0' || u.hostname === '0.0.0.0' || u.hostname === '[::]') {
      return `${window.location.origin}/${u.hash}`
    }
    return link.url
  } catch {
    return link.url
  }
}

function linkState(l: ShareLink): string {
  if (l.revoked_at) return 'revoked'
  if (l.expires_at && l.expires_at <= Date.now()) return 'expired'
  return 'active'
}

export function ShareDialog({ sessionId, role, onClose }: { sessionId: string; role: Role; onClose: () => void }) {
  const dialogRef = useRef<HTMLDialogElement>(null)
  const urlRef = useRef<HTMLInputElement>(null)
  const [links, setLinks] = useState<ShareLink[] | null>(null)
  const [members, setMembers] = useState<Member[] | null>(null)
  const [expiry, setExpiry] = useState(0)
  const [created, setCreated] = useState<CreatedShareLink | null>(null)
  const [copied, setCopied] = useState<string | null>(null)
  const [error, setError] = useState<string | null>(null)
  const [email, setEmail] = useState('')
  const [memberRole, setMemberRole] = useState<Role>('editor')
  const [busy, setBusy] = useState(false)

  const load = useCallback(async () => {
    try {
      setLinks(await api<ShareLink[]>('GET', `/sessions/${sessionId}/share-links`))
    } catch (e) {
      setError(errorMessage(e))
    }
    try {
      setMembers(await api<Member[]>('GET', `/sessions/${sessionId}/members`))
    } catch {
      setMembers(null)
    }
  }, [sessionId])

  useEffect(() => {
    const d = dialogRef.current
    if (d && !d.open) d.showModal()
    void load()
  }, [load])

  const create = async () => {
    setBusy(true)
    setError(null)
    setCopied(null)
    try {
      const seconds = EXPIRY[expiry].seconds
      const body: Record<string, unknown> = { role: 'viewer' }
      if (seconds) body.expires_in_s = seconds
      const link = await api<CreatedShareLink>('POST', `/sessions/${sessionId}/share-links`, body)
      setCreated({ ...link, url: usableUrl(link) })
      await load()
      setTimeout(() => urlRef.current?.select(), 0)
    } catch (e) {
      setError(errorMessage(e))
    } finally {
      setBusy(false)
    }
  }
  const revoke = async (id: string) => {
    setError(null)
    try {
      await api('DELETE', `/sessions/${sessionId}/share-links/${id}`)
      if (created?.id === id) setCreated(null)
      await load()
    } catch (e) {
      setError(errorMessage(e))
    }
  }
  const addMember = async () => {
    setError(null)
    try {
      await api('POST', `/sessions/${sessionId}/members`, { email: email.trim(), role: memberRole })
      setEmail('')
      await load()
    } catch (e) {
      setError(errorMessage(e))
    }
  }
  const removeMember = async (m: Member) => {
    setError(null)
    try {
      await api('DELETE', `/sessions/${sessionId}/members/${m.account_id}`)
      await load()
    } catch (e) {
      setError(errorMessage(e))
    }
  }

  return (
    <dialog ref={dialogRef} className="dialog" aria-labelledby="share-h" onClose={onClose} onCancel={onClose}>
      <div className="dialog-head">
        <h2 id="share-h">Share this session</h2>
        <button type="button" className="small" onClick={() => dialogRef.current?.close()} aria-label="Close sharing">
          Close
        </button>
      </div>
      {error && (
        <p className="alert alert-error" role="alert">
          {error}
        </p>
      )}
      <section aria-labelledby="links-h">
        <h3 id="links-h">Viewer links</h3>
        <p className="muted">Anyone with a viewer link can watch the graph, progress and outputs live, without an account. They cannot edit.</p>
        <form
          className="row wrap"
          onSubmit={(e) => {
            e.preventDefault()
            void create()
          }}
        >
          <label htmlFor="link-expiry">Expires</label>
          <select id="link-expiry" value={expiry} onChange={(e) => setExpiry(Number(e.target.value))}>
            {EXPIRY.map((x, i) => (
              <option key={x.label} value={i}>
                {x.label}
              </option>
            ))}
          </select>
          <button type="submit" className="primary" disabled={busy}>
            Create viewer link
          </button>
        </form>
        {created && (
          <div className="created-link">
            <label htmlFor="created-url">New viewer link (shown once — copy it now)</label>
            <div className="row">
              <input id="created-url" ref={urlRef} type="text" readOnly value={created.url} onFocus={(e) => e.target.select()} />
              <button
                type="button"
                onClick={async () => setCopied((await copyText(created.url, urlRef.current)) ? 'Copied to the clipboard.' : 'Select the link and copy it (Ctrl+C).')}
              >
                Copy
              </button>
            </div>
            {copied && (
              <p className="muted" role="status">
                {copied}
              </p>
            )}
          </div>
        )}
        {links === null ? (
          <p className="muted">Loading…</p>
        ) : links.length === 0 ? (
          <p className="muted">No links yet.</p>
        ) : (
          <ul className="link-list" aria-label="Existing viewer links">
            {links.map((l) => {
              const st = linkState(l)
              return (
                <li key={l.id} data-link-id={l.id} data-state={st}>
                  <span>
                    <span className="mono">{shortId(l.id)}</span> · created {dateTime(l.created_at)} · {l.expires_at ? `expires ${dateTime(l.expires_at)}` : 'no expiry'} ·{' '}
                    <strong>{st}</strong>
                  </span>
                  {st === 'active' && (
                    <button type="button" className="small danger" onClick={() => revoke(l.id)} aria-label={`Revoke link ${shortId(l.id)}`}>
                      Revoke
                    </button>
                  )}
                </li>
              )
            })}
          </ul>
        )}
      </section>
      {members && (
        <section aria-labelledby="members-h">
          <h3 id="members-h">Members</h3>
          <ul className="link-list">
            {members.map((m) => (
              <li key={m.account_id}>
                <span>
                  {m.name} <span className="muted">{m.email}</span> · {m.role}
                </span>
                {role === 'owner' && m.role !== 'owner' && (
                  <button type="button" className="small" onClick={() => removeMember(m)} aria-label={`Remove ${m.name}`}>
                    Remove
                  </button>
                )}
              </li>
            ))}
          </ul>
          {role === 'owner' && (
            <form
              className="row wrap"
              onSubmit={(e) => {
                e.preventDefault()
                void addMember()
              }}
            >
              <label htmlFor="member-email">Email</label>
              <input id="member-email" type="email" required value={email} onChange={(e) => setEmail(e.target.value)} autoComplete="off" />
              <label htmlFor="member-role">Role</label>
              <select id="member-role" value={memberRole} onChange={(e) => setMemberRole(e.target.value as Role)}>
                <option value="editor">editor</option>
                <option value="viewer">viewer</option>
                <option value="owner">owner</option>
              </select>
              <button type="submit">Add member</button>
            </form>
          )}
        </section>
      )}
    </dialog>
  )
}
