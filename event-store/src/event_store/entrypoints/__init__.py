"""How the world reaches event-store.

http.py          HTTP on port 8004: appends, reads, SSE subscriptions, snapshots, health
grpc_server.py   gRPC eventstore.EventStore on port 50054
schemas.py       the HTTP shapes of events and appends
cli.py           ``event-store [serve|migrate]``
"""
