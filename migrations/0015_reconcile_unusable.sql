-- Linked issues the last sweep of an integration found but could not use (a search answer
-- without fields.assignee, say): each recorded alone, [{"key": ..., "reason": ...}], while
-- the sweep goes on with the others.
ALTER TABLE reconcile_state ADD COLUMN unusable jsonb NOT NULL DEFAULT '[]'::jsonb;
