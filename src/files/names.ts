import { badRequest } from '../errors/index.js';

// eslint-disable-next-line no-control-regex -- control characters are exactly what it looks for
const CONTROL = /[\u0000-\u001f\u007f]/;
const MEDIA_TYPE = /^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}\/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$/;

/**
 * The display name of a file: the `name` field, else the upload's filename (without any
 * directory a client put in it). It is metadata only — storage keys never come from it.
 */
export function fileName(given: string | undefined, uploaded: string | undefined): string {
  const raw = given ?? uploaded?.split(/[\\/]/).pop() ?? '';
  const name = raw.trim();
  if (given !== undefined && (name === '' || name.length > 255 || CONTROL.test(name) || /[\\/]/.test(name)))
    throw badRequest('invalid_file_name', 'The name field must be 1–255 characters without control characters or slashes, e.g. "report.pdf".');
  if (name === '' || name === '.' || name === '..' || CONTROL.test(name)) return 'file';
  return name.slice(0, 255);
}

/** The upload's media type if it is a plain `type/subtype`, else application/octet-stream. */
export function fileContentType(mimetype: string | undefined): string {
  const t = (mimetype ?? '').split(';')[0]!.trim().toLowerCase();
  return MEDIA_TYPE.test(t) ? t : 'application/octet-stream';
}

/**
 * `attachment` with an ASCII fallback name and the exact name in RFC 5987 form: a browser
 * saves the file instead of rendering it on the fabric's origin, whatever its type.
 */
export function contentDisposition(name: string): string {
  const ascii = name.replace(/[^\x20-\x7e]|["\\%]/g, '_');
  const encoded = encodeURIComponent(name).replace(/['()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
  return `attachment; filename="${ascii}"; filename*=UTF-8''${encoded}`;
}

const BY_EXTENSION: Record<string, string> = {
  txt: 'text/plain', log: 'text/plain', md: 'text/markdown', csv: 'text/csv', json: 'application/json', jsonl: 'application/jsonl',
  html: 'text/html', xml: 'application/xml', pdf: 'application/pdf', png: 'image/png', jpg: 'image/jpeg', jpeg: 'image/jpeg',
  gif: 'image/gif', svg: 'image/svg+xml', zip: 'application/zip', gz: 'application/gzip', tar: 'application/x-tar',
};

/** A name made by a program (a sandbox artifact's path): control characters replaced, at most 255 characters. */
export function safeFileName(raw: string): string {
  return raw.replace(new RegExp(CONTROL.source, 'g'), '_').slice(-255) || 'file';
}

/** A media type guessed from a file name's extension (sandbox artifacts come without one). */
export function contentTypeForName(name: string): string {
  const ext = /\.([a-z0-9]{1,8})$/i.exec(name)?.[1]?.toLowerCase();
  return (ext && BY_EXTENSION[ext]) ?? 'application/octet-stream';
}
