// The order in which a node should try a blob's holders: never the asker; complete replicas
// before partial, the asker's zone before others (but others too), least loaded first,
// shuffled among equals so that a fleet starting at once spreads over the holders instead of
// piling on the first. SQLite applies it in its query (ORDER BY … LIMIT); Redis applies it
// here to the bounded sample it reads.
import type { Candidate, LocateQuery } from './model.js';

export function rankCandidates(
  candidates: Candidate[],
  query: Pick<LocateQuery, 'asker' | 'zone' | 'limit'>,
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
