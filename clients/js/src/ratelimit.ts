/**
 * A token bucket for outgoing frames: the gateway allows 20 frames/s with
 * bursts of 50 per connection (RATE_LIMITED beyond), so the client paces
 * itself a little below that instead of collecting errors, e.g. when it
 * rejoins many rooms and resends its unacked messages after a reconnect.
 */
export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(
    private readonly ratePerSec: number,
    private readonly burst: number,
    private readonly now: () => number = Date.now,
  ) {
    this.tokens = burst;
    this.last = now();
  }

  /** Takes a token when one is available; otherwise returns the ms to wait for one. */
  take(): number {
    const t = this.now();
    this.tokens = Math.min(this.burst, this.tokens + ((t - this.last) * this.ratePerSec) / 1000);
    this.last = t;
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return 0;
    }
    return Math.ceil(((1 - this.tokens) * 1000) / this.ratePerSec);
  }

  /** Refills completely (a new connection has a new budget). */
  reset(): void {
    this.tokens = this.burst;
    this.last = this.now();
  }
}
