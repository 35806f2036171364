import { memo, useState, type FormEvent } from 'react';
import { linkify, type RelayClient, type TimelineItem } from 'relay-client';

import { FileAttachment, ImageAttachment, fileMeta } from './attachments';
import { fullTime, shortTime } from './format';

interface Props {
  client: RelayClient;
  item: TimelineItem;
  mine: boolean;
  canDelete: boolean;
  readBy: string[];
  highlighted: boolean;
  onEdit(messageId: string, content: string): Promise<unknown>;
  onDelete(messageId: string): Promise<unknown>;
  onRetry(clientMsgId: string): void;
  onDiscard(clientMsgId: string): void;
}

export const MessageItem = memo(function MessageItem({ client, item, mine, canDelete, readBy, highlighted, onEdit, onDelete, onRetry, onDiscard }: Props) {
  const [editing, setEditing] = useState(false);
  const [confirming, setConfirming] = useState(false);
  const [draft, setDraft] = useState('');
  const [error, setError] = useState('');
  const deleted = !item.pending && item.isDeleted;

  async function saveEdit(e: FormEvent) {
    e.preventDefault();
    const text = draft.trim();
    if (!text || item.pending) return;
    try {
      await onEdit(item.id, text);
      setEditing(false);
      setError('');
    } catch (err) {
      setError((err as Error).message);
    }
  }

  async function remove() {
    if (item.pending) return;
    try {
      await onDelete(item.id);
      setConfirming(false);
    } catch (err) {
      setError((err as Error).message);
    }
  }

  const cls = ['message', mine ? 'mine' : '', item.pending ? `pending ${item.state}` : '', deleted ? 'deleted' : '', highlighted ? 'highlight' : ''].filter(Boolean).join(' ');
  return (
    <li className={cls} id={item.pending ? undefined : `msg-${item.id}`} tabIndex={-1} data-seq={item.pending ? undefined : item.seq}>
      <div className="meta">
        <span className="author">{item.username}</span>{' '}
        <time dateTime={item.createdAt} title={fullTime(item.createdAt)}>
          {shortTime(item.createdAt)}
        </time>
        {!item.pending && item.isEdited && !deleted && <span className="muted"> (edited)</span>}
      </div>
      {deleted ? (
        <p className="body muted">This message was deleted.</p>
      ) : editing ? (
        <form onSubmit={saveEdit} className="edit-form">
          <textarea
            aria-label="Edit message"
            value={draft}
            autoFocus
            maxLength={4000}
            onChange={(e) => setDraft(e.target.value)}
            onKeyDown={(e) => {
              if (e.key === 'Escape') setEditing(false);
              if (e.key === 'Enter' && !e.shiftKey && !e.nativeEvent.isComposing) {
                e.preventDefault();
                void saveEdit(e);
              }
            }}
          />
          <button type="submit">Save</button>
          <button type="button" onClick={() => setEditing(false)}>
            Cancel
          </button>
        </form>
      ) : (
        <Body client={client} item={item} />
      )}
      {item.pending && item.state === 'sending' && <p className="status muted">Sending…</p>}
      {item.pending && item.state === 'failed' && (
        <p className="status" role="alert">
          Not sent{item.error ? `: ${item.error.message}` : ''}.{' '}
          <button type="button" onClick={() => onRetry(item.clientMsgId)}>
            Retry
          </button>{' '}
          <button type="button" onClick={() => onDiscard(item.clientMsgId)}>
            Discard
          </button>
        </p>
      )}
      {!item.pending && !deleted && !editing && (mine || canDelete) && (
        <div className="tools">
          {mine && item.type === 'text' && (
            <button
              type="button"
              onClick={() => {
                setDraft(item.content ?? '');
                setEditing(true);
              }}
            >
              Edit
            </button>
          )}
          {confirming ? (
            <>
              <button type="button" className="danger" onClick={() => void remove()}>
                Confirm delete
              </button>
              <button type="button" onClick={() => setConfirming(false)}>
                Keep
              </button>
            </>
          ) : (
            <button type="button" onClick={() => setConfirming(true)}>
              Delete
            </button>
          )}
        </div>
      )}
      {error && <p role="alert" className="error">{error}</p>}
      {readBy.length > 0 && <p className="receipt muted">Seen by {readBy.join(', ')}</p>}
    </li>
  );
});

/** The content, always as text: links only for http(s) URLs. */
function Body({ client, item }: { client: RelayClient; item: TimelineItem }) {
  const content = item.content ?? '';
  if (item.type === 'image' || item.type === 'file') {
    const meta = fileMeta(item.metadata, content);
    if (meta) return item.type === 'image' ? <ImageAttachment client={client} meta={meta} /> : <FileAttachment client={client} meta={meta} />;
  }
  return (
    <p className="body">
      {linkify(content).map((p, i) =>
        'href' in p ? (
          <a key={i} href={p.href} target="_blank" rel="noopener noreferrer nofollow ugc">
            {p.text}
          </a>
        ) : (
          <span key={i}>{p.text}</span>
        ),
      )}
    </p>
  );
}
