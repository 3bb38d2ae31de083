import { createHash, createHmac, hkdfSync, randomUUID, timingSafeEqual } from 'node:crypto';
import { Readable } from 'node:stream';
import { z } from 'zod';
import { withTransaction, type Db } from '../db/index.js';
import { FabricError, forbidden, notFound } from '../errors/index.js';
import { DOWNLOAD_URL_TTL_SECONDS, type BlobStore, type StoredBlob } from '../files/index.js';
import { logger } from '../telemetry/index.js';
import { recordAudit } from './record.js';
import { AUDIT_COLUMNS, auditWhere, toEvent, type AuditEvent, type AuditFilters, type AuditRow, type AuditScope } from './query.js';

export const AUDIT_EXPORT_FORMATS = ['jsonl', 'csv'] as const;
export type AuditExportFormat = (typeof AUDIT_EXPORT_FORMATS)[number];

export const AuditExport = z.object({
  id: z.uuid(),
  status: z.enum(['running', 'completed', 'failed']),
  format: z.enum(AUDIT_EXPORT_FORMATS),
  filters: z.record(z.string(), z.unknown()),
  requested_by: z.string(),
  row_count: z.number().int().nullable(),
  size: z.number().int().nullable().describe('bytes'),
  sha256: z.string().nullable(),
  error: z.string().nullable(),
  created_at: z.string(),
  completed_at: z.string().nullable(),
  download_url: z.string().optional().describe('signed path, valid 900 s, no token needed (GET it on this API)'),
  download_expires_at: z.string().optional(),
});
export type AuditExport = z.infer<typeof AuditExport>;

interface ExportRow {
  id: string;
  tenant_id: string;
  status: AuditExport['status'];
  format: AuditExportFormat;
  filters: string;
  requested_by: string;
  row_count: number | null;
  size: number | null;
  sha256: string | null;
  storage_key: string | null;
  error: string | null;
  created_at: Date;
  completed_at: Date | null;
}

const EXPORT_COLUMNS = 'id, tenant_id, status, format, filters::text AS filters, requested_by, row_count, size, sha256, storage_key, error, created_at, completed_at';

/** Where an export's bytes live: the tenant's storage, in a system area beside its agents' (`<tenant>/<agent uuid>/…`). */
export function exportBlobKey(tenantId: string, exportId: string): string {
  return `${tenantId}/system/audit-exports/${exportId.toLowerCase()}`;
}

const CSV_COLUMNS = ['id', 'tenant_id', 'created_at', 'actor_sub', 'actor_role', 'action', 'target_type', 'target_id', 'request_id', 'before', 'after', 'chain_seq', 'hash'] as const;

/** One CSV cell (RFC 4180), with a leading ' on cells a spreadsheet would run as a formula. */
function csvCell(v: unknown): string {
  let s = v === null || v === undefined ? '' : typeof v === 'string' ? v : typeof v === 'number' ? String(v) : JSON.stringify(v);
  if (/^[=+\-@\t\r]/.test(s)) s = `'${s}`;
  return /[",\r\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
}

export function csvLine(e: AuditEvent): string {
  return CSV_COLUMNS.map((c) => csvCell(e[c])).join(',') + '\r\n';
}

/**
 * Audit exports (POST /api/audit/exports): a job row, then the matching rows streamed oldest
 * first as JSON lines or CSV into the storage provider under exportBlobKey(), then the row
 * completed with its count, size and SHA-256. The file is fetched with a signed URL (HKDF key
 * of the same secret as file downloads, with its own label, so a file URL never opens an
 * export nor the reverse). A job cut short by a restart stays `running`; request a new one.
 */
export class AuditExports {
  private readonly key: Buffer | undefined;
  private readonly running = new Set<Promise<void>>();

  constructor(private readonly o: { db: Db; blobs: BlobStore; signingSecret: string | undefined; pageSize?: number }) {
    this.key = o.signingSecret ? Buffer.from(hkdfSync('sha256', o.signingSecret, 'agent-fabric', 'audit-export-url-v1', 32)) : undefined;
  }

  /** Records the job and starts it in the background; the returned job is `running`. */
  async start(tenantId: string, requestedBy: string, requestedRole: string, format: AuditExportFormat, scope: AuditScope, filters: AuditFilters): Promise<AuditExport> {
    this.requireKey();
    const id = randomUUID();
    const stored = { ...filters, ...('allTenants' in scope ? { all_tenants: true } : {}) };
    const r = await withTransaction(
      this.o.db,
      async (tx) => {
        const row = await tx.query<ExportRow>(
          `INSERT INTO audit_exports (id, tenant_id, requested_by, format, filters) VALUES ($1, $2, $3, $4, $5) RETURNING ${EXPORT_COLUMNS}`,
          [id, tenantId, requestedBy, format, JSON.stringify(stored)],
        );
        // Reading the audit log out is itself a security event.
        await recordAudit(tx, { tenantId, actor: { sub: requestedBy, role: requestedRole }, action: 'audit.export', targetType: 'audit_export', targetId: id, after: { format, filters: stored } });
        return row;
      },
      { name: 'start audit export' },
    );
    const job = this.run(r.rows[0]!, scope, filters).finally(() => this.running.delete(job));
    this.running.add(job);
    return this.toExport(r.rows[0]!);
  }

  /** A job of the tenant, with a fresh signed download URL once completed. */
  async get(tenantId: string, id: string, nowMs = Date.now()): Promise<AuditExport> {
    const r = await this.o.db.query<ExportRow>(`SELECT ${EXPORT_COLUMNS} FROM audit_exports WHERE tenant_id = $1 AND id = $2`, [tenantId, id]);
    if (!r.rows[0]) throw notFound('audit export', id);
    return this.toExport(r.rows[0], nowMs);
  }

  /** Checks a signed URL (403 url_invalid / url_expired) and opens the export's bytes. */
  async openSigned(id: string, expires: string | undefined, sig: string | undefined, nowMs = Date.now()): Promise<{ name: string; contentType: string; blob: StoredBlob }> {
    const key = this.requireKey();
    const given = /^[A-Za-z0-9_-]{43}$/.test(sig ?? '') ? Buffer.from(sig!, 'base64url') : undefined;
    const at = /^\d{1,12}$/.test(expires ?? '') ? Number(expires) : undefined;
    if (!given || at === undefined || given.length !== 32 || !timingSafeEqual(given, this.mac(key, id, at)))
      throw forbidden('This download URL is not valid (it was altered or truncated); ask for a new one with GET /api/audit/exports/:id.', 'url_invalid');
    if (nowMs >= at * 1000) throw forbidden(`This download URL expired at ${new Date(at * 1000).toISOString()}; ask for a new one with GET /api/audit/exports/:id.`, 'url_expired');
    const r = await this.o.db.query<ExportRow>(`SELECT ${EXPORT_COLUMNS} FROM audit_exports WHERE id = $1 AND status = 'completed'`, [id]);
    const row = r.rows[0];
    if (!row?.storage_key) throw notFound('audit export', id);
    const blob = await this.o.blobs.get(row.storage_key);
    if (!blob) throw new FabricError(500, 'file_content_missing', `Audit export ${id} is recorded but its file is missing from storage; request a new export.`);
    return { name: `audit-${row.tenant_id}-${id.slice(0, 8)}.${row.format}`, contentType: row.format === 'csv' ? 'text/csv; charset=utf-8' : 'application/x-ndjson; charset=utf-8', blob };
  }

  /** Waits for running jobs (close the store after). */
  async close(): Promise<void> {
    await Promise.allSettled([...this.running]);
  }

  private async run(job: ExportRow, scope: AuditScope, filters: AuditFilters): Promise<void> {
    const key = exportBlobKey(job.tenant_id, job.id);
    const hash = createHash('sha256');
    let size = 0;
    let count = 0;
    const db = this.o.db;
    const pageSize = this.o.pageSize ?? 1000;
    async function* lines(): AsyncGenerator<Buffer> {
      const emit = (s: string) => {
        const b = Buffer.from(s, 'utf8');
        hash.update(b);
        size += b.length;
        return b;
      };
      if (job.format === 'csv') yield emit(CSV_COLUMNS.join(',') + '\r\n');
      let afterId = 0;
      for (;;) {
        const { where, params } = auditWhere(scope, filters);
        params.push(afterId);
        const r = await db.query<AuditRow>(`SELECT ${AUDIT_COLUMNS} FROM audit_log a WHERE ${where} AND a.id > $${params.length} ORDER BY a.id LIMIT ${pageSize}`, params);
        for (const row of r.rows) {
          const e = toEvent(row);
          count++;
          yield emit(job.format === 'csv' ? csvLine(e) : JSON.stringify(e) + '\n');
        }
        if (r.rows.length < pageSize) return;
        afterId = Number(r.rows[r.rows.length - 1]!.id);
      }
    }
    try {
      await this.o.blobs.put(key, Readable.from(lines()));
      await db.query(`UPDATE audit_exports SET status = 'completed', row_count = $2, size = $3, sha256 = $4, storage_key = $5, completed_at = now() WHERE id = $1`, [
        job.id,
        count,
        size,
        hash.digest('hex'),
        key,
      ]);
    } catch (err) {
      logger().error({ err, export_id: job.id }, 'audit export failed');
      await db
        .query(`UPDATE audit_exports SET status = 'failed', error = $2, completed_at = now() WHERE id = $1`, [job.id, `The export failed: ${(err as Error).message}. Request a new one.`])
        .catch((e: unknown) => logger().error({ err: e, export_id: job.id }, 'recording a failed audit export failed'));
    }
  }

  private mac(key: Buffer, id: string, expires: number): Buffer {
    return createHmac('sha256', key).update(`audit-export.${id.toLowerCase()}.${expires}`).digest();
  }

  private toExport(r: ExportRow, nowMs = Date.now()): AuditExport {
    const out: AuditExport = {
      id: r.id,
      status: r.status,
      format: r.format,
      filters: JSON.parse(r.filters) as Record<string, unknown>,
      requested_by: r.requested_by,
      row_count: r.row_count === null ? null : Number(r.row_count),
      size: r.size === null ? null : Number(r.size),
      sha256: r.sha256,
      error: r.error,
      created_at: r.created_at.toISOString(),
      completed_at: r.completed_at ? r.completed_at.toISOString() : null,
    };
    if (r.status === 'completed' && this.key) {
      const expires = Math.floor(nowMs / 1000) + DOWNLOAD_URL_TTL_SECONDS;
      out.download_url = `/audit-exports/${r.id}?expires=${expires}&sig=${this.mac(this.key, r.id, expires).toString('base64url')}`;
      out.download_expires_at = new Date(expires * 1000).toISOString();
    }
    return out;
  }

  private requireKey(): Buffer {
    if (!this.key)
      throw new FabricError(503, 'url_signing_unavailable', 'This fabric has no key to sign download URLs: set FABRIC_URL_SIGNING_SECRET (≥ 32 characters) or FABRIC_JWT_SECRET on every API process.');
    return this.key;
  }
}
