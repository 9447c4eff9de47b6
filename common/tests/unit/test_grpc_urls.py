import pytest
from pydantic import BaseModel

from interchange_common.rpc import GrpcUrl, grpc_target


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("grpc://event-store:50054", "event-store:50054"),
        ("grpc://127.0.0.1:1", "127.0.0.1:1"),
        ("grpc://[::1]:50051", "[::1]:50051"),
        ("grpc://127.0.0.1:1, grpc://127.0.0.2:2", "ipv4:127.0.0.1:1,127.0.0.2:2"),
        ("grpc://[::1]:1,grpc://[::2]:2", "ipv6:[::1]:1,[::2]:2"),
    ],
)
def test_a_grpc_url_becomes_a_grpc_target(url, target):
    assert grpc_target(url) == target


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("grpc://users-1:1,grpc://users-2:1", "by IP address"),
        ("grpc://127.0.0.1:1,grpc://[::1]:1", "not both"),
        ("grpc://127.0.0.1:1,http://127.0.0.2:1", "grpc://host:port"),
    ],
)
def test_lists_must_be_addresses_of_one_family(url, why):
    with pytest.raises(ValueError, match=why):
        grpc_target(url)


@pytest.mark.parametrize(
    "url", ["event-store:50054", "http://event-store:50054", "grpc://event-store", "grpc://h:1/path", "grpc://:1"]
)
def test_anything_else_is_refused_when_settings_load(url):
    class Settings(BaseModel):
        target: GrpcUrl

    with pytest.raises(ValueError, match="grpc://host:port"):
        Settings(target=url)
