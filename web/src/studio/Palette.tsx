import { useReactFlow } from '@xyflow/react'
import type * as Y from 'yjs'
import { addNode } from '../lib/graph'
import { defaultParams, type NodeTypeDef } from '../lib/nodeTypes'

export function Palette({ doc, types, note, onAdded }: { doc: Y.Doc; types: NodeTypeDef[]; note?: string; onAdded: (id: string) => void }) {
  const flow = useReactFlow()
  const add = (def: NodeTypeDef) => {
    // Near the middle of what is on screen, a little apart from the last one.
    const pane = document.querySelector('.react-flow')?.getBoundingClientRect()
    const center = pane ? flow.screenToFlowPosition({ x: pane.left + pane.width / 2, y: pane.top + pane.height / 2 }) : { x: 0, y: 0 }
    const jitter = () => Math.round((Math.random() - 0.5) * 120)
    const id = addNode(doc, def.type, center.x - 90 + jitter(), center.y - 40 + jitter(), defaultParams(def))
    onAdded(id)
  }
  return (
    <section className="panel palette" aria-labelledby="palette-h">
      <h2 id="palette-h">Add a node</h2>
      {note && <p className="muted small-text">{note}</p>}
      <ul className="palette-list">
        {types.map((t) => (
          <li key={t.type}>
            <button type="button" onClick={() => add(t)} aria-label={`Add node: ${t.label}`} title={t.description ?? t.label}>
              <span aria-hidden="true">＋</span> {t.label}
            </button>
          </li>
        ))}
      </ul>
    </section>
  )
}
