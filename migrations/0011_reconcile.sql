-- Reconciliation (SPEC 9): a periodic search of Jira catches the changes whose webhooks never
-- arrived and feeds them into the inbox as deliveries of their own.

-- Where a delivery came from: Jira's webhook, or the reconciliation sweep.
ALTER TABLE webhook_delivery
    ADD COLUMN source text NOT NULL DEFAULT 'webhook' CHECK (source IN ('webhook', 'reconcile'));

-- The issue's Jira assignee as this service last knew it (from the newest event the inbound
-- sync read, or from its own outbound push): the email in lower case, '' for unassigned,
-- NULL when never known. The sweep feeds an issue whose Jira assignee differs from it.
ALTER TABLE external_issue ADD COLUMN jira_assignee text;

-- Per integration: the sweep's switch, interval, watermark and what its last run saw.
CREATE TABLE reconcile_state (
    integration_id bigint PRIMARY KEY REFERENCES integration (id) ON DELETE CASCADE,
    enabled boolean NOT NULL DEFAULT true,
    interval_s integer CHECK (interval_s > 0),  -- NULL: RECONCILE_INTERVAL_S
    -- Jira `updated` (epoch ms) up to which every issue was read: moves only after a whole
    -- window was processed.
    watermark_ms bigint,
    next_run_at timestamptz NOT NULL DEFAULT now(),
    last_run_at timestamptz,
    last_success_at timestamptz,
    issues_checked integer NOT NULL DEFAULT 0,
    changes_found integer NOT NULL DEFAULT 0,
    jira_requests integer NOT NULL DEFAULT 0,
    last_error text,
    last_error_at timestamptz
);
