"""notification-service's adapters: PostgreSQL, RabbitMQ, SMTP."""
