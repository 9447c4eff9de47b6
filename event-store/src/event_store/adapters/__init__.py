"""The event store's adapters: storage, and the relay to RabbitMQ.

postgres.py    PostgresEventStorage, the Sequencer that gives events their global
               order, and the ChangeListener that wakes readers on every instance
memory.py      InMemoryEventStorage: for unit tests and the contract suite
relay.py       RabbitMQRelay: every recorded event to RabbitMQ (the events table is the outbox)
errors.py      EventStorageUnavailable: PostgreSQL did not answer or failed
migrations/    Alembic: the events, snapshots and checkpoints tables
"""
