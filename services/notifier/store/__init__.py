"""Every SQL statement the notifier runs, one module per aggregate, behind a unit of work that
opens the transaction and exposes them (`uow.intros`, `uow.deliveries`, ...):

- `rows.py`: the row types (plain data, no I/O);
- `intros.py`: introductions and their seats (the answers);
- `deliveries.py`: delivery rows, their in-flight records, results, attempts and parking;
- `people.py`: opt-outs, erasure tombstones and the erasure itself (the "opted out" rule once);
- `resources.py`: resource proposals;
- `outbox.py`: the notifier's rows in the shared outbox (shared/outbox.py);
- `uow.py`: `NotifierStore` (the pool) and `NotifierUnitOfWork` (one transaction).

Lock order, everywhere: the introduction row first, then its delivery rows. The answer handler
and the delivery worker both follow it, so they wait for each other instead of deadlocking.
"""
