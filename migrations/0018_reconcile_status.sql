-- Status is reconciled like the assignee (SPEC 12): the issue's Jira status id as this service
-- last knew it, from the newest status event its inbound sync applied or from a transition it
-- made itself (so the sweep does not feed its own move back); NULL when never known. The
-- sweep feeds an issue whose Jira status differs from it.
ALTER TABLE external_issue ADD COLUMN jira_status text;
