-- Jira Data Center 10 signs each webhook body (X-Hub-Signature: sha256=<hex HMAC-SHA256>) with
-- a secret given when the webhook is registered. The secret is stored encrypted like every
-- credential; during a rotation the previous one verifies too. `require_signature` refuses
-- unsigned deliveries (on when jira-sync registers the webhook on 10.x). The trigger of 0008
-- announces changes of these columns like any other change of the row.
ALTER TABLE integration
    ADD COLUMN signing_secret_enc text,
    ADD COLUMN previous_signing_secret_enc text,
    ADD COLUMN require_signature boolean NOT NULL DEFAULT false;
