// The HTTP API client: JSON under /api/v1, errors as {"error":{"code","message"}}.
// Authenticates with the bearer token kept in sessionStorage (from login, or a share link's
// token); without one the session cookie is used, and changes then echo the CSRF cookie.

const TOKEN_KEY = 'atelier_token'
const CSRF_KEY = 'atelier_csrf'

export class ApiError extends Error {
  status: number
  code: string
  body: unknown
  constructor(status: number, code: string, message: string, body: unknown) {
    super(message)
    this.status = status
    this.code = code
    this.body = body
  }

  /** The route itself does not exist on this server (a feature not deployed yet). */
  get notAvailable(): boolean {
    return this.status === 404 && (this.message.startsWith('no API route') || this.code === 'no_route')
  }

  get insufficientCredits(): boolean {
    return this.code === 'insufficient_credits' || (this.status === 402 && this.code !== 'payment_required')
  }

  /** A job was refused because the session has no running Pro runtime. */
  get needsRuntime(): boolean {
    return this.code === 'payment_required'
  }
}

export function getToken(): string | null {
  try {
    return sessionStorage.getItem(TOKEN_KEY)
  } catch {
    return null
  }
}

export function setLogin(token: string | null, csrf: string | null): void {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token)
    else sessionStorage.removeItem(TOKEN_KEY)
    if (csrf) sessionStorage.setItem(CSRF_KEY, csrf)
    else sessionStorage.removeItem(CSRF_KEY)
  } catch {
    /* storage disabled: the cookie still works */
  }
}

function csrfToken(): string | null {
  const m = document.cookie.match(/(?:^|;\s*)atelier_csrf=([^;]+)/)
  if (m) return decodeURIComponent(m[1])
  try {
    return sessionStorage.getItem(CSRF_KEY)
  } catch {
    return null
  }
}

export interface RequestOptions {
  /** A token to use instead of the stored one (share links). */
  token?: string | null
  signal?: AbortSignal
}

export function authHeaders(token?: string | null, method = 'GET'): Record<string, string> {
  const headers: Record<string, string> = {}
  const t = token === undefined ? getToken() : token
  if (t) headers.authorization = `Bearer ${t}`
  if (method !== 'GET' && method !== 'HEAD') {
    const csrf = csrfToken()
    if (csrf) headers['x-csrf-token'] = csrf
  }
  return headers
}

export async function api<T = unknown>(
  method: string,
  path: string,
  body?: unknown,
  opts: RequestOptions = {},
): Promise<T> {
  const headers = authHeaders(opts.token, method)
  if (body !== undefined) headers['content-type'] = 'application/json'
  let res: Response
  try {
    res = await fetch(`/api/v1${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'same-origin',
      signal: opts.signal,
    })
  } catch (e) {
    if ((e as Error).name === 'AbortError') throw e
    throw new ApiError(0, 'network', 'The server cannot be reached. Check your connection.', null)
  }
  const text = await res.text()
  let json: unknown = null
  if (text) {
    try {
      json = JSON.parse(text)
    } catch {
      json = null
    }
  }
  if (!res.ok) {
    const err = (json as { error?: { code?: string; message?: string } } | null)?.error
    throw new ApiError(
      res.status,
      err?.code ?? `http_${res.status}`,
      err?.message ?? `${res.status} ${res.statusText || 'error'}`,
      json,
    )
  }
  return json as T
}

/** A message for the page: the server's own words where there are any. */
export function errorMessage(e: unknown): string {
  if (e instanceof ApiError) {
    if (e.status === 401) return `Not signed in or the link is no longer valid: ${e.message}`
    return e.message
  }
  if (e instanceof Error) return e.message
  return String(e)
}

/** Extra details a 4xx body may carry (e.g. which nodes make a graph invalid). */
export function errorDetails(e: unknown): string[] {
  if (!(e instanceof ApiError)) return []
  const err = (e.body as { error?: Record<string, unknown> } | null)?.error
  if (!err) return []
  const out: string[] = []
  for (const key of ['details', 'errors', 'problems', 'issues']) {
    const v = err[key]
    if (Array.isArray(v)) {
      for (const item of v) {
        if (typeof item === 'string') out.push(item)
        else if (item && typeof item === 'object') {
          const o = item as Record<string, unknown>
          const where = o.node_id ?? o.node ?? o.edge_id ?? o.field
          const msg = o.message ?? o.error ?? JSON.stringify(o)
          out.push(where ? `${String(where)}: ${String(msg)}` : String(msg))
        }
      }
    }
  }
  const nodeId = err.node_id
  if (typeof nodeId === 'string' && out.length === 0) out.push(`node ${nodeId}`)
  return out
}

// ----- shapes (see src/api/*.rs) -----

export type Role = 'owner' | 'editor' | 'viewer'

export interface Account {
  id: string
  email: string
  name: string
  /** `admin` operates the server (the admin page). */
  role?: 'user' | 'admin'
  suspended_at?: number
  created_at: number
}

export interface GpuPrice {
  gpu_class: string
  price_per_minute: number
}

export interface Prices {
  max_prepaid_minutes: number
  prices: GpuPrice[]
}

export interface Balance {
  balance: number
  held: number
  available: number
}

export interface CreditPack {
  name: string
  credits: number
  price: number
  currency: string
}

export interface StatementLine {
  at: number
  kind: string
  description: string
  amount: number
  balance_after: number
  session_id?: string
  session_title?: string
  lease_id?: string
  gpu_class?: string
  used_ms?: number
  open: boolean
  note?: string
}

export interface RuntimeUsage {
  session_id: string
  session_title?: string
  gpu_class: string
  day: string
  used_ms: number
  charged: number
}

export interface LoginResponse {
  token: string
  csrf_token: string
  account: Account
}

export interface SessionView {
  id: string
  title: string
  owner_id: string
  created_at: number
  updated_at: number
  role: Role
}

export interface Member {
  account_id: string
  email: string
  name: string
  role: Role
  added_at: number
}

export interface ShareLink {
  id: string
  session_id: string
  role: Role
  created_by: string
  created_at: number
  expires_at: number | null
  revoked_at: number | null
}

export interface CreatedShareLink {
  id: string
  token: string
  url: string
  expires_at: number | null
}

export interface UsageEntry {
  method: string
  route: string
  status: number
  duration_ms: number
  at: number
}
