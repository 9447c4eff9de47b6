"""``gateway [serve]``: the command docker-compose.yml and the native runner run.

``gateway devcert --dir DIR``: make the development TLS certificate and key
(DIR/tls-cert.pem, DIR/tls-key.pem, the names docker-compose.yml reads) unless a good pair is there already.
"""

import argparse
import logging
import sys
from pathlib import Path

from gateway.adapters.devcert import ensure_dev_certificate
from gateway.bootstrap import serve
from gateway.config import SERVICE_NAME, Settings
from interchange_common.cli import run_service
from interchange_common.logging import configure_logging


def devcert(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog=f"{SERVICE_NAME} devcert", description="Make the development certificate.")
    parser.add_argument("--dir", type=Path, required=True, help="where tls-cert.pem and tls-key.pem go")
    args = parser.parse_args(argv)
    configure_logging(service=SERVICE_NAME, level="INFO")
    made = ensure_dev_certificate(directory=args.dir)
    logging.getLogger(__name__).info(
        "development certificate made" if made.created else "development certificate kept",
        extra={"cert_file": str(made.cert_file), "key_file": str(made.key_file)},
    )


def main(argv: list[str] | None = None) -> None:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["devcert"]:
        devcert(argv[1:])
        return
    run_service(name=SERVICE_NAME, load_settings=Settings, serve=lambda settings: serve(settings=settings), argv=argv)
