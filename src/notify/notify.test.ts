import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { createNotifier } from './index.js';

describe('alert webhook (Slack-compatible)', () => {
  let server: http.Server;
  let url: string;
  const received: { body: Record<string, unknown>; type: string | undefined }[] = [];
  let failNext = 0;
  before(async () => {
    server = http.createServer((req, res) => {
      let data = '';
      req.on('data', (c) => (data += c));
      req.on('end', () => {
        if (failNext > 0) {
          failNext--;
          res.statusCode = 500;
          return res.end('boom');
        }
        received.push({ body: JSON.parse(data), type: req.headers['content-type'] });
        res.end('ok');
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;
  });
  after(() => server.close());

  it('posts a Slack-compatible body to the channel, with the task, agent and tenant', async () => {
    await createNotifier({ webhookUrl: url }).send({ severity: 'critical', title: 'Task dead-lettered', text: 'it failed 4 times', tenantId: 'default', agentId: 'a1', taskId: 't1', fields: { attempts: 4 } });
    const { body, type } = received.at(-1)!;
    assert.equal(type, 'application/json');
    assert.equal(body.channel, '#fleet-ops');
    assert.match(String(body.text), /critical.*Task dead-lettered/);
    const [att] = body.attachments as { title: string; text: string; fields: { title: string; value: string }[] }[];
    assert.equal(att!.text, 'it failed 4 times');
    assert.deepEqual(att!.fields.map((f) => [f.title, f.value]), [['tenant', 'default'], ['agent', 'a1'], ['task', 't1'], ['attempts', '4']]);
  });

  it('retries a failed delivery, and never throws when the webhook stays down', async () => {
    failNext = 1;
    const before = received.length;
    await createNotifier({ webhookUrl: url, channel: '#ops-test', retries: 2 }).send({ severity: 'warning', title: 'x', text: 'y' });
    assert.equal(received.length, before + 1);
    assert.equal(received.at(-1)!.body.channel, '#ops-test');
    await createNotifier({ webhookUrl: 'http://127.0.0.1:1/nothing', retries: 0, timeoutMs: 500 }).send({ severity: 'info', title: 'x', text: 'y' });
  });
});
