"""A client generated from protos/user.proto alone calls every UserService method.

The client runs in a process of its own that imports nothing of ours: only the
code protoc generates from the proto file, grpcio and the service token.
"""

import json
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import grpc
import pytest
from grpc_tools import protoc

from interchange_common.servicejwt import ServiceTokenIssuer

PROTOS = Path(__file__).resolve().parents[2] / "protos"

CLIENT = textwrap.dedent(
    """
    import json, sys
    import grpc
    import user_pb2 as pb2, user_pb2_grpc as pb2_grpc

    address, token, tag = sys.argv[1:4]
    metadata = [("authorization", f"Bearer {token}")]
    results = {}
    with grpc.insecure_channel(address) as channel:
        stub = pb2_grpc.UserServiceStub(channel)
        created = stub.CreateUser(
            pb2.CreateUserRequest(name=f"Proto {tag}", email=f"proto-{tag}@example.com", password="long enough"),
            metadata=metadata, timeout=5)
        results["created_status"] = pb2.UserStatus.Name(created.status)
        results["got_email"] = stub.GetUser(pb2.GetUserRequest(id=created.id), metadata=metadata, timeout=5).email
        results["updated_name"] = stub.UpdateUser(
            pb2.UpdateUserRequest(id=created.id, name=f"Proto {tag} 2"), metadata=metadata, timeout=5).name
        listed = stub.ListUsers(pb2.ListUsersRequest(page=1, limit=5, filter=tag), metadata=metadata, timeout=5)
        results["listed"] = [user.id for user in listed.users]
        results["streamed"] = [
            user.id for user in stub.StreamUsers(pb2.StreamUsersRequest(filter=tag), metadata=metadata, timeout=5)]
        results["deleted"] = stub.DeleteUser(pb2.DeleteUserRequest(id=created.id), metadata=metadata, timeout=5).success
        try:
            stub.GetUser(pb2.GetUserRequest(id=created.id), metadata=metadata, timeout=5)
        except grpc.RpcError as e:
            results["after_delete"] = e.code().name
        try:
            stub.CreateUser(pb2.CreateUserRequest(name="", email="broken"), metadata=metadata, timeout=5)
        except grpc.RpcError as e:
            results["invalid"] = e.code().name
        results["id"] = created.id
    print(json.dumps(results))
    """
)


@pytest.fixture(scope="module")
def client_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("client")
    include = Path(protoc.__file__).parent / "_proto"
    args = ["protoc", f"-I{PROTOS}", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}", "user.proto"]
    assert protoc.main(args) == 0
    (out / "client.py").write_text(CLIENT)
    return out


def test_every_method_through_a_client_generated_from_the_proto(target, client_dir):
    target.need("user_service_grpc", "service_jwt_secret")
    token = ServiceTokenIssuer(service="order-service", secret=target.service_jwt_secret, ttl_seconds=300).token_for(
        audience="user-service"
    )
    tag = uuid.uuid4().hex[:8]
    completed = subprocess.run(
        [sys.executable, "-s", "client.py", target.user_service_grpc, token, tag],
        cwd=client_dir,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    results = json.loads(completed.stdout)
    assert results["created_status"] == "ACTIVE"
    assert results["got_email"] == f"proto-{tag}@example.com"
    assert results["updated_name"] == f"Proto {tag} 2"
    assert results["listed"] == results["streamed"] == [results["id"]]
    assert results["deleted"] is True
    assert results["after_delete"] == "NOT_FOUND"
    assert results["invalid"] == "INVALID_ARGUMENT"


def test_reflection_lists_the_service(target):
    target.need("user_service_grpc")
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(target.user_service_grpc) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
        names = {service.name for reply in replies for service in reply.list_services_response.service}
    assert "user.UserService" in names
    assert "grpc.health.v1.Health" in names
