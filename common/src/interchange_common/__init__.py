"""Interchange's internal library, installed by every service.

settings      ServiceSettings: the base of each service's one Settings object
logging       one JSON line per event, request id attached
requestctx    the request id of the work in progress (a context variable)
asgi          ObservabilityMiddleware: request ids, access log, metrics
problems      RFC 9457 problem+json responses and FastAPI handlers
servicejwt    short-lived service tokens between services (issue, verify)
health        dependency checks run in parallel, each with a timeout
rpc           gRPC server and channel helpers with service-token auth
contracts     code generated from protos/ (never edited by hand)
"""
