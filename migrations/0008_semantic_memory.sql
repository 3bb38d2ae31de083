-- Semantic memory of each agent (isolation-runtime-prd §3.2, US-06/07): a text, its metadata
-- and its embedding. `space` names the vector space (provider:model:dimensions); vectors are
-- only ever compared within one space, and a change of provider or model needs an explicit
-- re-embedding. The embedding is stored as float32 little-endian bytes on every engine (the
-- exact search reads them); where pgvector exists it is also kept as a `vector` with HNSW
-- indexes for the common dimensions.
CREATE TABLE semantic_memories (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id   text NOT NULL,
  agent_id    uuid NOT NULL,
  text        text NOT NULL,
  metadata    jsonb NOT NULL DEFAULT '{}',
  space       text NOT NULL,
  provider    text NOT NULL,
  model       text NOT NULL,
  dimensions  integer NOT NULL CHECK (dimensions > 0),
  embedding   bytea NOT NULL CHECK (octet_length(embedding) = 4 * dimensions),
  -- the space's version when the row entered it: exact-search caches load only newer rows
  seq         bigint NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  FOREIGN KEY (agent_id, tenant_id) REFERENCES agents (id, tenant_id)
);
CREATE INDEX semantic_memories_agent_space ON semantic_memories (agent_id, space, seq);
CREATE INDEX semantic_memories_metadata ON semantic_memories USING gin (metadata jsonb_path_ops);

-- One row per agent and space. Writers lock it, so `seq` values commit in order; `version`
-- moves on every insert and delete, `deletions` on every delete (an exact cache then reloads).
CREATE TABLE semantic_memory_spaces (
  tenant_id  text NOT NULL,
  agent_id   uuid NOT NULL,
  space      text NOT NULL,
  memories   bigint NOT NULL DEFAULT 0 CHECK (memories >= 0),
  version    bigint NOT NULL DEFAULT 0,
  deletions  bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (agent_id, space),
  FOREIGN KEY (agent_id, tenant_id) REFERENCES agents (id, tenant_id)
);

-- pgvector only where the server has it (PGlite ships it; a plain PostgreSQL may not) and we
-- may create it; otherwise the fabric searches exactly in process. The same file runs on both.
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'vector') THEN
    IF NOT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'vector') THEN
      RAISE NOTICE 'pgvector is not available: semantic memory uses exact in-process search';
      RETURN;
    END IF;
    BEGIN
      CREATE EXTENSION vector;
    EXCEPTION WHEN insufficient_privilege THEN
      RAISE NOTICE 'pgvector is available but this role may not create it: semantic memory uses exact in-process search';
      RETURN;
    END;
  END IF;
  EXECUTE 'ALTER TABLE semantic_memories ADD COLUMN embedding_vector vector';
  EXECUTE 'CREATE INDEX semantic_memories_hnsw_100 ON semantic_memories USING hnsw ((embedding_vector::vector(100)) vector_cosine_ops) WHERE dimensions = 100';
  EXECUTE 'CREATE INDEX semantic_memories_hnsw_1536 ON semantic_memories USING hnsw ((embedding_vector::vector(1536)) vector_cosine_ops) WHERE dimensions = 1536';
END
$$;
