// A media parameter (image-input's image): upload a PNG for the session, or pick one of the
// session's images; the node's parameter is then that media's id.
import { useEffect, useState } from 'react'
import type { ParamDef } from '../lib/nodeTypes'
import { sessionImages, uploadMedia, useMedia, type MediaRecord } from '../lib/media'
import { shortId } from '../lib/format'

function Current({ id, token }: { id: string; token: string | null }) {
  const { media, error } = useMedia(id, token)
  if (error) return <span className="error-text">The image {shortId(id)} cannot be read: {error}</span>
  if (!media) return <span className="muted">Loading…</span>
  return <img className="media-current" src={media.url} alt={`Chosen image ${shortId(id)}`} data-media-current={id} width={96} height={96} style={{ objectFit: 'contain' }} />
}

function label(m: MediaRecord): string {
  const when = new Date(m.created_at * 1000).toLocaleString()
  return `${m.filename || `image ${shortId(m.id)}`} · ${when}`
}

export interface MediaFieldProps {
  id: string
  nodeId: string
  def: ParamDef
  value: string | null
  readOnly: boolean
  sessionId: string
  token: string | null
  onChange: (v: unknown) => void
}

export function MediaField({ id, nodeId, def, value, readOnly, sessionId, token, onChange }: MediaFieldProps) {
  const [choices, setChoices] = useState<MediaRecord[] | null>(null)
  const [status, setStatus] = useState<{ text: string; error: boolean } | null>(null)
  const [busy, setBusy] = useState(false)
  const [reload, setReload] = useState(0)
  useEffect(() => {
    if (readOnly) return
    let live = true
    sessionImages(sessionId, token).then(
      (list) => live && setChoices(list),
      (e: Error) => live && (setChoices([]), setStatus({ text: `Could not list the session's images: ${e.message}`, error: true })),
    )
    return () => {
      live = false
    }
  }, [sessionId, token, readOnly, reload])

  const upload = async (file: File | undefined) => {
    if (!file) return
    if (file.type && file.type !== 'image/png') {
      setStatus({ text: `${file.name} is not a PNG: this node reads PNG images.`, error: true })
      return
    }
    setBusy(true)
    setStatus({ text: `Uploading ${file.name}…`, error: false })
    try {
      const media = await uploadMedia(file, sessionId, token)
      onChange(media.id)
      setStatus({ text: `Uploaded ${file.name}: the node uses it.`, error: false })
      setReload((n) => n + 1)
    } catch (e) {
      setStatus({ text: `Upload failed: ${(e as Error).message}`, error: true })
    } finally {
      setBusy(false)
    }
  }

  const listed = choices ?? []
  return (
    <div className="field field-media" data-media-param={def.name} data-node-id={nodeId}>
      <span className="label" id={`${id}-label`}>
        {def.label}
      </span>
      {value ? <Current id={value} token={token} /> : <span className="muted">No image chosen: upload one or pick one of the session’s.</span>}
      {!readOnly && (
        <>
          <label htmlFor={`${id}-upload`}>Upload a PNG</label>
          <input id={`${id}-upload`} type="file" accept="image/png" disabled={busy} data-media-upload={def.name} onChange={(e) => void upload(e.target.files?.[0])} />
          <label htmlFor={`${id}-pick`}>Or pick an image of this session</label>
          <select
            id={`${id}-pick`}
            data-media-pick={def.name}
            disabled={busy || choices === null}
            value={value && listed.some((m) => m.id === value) ? value : ''}
            onChange={(e) => e.target.value && onChange(e.target.value)}
          >
            <option value="">{choices === null ? 'Loading…' : listed.length === 0 ? 'None uploaded yet' : '— choose —'}</option>
            {listed.map((m) => (
              <option key={m.id} value={m.id}>
                {label(m)}
              </option>
            ))}
          </select>
        </>
      )}
      {status && (
        <span className={status.error ? 'hint warn' : 'hint'} role={status.error ? 'alert' : 'status'}>
          {status.text}
        </span>
      )}
      {def.description && <span className="hint">{def.description}</span>}
    </div>
  )
}
