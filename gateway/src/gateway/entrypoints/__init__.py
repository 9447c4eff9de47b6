"""How the world reaches the gateway.

http.py        the HTTP app: the page, the proxy by the route table, /openapi.json,
               /health, /metrics
live.py        tickets, and SSE and WebSocket passed through to notification-service
server.py      Hypercorn in the gateway's own event loop: HTTP/1.1, h2c, and TLS on 8443
cli.py         ``gateway [serve]``
"""
