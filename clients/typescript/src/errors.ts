// Every error answer of the API is {"error": {"code", "message"}} (the OpenAPI document's
// `Error` schema); the client throws it as an ApiError.

export class ApiError extends Error {
  /** The HTTP status; 0 when the server could not be reached. */
  status: number
  /** The machine-readable code (`insufficient_scope`, `precondition_failed`, …). */
  code: string
  body: unknown
  /** Seconds to wait, from `Retry-After` (429). */
  retryAfter: number | null

  constructor(status: number, code: string, message: string, body: unknown, retryAfter: number | null = null) {
    super(message)
    this.name = 'ApiError'
    this.status = status
    this.code = code
    this.body = body
    this.retryAfter = retryAfter
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

  /** A conditional write (`If-Match`) found the graph moved on. */
  get versionConflict(): boolean {
    return this.status === 412
  }

  /** An API key lacks the scope the endpoint declares. */
  get insufficientScope(): boolean {
    return this.code === 'insufficient_scope'
  }
}
