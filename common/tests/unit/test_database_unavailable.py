"""What a database that cannot serve the work becomes: DatabaseUnavailable, one warning
line, and a 503 problem with Retry-After in every app with the problem handlers; a
statement PostgreSQL refused stays what it was (a bug is a 500, not a 503)."""

import logging

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import exc
from sqlalchemy.ext.asyncio import create_async_engine

from interchange_common.asgi import ObservabilityMiddleware
from interchange_common.database import is_unavailable, translating_unavailable
from interchange_common.errors import DatabaseUnavailable
from interchange_common.problems import install_problem_handlers

SECRET_TEXT = "password=hunter2"


async def as_sqlalchemy_raises(error: Exception) -> BaseException:
    """What SQLAlchemy raises when asyncpg's connect raises ``error`` (no server involved)."""

    async def connect() -> None:
        raise error

    engine = create_async_engine("postgresql+asyncpg://nobody@db.invalid/none", async_creator=connect)
    try:
        async with engine.connect():
            pass
    except Exception as e:
        return e
    finally:
        await engine.dispose()
    raise AssertionError("connect did not fail")


def statement_error(kind: type[exc.DBAPIError], orig: Exception, *, invalidated: bool = False) -> exc.DBAPIError:
    return kind("SELECT 1", None, orig, connection_invalidated=invalidated)


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connect call failed"),
        TimeoutError(),
        exc.TimeoutError("QueuePool limit of size 1 overflow 0 reached"),
        asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already"),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        statement_error(exc.InterfaceError, Exception("connection is closed"), invalidated=True),
        statement_error(exc.DBAPIError, asyncpg.exceptions.AdminShutdownError("terminating connection")),
    ],
    ids=lambda error: type(error).__name__,
)
def test_an_error_of_a_database_that_cannot_serve_now_is_unavailable(error):
    assert is_unavailable(error)


@pytest.mark.parametrize(
    "error",
    [asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already"), ConnectionRefusedError(111, "")],
    ids=lambda error: type(error).__name__,
)
async def test_connect_failures_as_sqlalchemy_raises_them_are_unavailable(error):
    raised = await as_sqlalchemy_raises(error)
    assert is_unavailable(raised), repr(raised)


@pytest.mark.parametrize(
    "error",
    [
        statement_error(exc.ProgrammingError, asyncpg.exceptions.UndefinedTableError('relation "nope" does not exist')),
        statement_error(exc.IntegrityError, asyncpg.exceptions.UniqueViolationError("duplicate key")),
        statement_error(exc.DataError, asyncpg.exceptions.InvalidTextRepresentationError("bad uuid")),
        asyncpg.exceptions.InvalidPasswordError("password authentication failed"),  # a misconfiguration
        ValueError("not a database error"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_a_statement_the_database_refused_or_a_bug_is_not_unavailable(error):
    assert not is_unavailable(error)


async def test_unavailable_work_raises_database_unavailable_and_logs_one_line_without_the_text(caplog):
    cause = await as_sqlalchemy_raises(asyncpg.exceptions.TooManyConnectionsError(f"too many ({SECRET_TEXT})"))
    with (
        caplog.at_level(logging.WARNING, logger="interchange.database"),
        pytest.raises(DatabaseUnavailable) as raised,
        translating_unavailable(action="outer"),  # nested: still one translation, one line
        translating_unavailable(action="read the order"),
    ):
        raise cause
    assert str(raised.value) == "could not read the order"
    assert raised.value.__cause__ is cause
    [line] = caplog.records
    assert (line.levelname, line.getMessage()) == ("WARNING", "database unavailable")
    assert (line.action, line.error, line.sqlstate) == ("read the order", "DBAPIError", "53300")
    assert SECRET_TEXT not in str(line.__dict__)


async def test_other_errors_pass_through_unchanged(caplog):
    bug = statement_error(exc.ProgrammingError, asyncpg.exceptions.PostgresSyntaxError("syntax error"))
    with pytest.raises(exc.ProgrammingError) as raised, translating_unavailable(action="read the order"):
        raise bug
    assert raised.value is bug
    assert not caplog.records


async def test_every_app_with_the_problem_handlers_answers_503_with_retry_after_and_a_bug_500():
    app = FastAPI()
    install_problem_handlers(app)
    app.add_middleware(ObservabilityMiddleware, max_body_bytes=1024)

    @app.get("/unavailable")
    async def unavailable() -> None:
        with translating_unavailable(action="read"):
            raise exc.TimeoutError("QueuePool limit of size 1 overflow 0 reached")

    @app.get("/bug")
    async def bug() -> None:
        with translating_unavailable(action="read"):
            raise statement_error(exc.ProgrammingError, asyncpg.exceptions.UndefinedTableError("no table"))

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as client:
        unavailable_answer = await client.get("/unavailable")
        bug_answer = await client.get("/bug")
    assert unavailable_answer.status_code == 503
    assert unavailable_answer.headers["retry-after"] == "1"
    assert unavailable_answer.headers["content-type"] == "application/problem+json"
    assert unavailable_answer.json()["detail"] == "the database is unavailable"
    assert unavailable_answer.json()["request_id"] == unavailable_answer.headers["x-request-id"]
    assert bug_answer.status_code == 500
    assert "retry-after" not in bug_answer.headers
