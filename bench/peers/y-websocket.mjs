// The y-websocket reference server (`@y/websocket-server`) with y-leveldb persistence, as
// `YPERSISTENCE=<dir> npx y-websocket` runs it, on a port the bench can read back:
//
//   node y-websocket.mjs <data dir>
//
// Listens on 127.0.0.1 on a free port and prints `y-websocket listening on http://127.0.0.1:<port>`.
// A document is the URL path (`ws://…/<name>`). Every update is appended to LevelDB as it is
// applied (`y-leveldb` `storeUpdate`, merged every 500 updates). On SIGTERM/SIGINT it closes every
// socket and waits for LevelDB's pending writes before exiting, so a restarted server finds every
// acknowledged update (the bench's cold-sync and reconnect-storm scenarios restart it).
import { mkdirSync } from 'node:fs'
import http from 'node:http'
import { WebSocketServer } from 'ws'

const dir = process.argv[2]
if (!dir) {
  console.error('usage: node y-websocket.mjs <data dir>')
  process.exit(2)
}
mkdirSync(dir, { recursive: true })
// The server module reads YPERSISTENCE when it loads: set it first, then import.
process.env.YPERSISTENCE = dir
const { setupWSConnection, getPersistence } = await import('@y/websocket-server/utils')

const wss = new WebSocketServer({ noServer: true })
wss.on('connection', setupWSConnection)
const server = http.createServer((_request, response) => {
  response.writeHead(200, { 'Content-Type': 'text/plain' })
  response.end('okay')
})
server.on('upgrade', (request, socket, head) => {
  wss.handleUpgrade(request, socket, head, (ws) => wss.emit('connection', ws, request))
})
server.listen(0, '127.0.0.1', () => {
  console.log(`y-websocket listening on http://127.0.0.1:${server.address().port}`)
})

let stopping = false
const stop = async () => {
  if (stopping) return
  stopping = true
  server.close()
  for (const ws of wss.clients) ws.terminate()
  // `destroy` is queued behind every pending LevelDB transaction, then closes the database.
  await getPersistence().provider.destroy()
  process.exit(0)
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
