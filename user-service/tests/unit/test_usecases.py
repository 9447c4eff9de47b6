import uuid

import pytest

from interchange_common.actors import Actor
from user_service.domain.errors import EmailTaken, InvalidCredentials, InvalidUserData, PermissionDenied, UserNotFound
from user_service.domain.model import NewUser, UserChanges, UserStatus


def new_user(email="ada@example.com", password="correct horse"):
    return NewUser(name="Ada", email=email, password=password)


async def test_register_stores_a_normalised_active_user_with_a_hashed_password(users, repository):
    user = await users.register(new_user=new_user(email=" Ada@Example.com "))
    stored = repository.users[user.id]
    assert stored.email == "ada@example.com"
    assert stored.status is UserStatus.ACTIVE
    assert stored.roles == ("user",)
    assert stored.password_hash == "hashed:correct horse"


async def test_a_second_registration_with_the_same_email_is_refused(users, repository):
    await users.register(new_user=new_user())
    with pytest.raises(EmailTaken):
        await users.register(new_user=new_user(email="ADA@example.com"))
    assert len(repository.users) == 1


@pytest.mark.parametrize("password", ["short", "x" * 129])
async def test_weak_or_huge_passwords_are_refused_and_nothing_is_stored(users, repository, password):
    with pytest.raises(InvalidUserData):
        await users.register(new_user=new_user(password=password))
    assert repository.users == {}


async def test_a_token_is_issued_for_the_right_password_only(users):
    user = await users.register(new_user=new_user())
    issued = await users.issue_token(email="ADA@example.com", password="correct horse")
    assert issued.access_token == f"token-for-{user.id}"
    with pytest.raises(InvalidCredentials):
        await users.issue_token(email="ada@example.com", password="wrong horse")
    with pytest.raises(InvalidCredentials):
        await users.issue_token(email="nobody@example.com", password="correct horse")


async def test_suspended_users_get_no_token(users):
    user = await users.register(new_user=new_user())
    await users.update(actor=Actor.trusted_service(), user_id=user.id, changes=UserChanges(status=UserStatus.SUSPENDED))
    with pytest.raises(InvalidCredentials, match="not active"):
        await users.issue_token(email="ada@example.com", password="correct horse")


async def test_listing_is_for_admins(users):
    await users.register(new_user=new_user())
    with pytest.raises(PermissionDenied):
        await users.list(actor=Actor(user_id=uuid.uuid4(), roles=frozenset({"user"})), page=1, limit=10, contains="")
    found, total, page = await users.list(
        actor=Actor(user_id=uuid.uuid4(), roles=frozenset({"admin"})), page=1, limit=10, contains="ada"
    )
    assert (len(found), total, page.limit) == (1, 1, 10)


async def test_a_user_deletes_themselves_but_not_others(users, repository):
    me = await users.register(new_user=new_user())
    other = await users.register(new_user=new_user(email="grace@example.com"))
    actor = Actor(user_id=me.id, roles=frozenset({"user"}))
    with pytest.raises(UserNotFound):
        await users.delete(actor=actor, user_id=other.id)
    await users.delete(actor=actor, user_id=me.id)
    assert set(repository.users) == {other.id}


async def test_changing_to_a_taken_email_is_refused(users, repository):
    me = await users.register(new_user=new_user())
    await users.register(new_user=new_user(email="grace@example.com"))
    with pytest.raises(EmailTaken):
        await users.update(actor=Actor.trusted_service(), user_id=me.id, changes=UserChanges(email="grace@example.com"))
    assert repository.users[me.id].email == "ada@example.com"


async def test_the_admin_account_is_created_once(users, repository):
    first = await users.ensure_admin_account(email="admin@example.com", password="admin password")
    second = await users.ensure_admin_account(email="admin@example.com", password="admin password")
    assert first.id == second.id
    assert first.is_admin
    assert len(repository.users) == 1
