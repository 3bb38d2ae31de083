import net from 'node:net';

/**
 * Host allow-lists for a sandbox's network egress, and the address check that keeps an allowed
 * name from leading into the host's own networks (SSRF).
 *
 * Entry syntax: `example.com` (exactly that host), `*.example.com` (any subdomain, not the apex),
 * an IP literal (`203.0.113.7`, `2001:db8::1` or `[2001:db8::1]`), each with an optional `:port`
 * suffix; without one, only ports 80 and 443 are allowed. Case-insensitive; a trailing dot is
 * ignored.
 */

/** Ports an entry without a `:port` suffix allows. */
export const DEFAULT_EGRESS_PORTS: readonly number[] = [80, 443];

export interface AllowEntry {
  /** The entry as written. */
  source: string;
  /** Lower-case host without trailing dot; for a wildcard the suffix after "*."; an IPv6 literal canonical and unbracketed. */
  host: string;
  /** `*.host`: any subdomain of host, not host itself. */
  wildcard: boolean;
  /** The one port allowed; undefined: DEFAULT_EGRESS_PORTS. */
  port: number | undefined;
  /** 4 or 6 for an IP literal, 0 for a name. */
  ip: 0 | 4 | 6;
}

const LABEL = /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/;

/**
 * A destination host in canonical form: lower case, no trailing dot, IPv6 without brackets and
 * compressed, or null when it is not a valid DNS name or IP literal. Names whose last label is
 * numeric (`127.1`, `2130706433`, `0x7f.1`) are refused: resolvers read them as IPv4 numbers.
 */
export function normalizeHost(input: string): string | null {
  let h = input.trim().toLowerCase();
  if (!h || h.length > 255) return null;
  if (h.startsWith('[') || h.endsWith(']')) {
    if (!(h.startsWith('[') && h.endsWith(']'))) return null;
    h = h.slice(1, -1);
    return net.isIPv6(h) && !h.includes('%') ? canonicalIPv6(h) : null;
  }
  if (net.isIPv4(h)) return h;
  if (h.includes(':')) return net.isIPv6(h) && !h.includes('%') ? canonicalIPv6(h) : null;
  if (h.endsWith('.')) h = h.slice(0, -1);
  if (!h || h.length > 253) return null;
  const labels = h.split('.');
  if (!labels.every((l) => LABEL.test(l))) return null;
  const last = labels[labels.length - 1] ?? '';
  if (/^(?:\d+|0x[0-9a-f]*)$/.test(last)) return null;
  return h;
}

function canonicalIPv6(h: string): string {
  return new URL(`http://[${h}]/`).hostname.slice(1, -1);
}

function ipKind(h: string): 0 | 4 | 6 {
  return net.isIPv4(h) ? 4 : net.isIPv6(h) ? 6 : 0;
}

/**
 * Splits "host", "host:port", "[v6]" or "[v6]:port" (a bare IPv6 literal has no port).
 * Returns null when the shape is wrong; the host part is not validated here.
 */
export function splitHostPort(s: string): { host: string; port: string | undefined } | null {
  if (s.startsWith('[')) {
    const end = s.indexOf(']');
    if (end < 0) return null;
    const rest = s.slice(end + 1);
    if (rest && !rest.startsWith(':')) return null;
    return { host: s.slice(0, end + 1), port: rest ? rest.slice(1) : undefined };
  }
  const colons = s.split(':').length - 1;
  if (colons > 1) return { host: s, port: undefined }; // bare IPv6
  if (colons === 1) {
    const i = s.indexOf(':');
    return { host: s.slice(0, i), port: s.slice(i + 1) };
  }
  return { host: s, port: undefined };
}

/** A port written in decimal, 1–65535, or null. */
export function parsePort(s: string): number | null {
  if (!/^\d{1,5}$/.test(s)) return null;
  const n = Number(s);
  return n >= 1 && n <= 65535 ? n : null;
}

/** Parses and validates one allow-list entry; throws an Error that says what is wrong with it. */
export function parseAllowEntry(s: string): AllowEntry {
  const bad = (why: string) => new Error(`invalid network_egress entry ${JSON.stringify(s)}: ${why}`);
  if (typeof s !== 'string') throw bad('not a string');
  const t = s.trim();
  if (!t) throw bad('empty');
  if (t.includes('://') || /^[a-z][a-z0-9+.-]*:\/\//i.test(t)) throw bad('write a host name (e.g. "api.example.com"), not a URL');
  if (/[/?#@\s\\]/.test(t)) throw bad('a host name (and optional ":port") only: no path, query, credentials or spaces');
  const split = splitHostPort(t);
  if (!split) throw bad('malformed host');
  let port: number | undefined;
  if (split.port !== undefined) {
    const p = parsePort(split.port);
    if (p === null) throw bad(`port must be 1-65535, got ${JSON.stringify(split.port)}`);
    port = p;
  }
  let host = split.host;
  let wildcard = false;
  if (host.includes('*')) {
    if (!host.startsWith('*.') || host.slice(2).includes('*')) throw bad('a wildcard is only allowed as the whole leftmost label, as in "*.example.com"');
    wildcard = true;
    host = host.slice(2);
  }
  const norm = normalizeHost(host);
  if (norm === null) throw bad('not a valid host name or IP address');
  const ip = ipKind(norm);
  if (wildcard) {
    if (ip) throw bad('a wildcard cannot apply to an IP address');
    if (!norm.includes('.')) throw bad('a wildcard needs at least two labels after "*." (e.g. "*.example.com"), not a whole top-level domain');
  }
  return { source: s, host: norm, wildcard, port, ip };
}

/** Parses every entry (throwing on the first invalid one). */
export function parseAllowList(allow: readonly string[]): AllowEntry[] {
  return allow.map(parseAllowEntry);
}

/** Whether host:port is allowed by these entries (strings are parsed, and throw when invalid). */
export function matchesAllowList(host: string, port: number, allow: readonly string[] | readonly AllowEntry[]): boolean {
  const h = normalizeHost(host);
  if (h === null || !Number.isInteger(port) || port < 1 || port > 65535) return false;
  for (const e of allow) {
    const entry = typeof e === 'string' ? parseAllowEntry(e) : e;
    if (entry.port === undefined ? !DEFAULT_EGRESS_PORTS.includes(port) : entry.port !== port) continue;
    if (entry.wildcard ? h.endsWith(`.${entry.host}`) && ipKind(h) === 0 : h === entry.host) return true;
  }
  return false;
}

// ---- addresses -------------------------------------------------------------------------------

function v4ToInt(ip: string): number {
  const [a = 0, b = 0, c = 0, d = 0] = ip.split('.').map(Number);
  return ((a << 24) | (b << 16) | (c << 8) | d) >>> 0;
}

const V4_NON_PUBLIC: readonly [string, number][] = [
  ['0.0.0.0', 8], // "this network", unspecified
  ['10.0.0.0', 8], // RFC 1918
  ['100.64.0.0', 10], // carrier-grade NAT / shared space (also cloud metadata at 100.100.100.200)
  ['127.0.0.0', 8], // loopback
  ['169.254.0.0', 16], // link-local, cloud metadata 169.254.169.254
  ['172.16.0.0', 12], // RFC 1918
  ['192.0.0.0', 24], // IETF protocol assignments
  ['192.0.2.0', 24], // documentation
  ['192.88.99.0', 24], // 6to4 relay anycast (deprecated)
  ['192.168.0.0', 16], // RFC 1918
  ['198.18.0.0', 15], // benchmarking
  ['198.51.100.0', 24], // documentation
  ['203.0.113.0', 24], // documentation
  ['224.0.0.0', 4], // multicast
  ['240.0.0.0', 4], // reserved, broadcast
];
const V4_RANGES = V4_NON_PUBLIC.map(([base, bits]) => {
  const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
  return { net: (v4ToInt(base) & mask) >>> 0, mask };
});

function isPublicV4(ip: string): boolean {
  const n = v4ToInt(ip);
  return !V4_RANGES.some((r) => ((n & r.mask) >>> 0) === r.net);
}

/** The eight 16-bit groups of a valid IPv6 address (an embedded dotted IPv4 tail included). */
function v6Groups(ip: string): number[] {
  let s = ip;
  const lastColon = s.lastIndexOf(':');
  const last = s.slice(lastColon + 1);
  if (last.includes('.')) {
    const n = v4ToInt(last);
    s = `${s.slice(0, lastColon + 1)}${(n >>> 16).toString(16)}:${(n & 0xffff).toString(16)}`;
  }
  const parse = (part: string) => (part ? part.split(':').map((g) => parseInt(g, 16)) : []);
  const dbl = s.indexOf('::');
  if (dbl < 0) return parse(s);
  const head = parse(s.slice(0, dbl));
  const rest = parse(s.slice(dbl + 2));
  return [...head, ...new Array<number>(Math.max(0, 8 - head.length - rest.length)).fill(0), ...rest];
}

function embeddedV4(g: number[], at: number): string {
  const hi = g[at] ?? 0;
  const lo = g[at + 1] ?? 0;
  return `${hi >>> 8}.${hi & 0xff}.${lo >>> 8}.${lo & 0xff}`;
}

function isPublicV6(ip: string): boolean {
  const g = v6Groups(ip);
  if (g.length !== 8 || g.some((x) => !Number.isInteger(x) || x < 0 || x > 0xffff)) return false;
  const [g0 = 0, g1 = 0, g2 = 0, g3 = 0, g4 = 0, g5 = 0] = g;
  // ::/96 (unspecified, loopback, IPv4-compatible) and ::ffff:0:0/96 (IPv4-mapped)
  if (g0 === 0 && g1 === 0 && g2 === 0 && g3 === 0 && g4 === 0) {
    if (g5 === 0xffff) return isPublicV4(embeddedV4(g, 6));
    return false;
  }
  // 64:ff9b::/96 well-known NAT64 prefix: judge the IPv4 address it carries
  if (g0 === 0x64 && g1 === 0xff9b && g2 === 0 && g3 === 0 && g4 === 0 && g5 === 0) return isPublicV4(embeddedV4(g, 6));
  // only 2000::/3 is global unicast
  if ((g0 & 0xe000) !== 0x2000) return false;
  if (g0 === 0x2001 && g1 < 0x200) return false; // 2001::/23 IETF protocol assignments (Teredo 2001::/32, ORCHID, …)
  if (g0 === 0x2001 && g1 === 0x0db8) return false; // documentation
  if (g0 === 0x2002) return isPublicV4(embeddedV4(g, 1)); // 6to4 carries an IPv4 address
  if (g0 === 0x3fff && g1 < 0x1000) return false; // 3fff::/20 documentation
  return true;
}

/**
 * Whether an IP address is on the public internet: false for loopback, private (RFC 1918,
 * fc00::/7), carrier-grade NAT, link-local (169.254/16 incl. cloud metadata, fe80::/10),
 * unspecified, multicast, documentation and reserved ranges, and for IPv4-mapped, NAT64 or 6to4
 * IPv6 addresses that carry such an IPv4 address. Not an IP address: false.
 */
export function isPublicAddress(ip: string): boolean {
  let s = ip.trim();
  if (s.startsWith('[') && s.endsWith(']')) s = s.slice(1, -1);
  const zone = s.indexOf('%');
  if (zone >= 0) s = s.slice(0, zone);
  if (net.isIPv4(s)) return isPublicV4(s);
  if (net.isIPv6(s)) return isPublicV6(s.toLowerCase());
  return false;
}
