import { initials } from '../lib/format'
import type { Participant } from './useLiveDoc'

export function Presence({ participants }: { participants: Participant[] }) {
  return (
    <section className="presence" aria-label="People in this session">
      <ul className="avatars">
        {participants.map((p) => (
          <li key={p.clientId} className="avatar-item" data-participant={p.name} data-self={p.self || undefined}>
            <span className="avatar" style={{ background: p.color }} aria-hidden="true" title={`${p.name}${p.role ? ` (${p.role})` : ''}`}>
              {initials(p.name)}
            </span>
            <span className="avatar-name">
              {p.name}
              {p.self ? ' (you)' : ''}
              {p.role === 'viewer' ? ' · viewing' : ''}
            </span>
          </li>
        ))}
      </ul>
      <span className="sr-only" aria-live="polite">
        {participants.length} {participants.length === 1 ? 'person' : 'people'} here
      </span>
    </section>
  )
}
