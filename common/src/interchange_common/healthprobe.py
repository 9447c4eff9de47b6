"""``interchange-healthcheck URL``: exit 0 when URL answers 2xx within 3 s, else 1.

The command compose runs inside each container (the images have no curl); the
native runner reads the same URL from the compose file and polls it itself. A probe
of /health from outside the service; the checks /health runs inside it are
interchange_common.health.
"""

import sys
import urllib.error
import urllib.request


def main() -> None:
    if len(sys.argv) != 2 or not sys.argv[1].startswith(("http://", "https://")):
        sys.exit("usage: interchange-healthcheck http://HOST:PORT/PATH")
    try:
        with urllib.request.urlopen(sys.argv[1], timeout=3) as response:  # noqa: S310  # scheme checked above
            sys.exit(0 if 200 <= int(response.status) < 300 else 1)
    except (urllib.error.URLError, OSError):
        sys.exit(1)
