import { DEFAULT_TENANT_ID, mintToken, parseTtl, readDevSecret, Role, TENANT_ID_PATTERN } from '../auth/index.js';
import { loadConfig } from '../config/index.js';
import { parseFlags, UsageError } from './args.js';
import { TOKEN_HELP } from './help.js';


export async function runToken(argv: string[]): Promise<void> {
  const flags = parseFlags(argv, {
    role: { type: 'string' },
    tenant: { type: 'string' },
    sub: { type: 'string' },
    ttl: { type: 'string' },
    'data-dir': { type: 'string' },
  });
  if (flags.help) return void console.log(TOKEN_HELP);
  const role = Role.safeParse(flags.role);
  if (!role.success) throw new UsageError(`--role is required: one of ${Role.options.join(', ')}`);
  if (role.data === 'agent' && !flags.sub) throw new UsageError('--role agent needs --sub <agent id>');
  const ttl = (flags.ttl as string | undefined) ?? '1h';
  let seconds: number;
  try {
    seconds = parseTtl(ttl);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (seconds <= 0) throw new UsageError('--ttl must be longer than 0 seconds');
  const tenant = (flags.tenant as string | undefined) ?? DEFAULT_TENANT_ID;
  if (!TENANT_ID_PATTERN.test(tenant)) throw new UsageError(`--tenant "${tenant}" is not a tenant id: 1–63 lowercase letters, digits and dashes`);
  const sub = (flags.sub as string | undefined) ?? `cli-${role.data}`;
  if (sub.length > 200) throw new UsageError('--sub is at most 200 characters');
  const config = loadConfig(process.env, { dataDir: flags['data-dir'] as string | undefined });
  const secret = config.jwtSecret ?? readDevSecret(config.dataDir);
  if (!secret)
    throw new UsageError(`no signing secret: set FABRIC_JWT_SECRET, or start \`agent-fabric dev\` once so it creates one in ${config.dataDir}`);
  const token = await mintToken(
    { secret, issuer: config.jwtIssuer, audience: config.jwtAudience },
    { sub, role: role.data, tenant, ttl },
  );
  console.log(token);
}
