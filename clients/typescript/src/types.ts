// The API's shapes, as the OpenAPI document (GET /api/v1/openapi.json) declares them. Kept by
// hand next to the server's DTOs (src/http/api/*.rs, src/db/*.rs); tests/node checks the document.

export type Role = 'owner' | 'editor' | 'viewer'

export type Scope = 'sessions:read' | 'sessions:write' | 'jobs:run' | 'billing:read'
export const SCOPES: readonly Scope[] = ['sessions:read', 'sessions:write', 'jobs:run', 'billing:read']

export interface Account {
  id: string
  email: string
  name: string
  /** `admin` operates the server (the admin page). */
  role?: 'user' | 'admin'
  suspended_at?: number
  created_at: number
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

/** What adding a member answers: the same whether or not the address has an account (a pending
 * email invitation either way). */
export interface MemberAdded {
  email: string
  role: Role
  invited: true
}

/** An invitation link, or a pending invitation by email (accepted by an account with that
 * address from its dashboard, or at signup). */
export interface Invitation {
  id: string
  session_id: string
  role: Role
  kind: 'link' | 'email'
  email: string | null
  created_by: string | null
  created_at: number
  expires_at: number | null
  max_uses: number | null
  uses: number
  revoked_at: number | null
}

/** A new invitation link; `token` and `url` are shown once. */
export interface CreatedInvitation extends Invitation {
  token: string
  url: string
}

export interface InvitationPreview {
  session_id: string
  session_title: string
  role: Role
  expires_at: number | null
  /** The caller is already a member with at least this role (accepting changes nothing). */
  member: boolean
}

/** One event of the account's live channel (`GET /me/events`, server-sent events). */
export type AccountEvent =
  | { type: 'ready' }
  | { type: 'membership.added'; session_id: string; role: Role }
  | { type: 'membership.changed'; session_id: string; role: Role }
  | { type: 'membership.removed'; session_id: string }
  | { type: 'invitation.received'; invitation_id: string; session_id: string }
  | { type: 'invitation.withdrawn'; invitation_id: string; session_id: string }

/** A pending email invitation addressed to the caller (`GET /me/invitations`). */
export interface InvitationToMe {
  id: string
  session_id: string
  session_title: string
  role: Role
  invited_by: string | null
  created_at: number
  expires_at: number | null
}

export interface AcceptedInvitation {
  session_id: string
  role: Role
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
  /** The API key that made the request (absent: a login). */
  api_key_id?: string
}

export interface ApiKey {
  id: string
  name: string
  scopes: Scope[]
  /** The secret's first characters, to tell keys apart. */
  prefix: string
  created_at: number
  last_used_at: number | null
  expires_at: number | null
  revoked_at: number | null
  /** Requests made with the key in the last 24 hours. */
  requests_24h: number
}

export interface CreatedApiKey extends ApiKey {
  /** Shown once: only its hash is stored. */
  secret: string
}

export interface GraphNode {
  type: string
  x?: number
  y?: number
  params?: Record<string, unknown>
  [field: string]: unknown
}

export interface GraphEdge {
  source: string
  source_port: string
  target: string
  target_port: string
}

export interface Graph {
  nodes: Record<string, GraphNode>
  edges: Record<string, GraphEdge>
}

export interface GraphDocument extends Graph {
  /** The document's state vector (base64url): the ETag, for `If-Match`. */
  version: string
}

/** A JSON Merge Patch of a graph (RFC 7396): `null` removes. */
export type GraphPatch = {
  nodes?: Record<string, Partial<Record<keyof GraphNode, unknown>> | null>
  edges?: Record<string, Partial<GraphEdge> | null>
}

export type WebhookEvent = 'started' | 'progress' | 'completed' | 'failed' | 'cancelled'

export interface WebhookSpec {
  url: string
  events: WebhookEvent[]
}

export interface RunJob {
  nodes?: string[]
  webhook?: WebhookSpec
}

export type JobStatus = 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled'

export interface JobRecord {
  id: string
  session_id: string
  account_id: string
  status: JobStatus
  plan: unknown
  worker_id: string | null
  device: string | null
  error: string | null
  outputs: string[]
  created_at: number
  started_at: number | null
  finished_at: number | null
  /** Set for the variations of a `{"batch": n}` run. */
  batch: BatchPlace | null
}

/** A job's place in a batch: the batch's id (shared by its jobs) and the variation's index. */
export interface BatchPlace {
  id: string
  index: number
}

export interface DeliveryAttempt {
  attempt: number
  at: number
  status_code: number | null
  error: string | null
  latency_ms: number
}

export interface WebhookDelivery {
  id: string
  event: WebhookEvent
  url: string
  status: 'pending' | 'delivered' | 'failed'
  attempts: number
  created_at: number
  next_attempt_at: number | null
  finished_at: number | null
  payload: unknown
  attempt_log: DeliveryAttempt[]
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

/** A kept version of a session's document. */
export interface VersionRecord {
  id: string
  session_id: string
  kind: 'auto' | 'named' | 'job' | 'restore'
  name: string | null
  created_by: { account_id: string; name: string } | null
  authors: string[]
  restored_from: string | null
  jobs: string[]
  size_bytes: number
  created_at: number
}

export interface VersionList {
  versions: VersionRecord[]
  next_offset: number | null
  storage: { versions: number; bytes: number; max_bytes: number }
}

/** A version with its graph (`{nodes, edges}`) and its document state (base64). */
export interface VersionContent extends VersionRecord {
  graph: { nodes: Record<string, GraphNodeJson>; edges: Record<string, GraphEdgeJson> }
  state: string
}

export interface GraphNodeJson {
  type: string
  x: number
  y: number
  params: Record<string, unknown>
}

export interface GraphEdgeJson {
  source: string
  source_port: string
  target: string
  target_port: string
}

export interface RestoredVersion {
  /** The `restore` version: the document right after it. */
  version: VersionRecord
  /** The version just before: restore it to undo the restore. */
  undo: string
}
