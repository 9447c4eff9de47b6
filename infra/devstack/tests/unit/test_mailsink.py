"""The local SMTP sink is a real SMTP server on loopback that keeps mail in a Maildir."""

import smtplib

from devstack.mailsink import MailSink
from devstack.testing import free_port


def test_it_keeps_every_message_in_arrival_order(tmp_path):
    sink = MailSink(maildir=tmp_path / "mail", port=free_port())
    sink.start()
    try:
        with smtplib.SMTP(sink.host, sink.port, timeout=5) as client:
            for n in range(12):
                client.sendmail("shop@example.com", ["ada@example.com"], f"Subject: order {n}\r\n\r\nthanks\r\n")
        received = sink.messages()
    finally:
        sink.stop()
    assert [message["Subject"] for message in received] == [f"order {n}" for n in range(12)]
    assert received[0].get_content().strip() == "thanks"
    assert sink.url == f"smtp://127.0.0.1:{sink.port}"


def test_stopping_a_sink_that_never_started_leaves_its_port_free(tmp_path):
    port = free_port()
    MailSink(maildir=tmp_path / "unused", port=port).stop()
    sink = MailSink(maildir=tmp_path / "mail", port=port)
    sink.start()  # would fail if the first one had bound the port
    try:
        with smtplib.SMTP(sink.host, sink.port, timeout=5) as client:
            assert client.noop()[0] == 250
    finally:
        sink.stop()
