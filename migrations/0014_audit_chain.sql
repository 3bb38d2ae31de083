-- Tamper-evident audit log (agent-fabric.md NFR-SEC-3, managed-execution-prd §8.6 TEAM-003).
--
-- One hash chain per tenant (chain '' holds the platform-level rows, tenant_id NULL). Each row
-- stores its position (chain_seq, 1, 2, 3 … without gaps), the previous row's hash and
--   hash = hex(sha256(prev_hash || content))
-- where content is the row's canonical JSON: jsonb_build_object(...)::text of every column
-- (see fabric_audit_content below), i.e. PostgreSQL's normalised jsonb text — keys sorted
-- (shorter first, then bytewise), ", " and ": " separators — with created_at as UTC text to the
-- microsecond. The first row's prev_hash is 64 zeros.
--
-- Why a trigger and a per-tenant head row (and not a background sealer): the BEFORE INSERT
-- trigger chains every insert, whoever makes it — recordAudit() from TypeScript, inside a
-- transaction or not, and the SQL functions that insert audit rows themselves (0013's
-- fabric_gateway_settle) — in the same statement, so no caller changes and no extra round trip.
-- It locks the tenant's row of audit_chain_heads (FOR UPDATE, held to commit), which serialises
-- the appends of one tenant only: other tenants append in parallel, and the lock is taken at
-- the audit insert, which callers make last in their transactions, so it is held for the commit
-- alone. A transaction rolled back also rolls back its head update: no gap, no orphan hash.
-- A sealer would avoid even that short wait but leaves recent rows unsealed (editable without
-- detection) until it runs, and needs a process that owns sealing; not worth it at these rates
-- (bench/audit.ts measures the cost).
--
-- audit_log is append-only: UPDATE, DELETE and TRUNCATE are refused by triggers. The escape for
-- maintenance is the table owner's `ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only`
-- (or a superuser's session_replication_role = replica); any row changed, removed or inserted
-- that way breaks the chain, and `agent-fabric audit verify` names the first broken row.
--
-- Rows written before this migration are sealed here, in id order per tenant, before the
-- triggers exist.

CREATE TABLE audit_chain_heads (
  chain       text PRIMARY KEY,  -- the tenant id, or '' for platform-level rows (tenant_id NULL)
  seq         bigint NOT NULL DEFAULT 0,
  hash        text NOT NULL DEFAULT repeat('0', 64),
  updated_at  timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE audit_log ADD COLUMN chain_seq bigint, ADD COLUMN prev_hash text, ADD COLUMN hash text;

-- Not unique on purpose: verify reports a repeated position as "a row was inserted" rather than
-- the index refusing a forger's insert (the head lock already makes legitimate positions unique).
CREATE INDEX audit_log_chain ON audit_log ((coalesce(tenant_id, '')), chain_seq, id);
-- GET /api/audit: newest first within a tenant
CREATE INDEX audit_log_tenant_id ON audit_log (tenant_id, id DESC);
CREATE INDEX audit_log_target ON audit_log (tenant_id, target_id);

-- The canonical content a row's hash covers. src/audit/verify.ts renders the same expression
-- inline (and hashes with node's crypto), so verification does not trust this function.
CREATE FUNCTION fabric_audit_content(r audit_log) RETURNS text LANGUAGE sql STABLE AS $$
  SELECT jsonb_build_object(
    'seq', r.chain_seq, 'id', r.id, 'tenant_id', r.tenant_id, 'actor_sub', r.actor_sub, 'actor_role', r.actor_role,
    'action', r.action, 'target_type', r.target_type, 'target_id', r.target_id, 'before', r.before, 'after', r.after,
    'request_id', r.request_id, 'created_at', to_char(r.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))::text
$$;

CREATE FUNCTION fabric_audit_hash(p_prev text, r audit_log) RETURNS text LANGUAGE sql STABLE AS $$
  SELECT encode(sha256(convert_to(p_prev || fabric_audit_content(r), 'UTF8')), 'hex')
$$;

-- Seal the rows that exist already.
DO $$
DECLARE
  r audit_log;
  v_chain text := NULL;
  v_seq bigint := 0;
  v_prev text;
BEGIN
  FOR r IN SELECT * FROM audit_log ORDER BY coalesce(tenant_id, ''), id LOOP
    IF v_chain IS DISTINCT FROM coalesce(r.tenant_id, '') THEN
      IF v_chain IS NOT NULL THEN
        INSERT INTO audit_chain_heads (chain, seq, hash) VALUES (v_chain, v_seq, v_prev);
      END IF;
      v_chain := coalesce(r.tenant_id, ''); v_seq := 0; v_prev := repeat('0', 64);
    END IF;
    v_seq := v_seq + 1;
    r.chain_seq := v_seq;
    r.prev_hash := v_prev;
    v_prev := fabric_audit_hash(v_prev, r);
    UPDATE audit_log SET chain_seq = v_seq, prev_hash = r.prev_hash, hash = v_prev WHERE id = r.id;
  END LOOP;
  IF v_chain IS NOT NULL THEN
    INSERT INTO audit_chain_heads (chain, seq, hash) VALUES (v_chain, v_seq, v_prev);
  END IF;
END
$$;

CREATE FUNCTION fabric_audit_chain() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  v_chain text := coalesce(NEW.tenant_id, '');
  v_seq bigint;
  v_prev text;
BEGIN
  SELECT seq, hash INTO v_seq, v_prev FROM audit_chain_heads WHERE chain = v_chain FOR UPDATE;
  IF NOT FOUND THEN
    INSERT INTO audit_chain_heads (chain) VALUES (v_chain) ON CONFLICT (chain) DO NOTHING;
    SELECT seq, hash INTO v_seq, v_prev FROM audit_chain_heads WHERE chain = v_chain FOR UPDATE;
  END IF;
  NEW.chain_seq := v_seq + 1;
  NEW.prev_hash := v_prev;
  NEW.hash := fabric_audit_hash(v_prev, NEW);
  UPDATE audit_chain_heads SET seq = NEW.chain_seq, hash = NEW.hash, updated_at = now() WHERE chain = v_chain;
  RETURN NEW;
END
$$;
CREATE TRIGGER audit_log_chain BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION fabric_audit_chain();

CREATE FUNCTION fabric_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
    USING ERRCODE = 'insufficient_privilege',
          HINT = 'Audit rows are never changed or removed; a maintenance change needs ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only and breaks the hash chain (agent-fabric audit verify reports it).';
END
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log FOR EACH ROW EXECUTE FUNCTION fabric_audit_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log FOR EACH STATEMENT EXECUTE FUNCTION fabric_audit_append_only();

-- Export jobs of POST /api/audit/exports: the file lands in the tenant's storage under
-- <tenant>/system/audit-exports/<id> (agents' files are <tenant>/<agent uuid>/<id>, so no clash).
CREATE TABLE audit_exports (
  id            uuid PRIMARY KEY,
  tenant_id     text NOT NULL,
  requested_by  text NOT NULL,
  format        text NOT NULL CHECK (format IN ('jsonl', 'csv')),
  filters       jsonb NOT NULL,
  status        text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'completed', 'failed')),
  row_count     bigint,
  size          bigint,
  sha256        text,
  storage_key   text,
  error         text,
  created_at    timestamptz NOT NULL DEFAULT now(),
  completed_at  timestamptz
);
CREATE INDEX audit_exports_tenant ON audit_exports (tenant_id, created_at DESC);
