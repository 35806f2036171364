import { useState, type FormEvent } from 'react';
import type { RelayClient, RoomSummary, SearchHit } from 'relay-client';

import { roomName, shortTime } from './format';

export function SearchPanel({ client, rooms, onJump }: { client: RelayClient; rooms: RoomSummary[]; onJump(hit: SearchHit): void }) {
  const [q, setQ] = useState('');
  const [hits, setHits] = useState<SearchHit[] | null>(null);
  const [cursor, setCursor] = useState<string | null>(null);
  const [error, setError] = useState('');

  async function run(e?: FormEvent, more = false) {
    e?.preventDefault();
    const term = q.trim();
    if (!term) return;
    try {
      const page = await client.api.search({ q: term, limit: 20, ...(more && cursor ? { cursor } : {}) });
      setHits((h) => (more && h ? [...h, ...page.results] : page.results));
      setCursor(page.nextCursor);
      setError('');
    } catch (err) {
      setError((err as Error).message);
    }
  }

  const close = () => {
    setHits(null);
    setCursor(null);
  };
  const nameOf = (roomId: string) => {
    const r = rooms.find((x) => x.id === roomId);
    return r ? roomName(r) : `room ${roomId}`;
  };

  return (
    <div className="search" onKeyDown={(e) => e.key === 'Escape' && close()}>
      <form role="search" onSubmit={(e) => void run(e)}>
        <input type="search" aria-label="Search messages" placeholder="Search messages" value={q} onChange={(e) => setQ(e.target.value)} />
      </form>
      {hits && (
        <section className="search-results" aria-label="Search results">
          <header>
            <span>
              {hits.length} result{hits.length === 1 ? '' : 's'}
            </span>
            <button type="button" onClick={close}>
              Close search
            </button>
          </header>
          <ul>
            {hits.map((h) => (
              <li key={h.id}>
                <button
                  type="button"
                  onClick={() => {
                    onJump(h);
                    close();
                  }}
                >
                  <span className="muted">
                    {nameOf(h.roomId)} · {h.username} · {shortTime(h.createdAt)}
                  </span>
                  <span className="snippet">{h.content ?? ''}</span>
                </button>
              </li>
            ))}
          </ul>
          {cursor && (
            <button type="button" onClick={() => void run(undefined, true)}>
              More results
            </button>
          )}
        </section>
      )}
      {error && <p role="alert" className="error">{error}</p>}
    </div>
  );
}
