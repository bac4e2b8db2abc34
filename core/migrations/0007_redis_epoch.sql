-- Which Redis state Postgres vouches for (issue 13, item 4): Redis is trusted only when it
-- holds the epoch written here and at least `confirmed` applied batches of it.
--
-- epoch:     '<resync count>:<random id>', written before each resync copies a snapshot,
--            and into Redis's `ready` key when the copy is complete (streams/redis_sink.py).
-- confirmed: outbox batches deleted because Redis held them, in this epoch. Redis counts the
--            batches it applied in the same epoch; fewer there than here means Redis lost
--            state it had (an old RDB/AOF, a failover to a lagging replica).
-- resyncs:   completed and started resyncs, the epoch's counter part.
-- The empty initial epoch matches no Redis: the first worker tick after this migration
-- resyncs, so a Redis filled by the previous code is never taken on trust.
CREATE TABLE redis_mirror (
    only_row    boolean     PRIMARY KEY DEFAULT true CHECK (only_row),
    epoch       text        NOT NULL,
    confirmed   bigint      NOT NULL DEFAULT 0,
    resyncs     bigint      NOT NULL DEFAULT 0,
    changed_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO redis_mirror (epoch) VALUES ('');
