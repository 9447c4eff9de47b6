"""Notifications, recipients and the rules that turn events into them. Pure: nothing here performs I/O.

events.py             the events heard about (order.*, user.*), read from their message bodies
model.py              Recipient, KnownOrder, Notification, Mail, DeadLetter: what is kept
rules.py              what each event does to what is kept
usecases.py           Notifications (handle a message once, list) and DeadLetters
live_push.py          stream ids, what a live subscriber receives, why it ends
websocket_protocol.py the WebSocket messages both ways, and a socket's rooms
live_connections.py   OpenConnections: the live connections here, which a revocation ends
ports.py              Inbox, the stores, UserDirectory, Republisher, RevocationWatch, LiveFanout
errors.py             NotificationServiceError and the errors under it
"""
