"""The committed gRPC stubs match the .proto, and its messages match Triton's on the wire."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor
from mserve_runtime.grpc_v2.generated import grpc_predict_v2_pb2 as pb

PROTO = Path(pb.__file__).resolve().parent.parent / "grpc_predict_v2.proto"


def _drop_json_names(messages: Iterable[descriptor_pb2.DescriptorProto]) -> None:
    for message in messages:
        for field in message.field:
            field.ClearField("json_name")
        _drop_json_names(message.nested_type)


def test_generated_stubs_are_up_to_date(tmp_path: Path) -> None:
    protoc = pytest.importorskip("grpc_tools.protoc")
    descriptor_set = tmp_path / "set.pb"

    exit_code = protoc.main(
        ["protoc", f"-I{PROTO.parent}", f"--descriptor_set_out={descriptor_set}", str(PROTO)]
    )

    assert exit_code == 0
    compiled = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes()).file[0]
    _drop_json_names(compiled.message_type)  # protoc leaves them out of the generated module
    committed = descriptor_pb2.FileDescriptorProto.FromString(pb.DESCRIPTOR.serialized_pb)
    assert committed == compiled, "run hack/gen-grpc.sh"


def _fields(descriptor: Descriptor) -> dict[str, object]:
    shape: dict[str, object] = {}
    for field in descriptor.fields:
        message_type = field.message_type.name if field.message_type else None
        shape[field.name] = (field.number, field.type, field.is_repeated, message_type)
    for nested in descriptor.nested_types:
        shape[nested.name] = _fields(nested)
    return shape


@pytest.mark.parametrize("message", sorted(pb.DESCRIPTOR.message_types_by_name))
def test_every_message_matches_tritons_on_the_wire(message: str) -> None:
    triton = pytest.importorskip("tritonclient.grpc.service_pb2")

    ours = _fields(pb.DESCRIPTOR.message_types_by_name[message])
    theirs = _fields(triton.DESCRIPTOR.message_types_by_name[message])

    assert ours == theirs


def test_the_service_is_tritons() -> None:
    triton = pytest.importorskip("tritonclient.grpc.service_pb2")
    ours = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    theirs = triton.DESCRIPTOR.services_by_name["GRPCInferenceService"]

    assert ours.full_name == theirs.full_name == "inference.GRPCInferenceService"
    for method in ours.methods:
        twin = theirs.methods_by_name[method.name]
        assert (method.input_type.full_name, method.output_type.full_name) == (
            twin.input_type.full_name,
            twin.output_type.full_name,
        )
