#!/bin/sh
set -eu
if [ "${1:-}" = "rabbitmq-server" ]; then
    {
        echo "loopback_users = none"
        echo "default_user = ${RABBITMQ_DEFAULT_USER:-guest}"
        echo "default_pass = ${RABBITMQ_DEFAULT_PASS:-guest}"
    } > /etc/rabbitmq/rabbitmq.conf
    chown -R rabbitmq:rabbitmq /var/lib/rabbitmq /var/log/rabbitmq
    exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups env HOME=/var/lib/rabbitmq \
        /usr/lib/rabbitmq/bin/rabbitmq-server
fi
exec "$@"
