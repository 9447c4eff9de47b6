"""How the world reaches notification-service.

consumer.py       the events consumer's handler: one RabbitMQ delivery → Notifications.handle
http.py           HTTP on port 8003: /health, /metrics, notifications and dead letters
sse_websocket.py  SSE and WebSocket on the HTTP port, for the gateway to pass through
tcp_feed.py       the TCP feed on port 9000: newline-delimited JSON
udp_feed.py       the UDP feed on port 9001: one JSON object per datagram
signin.py         how the raw feeds sign users in: an access token in, a user out
schemas.py        the HTTP shapes of notifications and dead letters
cli.py            ``notification-service [serve|migrate]``
"""
