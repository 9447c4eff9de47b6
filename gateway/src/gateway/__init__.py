"""gateway: the only public HTTP entry of Interchange (port 8080).

domain/        the route table, who is calling, rate-limit policies; no I/O
adapters/      access-token verification (JWKS), Redis rate limiter, upstream HTTP
entrypoints/   the HTTP app (proxy, /health, /metrics) and the command line
bootstrap.py   builds the adapters and the app
config.py      Settings, read from the environment
"""
