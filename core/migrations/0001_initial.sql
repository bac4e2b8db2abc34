-- Raw interaction history: one row per distinct accepted event.
-- The primary key on (tenant_id, event_id) is the exactly-once fence: a redelivered or
-- republished event conflicts here and is never counted again.
CREATE TABLE interaction_history (
    tenant_id    text        NOT NULL,
    event_id     text        NOT NULL,
    ts           timestamptz NOT NULL,
    customer_id  text        COLLATE "C" NOT NULL,
    action_id    text        COLLATE "C" NOT NULL,
    treatment_id text        COLLATE "C",
    channel_id   text        COLLATE "C",
    type         text        NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, event_id)
);
CREATE INDEX interaction_history_tenant_ts ON interaction_history (tenant_id, ts);

-- Period-bucketed counters, one row per (bucket, group).
-- distinct_count: uniqueActions for customers, treatmentCount for channels.
CREATE TABLE interaction_bucket (
    tenant_id      text   NOT NULL,
    dimension      text   NOT NULL CHECK (dimension IN ('action', 'treatment', 'channel', 'customer')),
    period         text   NOT NULL CHECK (period IN ('daily', 'weekly', 'monthly', 'alltime')),
    bucket_start   date   NOT NULL,
    -- "C" collation: ids sort by code point everywhere (Postgres, Redis, Python), so every
    -- source returns ties in the same order.
    group_id       text   COLLATE "C" NOT NULL,
    impression     bigint NOT NULL DEFAULT 0,
    click          bigint NOT NULL DEFAULT 0,
    dismiss        bigint NOT NULL DEFAULT 0,
    accept         bigint NOT NULL DEFAULT 0,
    convert        bigint NOT NULL DEFAULT 0,
    total          bigint NOT NULL DEFAULT 0,
    distinct_count bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, dimension, period, bucket_start, group_id)
);
-- Serves a page in API order (total descending, then id) without a sort.
CREATE INDEX interaction_bucket_rank
    ON interaction_bucket (tenant_id, dimension, period, bucket_start, total DESC, group_id);

-- Which distinct items each group has seen in a bucket: customer -> actions, channel -> treatments.
-- A pair inserted for the first time increments distinct_count in the same transaction.
CREATE TABLE bucket_distinct (
    tenant_id    text NOT NULL,
    dimension    text NOT NULL CHECK (dimension IN ('channel', 'customer')),
    period       text NOT NULL,
    bucket_start date NOT NULL,
    group_id     text COLLATE "C" NOT NULL,
    item_id      text COLLATE "C" NOT NULL,
    PRIMARY KEY (tenant_id, dimension, period, bucket_start, group_id, item_id)
);

-- Deltas committed to Postgres but perhaps not yet applied to Redis. Redis applies each
-- batch once, fenced by a per-batch marker; applied rows are deleted.
CREATE TABLE redis_outbox (
    id         bigserial   PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now(),
    deltas     bytea       NOT NULL
);

-- Catalog metadata, per tenant. Counting never waits for it.
CREATE TABLE catalog_action (
    tenant_id text NOT NULL,
    id        text NOT NULL,
    name      text,
    issue     text,
    "group"   text,
    status    text,
    priority  integer,
    PRIMARY KEY (tenant_id, id)
);
CREATE TABLE catalog_treatment (
    tenant_id       text NOT NULL,
    id              text NOT NULL,
    name            text,
    action_id       text,
    channel_id      text,
    template_type   text,
    ab_test_variant text,
    weight          integer,
    status          text,
    PRIMARY KEY (tenant_id, id)
);
CREATE TABLE catalog_channel (
    tenant_id    text NOT NULL,
    id           text NOT NULL,
    name         text,
    channel_type text,
    PRIMARY KEY (tenant_id, id)
);
-- Bumped on every catalog load so API processes know to refresh their cached copy.
CREATE SEQUENCE catalog_version;

-- API keys: only a SHA-256 of the key is stored.
CREATE TABLE api_key (
    key_hash   text        PRIMARY KEY,
    key_prefix text        NOT NULL,
    role       text        NOT NULL CHECK (role IN ('viewer', 'editor', 'admin')),
    tenant_id  text        NOT NULL,
    label      text,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
