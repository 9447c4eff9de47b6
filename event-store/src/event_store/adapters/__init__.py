"""The event store's adapters: PostgreSQL storage and sequencer, in-memory storage, RabbitMQ relay."""
