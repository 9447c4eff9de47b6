"""How the world reaches notification-service: RabbitMQ messages, internal HTTP, the command line."""
