-- Status sync (SPEC 12). An echo is recognised per push: a marker per (issue, group, target
-- status), so one group's push never swallows another group's change of the same issue, and
-- a resolve then unresolve made here expects both echoes. Markers left by the old table (one
-- per issue, no group) cannot be told apart: they are dropped (at worst one echo is applied
-- as a change the group already made).
DROP TABLE status_push;
CREATE TABLE status_push (
    external_issue_id bigint NOT NULL REFERENCES external_issue (id) ON DELETE CASCADE,
    group_id bigint NOT NULL REFERENCES issue_group (id) ON DELETE CASCADE,
    status_id text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (external_issue_id, group_id, status_id)
);

-- A resolve or unresolve made here takes part in ordering like a Jira event; it has no
-- delivery.
ALTER TABLE group_status_event ALTER COLUMN delivery_id DROP NOT NULL;

-- A group whose linked Jira issues must be moved to its status: written in the transaction
-- that changed the group, removed once the move finished, re-sent by beat while it waits.
-- source_integration_id: the instance the change came from (already there); NULL: made here.
CREATE TABLE status_move_pending (
    group_id bigint PRIMARY KEY REFERENCES issue_group (id) ON DELETE CASCADE,
    source_integration_id bigint,
    requested_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX status_move_pending_requested_idx ON status_move_pending (requested_at);
