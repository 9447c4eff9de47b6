import pytest

from interchange_common.requestctx import accept_request_id, outgoing_request_id, request_id_var


@pytest.mark.parametrize("offered", ["abc-123", "a" * 128, "0f.1:2_3"])
def test_plain_ids_from_callers_are_kept(offered):
    assert accept_request_id(offered=offered) == offered


@pytest.mark.parametrize("offered", [None, "", "-", "a" * 129, "has space", "line\nbreak", "<script>"])
def test_other_ids_are_replaced(offered):
    accepted = accept_request_id(offered=offered)
    assert accepted != offered
    assert len(accepted) == 32


def test_work_outside_a_request_forwards_a_fresh_id():
    token = request_id_var.set("-")
    try:
        assert outgoing_request_id() != "-"
    finally:
        request_id_var.reset(token)
    token = request_id_var.set("req-1")
    try:
        assert outgoing_request_id() == "req-1"
    finally:
        request_id_var.reset(token)
