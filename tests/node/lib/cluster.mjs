// A cluster of real `atelier serve` nodes for a test: a fresh PostgreSQL database, a Redis of
// the test's own (started on a free port, so a test can stop and restart it without touching
// anybody else's), a fresh key prefix, one shared objects directory, and N nodes from the one
// built binary. `LoadBalancer` is a small TCP round-robin proxy standing in for haproxy, so stock
// clients can reconnect "through the load balancer" to whichever node is alive.
import { spawn, execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
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
  /** `env`: extra settings for every node. */
  constructor ({ nodes = 3, env = {} } = {}) {
    this.size = nodes
    this.env = env
    this.dir = mkdtempSync(join(tmpdir(), 'atelier-cluster-'))
    this.database = `atelier_test_cluster_${randomUUID().replaceAll('-', '')}`
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
        ...this.env
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

/** Round-robin TCP proxy to the nodes that are up: what haproxy does in `scripts/cluster`. */
export class LoadBalancer {
  constructor (nodes) { this.nodes = nodes; this.next = 0; this.server = null; this.sockets = new Set() }

  async start () {
    this.server = createServer((client) => this.route(client))
    await new Promise((resolve) => this.server.listen(0, '127.0.0.1', resolve))
    this.base = `http://127.0.0.1:${this.server.address().port}`
    return this
  }

  get wsUrl () { return this.base.replace('http://', 'ws://') + '/ws' }

  route (client, attempts = this.nodes.length) {
    const alive = this.nodes.filter((n) => n.proc && n.proc.exitCode === null && n.base)
    if (alive.length === 0 || attempts === 0) { client.destroy(); return }
    const node = alive[this.next++ % alive.length]
    const { port } = new URL(node.base)
    const upstream = connect(Number(port), '127.0.0.1')
    this.sockets.add(client); this.sockets.add(upstream)
    upstream.on('error', () => client.destroy())
    client.on('error', () => upstream.destroy())
    upstream.on('close', () => { client.destroy(); this.sockets.delete(upstream) })
    client.on('close', () => { upstream.destroy(); this.sockets.delete(client) })
    client.pipe(upstream)
    upstream.pipe(client)
  }

  async stop () {
    for (const s of this.sockets) s.destroy()
    await new Promise((resolve) => this.server.close(resolve))
  }
}
