// Debian's Chromium driven by playwright-core: no downloaded browsers.
import { chromium } from 'playwright-core'
import { mkdirSync } from 'node:fs'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'

export const CHROMIUM = process.env.ATELIER_CHROMIUM || '/usr/bin/chromium'
export const ARTIFACTS = join(dirname(fileURLToPath(import.meta.url)), '../artifacts')

export const LAUNCH_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-quic',
  '--no-first-run',
  '--disable-sync'
]

export async function launch () {
  return await chromium.launch({ executablePath: CHROMIUM, args: LAUNCH_ARGS, headless: true })
}

export const LAPTOP = { width: 1366, height: 820 }
export const PHONE = { width: 390, height: 844 }

/**
 * A fresh, isolated browser context (its own cookies and storage) with one page. Uncaught page
 * errors and failed requests outside the server are collected in `problems`.
 */
export async function openPage (browser, base, { viewport = LAPTOP, name = 'page' } = {}) {
  const context = await browser.newContext({ viewport, baseURL: base })
  const page = await context.newPage()
  const problems = []
  page.on('pageerror', (e) => {
    problems.push(`${name}: page error: ${e.message}`)
    if (process.env.ATELIER_BROWSER_DEBUG) console.error(`${name}: page error:`, e.stack)
  })
  page.on('console', (m) => {
    if (m.type() === 'error' && !/WebSocket|Failed to load resource|ERR_/.test(m.text())) problems.push(`${name}: console error: ${m.text()}`)
  })
  // Nothing may be loaded from outside the server.
  page.on('request', (r) => {
    const url = r.url()
    if (!url.startsWith(base) && !url.startsWith(base.replace('http', 'ws')) && !/^(data|blob):/.test(url)) {
      problems.push(`${name}: request outside the server: ${url}`)
    }
  })
  return { context, page, problems }
}

export function artifact (file) {
  mkdirSync(ARTIFACTS, { recursive: true })
  return join(ARTIFACTS, file)
}

export async function signupViaUi (page, { name, email, password }) {
  await page.goto('/#/signup')
  await page.getByLabel('Name').fill(name)
  await page.getByLabel('Email').fill(email)
  await page.getByLabel('Password').fill(password)
  await page.getByRole('button', { name: 'Sign up' }).click()
  await page.getByRole('heading', { name: 'Your sessions' }).waitFor({ timeout: 10000 })
}

export async function loginViaUi (page, { email, password }) {
  await page.goto('/#/login')
  await page.getByLabel('Email').fill(email)
  await page.getByLabel('Password').fill(password)
  await page.getByRole('button', { name: 'Log in' }).click()
  await page.getByRole('heading', { name: 'Your sessions' }).waitFor({ timeout: 10000 })
}

/** Opens a studio session and waits until its document is live (synced). */
export async function openStudio (page, sessionId, { timeout = 15000 } = {}) {
  await page.goto(`/#/s/${sessionId}`)
  await page.locator('.studio[data-conn="live"]').waitFor({ timeout })
}

/** Resolves with the ms it took for `predicate()` to hold; rejects after `ms`. */
export async function until (predicate, ms = 5000, what = 'condition') {
  const started = Date.now()
  while (!(await predicate())) {
    if (Date.now() - started > ms) throw new Error(`timed out after ${ms} ms waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  return Date.now() - started
}

export const nodeIds = (page) =>
  page.locator('.react-flow__node').evaluateAll((els) => els.map((e) => e.getAttribute('data-id')))
