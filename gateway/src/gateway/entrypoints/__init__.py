"""How the world reaches the gateway.

http.py        the HTTP app: the page, the proxy by the route table, /openapi.json,
               /health, /metrics
passthrough.py tickets, and SSE and WebSocket passed through to notification-service
forwarding.py  what the proxy and the pass-through share: the caller gate, client keys,
               answer headers, the answer to an upstream failure
server.py      Hypercorn in the gateway's own event loop: HTTP/1.1, h2c, and TLS on 8443
cli.py         ``gateway [serve]``
"""
