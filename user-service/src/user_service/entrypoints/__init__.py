"""How the world reaches user-service.

http.py          HTTP on port 8001: /health, /metrics, the JWKS, and the internal API
grpc_server.py   gRPC user.UserService on port 50051, for other services
schemas.py       the HTTP shapes of users
cli.py           ``user-service [serve|migrate]``
"""
