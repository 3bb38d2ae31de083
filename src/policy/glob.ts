/**
 * Globs of policies: `*` matches any run of characters (`/` and `.` included), `?` exactly one,
 * everything else itself. Anchored at both ends. Compiled once per rule.
 */
export function globToRegExp(glob: string, flags = ''): RegExp {
  let src = '';
  for (const ch of glob) {
    if (ch === '*') src += src.endsWith('.*') ? '' : '.*';
    else if (ch === '?') src += '.';
    else src += ch.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${src}$`, `s${flags}`);
}

/** A predicate over strings: true when any of the globs matches (a plain string without wildcards compares directly). */
export function anyGlob(globs: string | readonly string[], flags = ''): (s: string) => boolean {
  const list = typeof globs === 'string' ? [globs] : globs;
  const exact = new Set<string>();
  const res: RegExp[] = [];
  for (const g of list) {
    if (/[*?]/.test(g)) res.push(globToRegExp(g, flags));
    else exact.add(flags.includes('i') ? g.toLowerCase() : g);
  }
  const fold = flags.includes('i');
  return (s) => exact.has(fold ? s.toLowerCase() : s) || res.some((r) => r.test(s));
}
