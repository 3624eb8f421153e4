-- Time to publish (seed 004 §7): each listing's time from its idea's first
-- signal, and the SLA alerts raised on their average.

CREATE TABLE publish_latencies (
    published_at TIMESTAMPTZ NOT NULL,
    idea_id UUID NOT NULL,
    marketplace TEXT NOT NULL,
    variant TEXT NOT NULL,
    listing_id TEXT NOT NULL,
    first_seen TIMESTAMPTZ NOT NULL,
    seconds DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (published_at, idea_id, marketplace, variant)
);

CREATE TABLE sla_alerts (
    at TIMESTAMPTZ PRIMARY KEY,
    average_hours DOUBLE PRECISION NOT NULL,
    threshold_hours DOUBLE PRECISION NOT NULL,
    listings BIGINT NOT NULL,
    window_secs BIGINT NOT NULL
);

-- Classification feedback: each change of an anchor (operators/src/feedback/anchors.rs).
CREATE TABLE anchors_history (
    effective_from TIMESTAMPTZ NOT NULL,
    anchor TEXT NOT NULL,
    corrections BIGINT NOT NULL,
    rating_sum BIGINT NOT NULL,
    shift DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (effective_from, anchor)
);
