-- A node's payload exactly as arbor serialises it (issue 11): jsonb turned -0.0 into 0
-- and reordered keys; json keeps the text, as arbor_events.body does since 0002. Cast to
-- jsonb to use jsonb operators (`payload::jsonb @> …`); `->`, `->>` work on json as is.
-- Rows written before this migration keep jsonb's normal form (their text was gone
-- already): `arbor sync reset postgres --from 0 --adopt` rewrites them exactly.
ALTER TABLE arbor_nodes ALTER COLUMN payload TYPE json USING payload::json;
