'use strict';
/*
 * agent-fabric egress preload for Node agents:  NODE_OPTIONS="--require /fabric/preload.cjs"
 *
 * The sandbox has no network except the egress proxy (HTTP(S)_PROXY, relayed by relay.cjs).
 * curl and Python honour HTTP(S)_PROXY by themselves; Node does not, so this routes through it:
 *
 * - fetch(): with the npm `undici` package, if it can be required (from $FABRIC_UNDICI_PATH, next
 *   to this file, or from the agent's working directory), `setGlobalDispatcher(new
 *   EnvHttpProxyAgent(...))` (or ProxyAgent on older undici). Without it, Node's own built-in
 *   undici Agent is given a connector that opens a CONNECT tunnel through the proxy. Should both
 *   fail (a Node whose fetch is not undici-based), fetch simply has no network: its connections
 *   are refused, and the agent is not otherwise affected.
 * - http/https modules: http.globalAgent and https.globalAgent are replaced by agents that open
 *   the same CONNECT tunnels (TLS runs end to end, inside the tunnel). Requests made with an
 *   agent of their own (`agent: false`, a custom Agent) are not routed and have no network.
 *
 * Hosts matching NO_PROXY / no_proxy are connected to directly. This file never throws: any
 * failure leaves the agent as it would be without it (set FABRIC_PRELOAD_DEBUG=1 to see why).
 */
(function fabricEgressPreload() {
  const MARK = Symbol.for('agent-fabric.egress.preload');
  if (globalThis[MARK]) return;
  globalThis[MARK] = true;
  const debug = (msg) => {
    if (process.env.FABRIC_PRELOAD_DEBUG) process.stderr.write(`agent-fabric preload: ${msg}\n`);
  };
  try {
    install(debug);
  } catch (err) {
    debug(`not installed: ${err && err.stack ? err.stack : err}`);
  }
})();

function install(debug) {
  const env = process.env;
  const proxyRaw = env.FABRIC_EGRESS_PROXY || env.HTTPS_PROXY || env.https_proxy || env.HTTP_PROXY || env.http_proxy;
  if (!proxyRaw) return debug('no HTTP(S)_PROXY: nothing to do');
  const proxy = new URL(proxyRaw);
  if (proxy.protocol !== 'http:') return debug(`unsupported proxy scheme ${proxy.protocol}`);
  const proxyHost = proxy.hostname.replace(/^\[|\]$/g, '');
  const proxyPort = Number(proxy.port || 80);
  const proxyUrl = `http://${proxy.host}`;
  const noProxy = parseNoProxy(env.NO_PROXY || env.no_proxy || '');

  const net = require('node:net');
  const tls = require('node:tls');
  const http = require('node:http');
  const https = require('node:https');

  function bypass(host, port) {
    if (!host) return true;
    const h = String(host).toLowerCase().replace(/^\[|\]$/g, '').replace(/\.$/, '');
    if (h === proxyHost.toLowerCase() && Number(port) === proxyPort) return true;
    return noProxy.some((e) => (e.port === 0 || e.port === Number(port)) && (e.host === '*' || h === e.host || h.endsWith(`.${e.host}`)));
  }

  /** Opens a CONNECT tunnel to host:port through the proxy; cb(err) or cb(null, socket). */
  function openTunnel(host, port, cb) {
    const h = String(host).replace(/^\[|\]$/g, '');
    const authority = net.isIPv6(h) ? `[${h}]:${port}` : `${h}:${port}`;
    const s = net.connect({ host: proxyHost, port: proxyPort });
    let buf = Buffer.alloc(0);
    let done = false;
    let refused = null;
    const finish = (err, sock) => {
      if (done) return;
      done = true;
      s.setTimeout(0);
      s.removeListener('data', onData);
      if (err) {
        s.destroy();
        cb(err);
      } else cb(null, sock);
    };
    s.setTimeout(30000, () => finish(new Error(`agent-fabric egress: CONNECT ${authority} timed out`)));
    s.on('error', (err) => finish(new Error(`agent-fabric egress proxy unreachable at ${proxyUrl}: ${err.message}`)));
    s.on('end', () => {
      if (refused) finish(refusal(refused));
      else finish(new Error(`agent-fabric egress: proxy closed the connection during CONNECT ${authority}`));
    });
    s.on('connect', () => s.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`));
    function refusal(r) {
      const err = new Error(`agent-fabric egress: ${authority} refused (${r.status}): ${buf.toString('utf8', r.bodyAt, r.bodyAt + 500).trim()}`);
      err.code = r.status === 403 ? 'EGRESS_DENIED' : 'EGRESS_FAILED';
      return err;
    }
    function onData(chunk) {
      buf = Buffer.concat([buf, chunk]);
      if (refused) return;
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) {
        if (buf.length > 16384) finish(new Error('agent-fabric egress: oversized proxy response'));
        return;
      }
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(buf.toString('latin1', 0, Math.min(end, 64)))?.[1] ?? 0);
      if (status !== 200) {
        refused = { status, bodyAt: end + 4 };
        return; // the proxy closes after its answer: report it on 'end'
      }
      s.pause();
      const rest = buf.subarray(end + 4);
      if (rest.length) s.unshift(rest);
      s.removeAllListeners('error');
      s.removeAllListeners('end');
      finish(null, s);
    }
    s.on('data', onData);
  }

  // ---- http / https modules -------------------------------------------------------------------
  class FabricHttpAgent extends http.Agent {
    createConnection(options, cb) {
      const host = options.host || options.hostname || 'localhost';
      const port = options.port || 80;
      if (options.socketPath || bypass(host, port)) return super.createConnection(options, cb);
      openTunnel(host, port, (err, sock) => {
        if (err) return cb(err);
        cb(null, sock);
        sock.resume(); // the request (and so any answer) is written only after its parser listens
      });
      return undefined;
    }
  }
  class FabricHttpsAgent extends https.Agent {
    createConnection(options, cb) {
      const host = options.host || options.hostname || 'localhost';
      const port = options.port || 443;
      if (options.socketPath || bypass(host, port)) return super.createConnection(options, cb);
      openTunnel(host, port, (err, raw) => {
        if (err) return cb(err);
        const servername = options.servername || (net.isIP(host) ? undefined : host);
        cb(null, tls.connect({ ...options, socket: raw, servername }));
      });
      return undefined;
    }
  }
  const agentOptions = { keepAlive: true, scheduling: 'lifo', timeout: 5000 };
  http.globalAgent = new FabricHttpAgent(agentOptions);
  https.globalAgent = new FabricHttpsAgent(agentOptions);
  debug(`http/https global agents tunnel through ${proxyUrl}`);

  // ---- fetch ----------------------------------------------------------------------------------
  const undici = requireUndici(debug);
  if (undici && typeof undici.setGlobalDispatcher === 'function') {
    try {
      const dispatcher = typeof undici.EnvHttpProxyAgent === 'function'
        ? new undici.EnvHttpProxyAgent({ httpProxy: proxyUrl, httpsProxy: proxyUrl, noProxy: env.NO_PROXY || env.no_proxy || '' })
        : new undici.ProxyAgent(proxyUrl);
      undici.setGlobalDispatcher(dispatcher);
      return debug(`fetch goes through ${proxyUrl} (npm undici ${dispatcher.constructor.name})`);
    } catch (err) {
      debug(`undici found but unusable: ${err.message}`);
    }
  }
  // Node's built-in fetch is undici too: its global dispatcher lives under this symbol (the one
  // npm undici's setGlobalDispatcher writes). Touching a lazy fetch global loads it.
  const GLOBAL_DISPATCHER = Symbol.for('undici.globalDispatcher.1');
  void globalThis.Headers;
  const current = globalThis[GLOBAL_DISPATCHER];
  const Agent = current && current.constructor;
  if (typeof Agent !== 'function' || Agent.name !== 'Agent') return debug('no built-in undici Agent: fetch has no network');
  const connect = (opts, cb) => {
    const https = opts.protocol === 'https:';
    const host = opts.hostname;
    const port = Number(opts.port) || (https ? 443 : 80);
    const servername = opts.servername || (net.isIP(host) ? undefined : host);
    const secure = (raw) => {
      const t = tls.connect({ socket: raw, servername, ALPNProtocols: ['http/1.1'] });
      t.once('secureConnect', () => {
        t.removeListener('error', cb);
        cb(null, t);
      });
      t.once('error', cb);
    };
    if (bypass(host, port)) {
      if (!https) {
        const s = net.connect({ host, port });
        s.once('connect', () => {
          s.removeListener('error', cb);
          cb(null, s);
        });
        s.once('error', cb);
      } else secure(net.connect({ host, port }));
      return;
    }
    openTunnel(host, port, (err, raw) => {
      if (err) return cb(err);
      if (https) secure(raw);
      else cb(null, raw);
    });
  };
  globalThis[GLOBAL_DISPATCHER] = new Agent({ connect });
  debug(`fetch goes through ${proxyUrl} (built-in undici, CONNECT tunnels)`);
}

function requireUndici(debug) {
  const path = require('node:path');
  const { createRequire } = require('node:module');
  const tries = [];
  if (process.env.FABRIC_UNDICI_PATH) tries.push(() => require(process.env.FABRIC_UNDICI_PATH));
  tries.push(() => require('undici'));
  tries.push(() => createRequire(path.join(process.cwd(), 'noop.js'))('undici'));
  for (const t of tries) {
    try {
      return t();
    } catch (err) {
      debug(`undici: ${err.code || err.message}`);
    }
  }
  return null;
}

function parseNoProxy(s) {
  return s
    .split(/[\s,]+/)
    .filter(Boolean)
    .map((e) => {
      if (!e.startsWith('[') && e.split(':').length > 2) return { host: e.toLowerCase(), port: 0 }; // bare IPv6
      const m = /^(\[[^\]]+\]|[^:]+)(?::(\d+))?$/.exec(e.trim().toLowerCase());
      if (!m) return null;
      return { host: m[1].replace(/^\[|\]$/g, '').replace(/^\*?\./, '').replace(/\.$/, ''), port: Number(m[2] || 0) };
    })
    .filter(Boolean);
}
