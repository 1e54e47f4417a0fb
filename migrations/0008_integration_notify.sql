-- Every change to an integration row (disable, secret rotation, re-link, delete) is announced
-- on this channel with the row's external_id, at commit: each receiver process drops its
-- cached secrets for that integration at once instead of waiting for the cache to expire.
CREATE FUNCTION jira_sync_integration_changed() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('jira_sync_integration', coalesce(NEW.external_id, OLD.external_id));
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER integration_changed
AFTER INSERT OR UPDATE OR DELETE ON integration
FOR EACH ROW EXECUTE FUNCTION jira_sync_integration_changed();
