// Outputs: the document's `outputs` map (kept by the server, so late joiners see them) plus
// what finished jobs announced. Media needs auth, so each file is shown via an object URL.
import { extensionFor, useMedia } from '../lib/media'
import { shortId } from '../lib/format'

export interface OutputItem {
  id: string
  caption: string
  /** What produced it, e.g. the seeds of its job's random nodes. */
  detail?: string
  /** Puts the values (parameters, seeds) that produced it back into the graph. */
  onRestore?: () => void
  /** Opens the version of the graph that made it in the history panel. */
  onOpenGraph?: () => void
}

function MediaItem({ id, token, caption, detail, onRestore, onOpenGraph }: { id: string; token: string | null } & Omit<OutputItem, 'id'>) {
  const { media, error } = useMedia(id, token)
  const name = `${caption.replace(/[^a-z0-9_-]+/gi, '_')}-${shortId(id)}.${media ? extensionFor(media.type) : 'bin'}`
  return (
    <li className="output" data-media-id={id}>
      <div className="output-view">
        {error && <span className="error-text">Could not load: {error}</span>}
        {!media && !error && <span className="muted">Loading…</span>}
        {media && media.type.startsWith('image/') && <img src={media.url} alt={`Output of ${caption}`} />}
        {media && media.type.startsWith('video/') && <video src={media.url} controls aria-label={`Output of ${caption}`} />}
        {media && media.type.startsWith('audio/') && <audio src={media.url} controls aria-label={`Output of ${caption}`} />}
        {media && !/^(image|video|audio)\//.test(media.type) && <span className="muted">{media.type || 'file'}</span>}
      </div>
      <div className="output-meta">
        <span>{caption}</span>
        {detail && <span className="muted" data-output-detail>{detail}</span>}
        {media && (
          <a href={media.url} target="_blank" rel="noopener noreferrer" aria-label={`Full size: output ${shortId(id)} of ${caption}`}>
            Full size
          </a>
        )}
        {onRestore && (
          <button type="button" onClick={onRestore} aria-label={`Restore the values of output ${shortId(id)}`}>
            Restore values
          </button>
        )}
        {onOpenGraph && (
          <button type="button" onClick={onOpenGraph} aria-label={`Open the graph that made output ${shortId(id)}`}>
            Open this graph
          </button>
        )}
        {media && (
          <a href={media.url} download={name} aria-label={`Download output ${shortId(id)} of ${caption}`}>
            Download
          </a>
        )}
      </div>
    </li>
  )
}

export function Outputs({ items, token }: { items: OutputItem[]; token: string | null }) {
  return (
    <section className="panel" aria-labelledby="outputs-h">
      <h2 id="outputs-h">Outputs</h2>
      {items.length === 0 ? (
        <p className="muted">Nothing yet: results appear here when a run finishes.</p>
      ) : (
        <ul className="gallery">
          {items.map((it) => (
            <MediaItem key={it.id} id={it.id} token={token} caption={it.caption} detail={it.detail} onRestore={it.onRestore} onOpenGraph={it.onOpenGraph} />
          ))}
        </ul>
      )}
    </section>
  )
}
