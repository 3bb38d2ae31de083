'use strict';
/* global require, process, setTimeout */
/* eslint-disable @typescript-eslint/no-require-imports -- plain CommonJS run by node inside the sandbox (eslint.config.js has no .cjs block) */
/*
 * agent-fabric egress relay. Runs INSIDE a sandbox that has no network of its own:
 *
 *   node relay.cjs <unix-socket> <port> [-- <command> [args...]]
 *
 * listens on 127.0.0.1:<port> and relays every TCP connection byte for byte to <unix-socket>,
 * where the worker's egress proxy (proxy.ts) decides what may go out. With "-- command", the
 * command is started once the relay listens (so the agent can never race it), gets the relay's
 * stdio, environment and signals, and the relay exits with its status. Without it, the relay
 * runs until killed.
 *
 * Plain CommonJS with no dependencies: it is bind-mounted read-only and run by whatever node the
 * sandbox has.
 */
const net = require('node:net');
const { spawn } = require('node:child_process');

const argv = process.argv.slice(2);
const sep = argv.indexOf('--');
const own = sep >= 0 ? argv.slice(0, sep) : argv;
const command = sep >= 0 ? argv.slice(sep + 1) : [];
const [socketPath, portArg] = own;
const port = Number(portArg);
if (!socketPath || own.length !== 2 || !Number.isInteger(port) || port < 1 || port > 65535 || (sep >= 0 && !command.length)) {
  process.stderr.write('usage: node relay.cjs <unix-socket> <port 1-65535> [-- <command> [args...]]\n');
  process.exit(2);
}

const UNAVAILABLE = 'agent-fabric egress proxy is unavailable\n';

function relay(client) {
  client.setNoDelay(true);
  const upstream = net.connect({ path: socketPath, allowHalfOpen: true });
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

const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, relay);
server.maxConnections = 512;
server.on('error', (err) => {
  process.stderr.write(`agent-fabric relay: cannot listen on 127.0.0.1:${port}: ${err.message}\n`);
  process.exit(1);
});
server.listen(port, '127.0.0.1', () => {
  if (!command.length) return;
  const child = spawn(command[0], command.slice(1), { stdio: 'inherit' });
  const signals = ['SIGTERM', 'SIGINT', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2'];
  for (const sig of signals) {
    process.on(sig, () => {
      try {
        child.kill(sig);
      } catch {
        /* already gone */
      }
    });
  }
  child.on('error', (err) => {
    process.stderr.write(`agent-fabric relay: cannot start ${command[0]}: ${err.message}\n`);
    process.exit(127);
  });
  child.on('exit', (code, signal) => {
    server.close();
    if (signal) {
      for (const sig of signals) process.removeAllListeners(sig);
      process.kill(process.pid, signal);
      setTimeout(() => process.exit(128), 1000).unref();
    } else {
      process.exit(code ?? 1);
    }
  });
});
