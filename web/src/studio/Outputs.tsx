// Outputs: the document's `outputs` map (kept by the server, so late joiners see them) plus
// what finished jobs announced. Media needs auth, so each file is shown via an object URL.
import { extensionFor, useMedia } from '../lib/media'
import { shortId } from '../lib/format'

export interface OutputItem {
  id: string
  caption: string
  /** What produced it, e.g. the seeds of its job's random nodes. */
  detail?: string
  /** The graph values of the run that made it, one line per node ("terrain_1 (terrain): difficulty 50, seed 42"). */
  values?: string[]
  /** Puts the values (parameters, seeds) that produced it back into the graph. */
  onRestore?: () => void
  /** Opens the version of the graph that made it in the history panel. */
  onOpenGraph?: () => void
  /** Copies only the seeds of its random nodes back into the graph (batch variations). */
  useSeed?: { label: string; seeds: string; apply: () => void }
}

/** One run's outputs, or a batch's: its variations side by side as a grid. */
export interface OutputGroup {
  key: string
  /** Set for a batch: its id, and what the grid is titled. */
  batch?: { id: string; title: string }
  items: OutputItem[]
}

function MediaItem({ id, token, caption, detail, values, onRestore, onOpenGraph, useSeed }: { id: string; token: string | null } & Omit<OutputItem, 'id'>) {
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
        {values && values.length > 0 && (
          <details className="output-values" data-output-values>
            <summary>Values</summary>
            <ul>
              {values.map((v) => (
                <li key={v}>{v}</li>
              ))}
            </ul>
          </details>
        )}
        {media && (
          <a href={media.url} target="_blank" rel="noopener noreferrer" aria-label={`Full size: output ${shortId(id)} of ${caption}`}>
            Full size
          </a>
        )}
        {useSeed && (
          <button type="button" onClick={useSeed.apply} data-use-seed={useSeed.seeds} aria-label={`${useSeed.label} (output ${shortId(id)})`}>
            {useSeed.label}
          </button>
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

function Item({ it, token }: { it: OutputItem; token: string | null }) {
  return <MediaItem id={it.id} token={token} caption={it.caption} detail={it.detail} values={it.values} onRestore={it.onRestore} onOpenGraph={it.onOpenGraph} useSeed={it.useSeed} />
}

export function Outputs({ groups, token }: { groups: OutputGroup[]; token: string | null }) {
  return (
    <section className="panel" aria-labelledby="outputs-h">
      <h2 id="outputs-h">Outputs</h2>
      {groups.length === 0 ? (
        <p className="muted">Nothing yet: results appear here when a run finishes.</p>
      ) : (
        <ul className="gallery">
          {groups.map((g) =>
            g.batch ? (
              <li key={g.key} className="batch" data-batch-id={g.batch.id}>
                <h3 className="batch-title">{g.batch.title}</h3>
                <ul className="batch-grid" aria-label={g.batch.title} >
                  {g.items.map((it) => (
                    <Item key={it.id} it={it} token={token} />
                  ))}
                </ul>
              </li>
            ) : (
              g.items.map((it) => <Item key={it.id} it={it} token={token} />)
            ),
          )}
        </ul>
      )}
    </section>
  )
}
