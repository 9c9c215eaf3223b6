// An invitation link (#/invite/{token}): what it offers, and accepting it, which makes the
// signed-in person a member and opens the session.
import { useEffect, useState } from 'react'
import { client, errorMessage, type InvitationPreview } from '../lib/api'
import { dateTime } from '../lib/format'
import { navigate } from '../lib/router'

export function InvitePage({ token }: { token: string }) {
  const [preview, setPreview] = useState<InvitationPreview | null>(null)
  const [error, setError] = useState<string | null>(null)
  const [busy, setBusy] = useState(false)

  useEffect(() => {
    let live = true
    client.invitation(token).then(
      (p) => {
        if (!live) return
        // Already in (e.g. signed up with the invited address, which joined it): go there.
        if (p.member) navigate(`/s/${p.session_id}`)
        else setPreview(p)
      },
      (e) => live && setError(errorMessage(e)),
    )
    return () => {
      live = false
    }
  }, [token])

  const accept = async () => {
    setBusy(true)
    setError(null)
    try {
      const accepted = await client.acceptInvitation(token)
      navigate(`/s/${accepted.session_id}`)
    } catch (e) {
      setError(errorMessage(e))
    } finally {
      setBusy(false)
    }
  }

  return (
    <div className="page narrow">
      <h1>Invitation</h1>
      {error && (
        <p className="alert alert-error" role="alert">
          {error}
        </p>
      )}
      {!preview && !error && <p className="muted">Loading…</p>}
      {preview && (
        <div className="card">
          <p>
            You are invited to <strong>{preview.session_title}</strong> as <strong data-invite-role={preview.role}>{preview.role}</strong>.
            {preview.expires_at && <span className="muted"> The invitation expires {dateTime(preview.expires_at)}.</span>}
          </p>
          <div className="row">
            <button type="button" className="primary" disabled={busy} onClick={accept}>
              Accept and open the session
            </button>
            <a className="button" href="#/sessions">
              Not now
            </a>
          </div>
        </div>
      )}
      {error && (
        <p>
          <a href="#/sessions">Go to your sessions</a>
        </p>
      )}
    </div>
  )
}
