import { useRef, useState, type FormEvent } from 'react';
import type { RelayClient } from 'relay-client';

interface Props {
  client: RelayClient;
  roomId: string;
  disabled: boolean;
  send(content: string, opts?: { type: 'image' | 'file'; metadata: Record<string, unknown> }): void;
  startTyping(): void;
  stopTyping(): void;
}

interface UploadState {
  key: number;
  name: string;
  sent: number;
  total: number;
  error?: string;
}

const MAX_BYTES = 4000;

export function Composer({ client, roomId, disabled, send, startTyping, stopTyping }: Props) {
  const [text, setText] = useState('');
  const [uploads, setUploads] = useState<UploadState[]>([]);
  const fileRef = useRef<HTMLInputElement>(null);
  const keys = useRef(0);
  const tooLong = new TextEncoder().encode(text).length > MAX_BYTES;

  function submit(e?: FormEvent) {
    e?.preventDefault();
    const content = text.trim();
    if (!content || tooLong || disabled) return;
    send(content);
    setText('');
  }

  async function upload(file: File) {
    const key = ++keys.current;
    const patch = (p: Partial<UploadState>) => setUploads((us) => us.map((u) => (u.key === key ? { ...u, ...p } : u)));
    setUploads((us) => [...us, { key, name: file.name, sent: 0, total: file.size }]);
    try {
      const up = await client.api.upload(roomId, file, file.name, (sent, total) => patch({ sent, total: total || file.size }));
      const isImage = /^image\/(png|jpeg|gif|webp)$/.test(up.contentType);
      // The name as the user's file has it: browsers escape quotes and line
      // breaks in multipart file names (%22), so the stored one may differ.
      const metadata: Record<string, unknown> = { uploadId: up.id, url: up.url, name: file.name || up.name, size: up.size, contentType: up.contentType };
      if (isImage) {
        const dims = await imageSize(file);
        if (dims) Object.assign(metadata, dims);
      }
      send(file.name || up.name, { type: isImage ? 'image' : 'file', metadata });
      setUploads((us) => us.filter((u) => u.key !== key));
    } catch (err) {
      patch({ error: (err as Error).message });
    }
  }

  return (
    <div className="composer">
      {uploads.length > 0 && (
        <ul aria-label="Uploads" className="uploads">
          {uploads.map((u) => (
            <li key={u.key}>
              <span className="file-name">{u.name}</span>{' '}
              {u.error ? (
                <>
                  <span role="alert" className="error">
                    Upload failed: {u.error}
                  </span>{' '}
                  <button type="button" onClick={() => setUploads((us) => us.filter((x) => x.key !== u.key))}>
                    Dismiss
                  </button>
                </>
              ) : (
                <progress aria-label={`Uploading ${u.name}`} value={u.sent} max={u.total || 1} />
              )}
            </li>
          ))}
        </ul>
      )}
      <form onSubmit={submit}>
        <button type="button" className="icon" aria-label="Attach file" title="Attach file" disabled={disabled} onClick={() => fileRef.current?.click()}>
          <svg viewBox="0 0 24 24" width="18" height="18" aria-hidden="true" focusable="false">
            <path d="M16.5 6.5v10a4.5 4.5 0 0 1-9 0V5a3 3 0 0 1 6 0v10.5a1.5 1.5 0 0 1-3 0V6.5" fill="none" stroke="currentColor" strokeWidth="1.8" strokeLinecap="round" />
          </svg>
        </button>
        <input
          ref={fileRef}
          type="file"
          hidden
          tabIndex={-1}
          aria-hidden="true"
          onChange={(e) => {
            for (const f of Array.from(e.target.files ?? [])) void upload(f);
            e.target.value = '';
          }}
        />
        <textarea
          aria-label="Message"
          placeholder={disabled ? 'This room is archived' : 'Write a message'}
          rows={2}
          disabled={disabled}
          value={text}
          aria-invalid={tooLong}
          onChange={(e) => {
            setText(e.target.value);
            if (e.target.value.trim()) startTyping();
            else stopTyping();
          }}
          onBlur={() => {
            if (!text.trim()) stopTyping();
          }}
          onKeyDown={(e) => {
            if (e.key === 'Enter' && !e.shiftKey && !e.nativeEvent.isComposing) {
              e.preventDefault();
              submit();
            }
          }}
        />
        <button type="submit" disabled={disabled || !text.trim() || tooLong}>
          Send
        </button>
      </form>
      {tooLong && (
        <p role="alert" className="error">
          Messages are limited to {MAX_BYTES} bytes.
        </p>
      )}
    </div>
  );
}

async function imageSize(file: File): Promise<{ width: number; height: number } | null> {
  try {
    const bmp = await createImageBitmap(file);
    const out = { width: bmp.width, height: bmp.height };
    bmp.close();
    return out;
  } catch {
    return null;
  }
}
