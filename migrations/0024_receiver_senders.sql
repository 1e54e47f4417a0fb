-- The receiver stores an accepted delivery already `queued` (it sends its first step right
-- after the commit) instead of storing it `received` and updating it once sent: that second
-- write of every row was half of PostgreSQL's work per delivery. What a send failure leaves
-- unsent the receiver sets back to `received` for beat's sweep; what a receiver killed between
-- the commit and the send leaves is found by its heartbeat going stale: beat's sweep sets that
-- receiver's still-queued deliveries back to `received` and sends them (a second send of one
-- already on the broker is harmless: the steps are idempotent).
CREATE TABLE receiver_process (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    host text NOT NULL,
    pid integer NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    seen_at timestamptz NOT NULL DEFAULT now(),
    -- Set when it stopped after sending everything, or when beat's sweep took over its
    -- unsent deliveries; a heartbeat after that (it was only cut off) clears it again.
    ended_at timestamptz
);

-- The receiver process that stored the delivery (NULL: stored by the reconciliation sweep or
-- before this migration). No foreign key: its check would cost every insert a lookup.
ALTER TABLE webhook_delivery ADD COLUMN sender bigint;
CREATE INDEX webhook_delivery_sender_idx ON webhook_delivery (sender)
    WHERE status = 'queued' AND sender IS NOT NULL;
