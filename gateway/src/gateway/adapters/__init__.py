"""The gateway's adapters: the clients and stores behind its decisions.

upstream.py      UpstreamClient: calls to the services behind it (aiohttp, which stays
                 here): answers, streams and WebSockets, through the balancer and the breakers
apidocs.py       ApiDocuments: the upstreams' OpenAPI documents, composed and kept a while
tokens.py        JwksTokenVerifier: access tokens checked against user-service's JWKS
ratelimiter.py   RedisRateLimiter (shared by every instance), LocalRateLimiter, RedisCallerCheck:
                 a token's revocation mark and its rate limit in one round trip
admission.py     ConcurrencyLimit: requests in flight to one upstream, the rest shed (503)
tickets.py       RedisTicketStore: single-use tickets for browsers' live connections
revocations.py   user events → revocation marks in Redis and this instance's copy;
                 RevocationKeeper: Redis's marks restored from user-service's list
"""
