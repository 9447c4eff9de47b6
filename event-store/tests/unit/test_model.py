import uuid

import pytest

from event_store.domain.errors import InvalidAppend, WrongExpectedVersion
from event_store.domain.model import (
    MAX_BATCH,
    MAX_EVENT_BYTES,
    Existing,
    Expect,
    ExpectedVersion,
    NewEvent,
    check_events,
    check_stream_id,
    decide_append,
)


def events(n=2):
    return [NewEvent(uuid.uuid4(), "order.created", {"n": i}, {}) for i in range(n)]


@pytest.mark.parametrize(
    ("raw", "kind", "version"),
    [
        ("any", Expect.ANY, 0),
        ("no_stream", Expect.NO_STREAM, 0),
        ("stream_exists", Expect.STREAM_EXISTS, 0),
        (3, Expect.EXACT, 3),
        ("3", Expect.EXACT, 3),
        (0, Expect.NO_STREAM, 0),
    ],
)
def test_expected_versions_parse(raw, kind, version):
    parsed = ExpectedVersion.parse(raw)
    assert (parsed.kind, parsed.version) == (kind, version)


@pytest.mark.parametrize("raw", ["latest", "exact", "-1", -1, "", True, "1.5"])
def test_unknown_expected_versions_are_refused(raw):
    with pytest.raises(InvalidAppend):
        ExpectedVersion.parse(raw)


@pytest.mark.parametrize(
    ("expected", "current", "allowed"),
    [
        ("any", 0, True),
        ("any", 7, True),
        ("no_stream", 0, True),
        ("no_stream", 1, False),
        ("stream_exists", 0, False),
        ("stream_exists", 2, True),
        (2, 2, True),
        (2, 3, False),
    ],
)
def test_expectations(expected, current, allowed):
    assert ExpectedVersion.parse(expected).allows(current=current) is allowed


def test_a_new_batch_goes_after_the_current_version():
    decision = decide_append(stream_id="s", expected=ExpectedVersion.parse(2), current=2, events=events(3), existing=[])
    assert (decision.first_version, decision.last_version, decision.already_recorded) == (3, 5, False)


def test_a_mismatch_states_the_actual_version():
    with pytest.raises(WrongExpectedVersion) as error:
        decide_append(stream_id="s", expected=ExpectedVersion.parse(1), current=4, events=events(), existing=[])
    assert error.value.actual == 4
    assert "at version 4" in str(error.value)


def test_the_same_batch_at_the_same_place_is_a_replay():
    batch = events(2)
    existing = [Existing(batch[0].id, "s", 3), Existing(batch[1].id, "s", 4)]
    decision = decide_append(
        stream_id="s", expected=ExpectedVersion.parse(2), current=4, events=batch, existing=existing
    )
    assert (decision.first_version, decision.last_version, decision.already_recorded) == (3, 4, True)
    any_replay = decide_append(
        stream_id="s", expected=ExpectedVersion.parse("any"), current=9, events=batch, existing=existing
    )
    assert any_replay.already_recorded


@pytest.mark.parametrize("case", ["partial-overlap", "other-stream", "reordered", "replayed-at-another-expectation"])
def test_overlapping_but_different_batches_conflict(case):
    batch = events(2)
    existing, expected = {
        "partial-overlap": ([Existing(batch[0].id, "s", 3)], ExpectedVersion.parse(2)),
        "other-stream": ([Existing(batch[0].id, "t", 3), Existing(batch[1].id, "t", 4)], ExpectedVersion.parse(2)),
        "reordered": ([Existing(batch[0].id, "s", 4), Existing(batch[1].id, "s", 3)], ExpectedVersion.parse(2)),
        "replayed-at-another-expectation": (
            [Existing(batch[0].id, "s", 3), Existing(batch[1].id, "s", 4)],
            ExpectedVersion.parse(1),
        ),
    }[case]
    with pytest.raises(WrongExpectedVersion):
        decide_append(stream_id="s", expected=expected, current=4, events=batch, existing=existing)


@pytest.mark.parametrize("stream_id", ["", "x" * 201, "has space", "-leading", "slash/inside", "nul\x00"])
def test_bad_stream_ids_are_refused(stream_id):
    with pytest.raises(InvalidAppend):
        check_stream_id(stream_id)


@pytest.mark.parametrize(
    "batch",
    [
        [],
        [NewEvent(uuid.uuid4(), "Not A Type", {}, {})],
        [NewEvent(uuid.uuid4(), "order..created", {}, {})],
        [NewEvent(uuid.uuid4(), "order.created", {"big": "x" * MAX_EVENT_BYTES}, {})],
        [NewEvent(uuid.uuid4(), "order.created", [], {})],  # type: ignore[arg-type]  # what a bad client sends
        events(MAX_BATCH + 1),
    ],
    ids=["empty", "bad-type", "empty-word", "too-large", "data-not-object", "too-many"],
)
def test_bad_batches_are_refused(batch):
    with pytest.raises(InvalidAppend):
        check_events(batch)


@pytest.mark.parametrize(
    ("data", "refused"),
    [({"a": "x\x00y"}, True), ({"key\x00": 1}, True), ({"a": "\\u0000 as text"}, False), ({"a": "plain"}, False)],
    ids=["nul-in-value", "nul-in-key", "escaped-backslash-u0000-is-text", "plain"],
)
def test_nul_characters_postgres_cannot_store_are_refused(data, refused):
    batch = [NewEvent(uuid.uuid4(), "order.created", data, {})]
    if refused:
        with pytest.raises(InvalidAppend, match="NUL"):
            check_events(batch)
    else:
        assert check_events(batch) == batch


def test_versions_beyond_any_stream_are_refused():
    with pytest.raises(InvalidAppend):
        ExpectedVersion.parse(2**63)


def test_duplicate_ids_within_a_batch_are_refused():
    one = events(1)[0]
    with pytest.raises(InvalidAppend, match="unique"):
        check_events([one, one])


@pytest.mark.parametrize("value", ["stream\n", "a b", "²"])
def test_stream_ids_match_in_full(value):
    with pytest.raises(InvalidAppend):
        check_stream_id(value)


@pytest.mark.parametrize(
    "data",
    [{"big": 2**64}, {"nan": float("nan")}, {"inf": [float("inf")]}, {"lone": "\ud800"}],
    ids=["int-past-64-bits", "nan", "infinity", "lone-surrogate"],
)
def test_json_that_cannot_be_stored_exactly_is_refused(data):
    with pytest.raises(InvalidAppend):
        check_events([NewEvent(uuid.uuid4(), "order.created", data, {})])


@pytest.mark.parametrize("raw", ["²", "1" * 20])
def test_expected_versions_are_ascii_numbers_that_fit(raw):
    with pytest.raises(InvalidAppend):
        ExpectedVersion.parse(raw)


def test_types_match_in_full():
    with pytest.raises(InvalidAppend):
        check_events([NewEvent(uuid.uuid4(), "order.created\n", {}, {})])
