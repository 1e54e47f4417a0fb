-- Inbound pipeline (SPEC 4): what the sync decided per group, and the newest event per group.

-- The group step's input, decided by the inbound sync: assign (to user_id) or deassign.
-- outcome is 'pending' until the group step has run, then the group's final outcome.
ALTER TABLE delivery_effect
    ADD COLUMN action text CHECK (action IN ('assign', 'deassign')),
    ADD COLUMN user_id bigint,
    ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();

-- The newest Jira event applied to a group: an older one arriving later is stale for it.
CREATE TABLE group_applied_event (
    group_id bigint PRIMARY KEY REFERENCES issue_group (id) ON DELETE CASCADE,
    event_ts bigint NOT NULL,
    changelog_id bigint NOT NULL,
    delivery_id bigint NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
