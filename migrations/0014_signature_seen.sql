-- Data Center 10 reads a webhook's signing secret from configuration.SECRET only; given under
-- any other field it keeps none and sends unsigned bodies. So a registration no longer
-- requires signatures at once: the first validly signed delivery turns require_signature on
-- (signature_seen_at says when), until then the token alone verifies.
ALTER TABLE integration ADD COLUMN signature_seen_at timestamptz;
-- Registered before with the field Jira ignores: nothing signed can have arrived, so nothing
-- is required until it does (`integration configure ID --refresh-server-info` re-registers).
UPDATE integration SET require_signature = false WHERE signing_secret_enc IS NOT NULL;

-- What the receiver notes per integration: refused signatures, and the last delivery that
-- only the previous secret of a rotation verified (`rotate-secret --finish` waits for it to
-- age). A table of its own, so these writes do not fire the integration trigger of 0008.
CREATE TABLE integration_webhook_seen (
    integration_id bigint PRIMARY KEY REFERENCES integration (id) ON DELETE CASCADE,
    signature_refusals bigint NOT NULL DEFAULT 0,
    last_refused_at timestamptz,
    previous_secret_used_at timestamptz
);
