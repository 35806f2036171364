import { useEffect, useState } from 'react';
import type { RelayClient } from 'relay-client';

import { fileSize } from './format';

/** The file fields of an image or file message, when they are well-formed. */
export interface FileMeta {
  url: string;
  name: string;
  size: number;
  contentType: string;
  width?: number;
  height?: number;
}

// Metadata comes from other users: only our own upload URLs are fetched
// (with the token), never an arbitrary path or another origin.
const UPLOAD_URL = /^\/api\/uploads\/[A-Za-z0-9_-]{1,64}$/;

export function fileMeta(metadata: Record<string, unknown> | undefined, fallbackName: string): FileMeta | null {
  if (!metadata || typeof metadata.url !== 'string' || !UPLOAD_URL.test(metadata.url)) return null;
  const m: FileMeta = {
    url: metadata.url,
    name: typeof metadata.name === 'string' && metadata.name ? metadata.name : fallbackName,
    size: typeof metadata.size === 'number' ? metadata.size : 0,
    contentType: typeof metadata.contentType === 'string' ? metadata.contentType : 'application/octet-stream',
  };
  if (typeof metadata.width === 'number') m.width = metadata.width;
  if (typeof metadata.height === 'number') m.height = metadata.height;
  return m;
}

/** Fetches an upload with the token into an object URL (revoked on unmount). */
function useObjectUrl(client: RelayClient, url: string | null, wantImage: boolean): { src: string | null; error: string } {
  const [state, set] = useState<{ src: string | null; error: string }>({ src: null, error: '' });
  useEffect(() => {
    if (!url) return;
    const ctl = new AbortController();
    let made: string | null = null;
    client.api.blob(url, ctl.signal).then(
      (b) => {
        // The server sniffed the type; show as an image only what is one.
        if (wantImage && !/^image\/(png|jpeg|gif|webp)$/.test(b.type)) {
          set({ src: null, error: 'not an image' });
          return;
        }
        made = URL.createObjectURL(b);
        set({ src: made, error: '' });
      },
      (err: Error) => {
        if (err.name !== 'AbortError') set({ src: null, error: err.message });
      },
    );
    return () => {
      ctl.abort();
      if (made) URL.revokeObjectURL(made);
    };
  }, [client, url, wantImage]);
  return state;
}

export function ImageAttachment({ client, meta }: { client: RelayClient; meta: FileMeta }) {
  const { src, error } = useObjectUrl(client, meta.url, true);
  const style = meta.width && meta.height ? { aspectRatio: `${meta.width} / ${meta.height}` } : undefined;
  return (
    <figure className="attachment image">
      {src ? (
        <img src={src} alt={meta.name} style={style} />
      ) : (
        <div className="placeholder" style={style} role="img" aria-label={error ? `${meta.name} (could not load)` : `${meta.name} (loading)`} />
      )}
      <figcaption>
        <span className="file-name">{meta.name}</span> <DownloadButton client={client} meta={meta} />
      </figcaption>
    </figure>
  );
}

export function FileAttachment({ client, meta }: { client: RelayClient; meta: FileMeta }) {
  return (
    <div className="attachment file">
      <span className="file-name">{meta.name}</span> <span className="muted">{fileSize(meta.size)}</span> <DownloadButton client={client} meta={meta} />
    </div>
  );
}

function DownloadButton({ client, meta }: { client: RelayClient; meta: FileMeta }) {
  const [error, setError] = useState('');
  async function download() {
    try {
      const blob = await client.api.blob(meta.url);
      const href = URL.createObjectURL(blob);
      const a = document.createElement('a');
      a.href = href;
      a.download = meta.name;
      a.rel = 'noopener';
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(href), 60_000);
    } catch (err) {
      setError((err as Error).message);
    }
  }
  return (
    <>
      <button type="button" className="link" onClick={() => void download()} aria-label={`Download ${meta.name}`}>
        Download
      </button>
      {error && <span role="alert" className="error"> {error}</span>}
    </>
  );
}
