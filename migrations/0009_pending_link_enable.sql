-- A re-link keeps a disabled integration disabled unless the operator asked `--enable`.
ALTER TABLE pending_link ADD COLUMN enable boolean NOT NULL DEFAULT false;
