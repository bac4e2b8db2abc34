-- Retention (issue 13, item 7): history partitioned by month so old months can be dropped,
-- and the exactly-once fence moved to a narrow table of its own.
--
-- 1. Postgres cannot enforce a unique (tenant_id, event_id) across the partitions of a table
--    partitioned by ts (a unique index must include the partition key). The fence is
--    event_seen: one narrow row per distinct event, primary key (tenant_id, event_id); the
--    write statement inserts into it with ON CONFLICT DO NOTHING RETURNING and writes history
--    only for the ids it returns. A BRIN index on ts lets retention delete expired fence rows
--    in ranges without a second B-tree per event.
-- 2. interaction_history becomes a table partitioned by range of ts, without a primary key.
--    The existing table becomes its first partition (interaction_history_legacy: everything
--    before the month after the newest event) by ATTACH PARTITION, after a CHECK constraint
--    that implies the range: one scan of the table, no copy. Its primary key is dropped (the
--    fence does its work). Monthly partitions follow (streams/retention.py creates them ahead,
--    interaction_history_pYYYYMM); the default partition holds anything outside them.
-- 3. retention_horizon: what retention has dropped so far (core/retention.py). The write
--    statement reads events_from under the counting lock and refuses older events.

ALTER TABLE interaction_history RENAME TO interaction_history_legacy;
ALTER TABLE interaction_history_legacy DROP CONSTRAINT interaction_history_pkey;
ALTER INDEX interaction_history_tenant_ts RENAME TO interaction_history_legacy_tenant_ts;
ALTER INDEX interaction_history_customer RENAME TO interaction_history_legacy_customer;

CREATE TABLE event_seen (
    tenant_id text        COLLATE "C" NOT NULL,
    event_id  text        COLLATE "C" NOT NULL,
    ts        timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, event_id)
);
INSERT INTO event_seen (tenant_id, event_id, ts)
SELECT tenant_id, event_id, ts FROM interaction_history_legacy ORDER BY ts;
CREATE INDEX event_seen_ts ON event_seen USING brin (ts);

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
    direction    text
        CONSTRAINT interaction_history_direction_check CHECK (direction IN ('inbound', 'outbound'))
) PARTITION BY RANGE (ts);

DO $$
DECLARE
    -- The first month the legacy partition does not hold (UTC): after the newest event and now.
    upper timestamptz := (date_trunc('month', greatest(
        (SELECT max(ts) FROM interaction_history_legacy), now()) AT TIME ZONE 'UTC')
        + interval '1 month') AT TIME ZONE 'UTC';
BEGIN
    EXECUTE format('ALTER TABLE interaction_history_legacy ADD CONSTRAINT'
                   ' interaction_history_legacy_range CHECK (ts < %L)', upper);
    EXECUTE format('ALTER TABLE interaction_history ATTACH PARTITION interaction_history_legacy'
                   ' FOR VALUES FROM (MINVALUE) TO (%L)', upper);
END
$$;
-- The attached range implies it: no longer needed.
ALTER TABLE interaction_history_legacy DROP CONSTRAINT interaction_history_legacy_range;
CREATE TABLE interaction_history_default PARTITION OF interaction_history DEFAULT;

-- The per-partition indexes exist on the legacy table already; these attach them.
CREATE INDEX interaction_history_tenant_ts ON interaction_history (tenant_id, ts);
CREATE INDEX interaction_history_customer
    ON interaction_history (tenant_id, customer_id, ts DESC, event_id DESC);

-- What retention has dropped (None/NULL: nothing); the worker's retention run moves them
-- forward only (core/retention.py Horizons).
CREATE TABLE retention_horizon (
    only_row      boolean     PRIMARY KEY DEFAULT true CHECK (only_row),
    history_from  timestamptz,
    buckets_from  date,
    distinct_from date,
    events_from   timestamptz,
    changed_at    timestamptz NOT NULL DEFAULT now()
);
INSERT INTO retention_horizon DEFAULT VALUES;

-- Whoever could read or erase the history table (the API's role) can read or erase the new one.
DO $$
DECLARE
    g record;
BEGIN
    FOR g IN SELECT DISTINCT grantee, privilege_type FROM information_schema.role_table_grants
             WHERE table_name = 'interaction_history_legacy'
               AND grantee <> (SELECT tableowner FROM pg_tables
                               WHERE tablename = 'interaction_history_legacy')
    LOOP
        EXECUTE format('GRANT %s ON interaction_history TO %I', g.privilege_type, g.grantee);
        IF g.privilege_type = 'SELECT' THEN
            EXECUTE format('GRANT SELECT ON retention_horizon TO %I', g.grantee);
        END IF;
    END LOOP;
END
$$;
