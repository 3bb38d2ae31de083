import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isPublicAddress, matchesAllowList, normalizeHost, parseAllowEntry } from './allow.js';

describe('egress allow-list', () => {
  it('matches exact hosts on ports 80 and 443 only unless a port is given', () => {
    const allow = ['api.example.com', 'files.example.org:8443'];
    assert.equal(matchesAllowList('api.example.com', 443, allow), true);
    assert.equal(matchesAllowList('api.example.com', 80, allow), true);
    assert.equal(matchesAllowList('api.example.com', 22, allow), false);
    assert.equal(matchesAllowList('api.example.com', 8443, allow), false);
    assert.equal(matchesAllowList('files.example.org', 8443, allow), true);
    assert.equal(matchesAllowList('files.example.org', 443, allow), false, 'an explicit port replaces the defaults');
    assert.equal(matchesAllowList('example.com', 443, allow), false);
    assert.equal(matchesAllowList('x.api.example.com', 443, allow), false);
    assert.equal(matchesAllowList('api.example.com.evil.net', 443, allow), false);
  });

  it('wildcards match subdomains, not the apex nor look-alikes', () => {
    const allow = ['*.example.com'];
    assert.equal(matchesAllowList('a.example.com', 443, allow), true);
    assert.equal(matchesAllowList('a.b.example.com', 443, allow), true);
    assert.equal(matchesAllowList('example.com', 443, allow), false);
    assert.equal(matchesAllowList('evil-example.com', 443, allow), false);
    assert.equal(matchesAllowList('evilexample.com', 443, allow), false);
    assert.equal(matchesAllowList('example.com.evil.net', 443, allow), false);
    assert.equal(matchesAllowList('a.example.com', 8080, allow), false);
    assert.equal(matchesAllowList('a.example.com', 8080, ['*.example.com:8080']), true);
  });

  it('ignores case and a trailing dot, on both sides', () => {
    assert.equal(matchesAllowList('API.Example.COM.', 443, ['api.example.com']), true);
    assert.equal(matchesAllowList('api.example.com', 443, ['API.EXAMPLE.COM.']), true);
    assert.equal(matchesAllowList('X.Example.Com', 443, ['*.EXAMPLE.com.']), true);
    assert.equal(normalizeHost('Example.COM.'), 'example.com');
  });

  it('matches IP literals exactly (IPv6 in any spelling) and refuses numeric host tricks', () => {
    assert.equal(matchesAllowList('203.0.113.7', 443, ['203.0.113.7']), true);
    assert.equal(matchesAllowList('203.0.113.8', 443, ['203.0.113.7']), false);
    assert.equal(matchesAllowList('[2001:DB8:0:0::1]', 443, ['2001:db8::1']), true);
    assert.equal(matchesAllowList('2001:db8::1', 8443, ['[2001:db8::1]:8443']), true);
    for (const h of ['2130706433', '127.1', '0x7f.0.0.1', 'a..b', '-a.com', 'a b.com', '', 'fe80::1%eth0']) assert.equal(normalizeHost(h), null, h);
    assert.equal(matchesAllowList('2130706433', 443, ['127.0.0.1']), false);
  });

  it('refuses invalid entries with a clear error', () => {
    const bad: [string, RegExp][] = [
      ['*', /wildcard/],
      ['*.com', /two labels/],
      ['a*.example.com', /wildcard/],
      ['*.*.example.com', /wildcard/],
      ['https://api.example.com', /not a URL/],
      ['api.example.com/v1', /no path/],
      ['user@api.example.com', /credentials/],
      ['api.example.com:0', /port/],
      ['api.example.com:99999', /port/],
      ['api.example.com:http', /port/],
      ['', /empty/],
      ['exa mple.com', /spaces/],
      ['*.10.0.0.1', /IP address/],
      ['under_score-.com', /valid host/],
    ];
    for (const [entry, re] of bad) {
      assert.throws(() => parseAllowEntry(entry), (err: unknown) => err instanceof Error && re.test(err.message) && err.message.includes(JSON.stringify(entry)), entry);
    }
    assert.throws(() => matchesAllowList('a.com', 443, ['*']), /invalid network_egress entry/);
    assert.deepEqual(parseAllowEntry('*.Example.com.:8443'), { source: '*.Example.com.:8443', host: 'example.com', wildcard: true, port: 8443, ip: 0 });
    assert.deepEqual(parseAllowEntry('[2001:DB8::1]:443'), { source: '[2001:DB8::1]:443', host: '2001:db8::1', wildcard: false, port: 443, ip: 6 });
  });

  it('tells public addresses from loopback, private, link-local and special ones', () => {
    const table: [string, boolean][] = [
      ['127.0.0.1', false],
      ['127.255.0.9', false],
      ['10.0.0.1', false],
      ['10.255.255.255', false],
      ['172.16.0.1', false],
      ['172.31.255.254', false],
      ['172.15.255.255', true],
      ['172.32.0.1', true],
      ['192.168.1.1', false],
      ['169.254.169.254', false],
      ['100.100.100.200', false],
      ['0.0.0.0', false],
      ['224.0.0.251', false],
      ['255.255.255.255', false],
      ['::', false],
      ['::1', false],
      ['fe80::1', false],
      ['fe80::1%eth0', false],
      ['fc00::1', false],
      ['fd00:ec2::254', false],
      ['ff02::1', false],
      ['::ffff:10.0.0.1', false],
      ['::ffff:127.0.0.1', false],
      ['::ffff:7f00:1', false],
      ['::ffff:169.254.169.254', false],
      ['64:ff9b::a9fe:a9fe', false],
      ['2002:c0a8:0101::1', false],
      ['2001:db8::1', false],
      ['8.8.8.8', true],
      ['1.1.1.1', true],
      ['::ffff:8.8.8.8', true],
      ['2001:4860::8888', true],
      ['2606:4700:4700::1111', true],
      ['[2001:4860::8888]', true],
      ['not-an-ip', false],
      ['', false],
    ];
    for (const [ip, want] of table) assert.equal(isPublicAddress(ip), want, ip);
  });
});
