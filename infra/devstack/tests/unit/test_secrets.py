"""Development secrets: the TLS certificate is made once, kept while it is good, and
made again when its key is gone or it is about to expire."""

import datetime
import ipaddress

from cryptography import x509

from devstack.secrets import (
    GRAFANA_PASSWORD_FILE,
    TLS_CERT_FILE,
    TLS_KEY_FILE,
    ensure_dev_secrets,
    write_dev_certificate,
)


def test_the_certificate_names_this_machine(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    write_dev_certificate(cert_path=cert, key_path=key)
    names = x509.load_pem_x509_certificate(cert.read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert names.value.get_values_for_type(x509.DNSName) == ["localhost"]
    assert set(names.value.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }


def test_a_good_certificate_is_kept_and_a_broken_pair_is_made_again(tmp_path):
    (tmp_path / ".env.example").write_text("ENVIRONMENT=development\n")
    ensure_dev_secrets(root=tmp_path)
    cert, key = (tmp_path / TLS_CERT_FILE).read_bytes(), (tmp_path / TLS_KEY_FILE).read_bytes()
    ensure_dev_secrets(root=tmp_path)
    assert ((tmp_path / TLS_CERT_FILE).read_bytes(), (tmp_path / TLS_KEY_FILE).read_bytes()) == (cert, key)
    (tmp_path / TLS_KEY_FILE).unlink()
    ensure_dev_secrets(root=tmp_path)
    assert (tmp_path / TLS_CERT_FILE).read_bytes() != cert


def test_a_certificate_about_to_expire_is_made_again(tmp_path):
    (tmp_path / ".env.example").write_text("ENVIRONMENT=development\n")
    ensure_dev_secrets(root=tmp_path)
    first = x509.load_pem_x509_certificate((tmp_path / TLS_CERT_FILE).read_bytes())
    assert first.not_valid_after_utc - datetime.datetime.now(datetime.UTC) > datetime.timedelta(days=300)
    # Pretend a year went by: the same file, read a day before its end.
    ensure_dev_secrets(root=tmp_path, now=first.not_valid_after_utc - datetime.timedelta(hours=12))
    assert x509.load_pem_x509_certificate((tmp_path / TLS_CERT_FILE).read_bytes()).serial_number != first.serial_number


def test_grafana_gets_a_random_password_of_its_own_kept_once_made(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    for root in (first, second):
        root.mkdir()
        (root / ".env.example").write_text("ENVIRONMENT=development\n")
        ensure_dev_secrets(root=root)
    password = (first / GRAFANA_PASSWORD_FILE).read_text()
    assert len(password) >= 24
    assert password != (second / GRAFANA_PASSWORD_FILE).read_text()
    ensure_dev_secrets(root=first)
    assert (first / GRAFANA_PASSWORD_FILE).read_text() == password
