"""Notifications, recipients and the rules that turn events into them. Pure: nothing here performs I/O."""
