import { createHmac, hkdfSync, timingSafeEqual } from 'node:crypto';
import { forbidden } from '../errors/index.js';

/** Signed download URLs live exactly this long (isolation-runtime-prd US-04: 15 minutes). */
export const DOWNLOAD_URL_TTL_SECONDS = 900;

/**
 * The HMAC key for download URLs, derived with HKDF-SHA256 from the configured secret
 * (FABRIC_URL_SIGNING_SECRET, else the JWT secret), so the JWT secret itself never signs URLs
 * and every API process holding the same secret accepts the same URLs.
 */
export function deriveUrlSigningKey(secret: string): Buffer {
  return Buffer.from(hkdfSync('sha256', secret, 'agent-fabric', 'file-download-url-v1', 32));
}

function mac(key: Buffer, fileId: string, expires: number): Buffer {
  return createHmac('sha256', key).update(`${fileId.toLowerCase()}.${expires}`).digest();
}

export interface SignedDownload {
  /** Path and query of the download, e.g. `/files/<id>?expires=…&sig=…`. */
  path: string;
  /** Unix seconds after which the URL is refused. */
  expires: number;
}

/** Signs a download of `fileId` valid for DOWNLOAD_URL_TTL_SECONDS from `nowMs`. */
export function signDownloadUrl(key: Buffer, fileId: string, nowMs = Date.now()): SignedDownload {
  const expires = Math.floor(nowMs / 1000) + DOWNLOAD_URL_TTL_SECONDS;
  const sig = mac(key, fileId, expires).toString('base64url');
  return { path: `/files/${fileId.toLowerCase()}?expires=${expires}&sig=${sig}`, expires };
}

/**
 * Checks a download URL's signature (constant time), then its expiry: a URL whose id, expiry
 * or signature was changed is `url_invalid`; a genuine one past its expiry is `url_expired`.
 */
export function verifyDownloadUrl(key: Buffer, fileId: string, expires: string | undefined, sig: string | undefined, nowMs = Date.now()): void {
  const given = /^[A-Za-z0-9_-]{43}$/.test(sig ?? '') ? Buffer.from(sig!, 'base64url') : undefined;
  const at = /^\d{1,12}$/.test(expires ?? '') ? Number(expires) : undefined;
  if (!given || at === undefined || given.length !== 32 || !timingSafeEqual(given, mac(key, fileId, at)))
    throw forbidden('This download URL is not valid (it was altered or truncated); ask the API for a new one with GET /api/agents/:id/files/:file_id/url.', 'url_invalid');
  if (nowMs >= at * 1000)
    throw forbidden(`This download URL expired at ${new Date(at * 1000).toISOString()}; ask the API for a new one with GET /api/agents/:id/files/:file_id/url.`, 'url_expired');
}
