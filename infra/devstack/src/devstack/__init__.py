"""Interchange on a developer's machine, without Docker.

infra      finds PostgreSQL, Redis and RabbitMQ; installs them on Debian as root
compose    reads docker-compose.yml (+ .env) into native process specs
runner     starts those processes in dependency order, waits for health, stops them
secrets    development secrets made at set-up (.env, the JWT signing key)
cli        ``python -m devstack up|down|infra|secrets|swarm …``
swarm      deploy/swarm/stack.yml rendered from docker-compose.yml; its secret files
swarmed    that stack on a private single-node swarm, deployed and rolled (tests)
traffic    steady client traffic through a gateway, and checks that it lost nothing
"""
