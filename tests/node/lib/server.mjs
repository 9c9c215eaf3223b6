// Starts the real `atelier` binary for a test and talks to it over HTTP and WebSocket.
// The binary comes from ATELIER_BIN (scripts/test sets it) or the default cargo target dir.
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir, homedir } from 'node:os'
import { join } from 'node:path'
import { randomUUID } from 'node:crypto'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'

export const PASSWORD = 'correct horse battery staple'

const defaultBin = () =>
  join(process.env.CARGO_TARGET_DIR || join(homedir(), '.cache/atelier/target'), 'debug/atelier')

export class Server {
  constructor ({ args = [], env = {}, dir, databaseUrl } = {}) {
    this.dir = dir || mkdtempSync(join(tmpdir(), 'atelier-node-'))
    this.ownsDir = !dir
    this.databaseUrl = databaseUrl || `sqlite://${this.dir}/atelier.db`
    this.args = args
    this.env = env
    this.proc = null
    this.base = null
  }

  /** Starts the process and resolves once it prints its address. */
  start () {
    const env = { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn', ...this.env }
    for (const k of Object.keys(env)) if (k.startsWith('ATELIER_') && !(k in this.env)) delete env[k]
    env.ATELIER_AUTH_RATE_PER_MINUTE ??= '100000'
    const bind = this.base ? this.base.replace('http://', '') : '127.0.0.1:0'
    this.proc = spawn(process.env.ATELIER_BIN || defaultBin(), [
      'serve', '--bind', bind,
      '--database-url', this.databaseUrl,
      '--storage-url', `file://${this.dir}/objects`,
      ...this.args
    ], { cwd: this.dir, env, stdio: ['ignore', 'pipe', 'inherit'] })
    return new Promise((resolve, reject) => {
      let buf = ''
      const onData = (chunk) => {
        buf += chunk.toString()
        const m = buf.match(/atelier listening on (http:\/\/\S+)/)
        if (m) {
          this.base = m[1]
          this.proc.stdout.off('data', onData)
          this.proc.stdout.resume()
          resolve(this)
        }
      }
      this.proc.stdout.on('data', onData)
      this.proc.once('exit', (code) => reject(new Error(`atelier exited early with ${code}`)))
    })
  }

  get wsUrl () { return this.base.replace('http://', 'ws://') + '/ws' }

  /** SIGKILL: no chance to flush anything. */
  async kill (signal = 'SIGKILL') {
    // Exited, or killed by a signal (a killed process keeps `exitCode` null).
    if (!this.proc || this.proc.exitCode !== null || this.proc.signalCode !== null) return
    const exited = new Promise((resolve) => this.proc.once('exit', resolve))
    this.proc.kill(signal)
    await exited
  }

  async stop () {
    await this.kill('SIGKILL')
    if (this.ownsDir) rmSync(this.dir, { recursive: true, force: true })
  }

  async call (method, path, { token, body } = {}) {
    const headers = {}
    if (token) headers.authorization = `Bearer ${token}`
    if (body !== undefined) headers['content-type'] = 'application/json'
    const res = await fetch(`${this.base}/api/v1${path}`, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body)
    })
    const text = await res.text()
    let json = null
    try { json = JSON.parse(text) } catch {}
    return { status: res.status, body: json }
  }

  async signup (name) {
    const email = `${name.toLowerCase()}-${randomUUID()}@example.com`
    const res = await this.call('POST', '/auth/signup', { body: { email, password: PASSWORD, name } })
    if (res.status !== 201) throw new Error(`signup failed: ${res.status} ${JSON.stringify(res.body)}`)
    return { id: res.body.account.id, email, name, token: res.body.token }
  }

  async createSession (token, title = 'Live') {
    const res = await this.call('POST', '/sessions', { token, body: { title } })
    if (res.status !== 201) throw new Error(`create session: ${res.status}`)
    return res.body.id
  }

  /** Makes `invitee` ({ email, token }) a member: the owner invites the address (a pending
   * invitation, whatever the address), then the invitee accepts it from GET /me/invitations. */
  async addMember (token, session, invitee, role) {
    const res = await this.call('POST', `/sessions/${session}/members`, { token, body: { email: invitee.email, role } })
    if (res.status !== 200) throw new Error(`add member: ${res.status} ${JSON.stringify(res.body)}`)
    const mine = await this.call('GET', '/me/invitations', { token: invitee.token })
    if (mine.status !== 200) throw new Error(`my invitations: ${mine.status} ${JSON.stringify(mine.body)}`)
    const invitation = mine.body.find((i) => i.session_id === session)
    if (!invitation) throw new Error(`no invitation to ${session} in ${JSON.stringify(mine.body)}`)
    const accepted = await this.call('POST', `/me/invitations/${invitation.id}/accept`, { token: invitee.token })
    if (accepted.status !== 200) throw new Error(`accept invitation: ${accepted.status} ${JSON.stringify(accepted.body)}`)
  }

  async shareLink (token, session) {
    const res = await this.call('POST', `/sessions/${session}/share-links`, { token, body: { role: 'viewer' } })
    if (res.status !== 201) throw new Error(`share link: ${res.status}`)
    return res.body
  }

  /** A stock y-websocket provider on a fresh Y.Doc. */
  provider (session, token, opts = {}) {
    const doc = opts.doc || new Y.Doc()
    const provider = new WebsocketProvider(this.wsUrl, session, doc, {
      params: { token },
      WebSocketPolyfill: WebSocket,
      disableBc: true,
      ...opts.provider
    })
    return { doc, provider }
  }
}

/** Resolves when `predicate()` is true, polling; rejects after `ms`. */
export async function until (predicate, ms = 5000, what = 'condition') {
  const started = Date.now()
  while (!(await predicate())) {
    if (Date.now() - started > ms) throw new Error(`timed out after ${ms} ms waiting for ${typeof what === "function" ? what() : what}`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
  return Date.now() - started
}

export const synced = (provider, ms = 5000) =>
  until(() => provider.synced, ms, 'provider sync')

export function destroyAll (...providers) {
  for (const p of providers) {
    if (!p) continue
    p.destroy()
    // The awareness keeps a renewal timer of its own that would keep node alive.
    p.awareness?.destroy()
  }
}
