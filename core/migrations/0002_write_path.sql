-- The write path of issue 10: fewer and cheaper row writes per event, same answers.
--
-- 1. Postgres keeps daily and all-time buckets. A weekly or monthly bucket is the sum of its
--    7 or 28-31 daily buckets, computed when read (Redis keeps the current ones incrementally):
--    storing them cost two upserts per event and group.
-- 2. No index on a counter: `interaction_bucket_rank` indexed `total`, so every increment was
--    a non-HOT update that rewrote both indexes. Pages are ordered at read time (a top-N sort
--    over one bucket). With fillfactor 70 an increment finds room on its own page (HOT).
-- 3. Key columns in byte order (COLLATE "C"): comparisons are memcmp, not the locale's.
-- 4. Distinct items (a customer's actions, a channel's treatments): one row per pair holding
--    the buckets it was seen in as tags (core/distinct.py), instead of one row per pair and
--    bucket: one row write per event where there were four.
-- 5. Counter rows are sharded: each worker process writes its own shard of a bucket, so two
--    workers never wait for each other's row locks on the shared current-period rows (every
--    event of every worker updates the same action, treatment and channel rows); a bucket is
--    the sum of its shards. Redis holds the sums.
-- 6. The Redis outbox: one row per batch and hot bucket, its groups and counters as arrays,
--    written by the same statement that counts the batch.

DELETE FROM interaction_bucket WHERE period IN ('weekly', 'monthly');
DROP INDEX interaction_bucket_rank;
ALTER TABLE interaction_bucket
    DROP CONSTRAINT interaction_bucket_period_check,
    ALTER COLUMN tenant_id TYPE text COLLATE "C",
    ALTER COLUMN dimension TYPE text COLLATE "C",
    ALTER COLUMN period TYPE text COLLATE "C",
    ADD CONSTRAINT interaction_bucket_period_check CHECK (period IN ('daily', 'alltime')),
    ADD COLUMN shard smallint NOT NULL DEFAULT 0,
    DROP CONSTRAINT interaction_bucket_pkey,
    ADD PRIMARY KEY (tenant_id, dimension, period, bucket_start, group_id, shard),
    SET (fillfactor = 70);

-- tags: the daily, weekly and monthly buckets in which group_id has seen item_id
-- (core/distinct.py: (bucket start - 0001-01-01 in days) * 4 + period code). A row exists
-- once the pair was seen at all: that is the all-time bucket.
-- added: the tags the last write added (what the write path counts as new distinct items).
CREATE TABLE distinct_seen (
    tenant_id text   COLLATE "C" NOT NULL,
    dimension text   COLLATE "C" NOT NULL CHECK (dimension IN ('channel', 'customer')),
    group_id  text   COLLATE "C" NOT NULL,
    item_id   text   COLLATE "C" NOT NULL,
    tags      int4[] NOT NULL,
    added     int4[] NOT NULL,
    PRIMARY KEY (tenant_id, dimension, group_id, item_id)
) WITH (fillfactor = 70);

INSERT INTO distinct_seen (tenant_id, dimension, group_id, item_id, tags, added)
SELECT tenant_id, dimension, group_id, item_id,
       coalesce(array_agg(tag ORDER BY tag) FILTER (WHERE tag IS NOT NULL), '{}'), '{}'
FROM (
    SELECT tenant_id, dimension, group_id, item_id,
           CASE period
               WHEN 'daily' THEN (bucket_start - DATE '0001-01-01') * 4
               WHEN 'weekly' THEN (bucket_start - DATE '0001-01-01') * 4 + 1
               WHEN 'monthly' THEN (bucket_start - DATE '0001-01-01') * 4 + 2
           END AS tag
    FROM bucket_distinct
) AS pairs
GROUP BY tenant_id, dimension, group_id, item_id;
DROP TABLE bucket_distinct;

-- Outbox rows of the first schema (one JSON document per batch) become rows of the new one
-- with the same batch id, so markers already in Redis still fence them.
ALTER TABLE redis_outbox RENAME TO redis_outbox_v1;
CREATE SEQUENCE redis_batch_id;
SELECT setval('redis_batch_id', coalesce(max(id), 0) + 1, false) FROM redis_outbox_v1;

CREATE TABLE redis_outbox (
    batch_id     bigint      NOT NULL,
    tenant_id    text        COLLATE "C" NOT NULL,
    dimension    text        COLLATE "C" NOT NULL,
    period       text        COLLATE "C" NOT NULL,
    bucket_start date        NOT NULL,
    -- counts[i] are the deltas of groups[i], in core.keys.COUNTERS order.
    groups       text[]      NOT NULL,
    counts       int8[]      NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (batch_id, tenant_id, dimension, period, bucket_start)
);
-- Written once, read once, deleted: compressing them costs more CPU than the bytes it saves.
ALTER TABLE redis_outbox
    ALTER COLUMN groups SET STORAGE EXTERNAL,
    ALTER COLUMN counts SET STORAGE EXTERNAL;

INSERT INTO redis_outbox
    (batch_id, tenant_id, dimension, period, bucket_start, groups, counts, created_at)
SELECT o.id, e.row ->> 0, e.row ->> 1, e.row ->> 2,
       CASE WHEN e.row ->> 2 = 'alltime' THEN '-infinity'::date ELSE (e.row ->> 3)::date END,
       array_agg(e.row ->> 4 ORDER BY e.ord),
       array_agg(ARRAY[(e.row ->> 5)::int8, (e.row ->> 6)::int8, (e.row ->> 7)::int8,
                       (e.row ->> 8)::int8, (e.row ->> 9)::int8, (e.row ->> 10)::int8,
                       (e.row ->> 11)::int8] ORDER BY e.ord),
       o.created_at
FROM redis_outbox_v1 AS o
CROSS JOIN LATERAL jsonb_array_elements(convert_from(o.deltas, 'UTF8')::jsonb)
    WITH ORDINALITY AS e(row, ord)
GROUP BY o.id, o.created_at, 2, 3, 4, 5;
DROP TABLE redis_outbox_v1;
