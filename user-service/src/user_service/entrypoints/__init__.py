"""How the world reaches user-service: internal HTTP, gRPC, the command line."""
