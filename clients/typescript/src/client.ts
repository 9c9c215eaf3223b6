// The HTTP client: JSON under /api/v1, errors thrown as ApiError, and one typed method per
// operation of the public API. Authentication is the caller's: a bearer token (a login token or
// an API key, `atk_…`) given to the constructor, or a hook that adds headers per request (the
// studio's session cookie + CSRF header).

import { ApiError } from './errors'
import type {
  Account,
  ApiKey,
  Balance,
  CreatedApiKey,
  CreatedShareLink,
  Graph,
  GraphDocument,
  GraphPatch,
  JobRecord,
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
  RunJob,
  Scope,
  SessionView,
  ShareLink,
  UsageEntry,
  WebhookDelivery,
} from './types'

export interface ClientOptions {
  /** Where the API is: `https://studio.example/api/v1`, or `/api/v1` in a page. */
  baseUrl: string
  /** A bearer token: a login token or an API key. */
  token?: string | null
  /** Headers for one request (called each time), e.g. a CSRF header for cookie logins. */
  headers?: (method: string) => Record<string, string>
  /** `fetch`'s credentials mode (`same-origin` in the studio, for the cookie). */
  credentials?: RequestCredentials
  fetch?: typeof fetch
}

export interface CallOptions {
  body?: unknown
  /** Default `application/json` when there is a body. */
  contentType?: string
  /** A bearer token for this call only (`null`: none). */
  token?: string | null
  headers?: Record<string, string>
  signal?: AbortSignal
}

/** The body of an answer and its headers (for ETag, X-RateLimit-*). */
export interface Answer<T> {
  data: T
  status: number
  headers: Headers
}

export class AtelierClient {
  private readonly options: ClientOptions

  constructor(options: ClientOptions) {
    this.options = { ...options, baseUrl: options.baseUrl.replace(/\/$/, '') }
  }

  /** Any call: the parsed JSON body (null when empty), or an ApiError. */
  async request<T = unknown>(method: string, path: string, opts: CallOptions = {}): Promise<T> {
    return (await this.call<T>(method, path, opts)).data
  }

  /** As `request`, with the status and headers. */
  async call<T = unknown>(method: string, path: string, opts: CallOptions = {}): Promise<Answer<T>> {
    const headers: Record<string, string> = { ...(this.options.headers?.(method) ?? {}) }
    const token = opts.token === undefined ? this.options.token : opts.token
    if (token) headers.authorization = `Bearer ${token}`
    else if (opts.token === null) delete headers.authorization
    if (opts.body !== undefined) headers['content-type'] = opts.contentType ?? 'application/json'
    Object.assign(headers, opts.headers ?? {})
    const doFetch = this.options.fetch ?? fetch
    let res: Response
    try {
      res = await doFetch(`${this.options.baseUrl}${path}`, {
        method,
        headers,
        body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
        credentials: this.options.credentials,
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
      const retry = res.headers.get('retry-after')
      throw new ApiError(
        res.status,
        err?.code ?? `http_${res.status}`,
        err?.message ?? `${res.status} ${res.statusText || 'error'}`,
        json,
        retry === null ? null : Number(retry),
      )
    }
    return { data: json as T, status: res.status, headers: res.headers }
  }

  // ----- accounts -----
  login(email: string, password: string) {
    return this.request<LoginResponse>('POST', '/auth/login', { body: { email, password } })
  }
  me() {
    return this.request<Account>('GET', '/me')
  }
  usage(limit = 100) {
    return this.request<UsageEntry[]>('GET', `/me/usage?limit=${limit}`)
  }

  // ----- API keys (with a login) -----
  apiKeys() {
    return this.request<ApiKey[]>('GET', '/me/api-keys')
  }
  createApiKey(name: string, scopes: Scope[], expiresInS?: number) {
    const body: Record<string, unknown> = { name, scopes }
    if (expiresInS !== undefined) body.expires_in_s = expiresInS
    return this.request<CreatedApiKey>('POST', '/me/api-keys', { body })
  }
  revokeApiKey(id: string) {
    return this.request<null>('DELETE', `/me/api-keys/${encodeURIComponent(id)}`)
  }

  // ----- sessions -----
  sessions() {
    return this.request<SessionView[]>('GET', '/sessions')
  }
  createSession(title: string) {
    return this.request<SessionView>('POST', '/sessions', { body: { title } })
  }
  session(id: string) {
    return this.request<SessionView>('GET', `/sessions/${encodeURIComponent(id)}`)
  }
  members(session: string) {
    return this.request<Member[]>('GET', `/sessions/${encodeURIComponent(session)}/members`)
  }
  /** Invites an address: always a pending invitation (the answer is the same whether or not it has an account). */
  addMember(session: string, email: string, role: Role) {
    return this.request<MemberAdded>('POST', `/sessions/${encodeURIComponent(session)}/members`, { body: { email, role } })
  }
  changeMemberRole(session: string, account: string, role: Role) {
    return this.request<Member>('PATCH', `/sessions/${encodeURIComponent(session)}/members/${encodeURIComponent(account)}`, { body: { role } })
  }
  invitations(session: string) {
    return this.request<Invitation[]>('GET', `/sessions/${encodeURIComponent(session)}/invitations`)
  }
  /** An invitation link; `maxUses` 1 makes it single-use, none any number until it expires or is revoked. */
  createInvitation(session: string, role: Role, options: { expiresInS?: number; maxUses?: number } = {}) {
    const body: Record<string, unknown> = { role }
    if (options.expiresInS !== undefined) body.expires_in_s = options.expiresInS
    if (options.maxUses !== undefined) body.max_uses = options.maxUses
    return this.request<CreatedInvitation>('POST', `/sessions/${encodeURIComponent(session)}/invitations`, { body })
  }
  revokeInvitation(session: string, invitation: string) {
    return this.request<null>('DELETE', `/sessions/${encodeURIComponent(session)}/invitations/${encodeURIComponent(invitation)}`)
  }
  versions(session: string, page: { limit?: number; offset?: number } = {}) {
    const q = new URLSearchParams()
    if (page.limit !== undefined) q.set('limit', String(page.limit))
    if (page.offset !== undefined) q.set('offset', String(page.offset))
    const qs = q.toString()
    return this.request<VersionList>('GET', `/sessions/${encodeURIComponent(session)}/versions${qs ? `?${qs}` : ''}`)
  }
  version(session: string, version: string) {
    return this.request<VersionContent>('GET', `/sessions/${encodeURIComponent(session)}/versions/${encodeURIComponent(version)}`)
  }
  nameVersion(session: string, name: string) {
    return this.request<VersionRecord>('POST', `/sessions/${encodeURIComponent(session)}/versions`, { body: { name } })
  }
  restoreVersion(session: string, version: string) {
    return this.request<RestoredVersion>('POST', `/sessions/${encodeURIComponent(session)}/versions/${encodeURIComponent(version)}/restore`)
  }
  invitation(token: string) {
    return this.request<InvitationPreview>('GET', `/invitations/${encodeURIComponent(token)}`)
  }
  acceptInvitation(token: string) {
    return this.request<AcceptedInvitation>('POST', `/invitations/${encodeURIComponent(token)}/accept`)
  }
  /** Pending email invitations addressed to the caller. */
  myInvitations() {
    return this.request<InvitationToMe[]>('GET', '/me/invitations')
  }
  acceptMyInvitation(invitation: string) {
    return this.request<AcceptedInvitation>('POST', `/me/invitations/${encodeURIComponent(invitation)}/accept`)
  }
  declineMyInvitation(invitation: string) {
    return this.request<null>('POST', `/me/invitations/${encodeURIComponent(invitation)}/decline`)
  }
  shareLinks(session: string) {
    return this.request<ShareLink[]>('GET', `/sessions/${encodeURIComponent(session)}/share-links`)
  }
  createShareLink(session: string, expiresInS?: number) {
    const body: Record<string, unknown> = { role: 'viewer' }
    if (expiresInS !== undefined) body.expires_in_s = expiresInS
    return this.request<CreatedShareLink>('POST', `/sessions/${encodeURIComponent(session)}/share-links`, { body })
  }

  // ----- the graph over REST -----
  /** The graph with its version (also the ETag). */
  graph(session: string) {
    return this.request<GraphDocument>('GET', `/sessions/${encodeURIComponent(session)}/graph`)
  }
  /** Replaces the graph; with `ifMatch` only if it is still at that version (else 412). */
  putGraph(session: string, graph: Graph, ifMatch?: string) {
    return this.request<GraphDocument>('PUT', `/sessions/${encodeURIComponent(session)}/graph`, {
      body: graph,
      headers: ifMatch ? { 'if-match': `"${ifMatch}"` } : {},
    })
  }
  /** Changes the graph with a JSON Merge Patch; `ifMatch` as for `putGraph`. */
  patchGraph(session: string, patch: GraphPatch, ifMatch?: string) {
    return this.request<GraphDocument>('PATCH', `/sessions/${encodeURIComponent(session)}/graph`, {
      body: patch,
      contentType: 'application/merge-patch+json',
      headers: ifMatch ? { 'if-match': `"${ifMatch}"` } : {},
    })
  }

  // ----- jobs -----
  runJob(session: string, run: RunJob = {}) {
    return this.request<JobRecord>('POST', `/sessions/${encodeURIComponent(session)}/jobs`, { body: run })
  }
  jobs(session: string) {
    return this.request<JobRecord[]>('GET', `/sessions/${encodeURIComponent(session)}/jobs`)
  }
  job(id: string) {
    return this.request<JobRecord>('GET', `/jobs/${encodeURIComponent(id)}`)
  }
  cancelJob(id: string) {
    return this.request<{ job_id: string; cancelling: boolean }>('POST', `/jobs/${encodeURIComponent(id)}/cancel`)
  }
  webhookDeliveries(job: string) {
    return this.request<WebhookDelivery[]>('GET', `/jobs/${encodeURIComponent(job)}/webhook-deliveries`)
  }
  webhookSecret() {
    return this.request<{ secret: string }>('GET', '/me/webhook-secret')
  }

  // ----- billing -----
  prices() {
    return this.request<Prices>('GET', '/billing/prices')
  }
  balance() {
    return this.request<Balance>('GET', '/billing/balance')
  }
}
