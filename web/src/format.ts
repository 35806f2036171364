import type { RoomSummary } from 'relay-client';

/** The name a room shows: the other person for a direct room. */
export function roomName(r: Pick<RoomSummary, 'type' | 'name' | 'peer'>): string {
  if (r.type === 'direct') return r.peer?.username ?? 'Direct message';
  return r.name || 'Unnamed room';
}

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const dateFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

export function shortTime(iso: string | undefined | null): string {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  const today = new Date();
  return d.toDateString() === today.toDateString() ? timeFmt.format(d) : dateFmt.format(d);
}

export function fullTime(iso: string | undefined | null): string {
  if (!iso) return '';
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? '' : dateFmt.format(d);
}

/** "last seen 5 minutes ago" and the like. */
export function lastSeen(iso: string | null | undefined, now = Date.now()): string {
  if (!iso) return 'never seen';
  const t = Date.parse(iso);
  if (!Number.isFinite(t)) return 'never seen';
  const s = Math.max(0, Math.round((now - t) / 1000));
  if (s < 60) return 'last seen just now';
  const m = Math.round(s / 60);
  if (m < 60) return `last seen ${m} minute${m === 1 ? '' : 's'} ago`;
  const h = Math.round(m / 60);
  if (h < 24) return `last seen ${h} hour${h === 1 ? '' : 's'} ago`;
  return `last seen ${dateFmt.format(new Date(t))}`;
}

export function fileSize(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}
