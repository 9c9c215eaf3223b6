// Port types (GET /node-types lists each port's type): their colours in the graph, and which
// output may feed which input — the same rule the server applies (400 naming the edge).
// `any` (upscale, blur) takes every type.

export const PORT_COLORS: Record<string, string> = {
  heightmap: '#c8a45a',
  image: '#4f9dde',
  mask: '#9b6bd6',
  any: '#8a8a8a',
}

/** The colour of a port of `type` (unknown types are grey). */
export function portColor(type: string | undefined): string {
  return (type && PORT_COLORS[type]) || PORT_COLORS.any
}

/** Whether an output of type `from` may feed an input of type `to` (unknown types: allowed). */
export function compatible(from: string | undefined, to: string | undefined): boolean {
  if (!from || !to) return true
  return from === to || from === 'any' || to === 'any'
}
