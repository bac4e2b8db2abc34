-- HTTP ingestion (issue 15).

-- A producer key may only publish interactions (POST /api/v1/interactions, /respond): it
-- reads nothing. It stands beside the viewer < editor < admin chain, not below or above it.
ALTER TABLE api_key DROP CONSTRAINT api_key_role_check;
ALTER TABLE api_key ADD CONSTRAINT api_key_role_check
    CHECK (role IN ('producer', 'viewer', 'editor', 'admin'));

-- Who started the contact (event field `direction`); NULL when the producer did not say.
ALTER TABLE interaction_history ADD COLUMN direction text
    CONSTRAINT interaction_history_direction_check CHECK (direction IN ('inbound', 'outbound'));
