-- Per-customer reads and erasure (issue 12). Independent of 0005 (outcome types): it adds
-- an index and a table and changes nothing that 0005 touches.

-- One customer's events, newest first: GET /api/v1/interaction-summaries and
-- /interaction-history read a customer's history through it (tens to hundreds of rows), and
-- DELETE /api/v1/customers/{id} finds the rows to erase with it. One index entry per event
-- is all the write path pays (per-customer counter rows would cost row writes per event).
-- event_id DESC as well as ts DESC: the history's keyset cursor compares (ts, event_id) as a
-- row, which an index can bound only when both columns run in the same direction.
CREATE INDEX interaction_history_customer
    ON interaction_history (tenant_id, customer_id, ts DESC, event_id DESC);

-- Ids of erased events (no personal data: neither customer nor content). The write statement
-- skips them, so an erased event published again is not counted again: it was already seen.
CREATE TABLE erased_event (
    tenant_id text        COLLATE "C" NOT NULL,
    event_id  text        COLLATE "C" NOT NULL,
    erased_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, event_id)
);
