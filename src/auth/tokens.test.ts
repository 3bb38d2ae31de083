import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { FabricError } from '../errors/index.js';
import { createTokenVerifier, mintToken, parseTtl } from './index.js';

const opts = { secret: 'a-secret-that-is-at-least-32-characters-long', issuer: 'agent-fabric', audience: 'agent-fabric' };
const verify = createTokenVerifier(opts);

async function rejectsWith(token: string, code: string) {
  await assert.rejects(verify(token), (err: unknown) => err instanceof FabricError && err.status === 401 && err.code === code);
}

describe('JWT tokens', () => {
  it('mints and verifies sub, role and tenant', async () => {
    const token = await mintToken(opts, { sub: 'agent-1', role: 'agent', tenant: 'default', ttl: '5m', extra: { sid: 's1' } });
    const p = await verify(token);
    assert.deepEqual([p.sub, p.role, p.tenantId, p.claims.sid], ['agent-1', 'agent', 'default', 's1']);
    assert.equal((p.claims.exp as number) - (p.claims.iat as number), 300);
  });

  it('refuses expired, foreign-signed, unsigned and wrongly addressed tokens', async () => {
    await rejectsWith(await mintToken(opts, { sub: 'x', role: 'admin', tenant: 'default', ttl: -10 }), 'token_expired');
    await rejectsWith(await mintToken({ ...opts, secret: 'another-secret-that-is-32-characters-long' }, { sub: 'x', role: 'admin', tenant: 'default' }), 'invalid_token');
    const none = `${Buffer.from('{"alg":"none","typ":"JWT"}').toString('base64url')}.${Buffer.from(JSON.stringify({ sub: 'x', role: 'admin', tenant: 'default', exp: 2e9, iss: 'agent-fabric', aud: 'agent-fabric' })).toString('base64url')}.`;
    await rejectsWith(none, 'invalid_token');
    await rejectsWith(await mintToken({ ...opts, issuer: 'someone-else' }, { sub: 'x', role: 'admin', tenant: 'default' }), 'invalid_token');
    await rejectsWith(await mintToken({ ...opts, audience: 'other-api' }, { sub: 'x', role: 'admin', tenant: 'default' }), 'invalid_token');
    await rejectsWith('not-a-jwt', 'invalid_token');
  });

  it('a token verified once (and cached) still expires at its exp', async () => {
    const token = await mintToken(opts, { sub: 'x', role: 'admin', tenant: 'default', ttl: 1 });
    assert.equal((await verify(token)).sub, 'x');
    assert.equal((await verify(token)).sub, 'x');
    await new Promise((resolve) => setTimeout(resolve, 1100));
    await rejectsWith(token, 'token_expired');
  });

  it('refuses tokens without exp or with unknown roles and bad tenant ids', async () => {
    const key = new TextEncoder().encode(opts.secret);
    const base = () => new SignJWT({ role: 'admin', tenant: 'default' }).setProtectedHeader({ alg: 'HS256' }).setSubject('x').setIssuer(opts.issuer).setAudience(opts.audience);
    await rejectsWith(await base().sign(key), 'invalid_token');
    const badRole = await new SignJWT({ role: 'root', tenant: 'default' }).setProtectedHeader({ alg: 'HS256' }).setSubject('x').setIssuer(opts.issuer).setAudience(opts.audience).setExpirationTime('1h').sign(key);
    await rejectsWith(badRole, 'invalid_token');
    const badTenant = await new SignJWT({ role: 'admin', tenant: '../etc' }).setProtectedHeader({ alg: 'HS256' }).setSubject('x').setIssuer(opts.issuer).setAudience(opts.audience).setExpirationTime('1h').sign(key);
    await rejectsWith(badTenant, 'invalid_token');
  });

  it('parses ttl forms and refuses others', () => {
    assert.deepEqual(['90', '15m', '1h', '7d', '30s'].map(parseTtl), [90, 900, 3600, 604800, 30]);
    assert.throws(() => parseTtl('1w'), /invalid ttl/);
  });

  describe('with an external identity provider (JWKS)', () => {
    let server: http.Server;
    let jwksUrl: string;
    let privateKey: Awaited<ReturnType<typeof generateKeyPair>>['privateKey'];
    before(async () => {
      const pair = await generateKeyPair('RS256');
      privateKey = pair.privateKey;
      const jwk = { ...(await exportJWK(pair.publicKey)), kid: 'k1', alg: 'RS256', use: 'sig' };
      server = http.createServer((_req, res) => res.setHeader('content-type', 'application/json').end(JSON.stringify({ keys: [jwk] })));
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      jwksUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/.well-known/jwks.json`;
    });
    after(() => server.close());

    it('with a secret as well, accepts both the secret\'s HS256 tokens and the provider\'s', async () => {
      const both = createTokenVerifier({ jwksUrl, secret: opts.secret, issuer: 'agent-fabric', audience: 'agent-fabric' });
      const hs = await mintToken(opts, { sub: 'svc', role: 'operator', tenant: 'default' });
      assert.equal((await both(hs)).sub, 'svc');
      const rs = await new SignJWT({ role: 'viewer', tenant: 'default' }).setProtectedHeader({ alg: 'RS256', kid: 'k1' }).setSubject('u').setIssuer('agent-fabric').setAudience('agent-fabric').setExpirationTime('5m').sign(privateKey);
      assert.equal((await both(rs)).role, 'viewer');
    });

    it('an unreachable identity provider is a 503, not the caller\'s fault', async () => {
      const down = createTokenVerifier({ jwksUrl: 'http://127.0.0.1:1/jwks.json', issuer: 'agent-fabric', audience: 'agent-fabric' });
      const rs = await new SignJWT({ role: 'viewer', tenant: 'default' }).setProtectedHeader({ alg: 'RS256', kid: 'k1' }).setSubject('u').setIssuer('agent-fabric').setAudience('agent-fabric').setExpirationTime('5m').sign(privateKey);
      await assert.rejects(down(rs), (err: unknown) => err instanceof FabricError && err.status === 503 && err.code === 'identity_provider_unavailable');
    });

    it('verifies RS256 tokens against the JWKS and refuses HS256 ones', async () => {
      const v = createTokenVerifier({ jwksUrl, issuer: 'https://idp.example', audience: 'agent-fabric' });
      const token = await new SignJWT({ role: 'operator', tenant: 'default' })
        .setProtectedHeader({ alg: 'RS256', kid: 'k1' })
        .setSubject('user-7')
        .setIssuer('https://idp.example')
        .setAudience('agent-fabric')
        .setExpirationTime('5m')
        .sign(privateKey);
      const p = await v(token);
      assert.deepEqual([p.sub, p.role], ['user-7', 'operator']);
      const hs = await mintToken({ ...opts, issuer: 'https://idp.example' }, { sub: 'x', role: 'admin', tenant: 'default' });
      await assert.rejects(v(hs), (err: unknown) => err instanceof FabricError && err.code === 'invalid_token');
    });
  });
});
