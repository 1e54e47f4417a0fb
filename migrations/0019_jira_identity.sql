-- Identity without e-mail (SPEC 14): a Jira user is known by its identity on that instance
-- (Cloud accountId, Server/Data Center user key, or the username of old bodies). The map names
-- the user here; `source` says who made it: an operator (`users map`), an import (`users
-- import`), or the inbound sync when a verified e-mail matched exactly one user. `jira_name`
-- is the Server/Data Center username when a body showed it (outbound names the user by it).
CREATE TABLE jira_user_map (
    integration_id bigint NOT NULL REFERENCES integration (id) ON DELETE CASCADE,
    jira_user text NOT NULL CHECK (jira_user <> '' AND length(jira_user) <= 255),
    user_id bigint NOT NULL REFERENCES app_user (id) ON DELETE CASCADE,
    jira_name text,
    source text NOT NULL CHECK (source IN ('operator', 'import', 'email')),
    mapped_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (integration_id, jira_user)
);
-- Outbound: which Jira user is this user on that integration.
CREATE INDEX jira_user_map_user_idx ON jira_user_map (user_id, integration_id);

-- Every identity an assignment named that matched nobody: what `users unmapped` lists and
-- `status` counts. A row stays until the identity is mapped (listing skips mapped ones).
-- Mapping it forgets the Jira assignee remembered for its issues (external_issue.
-- jira_assignee: `jira-user:<identity>` or its e-mail), so the next sweep feeds them again.
CREATE TABLE jira_user_unmapped (
    integration_id bigint NOT NULL REFERENCES integration (id) ON DELETE CASCADE,
    jira_user text NOT NULL,
    display_name text,
    -- The e-mail the last body showed with it, lower-cased (how its issues were remembered).
    email text,
    deliveries bigint NOT NULL DEFAULT 0,
    first_seen timestamptz NOT NULL DEFAULT now(),
    last_seen timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (integration_id, jira_user)
);
CREATE INDEX jira_user_unmapped_last_seen_idx ON jira_user_unmapped (last_seen);
