"""Notifications, recipients and the rules that turn events into them. Pure: nothing here performs I/O.

events.py      the events heard about (order.*, user.*), read from their message bodies
model.py       Recipient, KnownOrder, Notification, Mail, DeadLetter: what is kept
rules.py       what each event does to what is kept
usecases.py    Notifications (handle a message once, list) and DeadLetters
live.py        live push, the pure part: stream ids, the WebSocket protocol, rooms
ports.py       Inbox, the stores, UserDirectory, Republisher, RevocationWatch
errors.py      NotificationServiceError and the errors under it
"""
