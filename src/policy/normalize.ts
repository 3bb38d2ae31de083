import path from 'node:path';

/**
 * Puts a resource in the one form rules are written against, so `/workspace/../etc/passwd` is
 * `/etc/passwd`, `Example.COM.` is `example.com` and `rm   -rf  /` is `rm -rf /`.
 */
export function normalizeResource(action: string, resource: string): string {
  if (action.startsWith('fs.')) return resource ? path.posix.normalize(resource) : resource;
  if (action === 'net.connect') {
    let host = resource.trim().toLowerCase();
    if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
    return host.endsWith('.') ? host.slice(0, -1) : host;
  }
  if (action === 'shell.exec') return resource.trim().replace(/\s+/g, ' ');
  return resource;
}
