import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { createRequire } from 'node:module';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { EgressProxy, egressHelpersDir, type EgressDecision } from './index.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const RELAY = path.join(here, 'relay.cjs');
const PRELOAD = path.join(here, 'preload.cjs');

/** A socket with a buffer of everything received, to wait on. */
class Client {
  data = Buffer.alloc(0);
  ended = false;
  closed: Promise<void>;
  private waiters: (() => void)[] = [];
  constructor(readonly socket: net.Socket) {
    socket.on('data', (d: Buffer) => {
      this.data = Buffer.concat([this.data, d]);
      this.wake();
    });
    socket.on('error', () => {});
    socket.on('end', () => {
      this.ended = true;
      this.wake();
    });
    this.closed = new Promise((resolve) => socket.on('close', () => {
      this.ended = true;
      this.wake();
      resolve();
    }));
  }
  private wake() {
    for (const w of this.waiters.splice(0)) w();
  }
  static connect(to: string | number): Promise<Client> {
    return new Promise((resolve, reject) => {
      const s = typeof to === 'string' ? net.connect(to) : net.connect(to, '127.0.0.1');
      s.once('connect', () => resolve(new Client(s)));
      s.once('error', reject);
    });
  }
  text() {
    return this.data.toString('utf8');
  }
  /** Waits until the received text satisfies pred (or fails after ms). */
  async until(pred: (text: string) => boolean, ms = 5000): Promise<string> {
    const deadline = Date.now() + ms;
    while (!pred(this.text())) {
      if (this.ended) throw new Error(`connection ended; got ${JSON.stringify(this.text())}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out; got ${JSON.stringify(this.text())}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    return this.text();
  }
  /** Everything until the peer closes. */
  async all(ms = 5000): Promise<string> {
    await Promise.race([this.closed, new Promise((_, reject) => setTimeout(() => reject(new Error(`no close; got ${JSON.stringify(this.text())}`)), ms))]);
    return this.text();
  }
}

const head = (t: string) => t.split('\r\n')[0] ?? '';

function listenTcp(server: net.Server): Promise<number> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port)));
}

async function freePort(): Promise<number> {
  const s = net.createServer();
  const port = await listenTcp(s);
  await new Promise((resolve) => s.close(resolve));
  return port;
}

function waitFor(pred: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  return new Promise((resolve, reject) => {
    const tick = () => {
      if (pred()) return resolve();
      if (Date.now() > deadline) return reject(new Error('condition not met in time'));
      setTimeout(tick, 10);
    };
    tick();
  });
}

/** Runs a child process and collects its output. */
function run(file: string, args: string[], env: NodeJS.ProcessEnv, ms = 15_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`child timed out; stdout=${stdout} stderr=${stderr}`));
    }, ms);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

describe('egress proxy', () => {
  let dir: string;
  const echoSockets = new Set<net.Socket>();
  let echoConnections = 0;
  const echo = net.createServer((s) => {
    echoConnections += 1;
    echoSockets.add(s);
    s.on('close', () => echoSockets.delete(s));
    s.on('error', () => {});
    s.pipe(s);
  });
  let echoPort: number;
  const seen: { method: string; url: string; headers: http.IncomingHttpHeaders; body: string }[] = [];
  const web = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body });
      res.setHeader('set-cookie', ['a=1', 'b=2']);
      res.setHeader('x-upstream', 'yes');
      res.end(`hello ${req.method} ${req.url}`);
    });
  });
  let webPort: number;
  let closedPort: number;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'egress-'));
    echoPort = await listenTcp(echo);
    webPort = await listenTcp(web);
    closedPort = await freePort();
  });
  after(async () => {
    for (const s of echoSockets) s.destroy();
    web.closeAllConnections();
    await new Promise((resolve) => echo.close(resolve));
    await new Promise((resolve) => web.close(resolve));
    fs.rmSync(dir, { recursive: true, force: true });
  });

  async function start(opts: Partial<ConstructorParameters<typeof EgressProxy>[0]> = {}) {
    const decisions: EgressDecision[] = [];
    const proxy = new EgressProxy({ allow: [], internal: [`127.0.0.1:${echoPort}`, `127.0.0.1:${webPort}`], onDecision: (d) => decisions.push(d), ...opts });
    const sock = path.join(dir, `p${Math.random().toString(36).slice(2, 8)}.sock`);
    await proxy.listen(sock);
    return { proxy, sock, decisions };
  }

  it('tunnels CONNECT to an internal destination, byte for byte', async () => {
    const { proxy, sock, decisions } = await start();
    try {
      const c = await Client.connect(sock);
      c.socket.write(`CONNECT 127.0.0.1:${echoPort} HTTP/1.1\r\nHost: 127.0.0.1:${echoPort}\r\n\r\n`);
      const t = await c.until((x) => x.includes('\r\n\r\n'));
      assert.equal(head(t), 'HTTP/1.1 200 Connection Established');
      c.data = Buffer.alloc(0);
      const payload = Buffer.from([0, 1, 2, 255, 13, 10, 13, 10, 42]);
      c.socket.write(payload);
      await c.until((x) => Buffer.byteLength(x, 'latin1') >= payload.length);
      assert.deepEqual(c.data, payload);
      assert.equal(decisions.length, 1);
      assert.deepEqual([decisions[0]?.host, decisions[0]?.port, decisions[0]?.allowed, decisions[0]?.reason, decisions[0]?.method, decisions[0]?.address], ['127.0.0.1', echoPort, true, 'internal', 'CONNECT', '127.0.0.1']);
      assert.ok(decisions[0]?.at instanceof Date);
      assert.equal(proxy.decisions.length, 1);
      c.socket.destroy();
    } finally {
      await proxy.close();
    }
  });

  it('answers 403 to a destination not on the allow-list, without connecting', async () => {
    const { proxy, sock, decisions } = await start({ internal: [], allow: ['api.example.com'] });
    try {
      const before = echoConnections;
      for (const target of ['blocked.example.com:443', `127.0.0.1:${echoPort}`, 'api.example.com:22']) {
        const c = await Client.connect(sock);
        c.socket.write(`CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n\r\n`);
        const t = await c.all();
        assert.equal(head(t), 'HTTP/1.1 403 Forbidden', target);
        assert.match(t, new RegExp(`${target.replace(/\./g, '\\.')} is not on this agent's network_egress allow-list`));
      }
      assert.equal(echoConnections, before, 'the destination never saw a connection');
      assert.deepEqual(decisions.map((d) => [d.host, d.port, d.allowed, d.reason]), [
        ['blocked.example.com', 443, false, 'not on allow-list'],
        ['127.0.0.1', echoPort, false, 'not on allow-list'],
        ['api.example.com', 22, false, 'not on allow-list'],
      ]);
    } finally {
      await proxy.close();
    }
  });

  it('refuses allowed names and literals that resolve to loopback unless internal (SSRF)', async () => {
    const { proxy, sock, decisions } = await start({ internal: [], allow: [`localhost:${echoPort}`, `127.0.0.1:${echoPort}`, `[::1]:${echoPort}`] });
    try {
      const before = echoConnections;
      for (const target of [`localhost:${echoPort}`, `127.0.0.1:${echoPort}`, `[::1]:${echoPort}`, `LocalHost.:${echoPort}`]) {
        const c = await Client.connect(sock);
        c.socket.write(`CONNECT ${target} HTTP/1.1\r\n\r\n`);
        const t = await c.all();
        assert.equal(head(t), 'HTTP/1.1 403 Forbidden', target);
        assert.match(t, /non-public address/);
      }
      assert.equal(echoConnections, before);
      assert.ok(decisions.every((d) => !d.allowed && d.reason.startsWith('resolves to non-public address')), JSON.stringify(decisions));
    } finally {
      await proxy.close();
    }
  });

  it('resolves once and connects to the address it checked', async () => {
    const lookups: string[] = [];
    const lookup = async (host: string) => {
      lookups.push(host);
      return ['127.0.0.1'];
    };
    // an allowed name whose DNS answer is loopback (a rebinding attempt) is refused …
    const a = await start({ internal: [], allow: [`rebind.test:${echoPort}`], lookup });
    try {
      const c = await Client.connect(a.sock);
      c.socket.write(`CONNECT rebind.test:${echoPort} HTTP/1.1\r\n\r\n`);
      assert.equal(head(await c.all()), 'HTTP/1.1 403 Forbidden');
      assert.deepEqual(lookups, ['rebind.test']);
      assert.equal(a.decisions[0]?.reason, 'resolves to non-public address 127.0.0.1');
    } finally {
      await a.proxy.close();
    }
    // … an internal name is reached at the address the one lookup gave
    lookups.length = 0;
    const b = await start({ internal: [`fabric-api.test:${echoPort}`], lookup });
    try {
      const c = await Client.connect(b.sock);
      c.socket.write(`CONNECT fabric-api.test:${echoPort} HTTP/1.1\r\n\r\n`);
      await c.until((x) => x.includes('\r\n\r\n'));
      assert.equal(head(c.text()), 'HTTP/1.1 200 Connection Established');
      c.data = Buffer.alloc(0);
      c.socket.write('ping');
      assert.equal(await c.until((x) => x === 'ping'), 'ping');
      assert.deepEqual(lookups, ['fabric-api.test']);
      assert.equal(b.decisions[0]?.address, '127.0.0.1');
      c.socket.destroy();
    } finally {
      await b.proxy.close();
    }
  });

  it('forwards absolute-form plain HTTP, without hop-by-hop headers or proxy credentials', async () => {
    const { proxy, sock, decisions } = await start();
    try {
      seen.length = 0;
      const res = await new Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }>((resolve, reject) => {
        const req = http.request({
          socketPath: sock,
          method: 'POST',
          path: `http://127.0.0.1:${webPort}/x?y=1`,
          headers: { 'Proxy-Authorization': 'Basic c2VjcmV0', Connection: 'keep-alive, X-Hop', 'X-Hop': 'drop me', 'X-Keep': 'keep me', Host: 'evil.example.net', 'Content-Type': 'text/plain' },
        });
        req.on('response', (r) => {
          let body = '';
          r.on('data', (d) => (body += d));
          r.on('end', () => resolve({ status: r.statusCode ?? 0, headers: r.headers, body }));
        });
        req.on('error', reject);
        req.end('the body');
      });
      assert.equal(res.status, 200);
      assert.equal(res.body, 'hello POST /x?y=1');
      assert.deepEqual(res.headers['set-cookie'], ['a=1', 'b=2']);
      assert.equal(res.headers['x-upstream'], 'yes');
      const got = seen[0];
      assert.ok(got);
      assert.equal(got.url, '/x?y=1');
      assert.equal(got.body, 'the body');
      assert.equal(got.headers.host, `127.0.0.1:${webPort}`, 'Host names the checked destination');
      assert.equal(got.headers['x-keep'], 'keep me');
      assert.equal(got.headers['proxy-authorization'], undefined);
      assert.equal(got.headers['x-hop'], undefined);
      assert.deepEqual([decisions[0]?.method, decisions[0]?.allowed], ['POST', true]);
    } finally {
      await proxy.close();
    }
  });

  it('answers 403 to plain HTTP for a host not allowed, and 502 for an unreachable one', async () => {
    const { proxy, sock } = await start({ internal: [`127.0.0.1:${webPort}`, `127.0.0.1:${closedPort}`] });
    try {
      seen.length = 0;
      const c = await Client.connect(sock);
      c.socket.write(`GET http://blocked.example.com/x HTTP/1.1\r\nHost: blocked.example.com\r\n\r\n`);
      const t = await c.until((x) => /\r\n\r\n[^]*\n/.test(x));
      assert.equal(head(t), 'HTTP/1.1 403 Forbidden');
      assert.match(t, /blocked\.example\.com:80 is not on this agent's network_egress allow-list/);
      assert.equal(seen.length, 0);
      c.socket.destroy();

      const d = await Client.connect(sock);
      d.socket.write(`CONNECT 127.0.0.1:${closedPort} HTTP/1.1\r\n\r\n`);
      const u = await d.all();
      assert.equal(head(u), 'HTTP/1.1 502 Bad Gateway');
      assert.match(u, /cannot reach 127\.0\.0\.1:\d+: connect to 127\.0\.0\.1 port \d+ failed: ECONNREFUSED/);
    } finally {
      await proxy.close();
    }
  });

  it('answers 400 to malformed and non-proxy requests, 431 to huge heads, and keeps serving', async () => {
    const { proxy, sock } = await start();
    try {
      const cases: [string, string][] = [
        ['garbage\r\n\r\n', '400'],
        ['GET /x HTTP/1.1\r\nHost: a\r\n\r\n', '400'],
        ['GET https://api.example.com/ HTTP/1.1\r\nHost: a\r\n\r\n', '400'],
        ['CONNECT nohostport HTTP/1.1\r\n\r\n', '400'],
        ['CONNECT a.com:99999 HTTP/1.1\r\n\r\n', '400'],
        ['CONNECT [::1 HTTP/1.1\r\n\r\n', '400'],
        ['GET http://a b/ HTTP/1.1\r\n\r\n', '400'],
        [`GET http://x.com/ HTTP/1.1\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`, '431'],
      ];
      for (const [req, status] of cases) {
        const c = await Client.connect(sock);
        c.socket.write(req);
        const t = await c.until((x) => x.startsWith('HTTP/1.1 '));
        assert.equal(head(t).split(' ')[1], status, JSON.stringify(req.slice(0, 40)));
        c.socket.destroy();
      }
      // a client that vanishes half-way through its head
      const gone = await Client.connect(sock);
      gone.socket.write('CONNECT 127.0.0.1:1');
      gone.socket.destroy();
      // the proxy still works
      const ok = await Client.connect(sock);
      ok.socket.write(`CONNECT 127.0.0.1:${echoPort} HTTP/1.1\r\n\r\n`);
      await ok.until((x) => x.includes('\r\n\r\n'));
      assert.equal(head(ok.text()), 'HTTP/1.1 200 Connection Established');
      ok.socket.destroy();
    } finally {
      await proxy.close();
    }
  });

  it('survives a client that leaves mid-tunnel, and close() tears down open tunnels', async () => {
    const { proxy, sock } = await start();
    const open = async () => {
      const c = await Client.connect(sock);
      c.socket.write(`CONNECT 127.0.0.1:${echoPort} HTTP/1.1\r\n\r\n`);
      await c.until((x) => x.includes('\r\n\r\n'));
      c.data = Buffer.alloc(0);
      c.socket.write('x');
      await c.until((x) => x === 'x');
      return c;
    };
    const leaving = await open();
    const n = echoSockets.size;
    leaving.socket.destroy();
    await waitFor(() => echoSockets.size === n - 1);

    const a = await open();
    const b = await open();
    assert.equal(echoSockets.size, n + 1);
    await proxy.close();
    await Promise.all([a.all(), b.all()]);
    await waitFor(() => echoSockets.size === n - 1);
    assert.equal(fs.existsSync(sock), false, 'the socket file is gone');
    await assert.rejects(Client.connect(sock));
    await proxy.close(); // idempotent
  });

  it('listens on TCP too, and refuses invalid options', async () => {
    const proxy = new EgressProxy({ allow: [], internal: [`127.0.0.1:${echoPort}`] });
    await proxy.listen({ port: 0, host: '127.0.0.1' });
    try {
      const c = await Client.connect((proxy.address() as net.AddressInfo).port);
      c.socket.write(`CONNECT 127.0.0.1:${echoPort} HTTP/1.1\r\n\r\n`);
      await c.until((x) => x.includes('\r\n\r\n'));
      c.socket.destroy();
    } finally {
      await proxy.close();
    }
    assert.throws(() => new EgressProxy({ allow: ['*'] }), /invalid network_egress entry "\*"/);
    assert.throws(() => new EgressProxy({ allow: [], internal: ['api.internal'] }), /expected "host:port"/);
    assert.equal(fs.existsSync(path.join(egressHelpersDir(), 'relay.cjs')), true);
  });
});

describe('egress relay and Node preload', () => {
  let dir: string;
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'egress-relay-'));
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('relay.cjs relays TCP connections to a Unix socket, byte for byte', async () => {
    const sock = path.join(dir, 'echo.sock');
    const echo = net.createServer((s) => {
      s.on('error', () => {});
      s.pipe(s);
    });
    await new Promise<void>((resolve) => echo.listen(sock, resolve));
    const port = await freePort();
    const relay = spawn(process.execPath, [RELAY, sock, String(port)], { stdio: 'ignore' });
    try {
      let c: Client | undefined;
      for (let i = 0; i < 100 && !c; i++) c = await Client.connect(port).catch(() => new Promise<undefined>((r) => setTimeout(() => r(undefined), 50)));
      assert.ok(c, 'relay listening');
      const payload = Buffer.alloc(256 * 1024, 7);
      c.socket.write(payload);
      await c.until((x) => Buffer.byteLength(x, 'latin1') >= payload.length || x.length >= payload.length);
      assert.equal(c.data.length, payload.length);
      assert.ok(c.data.equals(payload));
      c.socket.end();
      await c.all();
    } finally {
      relay.kill('SIGTERM');
      await new Promise((resolve) => echo.close(resolve));
    }
  });

  it('relay.cjs starts its command once listening, answers 502 when the proxy is gone, and passes the exit code on', async () => {
    const port = await freePort();
    const script = `const s=require('net').connect(${port},'127.0.0.1');let d='';s.on('data',x=>d+=x);s.on('close',()=>{process.stdout.write(d.split('\\r\\n')[0]);process.exit(3)});s.write('CONNECT a:1 HTTP/1.1\\r\\n\\r\\n')`;
    const r = await run(process.execPath, [RELAY, path.join(dir, 'missing.sock'), String(port), '--', process.execPath, '-e', script], { PATH: process.env.PATH });
    assert.equal(r.stdout, 'HTTP/1.1 502 Bad Gateway');
    assert.equal(r.code, 3);
    const bad = await run(process.execPath, [RELAY, 'x.sock'], { PATH: process.env.PATH });
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /usage/);
  });

  /** A self-signed certificate for localhost and 127.0.0.1, when openssl is here. */
  function makeCert(): { key: string; cert: string; certPath: string } | null {
    const key = path.join(dir, 'key.pem');
    const certPath = path.join(dir, 'cert.pem');
    try {
      execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', certPath, '-days', '2', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1'], { stdio: 'ignore' });
      return { key: fs.readFileSync(key, 'utf8'), cert: fs.readFileSync(certPath, 'utf8'), certPath };
    } catch {
      return null;
    }
  }

  /** Proxy (Unix socket) ← relay (TCP, as in the sandbox) ← a node agent with the preload. */
  async function throughPreload(extraEnv: Record<string, string>) {
    const seen: string[] = [];
    const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
      seen.push(`${req.method} ${req.url} ${req.headers.host}`);
      res.end(`ok ${req.url}`);
    };
    const web = http.createServer(handler);
    const webPort = await listenTcp(web);
    const tlsCert = makeCert();
    const secure = tlsCert ? https.createServer({ key: tlsCert.key, cert: tlsCert.cert }, handler) : null;
    const securePort = secure ? await listenTcp(secure) : 0;
    const decisions: EgressDecision[] = [];
    const proxy = new EgressProxy({ allow: [], internal: [`127.0.0.1:${webPort}`, `localhost:${securePort}`], onDecision: (d) => decisions.push(d) });
    const sock = path.join(dir, `proxy-${Math.random().toString(36).slice(2, 8)}.sock`);
    await proxy.listen(sock);
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const agent = `
      const get = (u) => new Promise((resolve) => require(u.split(':')[0]).get(u, (r) => { let b = ''; r.on('data', (d) => (b += d)); r.on('end', () => resolve(r.statusCode + ' ' + b)); }).on('error', (e) => resolve('error ' + e.message)));
      const f = (u) => fetch(u).then((r) => r.text(), (e) => 'error ' + (e.cause ? e.cause.message : e.message));
      (async () => {
        const out = {};
        out.fetch = await f('http://127.0.0.1:${webPort}/via-fetch');
        out.http = await get('http://127.0.0.1:${webPort}/via-http');
        out.denied = await f('http://blocked.example.com/');
        out.deniedHttp = await get('http://blocked.example.com/');
        if (${securePort}) {
          out.fetchTls = await f('https://localhost:${securePort}/via-fetch-tls');
          out.https = await get('https://localhost:${securePort}/via-https');
        }
        process.stdout.write(JSON.stringify(out));
      })();`;
    try {
      const r = await run(process.execPath, [RELAY, sock, String(port), '--', process.execPath, '-e', agent], {
        PATH: process.env.PATH,
        HTTP_PROXY: url,
        HTTPS_PROXY: url,
        http_proxy: url,
        https_proxy: url,
        NODE_OPTIONS: `--require ${PRELOAD}`,
        ...(tlsCert ? { NODE_EXTRA_CA_CERTS: tlsCert.certPath } : {}),
        ...extraEnv,
      });
      assert.equal(r.code, 0, r.stderr);
      assert.ok(r.stdout, `no output; stderr: ${r.stderr}`);
      return { out: JSON.parse(r.stdout) as Record<string, string>, seen, decisions, webPort, securePort };
    } finally {
      await proxy.close();
      await new Promise((resolve) => web.close(resolve));
      if (secure) await new Promise((resolve) => secure.close(resolve));
    }
  }

  it('preload.cjs routes fetch and http(s) through the proxy with Node’s built-in undici', async () => {
    const { out, seen, decisions, webPort, securePort } = await throughPreload({});
    assert.equal(out.fetch, 'ok /via-fetch');
    assert.equal(out.http, '200 ok /via-http');
    assert.match(out.denied ?? '', /^error .*blocked\.example\.com:80 refused \(403\): .*not on this agent's network_egress allow-list/);
    assert.match(out.deniedHttp ?? '', /^error .*blocked\.example\.com:80 refused \(403\)/);
    const want = [`GET /via-fetch 127.0.0.1:${webPort}`, `GET /via-http 127.0.0.1:${webPort}`];
    const tunnels = ['CONNECT 127.0.0.1 true', 'CONNECT 127.0.0.1 true', 'CONNECT blocked.example.com false', 'CONNECT blocked.example.com false'];
    if (securePort) {
      // TLS end to end inside the tunnel, verified against the agent's CA (NODE_EXTRA_CA_CERTS)
      assert.equal(out.fetchTls, 'ok /via-fetch-tls');
      assert.equal(out.https, '200 ok /via-https');
      want.push(`GET /via-fetch-tls localhost:${securePort}`, `GET /via-https localhost:${securePort}`);
      tunnels.push('CONNECT localhost true', 'CONNECT localhost true');
    }
    assert.deepEqual(seen.sort(), want.sort());
    assert.deepEqual(decisions.map((d) => `${d.method} ${d.host} ${d.allowed}`).sort(), tunnels.sort());
  });

  const undiciPath = process.env.FABRIC_TEST_UNDICI_PATH ?? (() => {
    try {
      return createRequire(import.meta.url).resolve('undici');
    } catch {
      return undefined;
    }
  })();
  it('preload.cjs uses npm undici’s proxy agent for fetch when it can be required', { skip: undiciPath ? false : 'the undici package is not installed (set FABRIC_TEST_UNDICI_PATH to test this)' }, async () => {
    const { out, seen, decisions } = await throughPreload({ FABRIC_UNDICI_PATH: undiciPath ?? '', FABRIC_PRELOAD_DEBUG: '1' });
    assert.equal(out.fetch, 'ok /via-fetch');
    assert.equal(out.http, '200 ok /via-http');
    assert.match(out.denied ?? '', /^(error|status 403)/);
    if (out.fetchTls !== undefined) assert.equal(out.fetchTls, 'ok /via-fetch-tls');
    assert.ok(seen.some((s) => s.startsWith('GET /via-fetch ')));
    assert.ok(decisions.some((d) => d.host === 'blocked.example.com' && !d.allowed));
  });

  it('preload.cjs leaves a process without a proxy alone and never crashes one', async () => {
    const r = await run(process.execPath, ['-e', 'process.stdout.write(String(typeof fetch) + " " + (require("http").globalAgent.constructor.name))'], { PATH: process.env.PATH, NODE_OPTIONS: `--require ${PRELOAD}` });
    assert.equal(r.stdout, 'function Agent');
    const bad = await run(process.execPath, ['-e', 'process.stdout.write("alive")'], { PATH: process.env.PATH, NODE_OPTIONS: `--require ${PRELOAD}`, HTTPS_PROXY: 'not a url', FABRIC_UNDICI_PATH: '/nonexistent' });
    assert.deepEqual([bad.code, bad.stdout], [0, 'alive']);
  });
});
