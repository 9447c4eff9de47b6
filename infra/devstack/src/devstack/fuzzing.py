"""Schemathesis against the gateway's OpenAPI document, signed in as a user.

``run_fuzzer`` runs the schemathesis CLI on a stack's gateway: every phase (examples,
coverage, fuzzing, stateful along the document's links), positive and negative
data, and the checks that hold for this API (``CHECKS``). The CLI loads
devstack.fuzz_hooks as its hooks (``SCHEMATHESIS_HOOKS``): a signed-in user.

What valid data may still be refused (positive_data_acceptance) is in fuzzing.toml.
GET /api/events is left out: an endless stream; tests/e2e/test_live.py covers it.
"""

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from devstack.fuzz_hooks import GATEWAY_URL_VARIABLE

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "positive_data_acceptance",
    "missing_required_header",
    "unsupported_method",
    "allow_header_conformance",
    "use_after_free",
    "ensure_resource_availability",
    "ignored_auth",
)
EXCLUDED_PATHS = ("/api/events",)
CONFIG_FILE = Path(__file__).with_name("fuzzing.toml")


@dataclass(frozen=True, slots=True)
class FuzzRun:
    returncode: int
    output: str


def run_fuzzer(*, gateway_url: str, max_examples: int, seed: int | None) -> FuzzRun:
    """The schemathesis CLI on ``gateway_url``; its exit code and everything it printed."""
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(CONFIG_FILE),
        "run",
        f"{gateway_url}/openapi.json",
        "--checks",
        ",".join(CHECKS),
        "--max-examples",
        str(max_examples),
        # One worker: Hypothesis' lambda introspection is not thread-safe on 3.11.
        "--workers",
        "1",
        "--no-color",
    ]
    for path in EXCLUDED_PATHS:
        command += ["--exclude-path", path]
    if seed is not None:
        command += ["--seed", str(seed)]  # reproduces a run that printed this seed
    environment = {**os.environ, "SCHEMATHESIS_HOOKS": "devstack.fuzz_hooks", GATEWAY_URL_VARIABLE: gateway_url}
    done = subprocess.run(command, env=environment, capture_output=True, text=True, check=False)
    return FuzzRun(returncode=done.returncode, output=done.stdout + done.stderr)
