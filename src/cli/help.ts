// Usage texts live apart from the commands so `--help` loads no database or HTTP code.

export const DEV_HELP = `agent-fabric dev [--port N] [--host H] [--data-dir DIR] [--workers N]

Runs the whole fabric in one process — API, scheduler and a worker — on the embedded
database (PGlite) in the data dir (or on PostgreSQL when DATABASE_URL is set). Creates the
data dir, a JWT secret and the "default" tenant on first start, and prints an admin token.

  --port N        HTTP port (env PORT, default 8787)
  --host H        interface to bind (env FABRIC_HOST, default 127.0.0.1)
  --data-dir DIR  data directory (env FABRIC_DATA_DIR, default ./.fabric)
  --workers N     workers in this process (default 1; each runs FABRIC_WORKER_CONCURRENCY tasks)

Environment: FABRIC_JWT_SECRET, FABRIC_JWKS_URL, DATABASE_URL, FABRIC_LOG_LEVEL — see README.`;

export const SERVE_HELP = `agent-fabric serve [--port N] [--host H] [--workers N]

Runs the API (and by default one worker) against PostgreSQL (production shape). Needs
DATABASE_URL and FABRIC_JWT_SECRET (≥ 32 characters) or FABRIC_JWKS_URL. Run several to
scale out; SIGTERM drains running tasks.

  --port N     HTTP port (env PORT, default 8787)
  --host H     interface to bind (env FABRIC_HOST, default 127.0.0.1)
  --workers N  workers in this process (default 1; 0 runs the API alone)`;

export const WORKER_HELP = `agent-fabric worker [--workers N] [--metrics-port N] [--host H]

Runs workers only (no API) against PostgreSQL (DATABASE_URL): they claim tasks, run them
and record the outcomes. Run as many processes as you need. SIGTERM stops claiming, lets
running tasks finish for FABRIC_DRAIN_TIMEOUT_SECONDS (30), then releases the rest.

  --workers N       workers in this process (default 1; each runs FABRIC_WORKER_CONCURRENCY tasks)
  --metrics-port N  serve /healthz, /readyz and /metrics (this process's series) on port N,
                    once the workers run (env FABRIC_WORKER_METRICS_PORT; 0 picks a free port;
                    default none)
  --host H          interface of that listener (env FABRIC_HOST, default 127.0.0.1; 0.0.0.0 for
                    probes from outside the host, with FABRIC_METRICS_TOKEN)`;

export const MIGRATE_HELP = `agent-fabric migrate [--data-dir DIR]

Applies pending database migrations under an advisory lock (safe to run from several
processes at once) and creates the "default" tenant. Uses DATABASE_URL when set,
otherwise the embedded database in the data dir (which must not be in use).

  --data-dir DIR  data directory (env FABRIC_DATA_DIR, default ./.fabric)`;

export const TOKEN_HELP = `agent-fabric token --role ROLE [--tenant ID] [--sub ID] [--ttl 1h] [--data-dir DIR]

Mints an HS256 JWT for local use, signed with FABRIC_JWT_SECRET or the secret that
\`agent-fabric dev\` keeps in the data dir. Prints the token alone on stdout.

  --role ROLE     platform_admin | admin | operator | member | viewer | agent
  --tenant ID     tenant id (default: default)
  --sub ID        subject; for --role agent, the agent id (default: cli-<role>)
  --ttl T         lifetime: seconds or 15m, 1h, 7d (default 1h)
  --data-dir DIR  where to find the dev secret (env FABRIC_DATA_DIR, default ./.fabric)`;

export const AUDIT_HELP = `agent-fabric audit verify [--tenant ID] [--json] [--data-dir DIR]

Checks the audit log's hash chains: every row's position, prev_hash and sha256 over its
canonical content, and each chain's head. Exits 0 when every chain is intact, 1 naming the
first broken row of each broken chain (edited, deleted, inserted out of band). Uses
DATABASE_URL when set, otherwise the embedded database in the data dir (which must not be
in use). Record the printed head hashes elsewhere to detect a rewrite of a whole chain.

  --tenant ID     verify one tenant's chain ("platform" for platform-level rows); default all
  --json          print the reports as JSON
  --data-dir DIR  data directory (env FABRIC_DATA_DIR, default ./.fabric)`;
