// Starts the real `atelier` binary for a test, serving the built studio page (web/dist).
// The binary: ATELIER_BIN, else ${CARGO_TARGET_DIR:-~/.cache/atelier/target}/debug/atelier.
// ATELIER_BROWSER_BASE=http://host:port runs the tests against a server that is already running.
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs'
import { tmpdir, homedir } from 'node:os'
import { join, resolve, dirname } from 'node:path'
import { randomUUID, randomBytes } from 'node:crypto'
import http from 'node:http'
import { fileURLToPath } from 'node:url'

export const PASSWORD = 'correct horse battery staple'
export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../../..')
export const WEB_DIST = join(REPO, 'web/dist')

/** The repository's models (scripts/fetch-models) and ONNX Runtime, for the job system. */
export const MODELS_DIR = process.env.ATELIER_MODELS_DIR || join(REPO, 'models')
export const ORT_DYLIB_PATH = process.env.ORT_DYLIB_PATH || join(REPO, '.tools/onnxruntime/libonnxruntime.so.1.31.1')

/**
 * Server options for the real node types (the models directory); with `worker`, also the
 * in-process worker on ONNX Runtime, credits for a Pro runtime and every preview frame.
 */
export function withModels ({ worker = false } = {}) {
  if (!worker) return { args: ['--models-dir', MODELS_DIR, '--in-process-worker', 'off'] }
  return {
    args: ['--models-dir', MODELS_DIR, '--in-process-worker', 'on', '--signup-credits', '1000000', '--preview-min-interval-ms', '0'],
    env: { ORT_DYLIB_PATH }
  }
}

const defaultBin = () =>
  join(process.env.CARGO_TARGET_DIR || join(homedir(), '.cache/atelier/target'), 'debug/atelier')

export class Server {
  /**
   * `embedded`: start it as `scripts/serve` does — `atelier serve` with no flag and no ATELIER_*
   * variable (nor ORT_DYLIB_PATH or RUST_LOG), in a working directory holding what
   * `scripts/setup` puts beside it (`models/`, `.tools/onnxruntime/`, `web/dist/`, here
   * linked to the repository's); it listens on the default 127.0.0.1:8080.
   */
  constructor ({ args = [], env = {}, embedded = false } = {}) {
    this.args = args
    this.env = env
    this.embedded = embedded
    this.proc = null
    this.base = process.env.ATELIER_BROWSER_BASE?.replace(/\/$/, '') || null
    this.external = !!this.base
    this.dir = null
    this.stderr = ''
  }

  async start () {
    if (this.external) return this
    if (!existsSync(join(WEB_DIST, 'index.html'))) {
      throw new Error(`${WEB_DIST}/index.html is missing: build the page first (cd web && npm ci && npm run build)`)
    }
    this.dir = mkdtempSync(join(tmpdir(), 'atelier-browser-'))
    const bin = process.env.ATELIER_BIN || defaultBin()
    if (this.embedded) {
      const env = { ...process.env }
      for (const k of Object.keys(env)) if (k.startsWith('ATELIER_') || k === 'ORT_DYLIB_PATH' || k === 'RUST_LOG') delete env[k]
      symlinkSync(MODELS_DIR, join(this.dir, 'models'))
      symlinkSync(join(REPO, '.tools'), join(this.dir, '.tools'))
      mkdirSync(join(this.dir, 'web'))
      symlinkSync(WEB_DIST, join(this.dir, 'web/dist'))
      this.databaseUrl = 'sqlite://./data/atelier.db'
      this.proc = spawn(bin, ['serve'], { cwd: this.dir, env, stdio: ['ignore', 'pipe', 'pipe'] })
    } else {
      const env = { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn', ...this.env }
      for (const k of Object.keys(env)) if (k.startsWith('ATELIER_') && !(k in this.env)) delete env[k]
      env.ATELIER_AUTH_RATE_PER_MINUTE ??= '100000'
      this.databaseUrl = `sqlite://${this.dir}/a.db`
      this.proc = spawn(bin, [
        'serve', '--bind', '127.0.0.1:0',
        '--database-url', this.databaseUrl,
        '--storage-url', `file://${this.dir}/objects`,
        '--web-dir', WEB_DIST,
        ...this.args
      ], { cwd: this.dir, env, stdio: ['ignore', 'pipe', 'pipe'] })
    }
    this.proc.stderr.on('data', (c) => {
      this.stderr = (this.stderr + c.toString()).slice(-20000)
      if (process.env.ATELIER_BROWSER_SERVER_LOG) process.stderr.write(c)
    })
    await new Promise((resolve, reject) => {
      let buf = ''
      const onData = (chunk) => {
        buf += chunk.toString()
        const m = buf.match(/atelier listening on (http:\/\/\S+)/)
        if (m) {
          this.base = m[1]
          this.proc.stdout.off('data', onData)
          this.proc.stdout.resume()
          resolve()
        }
      }
      this.proc.stdout.on('data', onData)
      this.proc.once('error', (e) => reject(new Error(`cannot start ${bin}: ${e.message}`)))
      this.proc.once('exit', (code) => reject(new Error(`atelier exited early with ${code}:\n${this.stderr}`)))
    })
    return this
  }

  /** Runs `atelier admin …` on this server's database (in its working directory). */
  adminCli (args) {
    const env = { ...process.env, ATELIER_DATABASE_URL: this.databaseUrl }
    const out = spawnSync(process.env.ATELIER_BIN || defaultBin(), ['admin', ...args], { cwd: this.dir, env, encoding: 'utf8' })
    if (out.status !== 0) throw new Error(`atelier admin ${args.join(' ')} failed: ${out.stderr}`)
    return out.stdout
  }

  async stop () {
    if (this.proc && this.proc.exitCode === null) {
      const exited = new Promise((resolve) => this.proc.once('exit', resolve))
      this.proc.kill('SIGKILL')
      await exited
    }
    if (this.dir) rmSync(this.dir, { recursive: true, force: true })
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

  /** A new account through the API (for the second member, etc.). */
  async signup (name) {
    const email = `${name.toLowerCase()}-${randomUUID()}@example.com`
    const res = await this.call('POST', '/auth/signup', { body: { email, password: PASSWORD, name } })
    if (res.status !== 201) throw new Error(`signup failed: ${res.status} ${JSON.stringify(res.body)}`)
    return { id: res.body.account.id, email, name, token: res.body.token }
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

  /** Whether the live WebSocket endpoint exists on this server (it answers the upgrade). */
  async hasLiveSocket (session, token) {
    return await new Promise((resolve) => {
      const req = http.request(`${this.base}/ws/${session}?token=${token}`, {
        headers: {
          connection: 'Upgrade',
          upgrade: 'websocket',
          'sec-websocket-version': '13',
          'sec-websocket-key': randomBytes(16).toString('base64')
        },
        timeout: 5000
      })
      req.on('upgrade', (_res, socket) => { socket.destroy(); resolve(true) })
      req.on('response', (res) => { res.resume(); resolve(false) })
      req.on('timeout', () => { req.destroy(); resolve(false) })
      req.on('error', () => resolve(false))
      req.end()
    })
  }

  /** Whether the job system is there (GET /node-types answers). */
  async hasJobs (token) {
    const res = await this.call('GET', '/node-types', { token })
    return res.status === 200
  }
}
