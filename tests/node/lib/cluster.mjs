// A cluster of real `atelier serve` nodes for a test: a fresh PostgreSQL database, a Redis of
// the test's own (started on a free port, so a test can stop and restart it without touching
// anybody else's), a fresh key prefix, one shared objects directory, and N nodes from the one
// built binary. `LoadBalancer` is haproxy with the configuration `scripts/cluster` uses, so stock
// clients reconnect through a real load balancer to whichever node is alive.
import { spawn, execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomUUID } from 'node:crypto'
import { Server, until } from './server.mjs'

const PG = process.env.ATELIER_TEST_POSTGRES_URL || 'postgres://postgres@127.0.0.1:5432/postgres'

/** A free TCP port on 127.0.0.1. */
export function freePort () {
  return new Promise((resolve, reject) => {
    const srv = createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address()
      srv.close(() => resolve(port))
    })
  })
}

function psql (sql) {
  execFileSync('psql', [PG, '-qAtc', sql], { stdio: ['ignore', 'pipe', 'inherit'] })
}

/** A redis-server of the test's own, without persistence. */
export class TestRedis {
  constructor (port) { this.port = port; this.proc = null }
  get url () { return `redis://127.0.0.1:${this.port}/0` }

  async start () {
    this.proc = spawn('redis-server', [
      '--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'
    ], { stdio: 'ignore' })
    await until(() => new Promise((resolve) => {
      const s = connect(this.port, '127.0.0.1', () => { s.end(); resolve(true) })
      s.on('error', () => resolve(false))
    }), 5000, 'redis-server up')
    return this
  }

  async stop () {
    if (!this.proc || this.proc.exitCode !== null) return
    const exited = new Promise((resolve) => this.proc.once('exit', resolve))
    this.proc.kill('SIGKILL')
    await exited
  }
}

export class Cluster {
  /** `env`: extra settings for every node; `nodeEnv(i)`: for node i (1-based) only. */
  constructor ({ nodes = 3, env = {}, nodeEnv = () => ({}) } = {}) {
    this.size = nodes
    this.env = env
    this.nodeEnv = nodeEnv
    this.dir = mkdtempSync(join(tmpdir(), 'atelier-cluster-'))
    this.database = `atelier_test_${Math.floor(Date.now() / 1000)}_cluster_${randomUUID().replaceAll('-', '')}`
    this.prefix = `atelier-test-${randomUUID()}`
    this.nodes = []
    this.redis = null
  }

  get databaseUrl () {
    const url = new URL(PG)
    url.pathname = `/${this.database}`
    return url.toString()
  }

  async start () {
    psql(`CREATE DATABASE ${this.database}`)
    this.redis = await new TestRedis(await freePort()).start()
    // The first node applies the migrations; the others then start side by side.
    this.nodes.push(await this.node(1).start())
    const rest = []
    for (let i = 2; i <= this.size; i++) rest.push(this.node(i).start())
    this.nodes.push(...await Promise.all(rest))
    return this
  }

  node (i) {
    return new Server({
      dir: this.dir,
      databaseUrl: this.databaseUrl,
      env: {
        ATELIER_REDIS_URL: this.redis.url,
        ATELIER_REDIS_PREFIX: this.prefix,
        ATELIER_NODE_ID: `node-${i}`,
        ATELIER_CLUSTER_HEAD_CHECK_INTERVAL_S: '1',
        ATELIER_IN_PROCESS_WORKER: 'off',
        ...this.env,
        ...this.nodeEnv(i)
      }
    })
  }

  async stop () {
    await Promise.all(this.nodes.map((n) => n.kill()))
    await this.redis?.stop()
    try { psql(`DROP DATABASE IF EXISTS ${this.database} WITH (FORCE)`) } catch {}
    rmSync(this.dir, { recursive: true, force: true })
  }
}

/** haproxy in front of the nodes, configured from `scripts/haproxy.cfg.in` as `scripts/cluster`
 *  does: clients reconnect through it to whichever node is up. */
export class LoadBalancer {
  constructor (nodes) { this.nodes = nodes; this.proc = null; this.dir = mkdtempSync(join(tmpdir(), 'atelier-haproxy-')) }

  async start () {
    const port = await freePort()
    const template = readFileSync(new URL('../../../scripts/haproxy.cfg.in', import.meta.url), 'utf8')
    const servers = this.nodes.map((n, i) => `    server node-${i + 1} ${new URL(n.base).host} check`).join('\n')
    const cfg = join(this.dir, 'haproxy.cfg')
    writeFileSync(cfg, template.replace('{{PORT}}', String(port)) + servers + '\n')
    this.proc = spawn('haproxy', ['-f', cfg, '-db'], { stdio: ['ignore', 'ignore', 'inherit'] })
    this.base = `http://127.0.0.1:${port}`
    await until(async () => {
      try { return (await fetch(`${this.base}/api/v1/healthz`)).ok } catch { return false }
    }, 10000, 'haproxy up')
    return this
  }

  get wsUrl () { return this.base.replace('http://', 'ws://') + '/ws' }

  async stop () {
    if (this.proc && this.proc.exitCode === null) {
      const exited = new Promise((resolve) => this.proc.once('exit', resolve))
      this.proc.kill('SIGKILL')
      await exited
    }
    rmSync(this.dir, { recursive: true, force: true })
  }
}
