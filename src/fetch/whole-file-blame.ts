// Who a file that fails its whole-file check is put on (the engine's digest check, and a
// follower's check against the digest its leader published): a piece check names the one
// source of a bad piece, a whole-file check only says some byte is wrong. The bytes are put on
// a peer only when one peer alone sent every byte that came from peers in this run and none
// came from an earlier run. The origin's bytes are taken as right only when they passed the
// same piece checks as the peer's (a manifest, or the lease holder's piece digests): unchecked
// (a known digest without a manifest), they may be the wrong ones. A URL's bytes change (an S3
// key overwritten, a Hub branch moved on since the leader fetched it), and a pin may name other
// bytes than the URL's (a digest pasted from another file the fleet holds): an honest holder
// that sent the digest's true pieces would be reported for the origin's.
// With several peers, which one lied cannot be told, and none is blamed: reporting all would
// count honest peers that relayed the same bytes against them (three reporters quarantine a
// replica) while the liar is one of them.

/** A source that wrote `bytes` into the download in this run. */
export interface Writer {
  id: string;
  peer: boolean;
  bytes: number;
}

export interface WholeFileBlame {
  /** The peer the bad bytes are put on (the caller drops and reports it), if any. */
  culprit: string | undefined;
  /** What the error says of where the bytes came from. */
  said: string;
}

export interface BlameContext {
  /** Bytes on disk from an earlier run, whose sender is not known. */
  resumedBytes: number;
  /** Every piece written in this run, the origin's too, passed a check against piece digests. */
  piecesChecked: boolean;
}

export function wholeFileBlame(writers: readonly Writer[], context: BlameContext): WholeFileBlame {
  const { resumedBytes, piecesChecked } = context;
  const peers = writers.filter((w) => w.peer && w.bytes > 0);
  const origin = writers.filter((w) => !w.peer).reduce((sum, w) => sum + w.bytes, 0);
  const fromOrigin = origin > 0 ? `, ${origin} from the origin` : '';
  if (peers.length === 0) return { culprit: undefined, said: 'every byte came from the origin, none from a peer' };
  if (peers.length === 1 && resumedBytes === 0 && (origin === 0 || piecesChecked)) {
    const [peer] = peers;
    return {
      culprit: peer!.id,
      said: `peer ${peer!.id} sent every byte that came from peers (${peer!.bytes}${fromOrigin}): it served bytes that miss the digest, and is dropped as a peer that sent bad bytes`,
    };
  }
  const unchecked = peers.length === 1 && resumedBytes === 0 ? ' (unchecked: they may be the wrong ones)' : '';
  const list = peers.map((p) => `${p.id} (${p.bytes})`).join(', ');
  const resumed = resumedBytes > 0 ? `, ${resumedBytes} from an earlier run` : '';
  return {
    culprit: undefined,
    said: `the bytes came from peers ${list}${fromOrigin}${unchecked}${resumed}: a whole-file check cannot tell which sent bad ones, so none is blamed`,
  };
}
