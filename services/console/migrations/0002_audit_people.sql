-- The people each audit row mentions, as `source/external_id` (a source holds no slash, an id
-- may: the first slash splits them), so that the console's erasure sweep
-- (services/console/erasure_sweep.py) can ask the matcher about each of them and replace every
-- mention of one it no longer knows (erased through the API, which the console does not hear
-- of). A column rather than a side table: a row names one or two people, is written once and
-- read whole; the sweep's two questions ("who is named anywhere", "which rows name this one")
-- are `unnest` and `@>` on the GIN index below, and forgetting someone rewrites target, detail
-- and this list of the same rows in one UPDATE, with no join to keep in step. A forgotten
-- person's entry becomes 'an erased person' (no slash: never taken for a person again), so a
-- row still says how many people it named.
ALTER TABLE console.audit ADD COLUMN people text[] NOT NULL DEFAULT '{}';
CREATE INDEX audit_by_person ON console.audit USING gin (people);

-- Rows recorded before: the people their own text names, where it can be read back without
-- guessing. The target of an action on a person is `person <source>/<id>`; a blocked pairing's
-- detail is `never with person <source>/<id>; console-block-<uuid>`; an undone merge's is
-- `merge <uuid> undone: person <source>/<id>, person ... apart again; console-unmerge-<uuid>`
-- (split before each ", person <source>": an id holding that very text would be cut wrong, and
-- the sweep would then ask about a person nobody is, and forget nothing of anyone else).
UPDATE console.audit
SET people = ARRAY[substr(target, length('person ') + 1)]
WHERE target ~ '^person [a-z0-9][a-z0-9_.-]*/.';

UPDATE console.audit
SET people = people || substring(
    detail FROM '^never with person ([a-z0-9][a-z0-9_.-]*/.+); console-block-[0-9a-f-]{36}$')
WHERE action = 'block pairing'
  AND detail ~ '^never with person [a-z0-9][a-z0-9_.-]*/.+; console-block-[0-9a-f-]{36}$';

UPDATE console.audit
SET people = people || ARRAY(
    SELECT substr(mention, length('person ') + 1)
    FROM unnest(regexp_split_to_array(
        substring(detail FROM '^merge [0-9a-f-]{36} undone: (person .+) apart again; '
                              'console-unmerge-[0-9a-f-]{36}$'),
        ', (?=person [a-z0-9][a-z0-9_.-]*/)')) AS mention
    WHERE mention ~ '^person [a-z0-9][a-z0-9_.-]*/.')
WHERE action = 'unmerge'
  AND detail ~ '^merge [0-9a-f-]{36} undone: person .+ apart again; console-unmerge-[0-9a-f-]{36}$';
