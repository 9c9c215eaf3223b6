// The studio's side of the HTTP API: every REST call goes through the typed client package
// (@atelier/client, clients/typescript), the one published for scripts and integrations.
// Authenticates with the bearer token kept in sessionStorage (from login, or a share link's
// token); without one the session cookie is used, and changes then echo the CSRF cookie.

import { AtelierClient, ApiError } from '@atelier/client'

export { ApiError }

const TOKEN_KEY = 'atelier_token'
const CSRF_KEY = 'atelier_csrf'

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

/** The studio's client: the stored bearer token when there is one, else the session cookie
 *  with the CSRF header on changes. */
export const client = new AtelierClient({
  baseUrl: '/api/v1',
  credentials: 'same-origin',
  headers: (method) => authHeaders(undefined, method),
})

/** One API call through the client (`opts.token` replaces the stored token, e.g. a share link). */
export async function api<T = unknown>(
  method: string,
  path: string,
  body?: unknown,
  opts: RequestOptions = {},
): Promise<T> {
  return client.request<T>(method, path, {
    body,
    signal: opts.signal,
    token: opts.token,
  })
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

// ----- shapes: the client package's (the OpenAPI document's) -----

export type {
  Account,
  ApiKey,
  Balance,
  CreatedApiKey,
  CreatedShareLink,
  CreditPack,
  GpuPrice,
  LoginResponse,
  Member,
  VersionList,
  VersionContent,
  VersionRecord,
  RestoredVersion,
  MemberAdded,
  Invitation,
  CreatedInvitation,
  InvitationPreview,
  InvitationToMe,
  AcceptedInvitation,
  Prices,
  Role,
  RuntimeUsage,
  Scope,
  SessionView,
  ShareLink,
  StatementLine,
  UsageEntry,
} from '@atelier/client'
