// Hocuspocus (`@hocuspocus/server`) with its SQLite extension, default settings (the document is
// stored 2 s after the last change, at most 10 s after the first, and at once when its last
// client leaves):
//
//   node hocuspocus.mjs <data dir>
//
// Listens on 127.0.0.1 on a free port and prints `hocuspocus listening on http://127.0.0.1:<port>`.
// The URL path does not matter: every message starts with the document's name
// (`varString(name)`), and a connection's first message for a document must be an auth message
// (`name, 2, 0, varString(token)`; no `onAuthenticate` hook here, so any token passes). On
// SIGTERM/SIGINT it closes every connection (which stores every loaded document), then waits for
// SQLite's pending writes before exiting.
import { mkdirSync } from 'node:fs'
import { Server } from '@hocuspocus/server'
import { SQLite } from '@hocuspocus/extension-sqlite'

const dir = process.argv[2]
if (!dir) {
  console.error('usage: node hocuspocus.mjs <data dir>')
  process.exit(2)
}
mkdirSync(dir, { recursive: true })
const sqlite = new SQLite({ database: `${dir}/hocuspocus.sqlite` })
const server = new Server({
  port: 0,
  quiet: true,
  // The handler below stops it: Hocuspocus' own exits before SQLite has written the last store.
  stopOnSignals: false,
  extensions: [sqlite],
})
await server.listen()
console.log(`hocuspocus listening on http://127.0.0.1:${server.address.port}`)

let stopping = false
const stop = async () => {
  if (stopping) return
  stopping = true
  await server.destroy()
  // node-sqlite3 runs `close` after the statements already queued (the extension does not await
  // its upserts).
  await new Promise((resolve) => sqlite.db.close(resolve))
  process.exit(0)
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
