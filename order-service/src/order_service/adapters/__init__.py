"""order-service's adapters: the event store (gRPC)."""
