// Sharing: viewer links (create, copy, list, revoke), invitation links and pending email
// invitations (owners), and members (role changes and removal, with a confirmation).
import { useCallback, useEffect, useRef, useState } from 'react'
import { api, client, errorMessage, type CreatedInvitation, type CreatedShareLink, type Invitation, type Member, type Role, type ShareLink } from '../lib/api'
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
function usableUrl(link: { url: string }): string {
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

function invitationState(i: Invitation): string {
  if (i.revoked_at) return 'revoked'
  if (i.expires_at && i.expires_at <= Date.now()) return 'expired'
  if (i.max_uses !== null && i.uses >= i.max_uses) return i.kind === 'email' ? 'joined' : 'used up'
  return i.kind === 'email' ? 'pending' : 'active'
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
  const [invitations, setInvitations] = useState<Invitation[] | null>(null)
  const [inviteRole, setInviteRole] = useState<Role>('editor')
  const [inviteExpiry, setInviteExpiry] = useState(2)
  const [singleUse, setSingleUse] = useState(true)
  const [createdInvite, setCreatedInvite] = useState<CreatedInvitation | null>(null)
  const [notice, setNotice] = useState<string | null>(null)
  const [confirmRemove, setConfirmRemove] = useState<string | null>(null)
  const inviteUrlRef = useRef<HTMLInputElement>(null)

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
    if (role === 'owner') {
      try {
        setInvitations(await client.invitations(sessionId))
      } catch {
        setInvitations(null)
      }
    }
  }, [sessionId, role])

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
  const createInvite = async () => {
    setError(null)
    try {
      const seconds = EXPIRY[inviteExpiry].seconds
      const inv = await client.createInvitation(sessionId, inviteRole, { expiresInS: seconds ?? undefined, maxUses: singleUse ? 1 : undefined })
      setCreatedInvite({ ...inv, url: usableUrl(inv) })
      await load()
      setTimeout(() => inviteUrlRef.current?.select(), 0)
    } catch (e) {
      setError(errorMessage(e))
    }
  }
  const revokeInvite = async (id: string) => {
    setError(null)
    try {
      await client.revokeInvitation(sessionId, id)
      if (createdInvite?.id === id) setCreatedInvite(null)
      await load()
    } catch (e) {
      setError(errorMessage(e))
    }
  }
  const changeRole = async (m: Member, newRole: Role) => {
    setError(null)
    try {
      await client.changeMemberRole(sessionId, m.account_id, newRole)
      await load()
    } catch (e) {
      setError(errorMessage(e))
    }
  }
  const addMember = async () => {
    setError(null)
    setNotice(null)
    try {
      const added = await client.addMember(sessionId, email.trim(), memberRole)
      // The server answers the same whether or not the address has an account.
      setNotice(`${added.email} is invited as ${added.role}: with an account, they accept it from their dashboard; otherwise they join when they sign up with that address. No email is sent — tell them yourself.`)
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
      setConfirmRemove(null)
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
              <li key={m.account_id} data-member-email={m.email}>
                <span>
                  {m.name} <span className="muted">{m.email}</span>
                  {!(role === 'owner' && m.role !== 'owner') && <> · {m.role}</>}
                </span>
                {role === 'owner' && m.role !== 'owner' && (
                  <span className="row">
                    <label htmlFor={`role-${m.account_id}`} className="sr-only">
                      Role of {m.name}
                    </label>
                    <select id={`role-${m.account_id}`} value={m.role} onChange={(e) => void changeRole(m, e.target.value as Role)}>
                      <option value="editor">editor</option>
                      <option value="viewer">viewer</option>
                      <option value="owner">owner</option>
                    </select>
                    {confirmRemove === m.account_id ? (
                      <>
                        <button type="button" className="small danger" onClick={() => removeMember(m)} aria-label={`Confirm removing ${m.name}`}>
                          Remove for good
                        </button>
                        <button type="button" className="small" onClick={() => setConfirmRemove(null)}>
                          Keep
                        </button>
                      </>
                    ) : (
                      <button type="button" className="small" onClick={() => setConfirmRemove(m.account_id)} aria-label={`Remove ${m.name}`}>
                        Remove
                      </button>
                    )}
                  </span>
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
          {notice && (
            <p className="muted" role="status">
              {notice}
            </p>
          )}
        </section>
      )}
      {role === 'owner' && (
        <section aria-labelledby="invites-h">
          <h3 id="invites-h">Invitation links</h3>
          <p className="muted">Whoever opens an invitation link and signs in (or signs up) becomes a member with its role.</p>
          <form
            className="row wrap"
            onSubmit={(e) => {
              e.preventDefault()
              void createInvite()
            }}
          >
            <label htmlFor="invite-role">Role</label>
            <select id="invite-role" value={inviteRole} onChange={(e) => setInviteRole(e.target.value as Role)}>
              <option value="editor">editor</option>
              <option value="viewer">viewer</option>
            </select>
            <label htmlFor="invite-expiry">Expires</label>
            <select id="invite-expiry" value={inviteExpiry} onChange={(e) => setInviteExpiry(Number(e.target.value))}>
              {EXPIRY.map((x, i) => (
                <option key={x.label} value={i}>
                  {x.label}
                </option>
              ))}
            </select>
            <label>
              <input type="checkbox" checked={singleUse} onChange={(e) => setSingleUse(e.target.checked)} /> single use
            </label>
            <button type="submit">Create invitation link</button>
          </form>
          {createdInvite && (
            <div className="created-link">
              <label htmlFor="created-invite-url">New invitation link (shown once — copy it now)</label>
              <div className="row">
                <input id="created-invite-url" ref={inviteUrlRef} type="text" readOnly value={createdInvite.url} onFocus={(e) => e.target.select()} />
                <button
                  type="button"
                  onClick={async () => setCopied((await copyText(createdInvite.url, inviteUrlRef.current)) ? 'Copied to the clipboard.' : 'Select the link and copy it (Ctrl+C).')}
                >
                  Copy
                </button>
              </div>
            </div>
          )}
          {invitations && invitations.length > 0 && (
            <ul className="link-list" aria-label="Invitations">
              {invitations.map((i) => {
                const st = invitationState(i)
                return (
                  <li key={i.id} data-invitation-id={i.id} data-state={st}>
                    <span>
                      {i.kind === 'email' ? i.email : <span className="mono">link {shortId(i.id)}</span>} · {i.role} · {i.max_uses === null ? `${i.uses} uses` : `${i.uses}/${i.max_uses} used`} ·{' '}
                      {i.expires_at ? `expires ${dateTime(i.expires_at)}` : 'no expiry'} · <strong>{st}</strong>
                    </span>
                    {(st === 'active' || st === 'pending') && (
                      <button type="button" className="small danger" onClick={() => revokeInvite(i.id)} aria-label={`Revoke invitation ${shortId(i.id)}`}>
                        Revoke
                      </button>
                    )}
                  </li>
                )
              })}
            </ul>
          )}
        </section>
      )}
    </dialog>
  )
}
