"""What the gateway decides: which route, who calls, whether the call may pass. No I/O.

model.py       Upstream, Route, Access, Principal, rate-limit policies, origins, revocations
routes.py      the route table: every public endpoint the gateway forwards, and where to
apidoc.py      the public OpenAPI document, composed from the upstreams' documents
revocations.py RevocationMarks: this instance's copy of the revocation marks
errors.py      GatewayError and the errors under it
"""
