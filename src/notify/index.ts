import { logger } from '../telemetry/index.js';

/** Something an operator must know about (dead letters, budgets, anomalies). */
export interface Alert {
  severity: 'info' | 'warning' | 'critical';
  /** Short line, e.g. "Task dead-lettered". */
  title: string;
  text: string;
  tenantId?: string;
  agentId?: string;
  taskId?: string;
  fields?: Record<string, string | number>;
}

export interface NotifierOptions {
  /** Slack-compatible incoming webhook (`FABRIC_ALERT_WEBHOOK_URL`); alerts are only logged without one. */
  webhookUrl?: string | undefined;
  /** Channel named in the body. Default `#fleet-ops`. */
  channel?: string;
  /** Per-request timeout. Default 5 s. */
  timeoutMs?: number;
  /** Extra tries after a failed delivery (1 s, 2 s, …). Default 2. */
  retries?: number;
}

/** Delivers alerts; never throws (a broken webhook must not break the caller). */
export interface Notifier {
  send(alert: Alert): Promise<void>;
}

const COLORS = { info: '#439FE0', warning: '#ECB22E', critical: '#E01E5A' } as const;

/** The Slack-compatible JSON body of an alert. */
function slackBody(alert: Alert, channel: string) {
  const fields = Object.entries({
    ...(alert.tenantId ? { tenant: alert.tenantId } : {}),
    ...(alert.agentId ? { agent: alert.agentId } : {}),
    ...(alert.taskId ? { task: alert.taskId } : {}),
    ...alert.fields,
  }).map(([title, value]) => ({ title, value: String(value), short: true }));
  return {
    channel,
    text: `[${alert.severity}] ${alert.title}`,
    attachments: [{ color: COLORS[alert.severity], title: alert.title, text: alert.text, fields }],
  };
}

/** A notifier that logs every alert and posts it to the webhook when one is configured. */
export function createNotifier(options: NotifierOptions = {}): Notifier {
  const channel = options.channel ?? '#fleet-ops';
  const retries = options.retries ?? 2;
  return {
    async send(alert) {
      logger().warn({ alert: { ...alert, channel } }, `alert: ${alert.title}`);
      if (!options.webhookUrl) return;
      const body = JSON.stringify(slackBody(alert, channel));
      for (let attempt = 0; attempt <= retries; attempt++) {
        try {
          const res = await fetch(options.webhookUrl, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body,
            signal: AbortSignal.timeout(options.timeoutMs ?? 5000),
          });
          if (res.ok) return;
          logger().warn({ status: res.status }, 'alert webhook refused the alert');
        } catch (err) {
          logger().warn({ err }, 'alert webhook unreachable');
        }
        if (attempt < retries) await new Promise((r) => setTimeout(r, 1000 * (attempt + 1)));
      }
      logger().error({ title: alert.title }, 'alert could not be delivered to the webhook; it is in the log only');
    },
  };
}
