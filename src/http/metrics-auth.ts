import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import { unauthorized } from '../errors/index.js';

const digest = (s: string) => createHash('sha256').update(s).digest();

/**
 * GET /metrics with FABRIC_METRICS_TOKEN set: the scraper must send "Authorization: Bearer
 * <token>" (compared in constant time). Without the variable /metrics is open, as a scrape
 * endpoint bound to loopback or a private network usually is (README "Inter-component authentication").
 */
export function checkMetricsToken(req: FastifyRequest, token: string | undefined): void {
  if (!token) return;
  const header = req.headers.authorization;
  if (!header) throw unauthorized('missing_token', '/metrics needs "Authorization: Bearer <FABRIC_METRICS_TOKEN>" (bearer_token_file in a Prometheus scrape config).');
  const m = /^Bearer +(\S+)$/i.exec(header.trim());
  if (!m || !timingSafeEqual(digest(m[1]!), digest(token))) throw unauthorized('invalid_token', 'The metrics token is wrong; send the value of FABRIC_METRICS_TOKEN as the bearer token.');
}
