// Which peers a node should fetch a blob from (the store has already left out dead and
// quarantined holders): never the asker; complete replicas before partial, the asker's zone before others (but
// others too), least loaded first, shuffled among equals so that a fleet starting at once
// spreads over the holders instead of piling on the first.
import type { Candidate } from './model.js';

export interface LocateQuery {
  asker: string | undefined;
  zone: string | undefined;
  limit: number;
}

export function rankCandidates(
  candidates: Candidate[],
  query: LocateQuery,
  random: () => number = Math.random,
): Candidate[] {
  const eligible = candidates.filter((c) => c.node.id !== query.asker).map((c) => ({ c, tiebreak: random() }));
  const zoneRank = (c: Candidate): number => (query.zone !== undefined && c.node.zone === query.zone ? 0 : 1);
  eligible.sort(
    (a, b) =>
      Number(b.c.replica.complete) - Number(a.c.replica.complete) ||
      zoneRank(a.c) - zoneRank(b.c) ||
      b.c.node.freeUploadSlots - a.c.node.freeUploadSlots ||
      a.tiebreak - b.tiebreak,
  );
  return eligible.slice(0, query.limit).map((e) => e.c);
}
