import { createRemoteJWKSet, errors as joseErrors, jwtVerify, SignJWT, type JWTVerifyGetKey } from 'jose';
import { z } from 'zod';
import { FabricError, unauthorized } from '../errors/index.js';
import { Role, TenantId, type Principal } from './roles.js';

export interface TokenOptions {
  /** HS256 secret (≥ 32 chars). Either this or `jwksUrl`. */
  secret?: string | undefined;
  /** JWKS URL of an external identity provider (RS256/ES256/EdDSA keys). */
  jwksUrl?: string | undefined;
  issuer: string;
  audience: string;
}

const Claims = z.object({
  // eslint-disable-next-line no-control-regex -- refusing control characters is the point
  sub: z.string().min(1).max(200).regex(/^[^\x00-\x1f\x7f]+$/, 'no control characters'),
  role: Role,
  tenant: TenantId,
});

export interface MintInput {
  sub: string;
  role: Role;
  tenant: string;
  /** Lifetime, e.g. `1h`, `15m`, `30d`, or seconds. Default 1h. */
  ttl?: string | number;
  /** Extra claims (e.g. `sid` for a sandbox session). */
  extra?: Record<string, unknown>;
}

/** Parses `90`, `15m`, `1h`, `7d` into seconds; throws on anything else. */
export function parseTtl(ttl: string | number): number {
  if (typeof ttl === 'number') return ttl;
  const m = /^(\d+)\s*([smhd]?)$/.exec(ttl.trim());
  if (!m) throw new Error(`invalid ttl "${ttl}": use seconds or a number with s, m, h or d (e.g. 15m, 1h, 7d)`);
  const unit = { '': 1, s: 1, m: 60, h: 3600, d: 86400 }[m[2] as '' | 's' | 'm' | 'h' | 'd'];
  return Number(m[1]) * unit;
}

/** Signs an HS256 token for local use (CLI, dev start, tests, sandbox sessions). */
export async function mintToken(options: TokenOptions, input: MintInput): Promise<string> {
  if (!options.secret) throw new Error('minting tokens needs FABRIC_JWT_SECRET (tokens from a JWKS provider are issued by that provider)');
  Claims.parse({ sub: input.sub, role: input.role, tenant: input.tenant });
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ ...input.extra, role: input.role, tenant: input.tenant })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setSubject(input.sub)
    .setIssuer(options.issuer)
    .setAudience(options.audience)
    .setIssuedAt(now)
    .setExpirationTime(now + parseTtl(input.ttl ?? '1h'))
    .sign(new TextEncoder().encode(options.secret));
}

/** Verifies bearer tokens; throws a 401 FabricError with a specific code when one is not acceptable. */
export type TokenVerifier = (token: string) => Promise<Principal & { claims: Record<string, unknown> }>;

const ASYMMETRIC = ['RS256', 'RS384', 'RS512', 'PS256', 'ES256', 'ES384', 'EdDSA'];

/**
 * HS256 tokens verify with the secret, asymmetric ones with the JWKS; both may be configured
 * (service tokens minted locally beside an identity provider's user tokens).
 */
export function createTokenVerifier(options: TokenOptions): TokenVerifier {
  const secret = options.secret ? new TextEncoder().encode(options.secret) : undefined;
  const jwks = options.jwksUrl ? createRemoteJWKSet(new URL(options.jwksUrl)) : undefined;
  if (!secret && !jwks) throw new Error('token verification needs FABRIC_JWT_SECRET or FABRIC_JWKS_URL');
  const algorithms = [...(secret ? ['HS256'] : []), ...(jwks ? ASYMMETRIC : [])];
  const key: JWTVerifyGetKey = (header, token) => {
    if (header.alg === 'HS256' && secret) return secret;
    if (jwks) return jwks(header, token);
    throw new joseErrors.JOSEAlgNotAllowed('no key for this algorithm');
  };
  const cache = new VerifiedTokens();
  return async (token) => {
    const hit = cache.get(token);
    if (hit) return hit;
    let payload: Record<string, unknown>;
    try {
      const verified = await jwtVerify(token, key, { algorithms, issuer: options.issuer, audience: options.audience, requiredClaims: ['sub', 'exp'] });
      payload = verified.payload;
    } catch (err) {
      throw verificationError(err);
    }
    const claims = Claims.safeParse(payload);
    if (!claims.success) {
      throw unauthorized('invalid_token', `The token's claims are not valid (${claims.error.issues.map((i) => i.path.join('.') || 'claims').join(', ')}): it needs sub, role (one of ${Role.options.join(', ')}) and tenant.`);
    }
    const principal = { sub: claims.data.sub, role: claims.data.role, tenantId: claims.data.tenant, claims: payload };
    cache.set(token, principal, payload);
    return principal;
  };
}

type Verified = Principal & { claims: Record<string, unknown> };

/**
 * Tokens that verified, for a short while: HMAC or RSA verification is about a fifth of the
 * CPU of a task submit, and a producer sends the same token with every request. An entry
 * lives until the token's `exp` and at most VERIFIED_TTL_MS, so a key removed from the
 * identity provider's JWKS stops working within that time. Bounded; oldest entries go first.
 */
const VERIFIED_TTL_MS = 60_000;
const VERIFIED_MAX = 10_000;

class VerifiedTokens {
  private readonly entries = new Map<string, { principal: Verified; until: number }>();

  get(token: string): Verified | undefined {
    const e = this.entries.get(token);
    if (!e) return undefined;
    if (e.until > Date.now()) return e.principal;
    this.entries.delete(token);
    return undefined;
  }

  set(token: string, principal: Verified, payload: Record<string, unknown>): void {
    const exp = typeof payload.exp === 'number' ? payload.exp * 1000 : 0;
    // a token not yet valid (nbf) is not cached: jose refuses it until then
    if (typeof payload.nbf === 'number' && payload.nbf * 1000 > Date.now()) return;
    const until = Math.min(exp, Date.now() + VERIFIED_TTL_MS);
    if (until <= Date.now()) return;
    if (this.entries.size >= VERIFIED_MAX) this.entries.delete(this.entries.keys().next().value!);
    this.entries.set(token, { principal, until });
  }
}

function verificationError(err: unknown): FabricError {
  if (err instanceof joseErrors.JWTExpired) return unauthorized('token_expired', 'The token has expired; mint or request a new one.');
  if (err instanceof joseErrors.JWTClaimValidationFailed)
    return unauthorized('invalid_token', `The token was rejected: claim "${err.claim}" ${err.reason === 'missing' ? 'is missing' : 'is not acceptable'}.`);
  if (err instanceof joseErrors.JWSSignatureVerificationFailed)
    return unauthorized('invalid_token', 'The token signature does not verify: it was signed with another key.');
  if (err instanceof joseErrors.JOSEAlgNotAllowed)
    return unauthorized('invalid_token', 'The token uses a signing algorithm this server does not accept.');
  if (err instanceof joseErrors.JWKSNoMatchingKey) return unauthorized('invalid_token', 'No key of the identity provider matches the token.');
  // The identity provider could not be asked (timeout, network, bad JWKS): not the caller's fault.
  if (err instanceof joseErrors.JWKSTimeout || err instanceof joseErrors.JWKSInvalid || !(err instanceof joseErrors.JOSEError))
    return new FabricError(503, 'identity_provider_unavailable', 'The identity provider\'s keys (FABRIC_JWKS_URL) could not be fetched; retry shortly.', { retry_after_seconds: 5 });
  return unauthorized('invalid_token', 'The bearer token is malformed; send "Authorization: Bearer <jwt>".');
}
