"""Streams of events and the rules for appending to them. Pure: no I/O here.

model.py       NewEvent, ExpectedVersion, and decide_append: the rules both backends call
store.py       EventStore: what the event store does, written against EventStorage
ports.py       EventStorage: the protocol both storage backends satisfy
errors.py      EventStoreError and the errors under it
"""
