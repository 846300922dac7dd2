-- Which arbor store this replica belongs to (`Store::id()`): a second store pointed at
-- this schema refuses to write instead of taking over the first one's cursor. NULL: a
-- replica from before store identities, claimed by the first store that sets it up.
ALTER TABLE arbor_sync_cursor ADD COLUMN store_id UUID;
