-- Match keys no identity holds any more (an email address or chat id a person had before a
-- later contact event replaced it): plain SHA-256 digests of guessable values, kept for nobody.
-- From now on they are forgotten when they are replaced (IdentityRecords.replace_keys).
DELETE FROM matcher.match_keys m
WHERE NOT EXISTS (SELECT 1 FROM matcher.identity_keys k WHERE k.digest = m.digest);
