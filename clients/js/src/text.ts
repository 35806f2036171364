// Message text for display. Content is rendered as text only; the one
// structure recognised is a link, and only http(s) URLs become links
// (javascript:, data: and every other scheme stay plain text).

export type TextPart = { text: string } | { text: string; href: string };

const URL_RE = /\bhttps?:\/\/[^\s<>"'`]+/gi;
// Trailing punctuation usually ends the sentence, not the URL.
const TRAILING = /[.,;:!?)\]}]+$/;

/** The URL when it is a well-formed http(s) URL, else null. */
export function safeHref(raw: string): string | null {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    return null;
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return null;
  return u.href;
}

/** Splits text into plain parts and http(s) link parts, in order. */
export function linkify(text: string): TextPart[] {
  const out: TextPart[] = [];
  let last = 0;
  for (const m of text.matchAll(URL_RE)) {
    let url = m[0];
    const trail = TRAILING.exec(url);
    if (trail) url = url.slice(0, url.length - trail[0].length);
    const start = m.index ?? 0;
    const href = safeHref(url);
    if (!href || !url) continue;
    if (start > last) out.push({ text: text.slice(last, start) });
    out.push({ text: url, href });
    last = start + url.length;
  }
  if (last < text.length) out.push({ text: text.slice(last) });
  return out;
}
