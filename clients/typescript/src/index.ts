// @atelier/client: a typed client for the Atelier HTTP API. See README.md.
export { AtelierClient } from './client'
export type { Answer, CallOptions, ClientOptions } from './client'
export { ApiError } from './errors'
export { verifyWebhook, TOLERANCE_S } from './webhooks'
export * from './types'
