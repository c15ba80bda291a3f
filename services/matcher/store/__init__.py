"""The matcher's store: every SQL statement it runs, cut by aggregate, behind one unit of work.

- `uow.py`: `MatcherStore` opens a transaction and yields a `MatcherUnitOfWork`, which exposes
  the records of each aggregate on it (`uow.contacts`, `uow.topics`, `uow.proposals`,
  `uow.rounds`, `uow.resources`, `uow.identities`, `uow.erasure`) and the inbox and outbox;
- `rows.py`: every row type, plain dataclasses;
- one module per aggregate with its SQL: `contacts.py` (with the SQL fragments of the
  availability rules), `topics.py`, `proposals.py`, `rounds.py`, `resources.py`,
  `identities.py`, `erasure.py`.
"""

from services.matcher.store.uow import MatcherStore, MatcherUnitOfWork

__all__ = ["MatcherStore", "MatcherUnitOfWork"]
