"""gateway: the only public HTTP entry of Interchange (HTTP/1.1 and h2c on 8080, TLS on 8443).

domain/        the route table, who is calling, rate-limit policies, origins, the
               composed API document; no I/O
adapters/      access-token verification (JWKS), Redis rate limiter, tickets and
               revocations, upstream HTTP and WebSocket, the upstreams' API documents
entrypoints/   the HTTP app (proxy, tickets, SSE and WebSocket pass-through, the
               page, /health, /metrics), the Hypercorn server and the command line
bootstrap.py   builds the adapters and the app
config.py      Settings, read from the environment
__main__.py    ``python -m gateway``: the command line
"""
