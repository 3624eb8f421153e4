-- ideaflow's materialized views. Applied by `ideaflow migrate` (and at start)
-- into the schema named by the Redis/Postgres namespace, with search_path
-- "<schema>, public" so that pgvector's `vector` type (in public) resolves.

-- One row per distinct content (seed 004: content_hash UNIQUE): the first
-- signal that carried it, with the rest of its fields in metadata.
CREATE TABLE signals (
    content_hash CHAR(32) PRIMARY KEY,
    id TEXT NOT NULL,
    source TEXT NOT NULL,
    content TEXT NOT NULL,
    captured_at TIMESTAMPTZ NOT NULL,
    idea_id UUID NOT NULL,
    dedupe TEXT NOT NULL,
    metadata JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX signals_idea ON signals (idea_id);

-- Ideas and their vectors. Scores live in idea_scores: they change on every
-- tick, and an UPDATE of this table would re-insert the vector into the HNSW
-- index (about 170 rows/s here) unless it stayed HOT.
CREATE TABLE ideas (
    id UUID PRIMARY KEY,
    content_hash CHAR(32) NOT NULL,
    title TEXT NOT NULL,
    source TEXT NOT NULL,
    category TEXT,
    category_similarity REAL,
    anchor_class TEXT,
    community TEXT,
    locale TEXT,
    topics TEXT[] NOT NULL,
    embedding vector(384) NOT NULL,
    signal_count BIGINT NOT NULL,
    near_duplicates BIGINT NOT NULL,
    views BIGINT NOT NULL,
    likes BIGINT NOT NULL,
    comments BIGINT NOT NULL,
    shares BIGINT NOT NULL,
    engagement_rate DOUBLE PRECISION NOT NULL,
    status TEXT NOT NULL,
    first_seen TIMESTAMPTZ NOT NULL,
    last_seen TIMESTAMPTZ NOT NULL,
    peak_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX ideas_embedding ON ideas USING hnsw (embedding vector_cosine_ops);
CREATE INDEX ideas_category ON ideas (category);

CREATE TABLE idea_scores (
    idea_id UUID PRIMARY KEY,
    category TEXT,
    score DOUBLE PRECISION NOT NULL,
    freshness DOUBLE PRECISION NOT NULL,
    engagement DOUBLE PRECISION NOT NULL,
    novelty DOUBLE PRECISION NOT NULL,
    community_fit DOUBLE PRECISION NOT NULL,
    seasonality DOUBLE PRECISION NOT NULL,
    scored_at TIMESTAMPTZ NOT NULL
) WITH (fillfactor = 70);
CREATE INDEX idea_scores_rank ON idea_scores (category, score DESC);

-- What dashboards read: an idea with its score and factors.
CREATE VIEW ideas_scored AS
SELECT i.*, s.score, s.freshness, s.engagement, s.novelty, s.community_fit,
       s.seasonality, s.scored_at
FROM ideas i LEFT JOIN idea_scores s ON s.idea_id = i.id;

CREATE TABLE centroids (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    window_start TIMESTAMPTZ NOT NULL,
    window_end TIMESTAMPTZ NOT NULL,
    embedding vector(384) NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (kind, key)
);

CREATE TABLE topic_counts (
    category TEXT NOT NULL,
    topic TEXT NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (category, topic)
);

CREATE TABLE distinct_counts (
    source TEXT NOT NULL,
    window_start TIMESTAMPTZ NOT NULL,
    window_end TIMESTAMPTZ NOT NULL,
    signals BIGINT NOT NULL,
    ideas BIGINT NOT NULL,
    communities BIGINT NOT NULL,
    PRIMARY KEY (source, window_start)
);

CREATE TABLE dead_letters (
    id BIGSERIAL PRIMARY KEY,
    raw TEXT NOT NULL,
    reason TEXT NOT NULL,
    message TEXT NOT NULL,
    file TEXT,
    line BIGINT,
    byte_offset BIGINT,
    at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per sink: the last epoch committed, in the same transaction as its rows.
CREATE TABLE pipeline_progress (
    sink TEXT PRIMARY KEY,
    epoch BIGINT NOT NULL,
    frontier TIMESTAMPTZ NOT NULL,
    committed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
