"""notification-service: order and user events become mail and stored notifications."""
