import uuid
from datetime import UTC, datetime

import pytest

from interchange_common.actors import Actor
from user_service.domain.errors import InvalidUserData, PermissionDenied, UserNotFound
from user_service.domain.model import (
    MAX_PAGE_SIZE,
    UserChanges,
    UserStatus,
    apply_changes,
    check_password,
    ensure_can_view,
    make_page,
    normalize_email,
    normalize_name,
    normalize_roles,
    parse_user_id,
)

NOW = datetime(2026, 2, 1, tzinfo=UTC)


def test_emails_are_trimmed_and_lower_cased():
    assert normalize_email("  Ada@Example.COM ") == "ada@example.com"


@pytest.mark.parametrize("email", ["", "ada", "ada@", "@example.com", "a b@example.com", "a@" + "x" * 260 + ".com"])
def test_invalid_emails_are_refused(email):
    with pytest.raises(InvalidUserData):
        normalize_email(email)


def test_unknown_roles_are_refused():
    with pytest.raises(InvalidUserData, match="root"):
        normalize_roles(("user", "root"))


def test_a_malformed_id_names_no_user():
    with pytest.raises(UserNotFound):
        parse_user_id("not-a-uuid")


def test_limits_over_the_cap_are_lowered_and_bad_pages_refused():
    assert make_page(page=2, limit=10_000).limit == MAX_PAGE_SIZE
    assert make_page(page=3, limit=10).offset == 20
    with pytest.raises(InvalidUserData):
        make_page(page=0, limit=10)
    with pytest.raises(InvalidUserData):
        make_page(page=1, limit=0)


def test_users_see_themselves_admins_and_services_see_everyone():
    me = uuid.uuid4()
    other = uuid.uuid4()
    ensure_can_view(actor=Actor(user_id=me, roles=frozenset({"user"})), user_id=me)
    ensure_can_view(actor=Actor(user_id=me, roles=frozenset({"admin"})), user_id=other)
    ensure_can_view(actor=Actor.trusted_service(), user_id=other)
    with pytest.raises(UserNotFound):
        ensure_can_view(actor=Actor(user_id=me, roles=frozenset({"user"})), user_id=other)


def test_a_user_changes_their_name_and_the_update_time_moves(make_user):
    user = make_user()
    actor = Actor(user_id=user.id, roles=frozenset({"user"}))
    changed = apply_changes(user=user, changes=UserChanges(name="  Grace "), actor=actor, now=NOW)
    assert changed.name == "Grace"
    assert changed.updated_at == NOW


def test_no_change_keeps_the_update_time(make_user):
    user = make_user()
    actor = Actor(user_id=user.id, roles=frozenset({"user"}))
    assert apply_changes(user=user, changes=UserChanges(name=user.name), actor=actor, now=NOW) is user


@pytest.mark.parametrize(
    "changes", [UserChanges(roles=("admin", "user")), UserChanges(status=UserStatus.SUSPENDED)], ids=["roles", "status"]
)
def test_only_admins_change_roles_and_status(make_user, changes):
    user = make_user()
    with pytest.raises(PermissionDenied):
        apply_changes(user=user, changes=changes, actor=Actor(user_id=user.id, roles=frozenset({"user"})), now=NOW)
    admin = Actor(user_id=uuid.uuid4(), roles=frozenset({"admin"}))
    changed = apply_changes(user=user, changes=changes, actor=admin, now=NOW)
    assert changed != user


def test_another_users_record_is_not_found_for_a_plain_user(make_user):
    user = make_user()
    stranger = Actor(user_id=uuid.uuid4(), roles=frozenset({"user"}))
    with pytest.raises(UserNotFound):
        apply_changes(user=user, changes=UserChanges(name="x"), actor=stranger, now=NOW)


@pytest.mark.parametrize(
    "name",
    [
        "Mallory\nBcc: x@example.com",
        "Carriage\rreturn",
        "Tab\there",
        "Bell\x07",
        "Delete\x7f",
        "Line\u2028break",
        "Paragraph\u2029break",
        "Ada \u202eecalevoL",  # RIGHT-TO-LEFT OVERRIDE: displays as "Ada Lovelace"
        "Ada \u2066isolated\u2069",
        "Non\ufffecharacter",
    ],
)
def test_names_with_line_breaks_control_characters_or_bidi_overrides_are_refused(name):
    with pytest.raises(InvalidUserData, match="line breaks, control characters or bidirectional overrides"):
        normalize_name(name)


def test_a_name_with_a_nul_character_is_refused():
    with pytest.raises(InvalidUserData, match="NUL"):
        normalize_name("Ada\x00Lovelace")


@pytest.mark.parametrize(
    "name",
    [
        "Ada\u200d👩\u200d💻 Lovelace",  # ZERO WIDTH JOINERs make one emoji
        "مهرداد\u200cزاده",  # noqa: RUF001  # Persian: the ZERO WIDTH NON-JOINER keeps two words apart
        "José María Núñez",
        "山田\u3000太郎",
        "김민준",
        "Ada ❤\ufe0f",
    ],
)
def test_names_keep_joiners_accents_and_every_script(name):
    assert normalize_name(name) == name


@pytest.mark.parametrize("name", ["\u200d", "\u200c \u200d"])
def test_a_name_of_format_characters_alone_is_refused(name):
    with pytest.raises(InvalidUserData, match="visible"):
        normalize_name(name)


def test_a_name_keeps_its_inner_spaces_and_accents():
    assert normalize_name("  Ada  Lovelace-Byron é ") == "Ada  Lovelace-Byron é"


@pytest.mark.parametrize(
    ("password", "why"),
    [
        ("password123", "too easy to guess"),
        ("qwertyuiop", "too easy to guess"),
        ("aaaaaaaaaa", "too easy to guess"),
        ("ada.lovelace@example.com", "too easy to guess"),  # the user's own email
        ("short", "8 to"),
    ],
)
def test_weak_passwords_are_refused_with_a_reason(password, why):
    with pytest.raises(InvalidUserData, match=why):
        check_password(password, email="ada.lovelace@example.com", name="Ada Lovelace")


@pytest.mark.parametrize("password", ["correct horse battery", "long enough", "pw-" + "0123456789abcdef"])
def test_passwords_hard_enough_to_guess_are_taken(password):
    check_password(password, email="ada.lovelace@example.com", name="Ada Lovelace")


def test_a_password_longer_than_zxcvbn_takes_is_judged_by_its_start():
    check_password("pw-" + "0123456789abcdef" * 7 + "x" * 13, email="ada@example.com")  # 128 characters
    with pytest.raises(InvalidUserData, match="too easy to guess"):
        check_password("a" * 72 + "Zq8#vL2!mW", email="ada@example.com")
