-- Outcome types (issue 11): a per-tenant registry, and every accepted type counted per bucket.
--
-- 1. The five system types (core/schema.py SYSTEM_OUTCOMES) keep their interaction_bucket
--    columns: the write path's hot loop is unchanged. Every other type is counted per bucket,
--    group and type in interaction_bucket_outcome, a row only where such events exist: an
--    event of a system type costs nothing more.
-- 2. Classification is not stored with the counts: the API sums counts per class from the
--    registry when it answers, so a reclassification shows in the next answer for all history.
-- 3. outcome_type holds each tenant's custom types only; the system types are declared in
--    code, cannot change, and need no copy per tenant.
-- 4. redis_outbox carries a batch's custom-type deltas of a bucket beside its counters.

CREATE TABLE outcome_type (
    tenant_id      text        NOT NULL,
    key            text        NOT NULL
        CONSTRAINT outcome_type_key_check CHECK (key ~ '^[a-z][a-z0-9_]{0,31}$'),
    name           text        NOT NULL,
    description    text,
    classification text        NOT NULL
        CONSTRAINT outcome_type_classification_check
        CHECK (classification IN ('positive', 'negative', 'neutral')),
    category       text        NOT NULL
        CONSTRAINT outcome_type_category_check CHECK (category IN ('impression', 'response')),
    ordinal        integer     NOT NULL DEFAULT 100,
    status         text        NOT NULL DEFAULT 'active'
        CONSTRAINT outcome_type_status_check CHECK (status IN ('active', 'inactive')),
    version        integer     NOT NULL DEFAULT 1,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    deleted_at     timestamptz,
    PRIMARY KEY (tenant_id, key)
);

-- API processes cache each tenant's registry and re-read it when this version moved.
CREATE SEQUENCE outcome_type_version;

CREATE FUNCTION bump_outcome_type_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM nextval('outcome_type_version');
    RETURN NULL;
END
$$;

CREATE TRIGGER outcome_type_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON outcome_type
    FOR EACH STATEMENT EXECUTE FUNCTION bump_outcome_type_version();

-- Counts of the types without a column, keyed like interaction_bucket plus the type (and
-- sharded the same way: a bucket's count is the sum of its shards).
CREATE TABLE interaction_bucket_outcome (
    tenant_id    text     COLLATE "C" NOT NULL,
    dimension    text     COLLATE "C" NOT NULL,
    period       text     COLLATE "C" NOT NULL
        CONSTRAINT interaction_bucket_outcome_period_check CHECK (period IN ('daily', 'alltime')),
    bucket_start date     NOT NULL,
    group_id     text     COLLATE "C" NOT NULL,
    type         text     COLLATE "C" NOT NULL,
    shard        smallint NOT NULL DEFAULT 0,
    count        bigint   NOT NULL,
    PRIMARY KEY (tenant_id, dimension, period, bucket_start, group_id, type, shard)
) WITH (fillfactor = 70);

-- Past events of other types were counted only in `total`: count them per type now.
INSERT INTO interaction_bucket_outcome
    (tenant_id, dimension, period, bucket_start, group_id, type, shard, count)
SELECT h.tenant_id, d.dimension, p.period, p.bucket_start, d.group_id, h.type, 0, count(*)
FROM interaction_history AS h
CROSS JOIN LATERAL (VALUES ('daily', (h.ts AT TIME ZONE 'UTC')::date),
                           ('alltime', '-infinity'::date)) AS p(period, bucket_start)
CROSS JOIN LATERAL (VALUES ('action', h.action_id), ('treatment', h.treatment_id),
                           ('channel', h.channel_id), ('customer', h.customer_id))
    AS d(dimension, group_id)
WHERE h.type NOT IN ('impression', 'click', 'dismiss', 'accept', 'convert')
  AND d.group_id IS NOT NULL
GROUP BY 1, 2, 3, 4, 5, 6;

-- outcome_groups[i] had outcome_counts[i] events of type outcome_types[i] in the batch.
ALTER TABLE redis_outbox
    ADD COLUMN outcome_groups text[],
    ADD COLUMN outcome_types  text[],
    ADD COLUMN outcome_counts int8[];
