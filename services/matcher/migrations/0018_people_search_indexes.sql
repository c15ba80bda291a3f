-- The console's people search (directory.Directory.search) with 100,000 people: a name is
-- matched as a substring (ILIKE '%...%'), which without an index scans every name, and an
-- email against every contact's channels (jsonb containment). A trigram index serves the
-- first, a jsonb_path_ops index the second; measured in docs/performance.md (the console's
-- pages): a name 154 -> 63 ms, an email 129 -> 17 ms, a topic 148 -> 30 ms.
-- pg_trgm ships with PostgreSQL (contrib) and is a trusted extension: the database's owner,
-- who runs the migrations, may create it.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX contacts_name_trigrams ON matcher.contacts USING gin (name gin_trgm_ops);
CREATE INDEX contacts_by_channel ON matcher.contacts USING gin (channels jsonb_path_ops);
