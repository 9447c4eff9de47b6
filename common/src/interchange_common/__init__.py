"""Interchange's internal library, installed by every service: what each of them
needs, written once.

Running a service
    settings       ServiceSettings, CallerSettings: the base of each service's one Settings
    cli            ``<service> [serve|migrate]``: the one command line every service has
    logging        one JSON line per event, with the service and the request id
    lifecycle      registered at start-up; on SIGTERM draining, deregistered, then stopped
    httpserver     an ASGI app on uvicorn, inside the service's own event loop
    tasks          background work beside the servers: run_forever, every, cancel_and_wait
    signal         Signal: wakes every waiter when something new has happened (no polling)
    migrations     Alembic the same way in every service: run_env, upgrade under a lock
    database       create_engine: the SQLAlchemy engine, pinging only connections left idle;
                   a database that cannot serve the work as DatabaseUnavailable (a 503)
    errors         InterchangeCommonError and the exceptions under it

Serving HTTP and gRPC
    asgi           ObservabilityMiddleware: one ASGI layer per concern (request ids, limits,
                   deadlines, access log), stacked in order
    problems       RFC 9457 problem+json responses and FastAPI handlers
    httpauth       FastAPI dependencies: the calling service, and the actor it calls for
    health         what /health runs: dependency checks in parallel, each with a timeout
    healthprobe    ``interchange-healthcheck URL``: the probe compose runs in each container
    metrics        GET /metrics in Prometheus text format
    tracing        OpenTelemetry traces: OTEL_* configuration, the instrumentations,
                   the stored context that carries a trace across asynchronous hops
    rpc            gRPC server and channels with service-token auth and request ids

Who is calling
    requestctx     the request id of the work in progress (a context variable)
    deadlines      the caller's deadline, carried from one service to the next
    servicejwt     short-lived service tokens between services (issue, verify)
    accesstokens   users' access tokens, verified against user-service's JWKS
    actors         Actor: on whose behalf a service is called
    revocations    users whose tokens stop working before they expire (Redis)
    text           which characters typed text may hold where other people read it

Calling other services
    discovery      where a service's instances are: static, Consul, DNS SRV, every
                   address of a name (Swarm's tasks.<service>)
    balancing      client-side load balancing over healthy instances, outliers ejected
    resilience     circuit breakers, retry budgets, bounded jittered retries (tenacity)
    users          user-service's GetUser, asked the same way by every service

Events and messages
    events         RecordedEvent: an event as the event store hands it out
    messaging      RabbitMQ: topology, publishing with confirms, consuming with retries
    outbox         transactional outbox: enqueue in the caller's transaction, OutboxRelay
    projections    events in global order into a read model, each exactly once

contracts/         code generated from protos/ (never edited by hand)
"""
