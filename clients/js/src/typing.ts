// Typing renewals (docs/protocol.md, typing_start): typing_start makes the
// user a typist for 5 s and a repeat within that renews it silently, so
// while the user keeps typing we renew every renewMs, and after idleMs
// without a keystroke we send typing_stop.

export interface TypingTimers {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const realTimers: TypingTimers = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
};

/** TypingNotifier decides when to send typing_start and typing_stop for one user in many rooms. */
export class TypingNotifier {
  private rooms = new Map<string, { sentAt: number; idle: unknown }>();

  constructor(
    private readonly emit: (event: 'typing_start' | 'typing_stop', roomId: string) => void,
    private readonly opts: { renewMs: number; idleMs: number } = { renewMs: 2500, idleMs: 3000 },
    private readonly timers: TypingTimers = realTimers,
  ) {}

  /** Call on every keystroke: starts or renews typing, and schedules the stop after idleMs. */
  keystroke(roomId: string): void {
    const now = this.timers.now();
    const st = this.rooms.get(roomId);
    if (st) this.timers.clearTimeout(st.idle);
    const idle = this.timers.setTimeout(() => this.stop(roomId), this.opts.idleMs);
    if (!st || now - st.sentAt >= this.opts.renewMs) {
      this.rooms.set(roomId, { sentAt: now, idle });
      this.emit('typing_start', roomId);
    } else {
      st.idle = idle;
    }
  }

  /** Ends typing now (input cleared, room left); sends typing_stop only when typing. */
  stop(roomId: string): void {
    const st = this.rooms.get(roomId);
    if (!st) return;
    this.timers.clearTimeout(st.idle);
    this.rooms.delete(roomId);
    this.emit('typing_stop', roomId);
  }

  /**
   * Forgets typing without a stop: the server ended it already (a message
   * sent on the same connection, or the connection closed).
   */
  reset(roomId?: string): void {
    for (const [id, st] of this.rooms) {
      if (roomId !== undefined && id !== roomId) continue;
      this.timers.clearTimeout(st.idle);
      this.rooms.delete(id);
    }
  }

  isTyping(roomId: string): boolean {
    return this.rooms.has(roomId);
  }
}
