-- Jira Cloud and tokens (SPEC 13): an integration signs its calls with OAuth 1.0a (Server and
-- Data Center), an API token (Cloud: Basic with the account's e-mail) or a personal access
-- token (Data Center 8.14+: Bearer). Tokens are stored encrypted like the OAuth credentials;
-- no REST call tells an API token's expiry, so the operator's date is kept to warn ahead.
ALTER TABLE integration_credential
    ADD COLUMN auth_kind text NOT NULL DEFAULT 'oauth1'
        CHECK (auth_kind IN ('oauth1', 'api_token', 'pat')),
    ADD COLUMN account_email text,
    ADD COLUMN api_token_enc text,
    ADD COLUMN token_expires_on date,
    ALTER COLUMN consumer_key DROP NOT NULL,
    ALTER COLUMN private_key_enc DROP NOT NULL,
    ALTER COLUMN access_token_enc DROP NOT NULL,
    ALTER COLUMN access_token_secret_enc DROP NOT NULL;
ALTER TABLE integration_credential ADD CONSTRAINT integration_credential_fields_of_kind CHECK (
    (auth_kind = 'oauth1' AND consumer_key IS NOT NULL AND private_key_enc IS NOT NULL
        AND access_token_enc IS NOT NULL AND access_token_secret_enc IS NOT NULL)
    OR (auth_kind = 'api_token' AND account_email IS NOT NULL AND api_token_enc IS NOT NULL)
    OR (auth_kind = 'pat' AND api_token_enc IS NOT NULL)
);
