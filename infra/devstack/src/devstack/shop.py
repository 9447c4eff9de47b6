"""A whole native stack with a client for its gateway, its admin and its SMTP sink:
what fault tests (and anything else that must own its stack) drive.

    shop_on   starts an isolated stack (devstack.testing.isolated_stack) and yields a Shop
    Shop      places orders, reads mail and notifications of that stack
"""

import contextlib
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx

from devstack.accounts import Account, notifications_of, sign_in
from devstack.compose import read_env_file
from devstack.infra import Infra
from devstack.mailsink import MailSink, body_of
from devstack.stack import Stack
from devstack.testing import gateway_client, isolated_stack, run_id, wait_for

ITEMS = [{"sku": "CHAIR-9", "quantity": 2, "unit_price": "49.00"}]
NOTIFICATION_INSTANCES = ("notification-service", "notification-service-2")
ORDER_INSTANCES = ("order-service", "order-service-2")
USER_INSTANCES = ("user-service", "user-service-2")
EVENT_STORE_INSTANCES = ("event-store", "event-store-2")


@dataclass
class Shop:
    stack: Stack
    gateway: httpx.Client
    admin: Account
    rabbitmq_url: str

    @property
    def mail(self) -> MailSink:
        assert self.stack.mail is not None, "the stack sends no mail"
        return self.stack.mail

    @property
    def events_exchange(self) -> str:
        return self.stack.environment("event-store")["EVENTS_EXCHANGE"]

    def place(self, account: Account, *, key: str | None = None) -> httpx.Response:
        return self.gateway.post(
            "/api/orders",
            json={"items": ITEMS},
            headers={**account.headers, "Idempotency-Key": key or str(uuid.uuid4())},
        )

    def mails_about(self, address: str, order_id: str) -> list[EmailMessage]:
        return [message for message in self.mail.to(address) if order_id in body_of(message)]

    def wait_for_mail(self, address: str, order_id: str, *, timeout: float = 30) -> list[EmailMessage]:
        return wait_for(
            lambda: self.mails_about(address, order_id), timeout=timeout, what=f"a mail about order {order_id}"
        )

    def notifications(self, account: Account) -> list[dict[str, Any]]:
        return notifications_of(self.gateway, account)


@contextlib.contextmanager
def shop_on(
    *,
    root: Path,
    infra: Infra,
    log_dir: Path,
    purpose: str,
    env_overrides: Mapping[str, Mapping[str, str]] | None = None,
    leave_out: frozenset[str] = frozenset(),
) -> Iterator[Shop]:
    example = read_env_file(root / ".env.example")
    overrides = {
        "gateway": {"RATE_LIMIT_REQUESTS": "100000"},
        **{instance: {"RETRY_DELAYS": "0.5,1,2"} for instance in NOTIFICATION_INSTANCES},
    }
    for service, values in (env_overrides or {}).items():
        overrides[service] = {**overrides.get(service, {}), **values}
    with (
        isolated_stack(
            root=root,
            infra=infra,
            run=run_id(),
            purpose=purpose,
            log_dir=log_dir,
            env_overrides=overrides,
            leave_out=leave_out,
        ) as stack,
        gateway_client(stack.url("gateway", 8080), timeout=30) as gateway,
    ):
        admin = sign_in(gateway, email=example["ADMIN_EMAIL"], password=example["ADMIN_PASSWORD"])
        yield Shop(stack=stack, gateway=gateway, admin=admin, rabbitmq_url=infra.rabbitmq_url)
