"""Streams of events and the rules for appending to them. Pure: no I/O here."""
