import { useReactFlow } from '@xyflow/react'
import type * as Y from 'yjs'
import { addNode } from '../lib/graph'
import { defaultParams, type NodeTypeDef } from '../lib/nodeTypes'

export function Palette({ doc, types, note, onAdded }: { doc: Y.Doc; types: NodeTypeDef[]; note?: string; onAdded: (id: string) => void }) {
  const flow = useReactFlow()
  const add = (def: NodeTypeDef) => {
    // Near the middle of what is on screen, on a free spot (nodes must not hide each other).
    const pane = document.querySelector('.react-flow')?.getBoundingClientRect()
    const center = pane ? flow.screenToFlowPosition({ x: pane.left + pane.width / 2, y: pane.top + pane.height / 2 }) : { x: 0, y: 0 }
    const boxes = flow.getNodes().map((n) => ({ x: n.position.x, y: n.position.y, w: n.measured?.width ?? 200, h: n.measured?.height ?? 140 }))
    const W = 210
    const H = 160
    const free = (x: number, y: number) => boxes.every((b) => x + W <= b.x - 10 || x >= b.x + b.w + 10 || y + H <= b.y - 10 || y >= b.y + b.h + 10)
    let spot = { x: center.x - W / 2, y: center.y - H / 2 }
    // Ring by ring around the middle; on each ring the same row first, rightwards first, so a
    // graph built in order reads left to right (source → … → output).
    search: for (let ring = 0; ring < 12; ring++) {
      const cells: [number, number][] = []
      for (let dx = -ring; dx <= ring; dx++) {
        for (let dy = -ring; dy <= ring; dy++) if (Math.max(Math.abs(dx), Math.abs(dy)) === ring) cells.push([dx, dy])
      }
      cells.sort((a, b) => Math.abs(a[1]) - Math.abs(b[1]) || b[0] - a[0] || a[1] - b[1])
      for (const [dx, dy] of cells) {
        const x = center.x - W / 2 + dx * (W + 30)
        const y = center.y - H / 2 + dy * (H + 30)
        if (free(x, y)) {
          spot = { x, y }
          break search
        }
      }
    }
    const id = addNode(doc, def.type, spot.x, spot.y, defaultParams(def))
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
              <span aria-hidden="true" className="plus">+</span> {t.label}
            </button>
          </li>
        ))}
      </ul>
    </section>
  )
}
