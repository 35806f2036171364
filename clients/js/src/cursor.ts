// Per-room position in the room's log, and gap detection from prevSeq
// (docs/protocol.md, Ordering, seq and recovery). Pure: the client feeds it
// events and acts on its verdicts.

/** What to do with an event of a room's log. */
export type Verdict =
  /** in order: apply it */
  | 'apply'
  /** already seen (seq at or below the last one): drop it */
  | 'duplicate'
  /** prevSeq shows missed events: drop it, rejoin with lastSeq (the replay brings it back) */
  | 'gap'
  /** a repair is under way: drop it, the replay brings it */
  | 'hold'
  /** first event after a resync_required the server could not fill: apply it, then fetch what lies between over REST */
  | 'rebase';

/**
 * SeqCursor follows one room's log. `last` is the seq of the newest event
 * applied, or undefined while unknown (before the first join ack).
 */
export class SeqCursor {
  last: number | undefined;
  private state: 'live' | 'repairing' | 'rebase' = 'live';
  /** For 'rebase': the last seq held before the hole. */
  rebaseFrom: number | undefined;

  constructor(last?: number) {
    this.last = last;
  }

  /** Whether a rejoin is under way (events are being dropped until its ack). */
  get repairing(): boolean {
    return this.state === 'repairing';
  }

  /** Judges an event with seq and optional prevSeq; updates last when it applies. */
  accept(seq: number, prevSeq: number | undefined): Verdict {
    if (this.last !== undefined && seq <= this.last) return 'duplicate';
    if (this.state === 'repairing') return 'hold';
    if (this.state === 'rebase') {
      this.state = 'live';
      this.last = seq;
      return 'rebase';
    }
    if (this.last !== undefined && prevSeq !== undefined && prevSeq !== this.last) {
      this.state = 'repairing';
      return 'gap';
    }
    this.last = seq;
    return 'apply';
  }

  /** A join was sent to repair (or resume) the room: drop events until joined() is called. */
  startRepair(): void {
    this.state = 'repairing';
  }

  /**
   * The join's ack arrived. Without a known position the ack's lastSeq (the
   * room's newest seq, null when empty) becomes it: live events follow it.
   */
  joined(ackLastSeq: number | null, sentLastSeq: number | undefined): void {
    if (sentLastSeq === undefined && this.last === undefined) this.last = ackLastSeq ?? -1;
    if (this.state === 'repairing') this.state = 'live';
  }

  /**
   * resync_required: the server replayed up to fromSeq and cannot give the
   * rest. With retry (retryAfterMs) the caller rejoins later; without, the
   * next live event is taken as is and the hole is filled over REST.
   */
  resync(fromSeq: number, retry: boolean): void {
    if (this.last === undefined || fromSeq > this.last) this.last = fromSeq;
    if (retry) {
      this.state = 'repairing';
    } else {
      this.state = 'rebase';
      this.rebaseFrom = this.last;
    }
  }
}
