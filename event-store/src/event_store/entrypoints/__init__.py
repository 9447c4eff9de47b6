"""How the world reaches event-store: internal HTTP (with SSE), gRPC, the command line."""
