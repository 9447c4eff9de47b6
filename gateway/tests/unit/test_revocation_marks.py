"""This instance's copy of the revocation marks, and user-service's list it is loaded from."""

import uuid

import orjson
import pytest

from gateway.adapters.revocations import parse_revocation_list
from gateway.domain.errors import RevocationsUnavailable
from gateway.domain.revocations import RevocationMarks
from interchange_common.revocations import Revocation


def test_the_later_mark_wins_whatever_the_order():
    marks = RevocationMarks(ttl_seconds=600)
    user_id = uuid.uuid4()
    marks.note(user_id=user_id, at=2000.0)
    marks.note(user_id=user_id, at=1000.0)
    assert marks.revoked_since(user_id=user_id) == 2000.0
    assert marks.is_revoked(user_id=user_id, issued_at=2000.0)  # at the mark: refused
    assert not marks.is_revoked(user_id=user_id, issued_at=2001.0)
    assert not marks.is_revoked(user_id=uuid.uuid4(), issued_at=0.0)


def test_a_list_is_merged_and_only_a_whole_one_loads_the_copy():
    marks = RevocationMarks(ttl_seconds=600)
    heard, listed = uuid.uuid4(), uuid.uuid4()
    marks.note(user_id=heard, at=3000.0)  # an event's, newer than the list on its way
    marks.take_in(marks=[Revocation(user_id=heard, at=2000.0)], whole=False)
    loaded = [marks.loaded]
    marks.take_in(marks=[Revocation(user_id=heard, at=2500.0), Revocation(user_id=listed, at=2000.0)], whole=True)
    assert [*loaded, marks.loaded] == [False, True]
    assert (marks.revoked_since(user_id=heard), marks.revoked_since(user_id=listed)) == (3000.0, 2000.0)


def test_marks_every_token_has_outlived_are_pruned():
    marks = RevocationMarks(ttl_seconds=600)
    old, recent = uuid.uuid4(), uuid.uuid4()
    marks.note(user_id=old, at=1000.0)
    marks.note(user_id=recent, at=1500.0)
    marks.prune(now=1000.0 + 600 + 1)
    assert (marks.revoked_since(user_id=old), marks.revoked_since(user_id=recent), len(marks)) == (None, 1500.0, 1)


def test_user_services_list_is_read_with_its_times():
    user_id = uuid.uuid4()
    body = orjson.dumps(
        {
            "items": [{"user_id": str(user_id), "revoked_at": "2026-11-27T10:00:00.250000Z"}],
            "as_of": "2026-11-27T10:00:01+00:00",
        }
    )
    listed = parse_revocation_list(body)
    assert listed.marks == [Revocation(user_id=user_id, at=1795773600.25)]
    assert listed.as_of.timestamp() == 1795773601.0


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"items": {}, "as_of": "2026-11-27T10:00:00Z"}',
        b'{"items": [], "as_of": "2026-11-27T10:00:00"}',
        b'{"items": [{"user_id": "nobody", "revoked_at": "2026-11-27T10:00:00Z"}], "as_of": "2026-11-27T10:00:00Z"}',
        b'{"items": [{"user_id": "'
        + str(uuid.uuid4()).encode()
        + b'", "revoked_at": 5}], "as_of": "2026-11-27T10:00:00Z"}',
        b'{"items": []}',
    ],
)
def test_a_malformed_list_is_unavailable_not_a_crash(body):
    with pytest.raises(RevocationsUnavailable):
        parse_revocation_list(body)
