-- Moving a project from Data Center to Cloud (SPEC 15). A row per project being moved: from
-- `started_at` on (the cutover), deliveries from the Data Center instance for an issue of it
-- that is no longer linked there end `migrated` and change nothing. `missing` lists the
-- issues the last run did not find on Cloud (left linked to Data Center); `finished_at` is set
-- once every linked issue moved.
CREATE TABLE project_migration (
    from_integration_id bigint NOT NULL REFERENCES integration (id) ON DELETE CASCADE,
    to_integration_id bigint NOT NULL REFERENCES integration (id) ON DELETE CASCADE,
    project_key text NOT NULL CHECK (project_key = upper(project_key) AND project_key <> ''),
    started_at timestamptz NOT NULL DEFAULT now(),
    last_run_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    moved bigint NOT NULL DEFAULT 0,
    missing jsonb NOT NULL DEFAULT '[]'::jsonb,
    PRIMARY KEY (from_integration_id, project_key)
);

-- Jira's own id of a linked issue, where known (Cloud gives a migrated issue a new one).
ALTER TABLE external_issue ADD COLUMN jira_issue_id text;

ALTER TABLE webhook_delivery DROP CONSTRAINT webhook_delivery_outcome_check;
ALTER TABLE webhook_delivery ADD CONSTRAINT webhook_delivery_outcome_check CHECK (outcome IN (
    'assigned', 'unassigned', 'no-assignee-change', 'missing-assignee-email',
    'no-affected-groups', 'user-not-found', 'stale', 'unchanged', 'migrated'));
