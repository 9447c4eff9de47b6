#!/bin/sh
set -eu
if [ "${1:-}" = "rabbitmq-server" ]; then
    {
        echo "loopback_users = none"
        # As the upstream image: RABBITMQ_DEFAULT_USER/PASS, unless a file of conf.d
        # (a Swarm secret) names the user; RabbitMQ reads conf.d after this file.
        if ! grep -qs "^default_user" /etc/rabbitmq/conf.d/*.conf; then
            echo "default_user = ${RABBITMQ_DEFAULT_USER:-guest}"
            echo "default_pass = ${RABBITMQ_DEFAULT_PASS:-guest}"
        fi
    } > /etc/rabbitmq/rabbitmq.conf
    chown -R rabbitmq:rabbitmq /var/lib/rabbitmq /var/log/rabbitmq
    exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups env HOME=/var/lib/rabbitmq \
        /usr/lib/rabbitmq/bin/rabbitmq-server
fi
exec "$@"
