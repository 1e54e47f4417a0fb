-- Status sync (SPEC 10, issue 15): groups are resolved and unresolved from Jira's workflow,
-- and resolving or unresolving a group moves its linked Jira issues.

ALTER TABLE issue_group
    ADD COLUMN status text NOT NULL DEFAULT 'unresolved'
        CHECK (status IN ('unresolved', 'resolved')),
    ADD COLUMN resolved_at timestamptz,
    ADD CHECK (status = 'resolved' OR resolved_at IS NULL);

-- The newest Jira status event applied to a group. Ordering is per field: assignee events
-- keep theirs in group_applied_event, so neither kind makes the other stale.
CREATE TABLE group_status_event (
    group_id bigint PRIMARY KEY REFERENCES issue_group (id) ON DELETE CASCADE,
    event_ts bigint NOT NULL,
    changelog_id bigint NOT NULL,
    delivery_id bigint NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- A delivery's status part: its outcome (null until the status step ran, or when the
-- delivery has no status item) and each group's.
ALTER TABLE webhook_delivery
    ADD COLUMN status_outcome text CHECK (status_outcome IN (
        'resolved', 'unresolved', 'unchanged', 'stale', 'echo', 'no-resolution-change',
        'no-affected-groups')),
    ADD COLUMN status_detail jsonb NOT NULL DEFAULT '{}'::jsonb;

-- A delivery changing both the assignee and the status writes one row of each kind per group.
DROP INDEX activity_delivery_group_uniq;
CREATE UNIQUE INDEX activity_delivery_group_type_uniq ON activity (delivery_id, group_id, type)
    WHERE delivery_id IS NOT NULL;
DROP INDEX group_history_delivery_group_uniq;
CREATE UNIQUE INDEX group_history_delivery_group_status_uniq
    ON group_history (delivery_id, group_id, status) WHERE delivery_id IS NOT NULL;

-- Outbound: the Jira status (id or name) to move an organization's issues of one Jira project
-- to when their group is resolved or unresolved.
CREATE TABLE status_mapping (
    organization_id bigint NOT NULL REFERENCES organization (id) ON DELETE CASCADE,
    integration_id bigint NOT NULL REFERENCES integration (id) ON DELETE CASCADE,
    jira_project text NOT NULL CHECK (jira_project <> ''),
    resolved_status text NOT NULL CHECK (resolved_status <> ''),
    unresolved_status text NOT NULL CHECK (unresolved_status <> ''),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, integration_id, jira_project)
);

-- Transitions this service made, until Jira's webhook for them (the echo) arrives: that
-- event changes nothing.
CREATE TABLE status_push (
    external_issue_id bigint PRIMARY KEY REFERENCES external_issue (id) ON DELETE CASCADE,
    status_id text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
