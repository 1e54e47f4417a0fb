-- When a changed group's side effects (cache purges, outbound sync) finished, so that the
-- beat sweep can send them again if their broker messages were lost.
ALTER TABLE delivery_effect ADD COLUMN side_effects_done_at timestamptz;
-- Effects applied before this column existed are taken as finished.
UPDATE delivery_effect SET side_effects_done_at = updated_at
WHERE outcome IN ('assigned', 'unassigned');
CREATE INDEX delivery_effect_side_effects_pending_idx ON delivery_effect (updated_at)
    WHERE side_effects_done_at IS NULL AND outcome IN ('assigned', 'unassigned');
