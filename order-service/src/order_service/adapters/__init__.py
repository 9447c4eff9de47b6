"""order-service's adapters: the domain's ports on real infrastructure.

event_store.py   EventStoreOrders: orders as streams in event-store (gRPC), with snapshots
users.py         the users' status, asked of user-service (gRPC)
read_model.py    the orders table, the projection that keeps it, OrderQueries
idempotency.py   SqlIdempotencyKeys: (user, key) → the order it placed, until it expires
migrations/      Alembic: the read model, idempotency keys, the projection checkpoint
"""
