import dns from 'node:dns';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { isPublicAddress, matchesAllowList, normalizeHost, parseAllowList, parsePort, splitHostPort, type AllowEntry } from './allow.js';

/**
 * The forward proxy that is a sandbox's only way out. It runs in the worker, one per session,
 * on a Unix socket that is bind-mounted into the sandbox (relay.cjs turns it into
 * 127.0.0.1:3128 inside). It speaks `CONNECT host:port` (tunnels, for HTTPS and anything else)
 * and absolute-form plain HTTP (`GET http://host/path`), and nothing else.
 *
 * Every destination must be on the agent's allow-list, and must resolve (here, the sandbox has
 * no DNS) to public addresses only, unless it is one of the fabric's own `internal` endpoints.
 * The connection goes to the very address that was checked, so DNS rebinding cannot move it.
 * What it cannot see: inside a CONNECT tunnel the TLS SNI / Host may name another site served
 * from the same address (domain fronting); that needs TLS interception, which this does not do.
 */

export interface EgressDecision {
  /** Destination host as asked for (normalised: lower case, no trailing dot, IPv6 unbracketed). */
  host: string;
  port: number;
  allowed: boolean;
  /** Why: "allow-list" or "internal" (with "; unreachable: …" when the connection then failed), "not on allow-list", "resolves to non-public address …", "DNS lookup failed: …". */
  reason: string;
  /** CONNECT, or the HTTP method of a plain-HTTP request. */
  method: 'CONNECT' | string;
  at: Date;
  /** The address connected to (allowed decisions only). */
  address?: string;
}

/**
 * A policy check per destination (the policy engine's `net.connect`, for the session's agent):
 * synchronous and in memory — it must not touch the database per connection. Asked after the
 * internal endpoints and before the allow-list; both must allow.
 */
export type EgressCheck = (host: string, port: number) => { allowed: boolean; reason: string };

export interface EgressProxyOptions {
  /** Allowed destinations: "example.com" (exact), "*.example.com" (any subdomain, not the apex), optional ":port" suffix restricting the port (default: 80 and 443 only). Case-insensitive, trailing dot ignored. */
  allow: readonly string[];
  /** Destinations always allowed even when they resolve to loopback/private addresses (the fabric's own API and gateway), as "host:port". */
  internal?: readonly string[];
  /** Called for every decision, allowed or denied (the worker logs and audits denials). */
  onDecision?: (d: EgressDecision) => void;
  /** The agent's policy on net.connect; without one only the allow-list decides. */
  check?: EgressCheck | undefined;
  /** Time for the DNS lookup, and again for connecting to a destination; default 10 s each. */
  connectTimeoutMs?: number;
  /** A tunnel or request with no traffic either way for this long is closed; default 5 min. */
  idleTimeoutMs?: number;
  /** Time a client has to send a complete request head; default 10 s. */
  headersTimeoutMs?: number;
  /** Largest request head accepted (431 beyond); default 16 KiB. */
  maxHeaderBytes?: number;
  /** Concurrent client connections; more are dropped. Default 256. */
  maxConnections?: number;
  /** Resolver (default: the system's, via dns.lookup); returns every address of host. */
  lookup?: (host: string) => Promise<string[]>;
  /** How many recent decisions `decisions` keeps; default 1000. */
  keepDecisions?: number;
}

/** Hop-by-hop headers, never forwarded (RFC 9110 §7.6.1), plus the proxy's own credentials. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade']);

interface Target {
  host: string;
  port: number;
}

type Resolution = { ok: true; addresses: string[]; reason: string } | { ok: false; status: number; body: string };

function defaultLookup(host: string): Promise<string[]> {
  return dns.promises.lookup(host, { all: true, verbatim: true }).then((r) => r.map((a) => a.address));
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

const STATUS_TEXT: Record<number, string> = { 400: 'Bad Request', 403: 'Forbidden', 408: 'Request Timeout', 431: 'Request Header Fields Too Large', 502: 'Bad Gateway', 503: 'Service Unavailable' };

/** Writes a complete HTTP/1.1 response on a raw socket and closes it. */
function rawReply(socket: Duplex, status: number, body: string): void {
  if (socket.destroyed) return;
  const text = `${body}\n`;
  const head = `HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? 'Error'}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(text)}\r\nConnection: close\r\n\r\n`;
  try {
    socket.end(head + text);
  } catch {
    socket.destroy();
  }
  // a client that never reads must not hold the socket open
  setTimeout(() => socket.destroy(), 2000).unref();
}

/** "host:port" of a CONNECT request (the port is required). */
function parseConnectTarget(url: string | undefined): Target | null {
  if (!url || url.length > 300) return null;
  const split = splitHostPort(url);
  if (!split || split.port === undefined) return null;
  const port = parsePort(split.port);
  const host = normalizeHost(split.host);
  return port === null || host === null ? null : { host, port };
}

function parseInternal(entries: readonly string[]): Set<string> {
  const out = new Set<string>();
  for (const s of entries) {
    const split = splitHostPort(s.trim());
    const port = split?.port === undefined ? null : parsePort(split.port);
    const host = split ? normalizeHost(split.host) : null;
    if (port === null || host === null) throw new Error(`invalid internal egress entry ${JSON.stringify(s)}: expected "host:port"`);
    out.add(`${host}|${port}`);
  }
  return out;
}

export class EgressProxy {
  /** The most recent decisions, oldest first (bounded by keepDecisions). */
  readonly decisions: EgressDecision[] = [];
  private allow: AllowEntry[];
  private internal: Set<string>;
  private check: EgressCheck | undefined;
  private readonly opts: Required<Omit<EgressProxyOptions, 'allow' | 'internal' | 'onDecision' | 'check'>> & Pick<EgressProxyOptions, 'onDecision'>;
  private readonly server: http.Server;
  private readonly clients = new Set<Duplex>();
  private readonly upstreams = new Set<net.Socket>();
  private closed = false;
  private closing: Promise<void> | undefined;

  constructor(opts: EgressProxyOptions) {
    this.allow = parseAllowList(opts.allow);
    this.internal = parseInternal(opts.internal ?? []);
    this.check = opts.check;
    this.opts = {
      onDecision: opts.onDecision,
      connectTimeoutMs: opts.connectTimeoutMs ?? 10_000,
      idleTimeoutMs: opts.idleTimeoutMs ?? 300_000,
      headersTimeoutMs: opts.headersTimeoutMs ?? 10_000,
      maxHeaderBytes: opts.maxHeaderBytes ?? 16 * 1024,
      maxConnections: opts.maxConnections ?? 256,
      lookup: opts.lookup ?? defaultLookup,
      keepDecisions: opts.keepDecisions ?? 1000,
    };
    this.server = http.createServer({
      maxHeaderSize: this.opts.maxHeaderBytes,
      headersTimeout: this.opts.headersTimeoutMs,
      requestTimeout: 0, // bodies and tunnels are bounded by the idle timeout instead
      connectionsCheckingInterval: Math.min(1000, this.opts.headersTimeoutMs),
      keepAliveTimeout: 5000,
    });
    this.server.maxConnections = this.opts.maxConnections;
    this.server.setTimeout(this.opts.idleTimeoutMs); // idle client sockets are destroyed
    this.server.on('connection', (socket: net.Socket) => {
      socket.on('error', () => {});
      if (this.closed) return void socket.destroy();
      this.clients.add(socket);
      socket.on('close', () => this.clients.delete(socket));
    });
    this.server.on('connect', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
      this.handleConnect(req, socket, head).catch((err: unknown) => rawReply(socket, 502, `agent-fabric egress: ${(err as Error).message}`));
    });
    this.server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
      this.handleRequest(req, res).catch((err: unknown) => this.failResponse(res, 502, `agent-fabric egress: ${(err as Error).message}`));
    });
    this.server.on('upgrade', (_req: http.IncomingMessage, socket: Duplex) => {
      rawReply(socket, 400, 'agent-fabric egress: Upgrade is not supported on plain-HTTP proxy requests; use CONNECT (e.g. wss://)');
    });
    this.server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
      const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
      if ((socket as net.Socket).writable && !(socket as net.Socket).bytesWritten) rawReply(socket, status, 'agent-fabric egress: malformed request');
      else socket.destroy();
    });
  }

  /**
   * Replaces the allow-list, the internal endpoints, the policy check and the decision observer.
   * A warm sandbox's proxy listens (denying everything) before its task is known and gets the
   * agent's policy here.
   */
  setPolicy(p: Pick<EgressProxyOptions, 'allow' | 'internal' | 'onDecision' | 'check'>): void {
    const allow = parseAllowList(p.allow);
    const internal = parseInternal(p.internal ?? []);
    this.allow = allow;
    this.internal = internal;
    this.check = p.check;
    this.opts.onDecision = p.onDecision;
  }

  /** Listens on a Unix socket path (a stale socket file there is replaced), or on TCP for tests. */
  async listen(where: string | { port: number; host?: string }): Promise<void> {
    if (this.closed) throw new Error('EgressProxy is closed');
    if (typeof where === 'string') {
      const st = await fs.promises.lstat(where).catch(() => null);
      if (st?.isSocket()) await fs.promises.unlink(where);
      else if (st) throw new Error(`cannot listen on ${where}: a file that is not a socket is there`);
    }
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error) => reject(err);
      this.server.once('error', onError);
      const done = () => {
        this.server.off('error', onError);
        this.server.on('error', () => {});
        resolve();
      };
      if (typeof where === 'string') this.server.listen(where, done);
      else this.server.listen(where.port, where.host ?? '127.0.0.1', done);
    });
  }

  /** The listening address: a path, or host and port for TCP. */
  address(): net.AddressInfo | string | null {
    return this.server.address();
  }

  /** Stops listening and destroys every client connection and every tunnel or upstream request. */
  close(): Promise<void> {
    if (this.closing) return this.closing;
    this.closed = true;
    this.closing = new Promise<void>((resolve) => {
      if (!this.server.listening) return resolve();
      this.server.close(() => resolve());
    });
    for (const s of this.clients) s.destroy();
    for (const s of this.upstreams) s.destroy();
    this.server.closeAllConnections();
    return this.closing;
  }

  private record(d: Omit<EgressDecision, 'at'>): void {
    const decision: EgressDecision = { ...d, at: new Date() };
    this.decisions.push(decision);
    if (this.decisions.length > this.opts.keepDecisions) this.decisions.splice(0, this.decisions.length - this.opts.keepDecisions);
    try {
      this.opts.onDecision?.(decision);
    } catch {
      /* an observer's failure must not break the proxy */
    }
  }

  /** Policy, then DNS and the address check. Records the decision. */
  private async resolve(t: Target, method: string): Promise<Resolution> {
    const where = t.host.includes(':') ? `[${t.host}]:${t.port}` : `${t.host}:${t.port}`;
    const internal = this.internal.has(`${t.host}|${t.port}`);
    if (!internal && this.check) {
      let verdict: { allowed: boolean; reason: string };
      try {
        verdict = this.check(t.host, t.port);
      } catch (err) {
        verdict = { allowed: false, reason: `the policy check failed: ${(err as Error).message}` };
      }
      if (!verdict.allowed) {
        this.record({ host: t.host, port: t.port, allowed: false, reason: `policy: ${verdict.reason}`, method });
        return { ok: false, status: 403, body: `agent-fabric egress: ${where} is refused by policy: ${verdict.reason}` };
      }
    }
    if (!internal && !matchesAllowList(t.host, t.port, this.allow)) {
      this.record({ host: t.host, port: t.port, allowed: false, reason: 'not on allow-list', method });
      return { ok: false, status: 403, body: `agent-fabric egress: ${where} is not on this agent's network_egress allow-list` };
    }
    let addresses: string[];
    if (net.isIP(t.host)) addresses = [t.host];
    else {
      try {
        addresses = await withTimeout(this.opts.lookup(t.host), this.opts.connectTimeoutMs, `DNS lookup of ${t.host}`);
      } catch (err) {
        const why = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
        this.record({ host: t.host, port: t.port, allowed: false, reason: `DNS lookup failed: ${why}`, method });
        return { ok: false, status: 502, body: `agent-fabric egress: cannot resolve ${t.host} (${why})` };
      }
      addresses = addresses.filter((a) => net.isIP(a));
      if (!addresses.length) {
        this.record({ host: t.host, port: t.port, allowed: false, reason: 'DNS lookup failed: no address', method });
        return { ok: false, status: 502, body: `agent-fabric egress: ${t.host} has no address` };
      }
    }
    if (!internal) {
      const publicOnes = addresses.filter(isPublicAddress);
      if (!publicOnes.length) {
        const reason = `resolves to non-public address ${addresses.join(', ')}`;
        this.record({ host: t.host, port: t.port, allowed: false, reason, method });
        return { ok: false, status: 403, body: `agent-fabric egress: ${where} ${reason}; only the fabric's own endpoints may be reached on private, loopback or link-local addresses` };
      }
      addresses = publicOnes;
    }
    return { ok: true, addresses, reason: internal ? 'internal' : 'allow-list' };
  }

  /** Connects to the checked addresses in turn (never resolving again) within the connect timeout. */
  private async connect(addresses: readonly string[], port: number): Promise<net.Socket> {
    const deadline = Date.now() + this.opts.connectTimeoutMs;
    let lastErr: Error = new Error('no address');
    for (const address of addresses.slice(0, 4)) {
      const left = deadline - Date.now();
      if (left <= 0 || this.closed) break;
      try {
        return await new Promise<net.Socket>((resolve, reject) => {
          const s = net.connect({ host: address, port, allowHalfOpen: true });
          this.upstreams.add(s);
          s.on('close', () => this.upstreams.delete(s));
          const timer = setTimeout(() => {
            s.destroy();
            reject(new Error(`connect to ${address} port ${port} timed out`));
          }, left);
          s.once('connect', () => {
            clearTimeout(timer);
            s.removeAllListeners('error');
            s.on('error', () => {});
            resolve(s);
          });
          s.once('error', (err: NodeJS.ErrnoException) => {
            clearTimeout(timer);
            s.destroy();
            reject(new Error(`connect to ${address} port ${port} failed: ${err.code ?? err.message}`));
          });
        });
      } catch (err) {
        lastErr = err as Error;
      }
    }
    if (this.closed) throw new Error('proxy closed');
    if (Date.now() >= deadline && !/timed out/.test(lastErr.message)) throw new Error(`connect timed out after ${this.opts.connectTimeoutMs} ms (${lastErr.message})`);
    throw lastErr;
  }

  private async handleConnect(req: http.IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    socket.on('error', () => {});
    socket.pause();
    const target = parseConnectTarget(req.url);
    if (!target) return rawReply(socket, 400, 'agent-fabric egress: CONNECT needs host:port');
    const r = await this.resolve(target, 'CONNECT');
    if (!r.ok) return rawReply(socket, r.status, r.body);
    if (socket.destroyed) return;
    let upstream: net.Socket;
    try {
      upstream = await this.connect(r.addresses, target.port);
    } catch (err) {
      this.record({ host: target.host, port: target.port, allowed: true, reason: `${r.reason}; unreachable: ${(err as Error).message}`, method: 'CONNECT' });
      return rawReply(socket, 502, `agent-fabric egress: cannot reach ${target.host}:${target.port}: ${(err as Error).message}`);
    }
    this.record({ host: target.host, port: target.port, allowed: true, reason: r.reason, method: 'CONNECT', address: upstream.remoteAddress ?? r.addresses[0] ?? '' });
    if (socket.destroyed || this.closed) return void upstream.destroy();
    socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
    if (head.length) upstream.write(head);
    this.splice(socket, upstream);
  }

  /** Pipes both ways; an end is passed on (half-close), an error or idle timeout ends both. */
  private splice(a: Duplex, b: net.Socket): void {
    const destroyBoth = () => {
      a.destroy();
      b.destroy();
    };
    a.on('error', destroyBoth);
    b.on('error', destroyBoth);
    b.setNoDelay(true);
    b.setTimeout(this.opts.idleTimeoutMs, destroyBoth);
    (a as net.Socket).setTimeout?.(this.opts.idleTimeoutMs, destroyBoth);
    const afterClose = (other: Duplex) => () => {
      if (other.destroyed) return;
      other.end();
      setTimeout(() => other.destroy(), 30_000).unref();
    };
    a.on('close', afterClose(b));
    b.on('close', afterClose(a));
    a.pipe(b);
    b.pipe(a);
    a.resume();
  }

  private failResponse(res: http.ServerResponse, status: number, body: string): void {
    if (res.headersSent || res.destroyed) return void res.destroy();
    try {
      res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', connection: 'close' });
      res.end(`${body}\n`);
    } catch {
      res.destroy();
    }
  }

  private async handleRequest(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const raw = req.url ?? '';
    if (!/^http:\/\//i.test(raw)) {
      req.resume();
      const why = /^https:\/\//i.test(raw) ? 'https:// URLs must be tunnelled with CONNECT' : 'this is a forward proxy: send CONNECT host:port or an absolute http:// URL';
      return this.failResponse(res, 400, `agent-fabric egress: ${why}`);
    }
    let url: URL;
    let target: Target | null = null;
    try {
      url = new URL(raw);
      const port = url.port ? parsePort(url.port) : 80;
      const host = normalizeHost(url.hostname);
      if (port !== null && host !== null) target = { host, port };
    } catch {
      url = new URL('http://invalid/');
    }
    if (!target) {
      req.resume();
      return this.failResponse(res, 400, 'agent-fabric egress: malformed URL');
    }
    const r = await this.resolve(target, req.method ?? 'GET');
    if (!r.ok) {
      req.resume();
      return this.failResponse(res, r.status, r.body);
    }
    let socket: net.Socket;
    try {
      socket = await this.connect(r.addresses, target.port);
    } catch (err) {
      this.record({ host: target.host, port: target.port, allowed: true, reason: `${r.reason}; unreachable: ${(err as Error).message}`, method: req.method ?? 'GET' });
      req.resume();
      return this.failResponse(res, 502, `agent-fabric egress: cannot reach ${target.host}:${target.port}: ${(err as Error).message}`);
    }
    this.record({ host: target.host, port: target.port, allowed: true, reason: r.reason, method: req.method ?? 'GET', address: socket.remoteAddress ?? r.addresses[0] ?? '' });
    if (req.destroyed || res.destroyed || this.closed) return void socket.destroy();

    const headers = forwardHeaders(req.rawHeaders);
    // The Host header always names the destination that was checked: a different one would let
    // the request reach another site served from the same address.
    headers.unshift('Host', url.host);
    const up = http.request({ method: req.method, path: `${url.pathname}${url.search}`, headers, setHost: false, createConnection: () => socket });
    up.setTimeout(this.opts.idleTimeoutMs, () => up.destroy(new Error('upstream idle timeout')));
    up.on('response', (ur: http.IncomingMessage) => {
      if (res.destroyed) return void up.destroy();
      res.writeHead(ur.statusCode ?? 502, ur.statusMessage, forwardHeaders(ur.rawHeaders));
      ur.pipe(res);
      ur.on('error', () => res.destroy());
    });
    up.on('error', (err: Error) => this.failResponse(res, 502, `agent-fabric egress: ${target.host}:${target.port}: ${err.message}`));
    res.on('close', () => {
      if (!res.writableFinished) up.destroy();
      socket.destroy();
    });
    req.on('error', () => up.destroy());
    req.pipe(up);
  }
}

/** rawHeaders without hop-by-hop headers (and those the Connection header names) or Host. */
function forwardHeaders(raw: readonly string[]): string[] {
  const drop = new Set(HOP_BY_HOP);
  drop.add('host');
  for (let i = 0; i + 1 < raw.length; i += 2) {
    if (raw[i]?.toLowerCase() === 'connection') for (const tok of (raw[i + 1] ?? '').split(',')) drop.add(tok.trim().toLowerCase());
  }
  const out: string[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i] ?? '';
    if (!drop.has(name.toLowerCase())) out.push(name, raw[i + 1] ?? '');
  }
  return out;
}
