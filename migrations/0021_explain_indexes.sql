-- `jira-sync explain` (SPEC 16) reads indexed rows only: an issue's deliveries by key, a
-- group's decided effects, and the failed-task records of a delivery.
CREATE INDEX IF NOT EXISTS webhook_delivery_issue_idx ON webhook_delivery (issue_key, event_ts);
CREATE INDEX IF NOT EXISTS delivery_effect_group_idx ON delivery_effect (group_id, delivery_id);
CREATE INDEX IF NOT EXISTS failed_task_delivery_idx ON failed_task (delivery_id);
