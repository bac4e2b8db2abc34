-- API processes hold every active key hash in memory (an unknown key costs no query) and
-- re-read the table only when this version moved. A statement trigger bumps it on any change
-- to api_key, whoever makes it (the API, the CLI, an operator's SQL).
CREATE SEQUENCE api_key_version;

CREATE FUNCTION bump_api_key_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM nextval('api_key_version');
    RETURN NULL;
END
$$;

CREATE TRIGGER api_key_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON api_key
    FOR EACH STATEMENT EXECUTE FUNCTION bump_api_key_version();
