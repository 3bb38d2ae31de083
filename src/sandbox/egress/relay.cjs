'use strict';
/*
 * agent-fabric sandbox supervisor and egress relay. Runs INSIDE a sandbox:
 *
 *   node relay.cjs [--control <fd> [--beat <ms>]] [<unix-socket> <port>] [-- <command> [args...]]
 *
 * Egress (with <unix-socket> <port>, `container` sandboxes, which have no network of their own):
 * listens on 127.0.0.1:<port> and relays every TCP connection byte for byte to <unix-socket>,
 * where the worker's egress proxy (proxy.ts) decides what may go out. Without them (`process`
 * sandboxes) it is only the supervisor.
 *
 * The program: with "-- command", the command is started once the relay listens (so the agent
 * can never race it). With --control and no command, the relay waits (a warm sandbox) for one
 * header line on the control fd, `{"command": [...], "env": {...}}`, and starts that command
 * with exactly that environment. Either way the program gets the relay's stdin, stdout and
 * stderr (not the control fd) and its signals, and the relay exits with its status.
 *
 * Heartbeats (with --control): one byte on the control fd every --beat ms (default 1000), the
 * first once the relay is ready for its program; the worker kills a session whose heartbeats
 * stop. When the worker's end of the control fd closes, the relay kills its program and exits.
 * Once the program runs, `{"signal": "SIGTERM"}` lines on the control fd signal it (graceful stop).
 *
 * Plain CommonJS with no dependencies: it is bind-mounted read-only and run by whatever node the
 * sandbox has.
 */
const fs = require('node:fs');
const net = require('node:net');
const { spawn } = require('node:child_process');

const USAGE = 'usage: node relay.cjs [--control <fd> [--beat <ms>]] [<unix-socket> <port 1-65535>] [-- <command> [args...]]\n';
const MAX_HEADER = 1024 * 1024;

function parseArgs(args) {
  const sep = args.indexOf('--');
  const own = sep >= 0 ? args.slice(0, sep) : args.slice();
  const o = { controlFd: undefined, beatMs: 1000, socketPath: undefined, port: undefined, command: sep >= 0 ? args.slice(sep + 1) : [] };
  while (own[0] === '--control' || own[0] === '--beat') {
    const [flag, value] = own.splice(0, 2);
    const n = Number(value);
    if (!Number.isInteger(n) || n < (flag === '--control' ? 3 : 10)) return null;
    if (flag === '--control') o.controlFd = n;
    else o.beatMs = n;
  }
  if (own.length === 2) {
    o.socketPath = own[0];
    o.port = Number(own[1]);
    if (!o.socketPath || !Number.isInteger(o.port) || o.port < 1 || o.port > 65535) return null;
  } else if (own.length !== 0) return null;
  if (sep >= 0 && !o.command.length) return null;
  if (o.socketPath === undefined && o.controlFd === undefined) return null; // nothing to do
  return o;
}

const opts = parseArgs(process.argv.slice(2));
if (!opts) {
  process.stderr.write(USAGE);
  process.exit(2);
}

function fail(code, msg) {
  process.stderr.write(`agent-fabric relay: ${msg}\n`);
  process.exit(code);
}

const UNAVAILABLE = 'agent-fabric egress proxy is unavailable\n';

function relay(client) {
  client.setNoDelay(true);
  const upstream = net.connect({ path: opts.socketPath, allowHalfOpen: true });
  let connected = false;
  const destroyBoth = () => {
    client.destroy();
    upstream.destroy();
  };
  const passEnd = (other) => () => {
    if (other.destroyed) return;
    other.end();
    setTimeout(() => other.destroy(), 30000).unref();
  };
  client.on('error', destroyBoth);
  upstream.on('error', () => {
    if (connected || client.destroyed) return destroyBoth();
    // proxy clients speak HTTP first, so say why in HTTP
    client.end(`HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nContent-Length: ${UNAVAILABLE.length}\r\nConnection: close\r\n\r\n${UNAVAILABLE}`);
    setTimeout(() => client.destroy(), 2000).unref();
  });
  upstream.on('connect', () => {
    connected = true;
    client.on('close', passEnd(upstream));
    upstream.on('close', passEnd(client));
    client.pipe(upstream);
    upstream.pipe(client);
    client.resume();
  });
}

/** Listens for the agent's TCP connections when there is an egress socket; resolves once ready. */
function listen() {
  if (opts.socketPath === undefined) return Promise.resolve(undefined);
  const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, relay);
  server.maxConnections = 512;
  return new Promise((resolve) => {
    server.on('error', (err) => fail(1, `cannot listen on 127.0.0.1:${opts.port}: ${err.message}`));
    server.listen(opts.port, '127.0.0.1', () => resolve(server));
  });
}

let child;
let control;
let beat;

/** The worker's end of the control channel: heartbeats out, the header line in. */
function openControl() {
  if (opts.controlFd === undefined) return undefined;
  let sock;
  try {
    sock = new net.Socket({ fd: opts.controlFd, readable: true, writable: true });
  } catch (err) {
    fail(1, `control fd ${opts.controlFd} is not usable (the worker passes a socket there): ${err.message}`);
  }
  sock.on('error', () => {});
  // the worker is gone: nothing of the sandbox may outlive it
  sock.on('close', () => {
    if (child) child.kill('SIGKILL');
    process.exit(1);
  });
  return sock;
}

function startBeating() {
  if (!control) return;
  control.write('.');
  beat = setInterval(() => control.write('.'), opts.beatMs);
}

/** Reads the one header line from the control channel: { command: string[], env: { [k]: string } }. */
function readHeader() {
  return new Promise((resolve) => {
    let buf = '';
    const onData = (chunk) => {
      buf += chunk.toString('utf8');
      const nl = buf.indexOf('\n');
      if (nl < 0) {
        if (buf.length > MAX_HEADER) fail(2, `the program header is longer than ${MAX_HEADER} bytes`);
        return;
      }
      control.off('data', onData);
      let h;
      try {
        h = JSON.parse(buf.slice(0, nl));
      } catch (err) {
        fail(2, `the program header is not JSON (${err.message}); the worker sends {"command": [...], "env": {...}}`);
      }
      const okCommand = h && Array.isArray(h.command) && h.command.length > 0 && h.command.every((a) => typeof a === 'string');
      const okEnv = h && h.env && typeof h.env === 'object' && Object.values(h.env).every((v) => typeof v === 'string');
      if (!okCommand || !okEnv) fail(2, 'the program header needs "command" (non-empty array of strings) and "env" (object of strings)');
      resolve(h);
    };
    control.on('data', onData);
  });
}

/**
 * After the program starts the worker may send `{"signal": "SIGTERM"}` lines on the control fd
 * (a graceful stop: the program gets the signal, the worker kills the sandbox after its grace).
 */
function acceptSignals() {
  if (!control) return;
  let buf = '';
  control.on('data', (chunk) => {
    buf += chunk.toString('utf8');
    for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      let m;
      try {
        m = JSON.parse(line);
      } catch {
        continue;
      }
      if (m && SIGNALS.includes(m.signal) && child) {
        try {
          child.kill(m.signal);
        } catch {
          /* already gone */
        }
      }
    }
    if (buf.length > 4096) buf = '';
  });
}

const SIGNALS = ['SIGTERM', 'SIGINT', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2'];

/** Starts the program; the control fd is replaced by /dev/null in it, so it cannot heartbeat for the relay. */
function run(command, env, server) {
  const stdio = ['inherit', 'inherit', 'inherit'];
  if (opts.controlFd !== undefined) {
    while (stdio.length < opts.controlFd) stdio.push('ignore');
    stdio.push(fs.openSync('/dev/null', 'r'));
  }
  child = spawn(command[0], command.slice(1), { stdio, env: env || process.env });
  acceptSignals();
  const signals = SIGNALS;
  for (const sig of signals) {
    process.on(sig, () => {
      try {
        child.kill(sig);
      } catch {
        /* already gone */
      }
    });
  }
  child.on('error', (err) => fail(127, `cannot start ${command[0]}: ${err.message}`));
  child.on('exit', (code, signal) => {
    if (server) server.close();
    if (beat) clearInterval(beat);
    if (signal) {
      for (const sig of signals) process.removeAllListeners(sig);
      process.kill(process.pid, signal);
      setTimeout(() => process.exit(128), 1000).unref();
    } else {
      process.exit(code === null ? 1 : code);
    }
  });
}

async function main() {
  control = openControl();
  const server = await listen();
  startBeating();
  if (opts.command.length) return run(opts.command, undefined, server);
  if (!control) return; // relay only, until killed
  const header = await readHeader();
  run(header.command, header.env, server);
}

main();
