"""The order aggregate. Pure: nothing here performs I/O.

order.py       the decider: commands, events, state, ``decide`` and ``evolve``
handler.py     ``handle``: load, decide, save at the expected version, retry on conflict
usecases.py    Orders: what order-service does, written against the ports
ports.py       OrderStore, the users' status, OrderReadModel, IdempotencyKeys
errors.py      OrderError and the errors under it
"""
