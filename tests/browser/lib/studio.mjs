// Studio helpers shared by the tests: adding nodes, reading the graph, editing parameters.
import { until, artifact } from './browser.mjs'

export const nodeSel = (id) => `.react-flow__node[data-id="${id}"]`

export async function nodeIds (page) {
  return await page.locator('.react-flow__node').evaluateAll((els) => els.map((e) => e.getAttribute('data-id')))
}

/** Clicks a palette button (the i-th node type, or the one with this label) and returns the new node's id. */
export async function addNode (page, which = 0) {
  const before = new Set(await nodeIds(page))
  const button = typeof which === 'number'
    ? page.getByRole('button', { name: /^Add node:/ }).nth(which)
    : page.getByRole('button', { name: `Add node: ${which}`, exact: true })
  await button.click()
  let id = null
  try {
    await until(async () => {
      id = (await nodeIds(page)).find((x) => !before.has(x)) ?? null
      return id !== null
    }, 5000, 'the new node on the canvas')
  } catch (e) {
    await page.screenshot({ path: artifact('failed-add-node.png') })
    throw e
  }
  return id
}

export async function selectNode (page, id) {
  // The keyboard way: nodes are focusable, Enter selects.
  await page.locator(nodeSel(id)).focus()
  await page.keyboard.press('Enter')
  await page.locator(`${nodeSel(id)}.selected`).waitFor({ timeout: 3000 })
}

/**
 * Edits the first editable text or number parameter of the selected node in the inspector.
 * Returns {name, value} as the node on the canvas shows it.
 */
export async function editFirstParam (page, nodeId, stamp) {
  const inputs = page.locator(`[data-param-input][data-node-id="${nodeId}"]:enabled`)
  const n = await inputs.count()
  for (let i = 0; i < n; i++) {
    const input = inputs.nth(i)
    const tag = await input.evaluate((e) => e.tagName.toLowerCase())
    const type = (await input.getAttribute('type')) || ''
    const name = await input.getAttribute('data-param-input')
    if (tag === 'textarea' || (tag === 'input' && type === 'text')) {
      const value = `from ${stamp}`
      await input.fill(value)
      return { name, value }
    }
    if (tag === 'input' && type === 'number') {
      const max = Number((await input.getAttribute('max')) || Infinity)
      const cur = Number(await input.inputValue()) || 0
      const step = (await input.getAttribute('step')) === '1' || !(await input.getAttribute('step')) ? 1 : 0.5
      const value = cur + step <= max ? cur + step : cur - step
      await input.fill(String(value))
      return { name, value: String(value) }
    }
  }
  return null
}

export async function paramShown (page, nodeId, name) {
  const dd = page.locator(`${nodeSel(nodeId)} dd[data-param="${name}"]`)
  if ((await dd.count()) === 0) return null
  return (await dd.textContent())?.trim() ?? null
}

/** The node's position on the canvas, rounded to whole pixels (the document stores integers). */
export async function nodePosition (page, id) {
  const t = await page.locator(nodeSel(id)).evaluate((e) => e.style.transform)
  const m = t.match(/translate\(\s*(-?[\d.]+)px\s*,\s*(-?[\d.]+)px/)
  return m ? `${Math.round(Number(m[1]))},${Math.round(Number(m[2]))}` : t
}
