-- Steps send their successors themselves, so Celery's chain of a failed step was always empty.
-- What a replay runs next is derived from the step's name (tasks/pipeline.py), not stored.
ALTER TABLE failed_task DROP COLUMN chain;
