// The messages of one room as a user sees them: history pages and live
// events merged by seq without duplicates, edits and deletions applied, and
// the user's own sends shown at once (optimistic) until the server stores
// them. Pure data; the client feeds it and renders snapshots.

import type { Message, MessageDeleted, MessageEdited, MessageType } from './types.js';

/** A send the server has not stored yet. */
export interface PendingMessage {
  clientMsgId: string;
  roomId: string;
  userId: string;
  username: string;
  content: string;
  type: MessageType;
  metadata?: Record<string, unknown>;
  /** local time of the send */
  createdAt: string;
  /** sending: in flight or waiting to be resent; failed: refused for good (retry() sends it again) */
  state: 'sending' | 'failed';
  error?: { code: string; message: string };
}

/** An entry of a timeline snapshot: a stored message or a pending send. */
export type TimelineItem =
  | ({ pending: false } & Message)
  | ({ pending: true; id: string; seq: undefined } & PendingMessage);

interface Override {
  content?: string;
  editedAt?: string;
  deletedAt?: string;
}

export class Timeline {
  private byId = new Map<string, Message>();
  private sorted: Message[] = [];
  private dirty = false;
  private pending = new Map<string, PendingMessage>();
  private overrides = new Map<string, Override>();
  private snapshot: TimelineItem[] | null = null;
  /** Bumped on every change: cheap change detection for UIs. */
  version = 0;
  /** Whether older history exists beyond what is loaded (false once the first message is loaded). */
  hasMoreOlder = true;
  /** Whether any history page was loaded. */
  loaded = false;

  /** Seq of the oldest stored message held, undefined when none. */
  get oldestSeq(): number | undefined {
    return this.list()[0]?.seq;
  }

  /** Seq of the newest stored message held, undefined when none. */
  get newestSeq(): number | undefined {
    const s = this.list();
    return s[s.length - 1]?.seq;
  }

  /** Stored messages in seq order. */
  list(): readonly Message[] {
    if (this.dirty) {
      this.sorted.sort((a, b) => a.seq - b.seq);
      this.dirty = false;
    }
    return this.sorted;
  }

  /** Stored messages in seq order, then pending sends in the order sent. */
  items(): readonly TimelineItem[] {
    if (!this.snapshot) {
      const out: TimelineItem[] = this.list().map((m) => ({ ...m, pending: false as const }));
      for (const p of this.pending.values()) out.push({ ...p, pending: true, id: `pending:${p.clientMsgId}`, seq: undefined });
      this.snapshot = out;
    }
    return this.snapshot;
  }

  get(id: string): Message | undefined {
    return this.byId.get(id);
  }

  /** Adds or updates a stored message (from a push, an ack or history). Returns whether anything changed. */
  upsert(m: Message): boolean {
    const o = this.overrides.get(m.id);
    let msg: Message = { ...m };
    if (o) msg = applyOverride(msg, o);
    if (msg.clientMsgId) {
      // Our own send came back: it is stored now.
      if (this.pending.delete(msg.clientMsgId)) this.changed();
    }
    const old = this.byId.get(msg.id);
    if (old) {
      // A history page may be older than a live edit we applied: keep the
      // newer state of each part.
      const merged: Message = { ...old, ...msg };
      if (old.isDeleted && !msg.isDeleted) {
        merged.isDeleted = true;
        merged.deletedAt = old.deletedAt ?? null;
        delete merged.content;
      }
      if (old.isEdited && !msg.isEdited && !msg.isDeleted) {
        merged.content = old.content;
        merged.isEdited = true;
        merged.editedAt = old.editedAt ?? null;
      }
      if (sameMessage(old, merged)) return false;
      const i = this.sorted.indexOf(old);
      this.sorted[i] = merged;
      this.byId.set(merged.id, merged);
      if (old.seq !== merged.seq) this.dirty = true;
    } else {
      this.byId.set(msg.id, msg);
      const last = this.sorted[this.sorted.length - 1];
      if (last && !this.dirty && last.seq > msg.seq) this.dirty = true;
      this.sorted.push(msg);
    }
    this.changed();
    return true;
  }

  /** Merges a history page. older: the page extends the history upwards (its hasMore says if more exists). */
  mergePage(messages: readonly Message[], opts: { older?: boolean; hasMore?: boolean } = {}): void {
    for (const m of messages) this.upsert(m);
    if (opts.older && opts.hasMore !== undefined) this.hasMoreOlder = opts.hasMore;
    if (!this.loaded) this.loaded = true;
    this.changed();
  }

  applyEdit(e: MessageEdited): void {
    const o = { ...this.overrides.get(e.messageId), content: e.content, editedAt: e.editedAt };
    this.overrides.set(e.messageId, o);
    const m = this.byId.get(e.messageId);
    if (m) this.replace(m, applyOverride(m, o));
  }

  applyDelete(e: MessageDeleted): void {
    const o = { ...this.overrides.get(e.messageId), deletedAt: e.deletedAt };
    this.overrides.set(e.messageId, o);
    const m = this.byId.get(e.messageId);
    if (m) this.replace(m, applyOverride(m, o));
  }

  addPending(p: PendingMessage): void {
    this.pending.set(p.clientMsgId, p);
    this.changed();
  }

  updatePending(clientMsgId: string, patch: Partial<PendingMessage>): void {
    const p = this.pending.get(clientMsgId);
    if (!p) return;
    this.pending.set(clientMsgId, { ...p, ...patch });
    this.changed();
  }

  removePending(clientMsgId: string): void {
    if (this.pending.delete(clientMsgId)) this.changed();
  }

  getPending(clientMsgId: string): PendingMessage | undefined {
    return this.pending.get(clientMsgId);
  }

  private replace(old: Message, next: Message): void {
    const i = this.sorted.indexOf(old);
    this.sorted[i] = next;
    this.byId.set(next.id, next);
    this.changed();
  }

  private changed(): void {
    this.snapshot = null;
    this.version++;
  }
}

function applyOverride(m: Message, o: Override): Message {
  const out = { ...m };
  if (o.deletedAt !== undefined) {
    out.isDeleted = true;
    out.deletedAt = o.deletedAt;
    delete out.content;
    delete out.metadata;
  } else if (o.content !== undefined) {
    out.content = o.content;
    out.isEdited = true;
    out.editedAt = o.editedAt ?? null;
  }
  return out;
}

function sameMessage(a: Message, b: Message): boolean {
  return (
    a.seq === b.seq &&
    a.content === b.content &&
    !!a.isDeleted === !!b.isDeleted &&
    !!a.isEdited === !!b.isEdited &&
    a.editedAt === b.editedAt &&
    a.type === b.type
  );
}
