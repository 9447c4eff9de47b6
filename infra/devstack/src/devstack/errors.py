"""What can stop the developer stack.

DevstackError
 ├── InfraMissing        a server the stack needs is absent and cannot be installed here
 ├── ComposeError        docker-compose.yml (or .env) cannot be turned into processes
 ├── StackFailed         a service exited or did not become healthy in time
 └── EngineFailed        the tests' private Docker engine, an image or a container failed
"""


class DevstackError(Exception):
    """Base of every error of the developer stack."""


class InfraMissing(DevstackError):
    """A required server is absent; the message says exactly what to install or start."""


class ComposeError(DevstackError):
    """The compose file cannot be run natively as written."""


class StackFailed(DevstackError):
    """A service exited early or did not become healthy before its deadline."""


class EngineFailed(DevstackError):
    """The private Docker engine did not start, or a build or container in it failed."""
