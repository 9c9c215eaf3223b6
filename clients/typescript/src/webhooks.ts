// Verifying a webhook message as a receiver (Standard Webhooks): the signature is
// `v1,` + base64(HMAC-SHA256(key, "{webhook-id}.{webhook-timestamp}.{body}")), the key being the
// base64 after `whsec_` of the account's secret (GET /me/webhook-secret). Uses WebCrypto, so it
// runs in Node 18+ and browsers.

/** Messages older (or newer) than this are refused, against replays. */
export const TOLERANCE_S = 5 * 60

function base64ToBytes(b64: string): Uint8Array<ArrayBuffer> {
  const bin = atob(b64)
  const out = new Uint8Array(new ArrayBuffer(bin.length))
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i)
  return out
}

function bytesToBase64(bytes: ArrayBuffer): string {
  let bin = ''
  for (const b of new Uint8Array(bytes)) bin += String.fromCharCode(b)
  return btoa(bin)
}

/** Whether a received message is genuine and fresh. `headers` are the request's (lower-case). */
export async function verifyWebhook(
  secret: string,
  headers: Record<string, string | undefined>,
  body: string,
  nowS = Math.floor(Date.now() / 1000),
): Promise<boolean> {
  const id = headers['webhook-id']
  const timestamp = headers['webhook-timestamp']
  const signatures = headers['webhook-signature']
  if (!id || !timestamp || !signatures) return false
  if (Math.abs(nowS - Number(timestamp)) > TOLERANCE_S) return false
  const raw = base64ToBytes(secret.startsWith('whsec_') ? secret.slice(6) : secret)
  const key = await crypto.subtle.importKey('raw', raw, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign'])
  const mac = await crypto.subtle.sign('HMAC', key, new TextEncoder().encode(`${id}.${timestamp}.${body}`))
  const expected = `v1,${bytesToBase64(mac)}`
  return signatures.split(' ').some((s) => s === expected)
}
