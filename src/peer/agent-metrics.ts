// Prometheus metrics of the node agent (prom-client, its own registry): body bytes served to
// peers, uploads in flight, and requests refused by reason, so an operator sees whether a
// node is a useful peer or mostly says no.
import { Counter, Gauge, Registry } from 'prom-client';

/** Why the agent said no: the `reason` label of loom_agent_refusals_total. */
export type RefusalReason = 'unauthorized' | 'bad_request' | 'not_found' | 'pieces_missing' | 'range' | 'busy';

export class AgentMetrics {
  readonly registry = new Registry();
  readonly bytesServed: Counter;
  readonly uploadsInFlight: Gauge;
  readonly refusals: Counter<'reason'>;

  constructor() {
    this.bytesServed = new Counter({
      name: 'loom_agent_bytes_served_total',
      help: 'Blob body bytes sent to peers',
      registers: [this.registry],
    });
    this.uploadsInFlight = new Gauge({
      name: 'loom_agent_uploads_in_flight',
      help: 'Blob bodies being sent now',
      registers: [this.registry],
    });
    this.refusals = new Counter({
      name: 'loom_agent_refusals_total',
      help: 'Blob requests refused, by reason',
      labelNames: ['reason'],
      registers: [this.registry],
    });
  }
}
