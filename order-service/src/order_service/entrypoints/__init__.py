"""How the world reaches order-service.

http.py        HTTP on port 8002: /health, /metrics, and the internal orders API
schemas.py     the HTTP shapes of orders
cli.py         ``order-service [serve|migrate]``
"""
