"""gateway: the only public HTTP entry of Interchange (HTTP/1.1 and h2c on 8080, TLS on 8443).

domain/        the route table, who is calling, rate-limit policies, origins; no I/O
adapters/      access-token verification (JWKS), Redis rate limiter and tickets,
               service instances, upstream HTTP and WebSocket
entrypoints/   the HTTP app (proxy, tickets, SSE and WebSocket pass-through, the
               page, /health, /metrics), the Hypercorn server and the command line
bootstrap.py   builds the adapters and the app
config.py      Settings, read from the environment
"""
