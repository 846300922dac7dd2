-- Metadata exactly as arbor serialises it (issue 11, as 0004 did for payloads): jsonb
-- reordered keys and turned -0.0 into 0; json keeps the text. Cast to jsonb for jsonb
-- operators (`metadata::jsonb @> …`); `->` and `->>` work on json as is. Rows written
-- before this migration keep jsonb's normal form until `arbor sync reset postgres
-- --from 0 --adopt` rewrites them.
ALTER TABLE arbor_nodes ALTER COLUMN metadata TYPE json USING metadata::json;
ALTER TABLE arbor_workflows ALTER COLUMN metadata TYPE json USING metadata::json;
ALTER TABLE draft_content ALTER COLUMN metadata TYPE json USING metadata::json;
