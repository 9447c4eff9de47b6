"""Schemathesis against the gateway's OpenAPI document (devstack.fuzzing).

A bounded, reproducible run (a fixed seed) is part of `make test`; `make fuzz` runs
longer with a new seed each time (FUZZ_MAX_EXAMPLES, FUZZ_SEED). Every failure it
finds is printed with a curl command that reproduces it.
"""

import os
import re

from devstack.fuzzing import run_fuzzer
from gateway.domain.model import Access
from gateway.domain.routes import ROUTES

MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "30"))
SEED = None if os.environ.get("FUZZ_SEED") == "random" else int(os.environ.get("FUZZ_SEED", "20261128"))


def test_the_document_describes_every_route_with_its_schemas(gateway):
    document = gateway.get("/openapi.json").raise_for_status().json()
    for route in ROUTES:
        operation = document["paths"][route.path][route.method.lower()]
        answers = operation["responses"]
        success = next(answer for status, answer in answers.items() if status.startswith("2"))
        if "content" in success:  # a 204 has none
            assert any(media["schema"] for media in success["content"].values()), route
        assert "application/problem+json" in answers["default"]["content"], route
        assert ("security" in operation) == (route.access is not Access.PUBLIC), route
    created = document["paths"]["/api/orders"]["post"]["responses"]["201"]["links"]
    assert created["get_api_orders_order_id"]["parameters"] == {"order_id": "$response.body#/id"}


def test_the_api_survives_the_fuzzer(target):
    run = run_fuzzer(gateway_url=target.gateway_url, max_examples=MAX_EXAMPLES, seed=SEED)
    assert run.returncode == 0, run.output
    # It really ran: every phase passed, cases were sent (not all skipped), and the
    # stateful phase followed the document's links.
    for phase in ("Coverage", "Fuzzing", "Stateful"):
        assert re.search(rf"✅\s+{phase}", run.output), run.output
    cases = re.search(r"(\d+) generated, (\d+) passed", run.output)
    assert cases is not None, run.output
    assert int(cases[2]) >= 10 * len(ROUTES), run.output
    links = re.search(r"API Links:\s+(\d+) covered", run.output)
    assert links is not None, run.output
    assert int(links[1]) > 0, run.output
