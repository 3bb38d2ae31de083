-- Data erasure and retention (managed-execution-prd §14.9, §14.10; README "Data erasure", "Retention").

-- One row per erased subject of a tenant. The job is resumable: each step commits with its
-- name appended to steps_done and its counts merged into evidence, so a process that dies
-- mid-way leaves a row another process (or itself, on restart) finishes once the lease
-- (locked_until) has passed. subject_id is kept only while the job runs (it is needed to
-- finish) and cleared at completion; subject_hash = sha256("<tenant>:<type>:<id lowercased>")
-- keeps a second request for the same subject idempotent without keeping the id.
CREATE TABLE erasure_requests (
  id            uuid PRIMARY KEY,
  tenant_id     text NOT NULL REFERENCES tenants (id),
  subject_type  text NOT NULL CHECK (subject_type IN ('user', 'agent')),
  subject_id    text,
  subject_hash  text NOT NULL CHECK (subject_hash ~ '^[0-9a-f]{64}$'),
  -- replaces the subject's id in the billing rows that are kept (agent_quota_usage)
  pseudonym     uuid NOT NULL,
  status        text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'completed')),
  steps_done    text[] NOT NULL DEFAULT '{}',
  evidence      jsonb NOT NULL DEFAULT '{}',
  last_error    text,
  requested_by  text NOT NULL,
  locked_until  timestamptz,
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now(),
  completed_at  timestamptz,
  UNIQUE (tenant_id, subject_hash),
  CHECK ((status = 'completed') = (subject_id IS NULL))
);
CREATE INDEX erasure_requests_running ON erasure_requests (locked_until) WHERE status = 'running';

-- Tokens of an erased subject are refused: a token of the tenant whose sub hashes to
-- subject_hash = sha256("<tenant>:<sub lowercased>") and that was issued (iat) at or before
-- revoked_at answers 401 token_revoked. An erased user is revoked under its id and its email.
CREATE TABLE revoked_subjects (
  tenant_id     text NOT NULL REFERENCES tenants (id),
  subject_hash  text NOT NULL CHECK (subject_hash ~ '^[0-9a-f]{64}$'),
  revoked_at    timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, subject_hash)
);

-- Days code-bearing artifacts and logs are kept (NULL: FABRIC_RETENTION_DAYS, default 14).
ALTER TABLE tenants ADD COLUMN retention_days integer CHECK (retention_days BETWEEN 1 AND 3650);
