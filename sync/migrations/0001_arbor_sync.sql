-- arbor's PostgreSQL replica (arbor-sync). Every table is derived from the arbor log and
-- can be rebuilt from it (`arbor sync reset postgres --from 0`). Unqualified names: the
-- sink runs with search_path set to its configured schema.

-- Every event, as the API shows it.
CREATE TABLE arbor_events (
    seq         BIGINT PRIMARY KEY,
    id          UUID NOT NULL,
    workflow_id UUID NOT NULL,
    kind        TEXT NOT NULL,
    "timestamp" TIMESTAMPTZ NOT NULL,
    actor       TEXT NOT NULL,
    body        JSONB NOT NULL,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL
);
CREATE INDEX arbor_events_workflow ON arbor_events (workflow_id, seq);

-- Every node (DESIGN §2 fields).
CREATE TABLE arbor_nodes (
    id          UUID PRIMARY KEY,
    workflow_id UUID NOT NULL,
    parent_id   UUID,
    type        TEXT NOT NULL,
    role        TEXT CHECK (role IN ('system', 'user', 'assistant', 'tool')),
    content     TEXT NOT NULL,
    payload     JSONB NOT NULL,
    metadata    JSONB NOT NULL,
    agent_id    TEXT,
    user_id     TEXT,
    branch_id   UUID NOT NULL,
    depth       INTEGER NOT NULL,
    seq         BIGINT NOT NULL UNIQUE,
    "timestamp" TIMESTAMPTZ NOT NULL
);
CREATE INDEX arbor_nodes_workflow ON arbor_nodes (workflow_id, seq);
CREATE INDEX arbor_nodes_branch ON arbor_nodes (branch_id, seq);
CREATE INDEX arbor_nodes_parent ON arbor_nodes (parent_id);

-- Every edge: PARENT_OF (from parent_id), OPTION_OF (explicit or implied by an option
-- under a decision), MONITORS, CHOSEN_OPTION. seq = the event that created it.
CREATE TABLE arbor_edges (
    type        TEXT NOT NULL CHECK (type IN ('PARENT_OF', 'MONITORS', 'OPTION_OF', 'CHOSEN_OPTION')),
    from_id     UUID NOT NULL,
    to_id       UUID NOT NULL,
    workflow_id UUID NOT NULL,
    seq         BIGINT NOT NULL,
    PRIMARY KEY (type, from_id, to_id)
);
CREATE INDEX arbor_edges_to ON arbor_edges (to_id, type);
CREATE INDEX arbor_edges_workflow ON arbor_edges (workflow_id, type, seq);

-- Current state of each workflow (columns are NULL until the event that sets them).
CREATE TABLE arbor_workflows (
    workflow_id UUID PRIMARY KEY,
    root_id     UUID,
    status      TEXT,
    user_id     TEXT,
    metadata    JSONB,
    created_at  TIMESTAMPTZ,
    updated_at  TIMESTAMPTZ NOT NULL,
    last_seq    BIGINT NOT NULL
);

-- The seeds' DraftContent. One row per node of type `draft`: id = node id,
-- workflow_run_id = workflow id, content = node content, content_type and status from
-- the node's payload (`{"content_type": "comment"|"pull_request", "status": …}`,
-- defaults 'comment' and 'draft'), metadata = the node's metadata.
CREATE TABLE draft_content (
    id              UUID PRIMARY KEY,
    workflow_run_id UUID NOT NULL,
    content_type    TEXT NOT NULL CHECK (content_type IN ('comment', 'pull_request')),
    content         TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('draft', 'published', 'discarded')),
    metadata        JSONB NOT NULL,
    seq             BIGINT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX draft_content_run ON draft_content (workflow_run_id);
CREATE INDEX draft_content_status ON draft_content (status);

-- Sink cursors kept in PostgreSQL, written in the same transaction as the rows.
CREATE TABLE arbor_sync_cursor (
    sink       TEXT PRIMARY KEY,
    seq        BIGINT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
