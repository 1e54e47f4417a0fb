-- `jira-sync status`: each integration's last delivery in one index probe, however large the
-- inbox (a linked Jira that has gone quiet is a warning).
CREATE INDEX IF NOT EXISTS webhook_delivery_integration_received_idx
    ON webhook_delivery (integration_id, received_at);
