-- The feedback loop's views (operators/src/feedback): marketplace windows,
-- A/B results, Thompson allocations and the scoring weights' history. Rows
-- are written with jsonb_populate_recordset, so column names are the JSON
-- field names of the rows in `replay --out`.

CREATE TABLE feedback_windows (
    kind TEXT NOT NULL,              -- hour | day | 7d
    window_start TIMESTAMPTZ NOT NULL,
    window_end TIMESTAMPTZ NOT NULL,
    idea_id UUID NOT NULL,
    marketplace TEXT NOT NULL,
    variant TEXT NOT NULL,
    impressions BIGINT NOT NULL,
    clicks BIGINT NOT NULL,
    favorites BIGINT NOT NULL,
    add_to_cart BIGINT NOT NULL,
    sales BIGINT NOT NULL,
    ctr DOUBLE PRECISION NOT NULL,
    add_to_cart_rate DOUBLE PRECISION NOT NULL,
    conversion DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (kind, window_start, idea_id, marketplace, variant)
);

CREATE TABLE ab_results (
    idea_id UUID NOT NULL,
    marketplace TEXT NOT NULL,
    window_start TIMESTAMPTZ NOT NULL,
    window_end TIMESTAMPTZ NOT NULL,
    control TEXT NOT NULL,
    treatment TEXT NOT NULL,
    control_impressions BIGINT NOT NULL,
    control_clicks BIGINT NOT NULL,
    treatment_impressions BIGINT NOT NULL,
    treatment_clicks BIGINT NOT NULL,
    control_ctr DOUBLE PRECISION NOT NULL,
    treatment_ctr DOUBLE PRECISION NOT NULL,
    lift DOUBLE PRECISION,
    z DOUBLE PRECISION NOT NULL,
    p_value DOUBLE PRECISION NOT NULL,
    sample_sufficient BOOLEAN NOT NULL,
    winner TEXT,
    PRIMARY KEY (idea_id, marketplace, window_end, treatment)
);

CREATE TABLE allocations (
    day_start TIMESTAMPTZ NOT NULL,
    idea_id UUID NOT NULL,
    marketplace TEXT NOT NULL,
    variant TEXT NOT NULL,
    share DOUBLE PRECISION NOT NULL,
    budget DOUBLE PRECISION NOT NULL,
    draws INTEGER NOT NULL,
    PRIMARY KEY (day_start, idea_id, marketplace, variant)
);

CREATE TABLE weights_history (
    effective_from TIMESTAMPTZ PRIMARY KEY,
    learned_from TIMESTAMPTZ NOT NULL,
    freshness DOUBLE PRECISION NOT NULL,
    engagement DOUBLE PRECISION NOT NULL,
    novelty DOUBLE PRECISION NOT NULL,
    community_fit DOUBLE PRECISION NOT NULL,
    seasonality DOUBLE PRECISION NOT NULL,
    origin TEXT NOT NULL,
    ideas BIGINT NOT NULL,
    impressions BIGINT NOT NULL
);
