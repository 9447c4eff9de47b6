"""The announcement of a revocation, as notification-service reads it off the channel
(the script that writes and publishes it runs against Redis in gateway's integration tests)."""

import uuid

import pytest

from interchange_common.revocations import MalformedRevocation, Revocation


def test_an_announcement_is_the_user_and_the_mark():
    user_id = uuid.uuid4()
    assert Revocation.parse(f"{user_id} 1700000000.250".encode()) == Revocation(user_id=user_id, at=1700000000.25)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"nobody 1.0",
        f"{uuid.uuid4()}".encode(),
        f"{uuid.uuid4()} soon".encode(),
        f"{uuid.uuid4()} 1 2".encode(),
        b"\xff 1",
    ],
)
def test_a_malformed_announcement_is_refused(data):
    with pytest.raises(MalformedRevocation):
        Revocation.parse(data)
