"""Step 10: two tenants, each in its own namespace with its own store keys (hack/store-tenant.py).

The store (MinIO) enforces the keys: a namespace's keys read and write its own prefix and are
refused everywhere else; a ModelService in one namespace cannot take another's artifact.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest
from botocore.exceptions import ClientError
from e2e_kube import Cluster, dump_namespace, show_evidence
from e2e_models import (
    DigitsModel,
    condition,
    infer_http,
    modelservice,
    original_logits,
    service_url,
    wait_for_phase,
)
from e2e_tenants import (
    ARTIFACT_BUCKET,
    MODEL_BUCKET,
    S3_SECRET,
    STORE_SECRET,
    create_namespace,
    delete_namespace,
    namespace_name,
    s3_client_with,
    secret_data,
    store_tenant,
)

NAME = "digits-tenant"


@dataclass(frozen=True)
class Tenant:
    namespace: str
    keys: dict[str, str]  # the namespace's Secret mserve-store, as the tool wrote it


@pytest.fixture(scope="module")
def tenants(
    cluster: Cluster, s3_store: str, request: pytest.FixtureRequest
) -> Iterator[tuple[Tenant, Tenant]]:
    failures_before = request.session.testsfailed
    names = [create_namespace(cluster, namespace_name(f"tenant-{side}"), s3_store) for side in "ab"]
    yield tuple(Tenant(n, secret_data(cluster, n, STORE_SECRET)) for n in names)
    for name in names:
        if request.session.testsfailed > failures_before:
            show_evidence(request, dump_namespace(cluster, name))
        delete_namespace(cluster, name, s3_store)


def client_of(endpoint: str, keys: dict[str, str]):
    return s3_client_with(endpoint, keys["AWS_ACCESS_KEY_ID"], keys["AWS_SECRET_ACCESS_KEY"])


def refused(call, *args, **kwargs) -> str:
    """The store's error code for a call that must fail."""
    with pytest.raises(ClientError) as caught:
        call(*args, **kwargs)
    return caught.value.response["Error"]["Code"]


# ---------------------------------------------------------------------------- the store itself


def test_own_keys_read_and_write_own_prefix(s3_store: str, tenants: tuple[Tenant, Tenant]) -> None:
    a, _ = tenants
    client = client_of(s3_store, a.keys)
    key = f"{a.namespace}/probe/hello.txt"
    client.put_object(Bucket=ARTIFACT_BUCKET, Key=key, Body=b"from a")
    assert client.get_object(Bucket=ARTIFACT_BUCKET, Key=key)["Body"].read() == b"from a"
    listed = client.list_objects_v2(Bucket=ARTIFACT_BUCKET, Prefix=f"{a.namespace}/")
    assert [o["Key"] for o in listed["Contents"]] == [key]
    client.delete_object(Bucket=ARTIFACT_BUCKET, Key=key)


def test_keys_are_refused_on_another_namespace_prefix(
    s3_store: str, s3_client, tenants: tuple[Tenant, Tenant]
) -> None:
    a, b = tenants
    theirs = f"{b.namespace}/probe/secret.txt"
    client_of(s3_store, b.keys).put_object(Bucket=ARTIFACT_BUCKET, Key=theirs, Body=b"from b")
    attacker = client_of(s3_store, a.keys)
    assert refused(attacker.get_object, Bucket=ARTIFACT_BUCKET, Key=theirs) == "AccessDenied"
    assert refused(attacker.head_object, Bucket=ARTIFACT_BUCKET, Key=theirs) in ("403", "AccessDenied")
    assert refused(attacker.put_object, Bucket=ARTIFACT_BUCKET, Key=theirs, Body=b"planted") == "AccessDenied"
    assert refused(attacker.delete_object, Bucket=ARTIFACT_BUCKET, Key=theirs) == "AccessDenied"
    listing = attacker.list_objects_v2
    assert refused(listing, Bucket=ARTIFACT_BUCKET, Prefix=f"{b.namespace}/") == "AccessDenied"
    # a namespace whose name starts with A's cannot be reached through A's prefix either
    assert refused(listing, Bucket=ARTIFACT_BUCKET, Prefix=a.namespace) == "AccessDenied"
    # nothing was lost or replaced
    assert s3_client.get_object(Bucket=ARTIFACT_BUCKET, Key=theirs)["Body"].read() == b"from b"


def test_keys_cannot_list_the_bucket_root_or_write_the_sources(
    s3_store: str, tenants: tuple[Tenant, Tenant]
) -> None:
    a, _ = tenants
    attacker = client_of(s3_store, a.keys)
    assert refused(attacker.list_objects_v2, Bucket=ARTIFACT_BUCKET) == "AccessDenied"
    assert refused(attacker.list_objects_v2, Bucket=MODEL_BUCKET) == "AccessDenied"
    assert (
        refused(attacker.put_object, Bucket=MODEL_BUCKET, Key="digits/model.onnx", Body=b"x")
        == "AccessDenied"
    )
    assert refused(attacker.create_bucket, Bucket="a-bucket-of-my-own") == "AccessDenied"


def test_source_keys_read_the_models_and_write_nothing(
    cluster: Cluster, s3_store: str, s3_client, tenants: tuple[Tenant, Tenant]
) -> None:
    a, _ = tenants
    s3_client.put_object(Bucket=MODEL_BUCKET, Key="tenants/readme.txt", Body=b"shared")
    reader = client_of(s3_store, secret_data(cluster, a.namespace, S3_SECRET))
    assert reader.get_object(Bucket=MODEL_BUCKET, Key="tenants/readme.txt")["Body"].read() == b"shared"
    assert (
        refused(reader.put_object, Bucket=MODEL_BUCKET, Key="tenants/readme.txt", Body=b"x") == "AccessDenied"
    )
    own = f"{a.namespace}/from-reader.txt"
    assert refused(reader.put_object, Bucket=ARTIFACT_BUCKET, Key=own, Body=b"x") == "AccessDenied"


def test_wrong_keys_are_refused(s3_store: str, tenants: tuple[Tenant, Tenant]) -> None:
    a, _ = tenants
    key = f"{a.namespace}/probe/x.txt"
    wrong_secret = {**a.keys, "AWS_SECRET_ACCESS_KEY": "not-" + a.keys["AWS_SECRET_ACCESS_KEY"][4:]}
    code = refused(client_of(s3_store, wrong_secret).put_object, Bucket=ARTIFACT_BUCKET, Key=key, Body=b"x")
    assert code == "SignatureDoesNotMatch"
    unknown = {"AWS_ACCESS_KEY_ID": "nobody", "AWS_SECRET_ACCESS_KEY": "wrong-secret-key"}
    code = refused(client_of(s3_store, unknown).get_object, Bucket=ARTIFACT_BUCKET, Key=key)
    assert code == "InvalidAccessKeyId"


def test_rerun_keeps_the_keys_and_delete_revokes_them(
    cluster: Cluster, s3_store: str, tenants: tuple[Tenant, Tenant]
) -> None:
    a, _ = tenants
    rerun = store_tenant(cluster, s3_store, a.namespace)
    assert rerun.returncode == 0, rerun.stderr
    assert secret_data(cluster, a.namespace, STORE_SECRET) == a.keys

    made = store_tenant(cluster, s3_store, a.namespace, "--secret", "scratch-keys")
    assert made.returncode == 0, made.stderr
    scratch = secret_data(cluster, a.namespace, "scratch-keys")
    assert scratch["AWS_ACCESS_KEY_ID"] != a.keys["AWS_ACCESS_KEY_ID"]
    client = client_of(s3_store, scratch)
    client.put_object(Bucket=ARTIFACT_BUCKET, Key=f"{a.namespace}/scratch.txt", Body=b"x")
    gone = store_tenant(cluster, s3_store, a.namespace, "--secret", "scratch-keys", "--delete")
    assert gone.returncode == 0, gone.stderr
    code = refused(client.get_object, Bucket=ARTIFACT_BUCKET, Key=f"{a.namespace}/scratch.txt")
    assert code == "InvalidAccessKeyId"
    assert cluster.get_or_none("-n", a.namespace, "secret", "scratch-keys") is None


# ---------------------------------------------------------------------------- ModelServices


@pytest.fixture(scope="module")
def served_a(mserve: Cluster, s3_store: str, tenants: tuple[Tenant, Tenant], digits: DigitsModel) -> dict:
    """A's own model, uploaded with A's keys under A's prefix, optimized and served in A."""
    a, _ = tenants
    key = f"{a.namespace}/sources/digits/model.onnx"
    client_of(s3_store, a.keys).upload_file(str(digits.folder / "model.onnx"), ARTIFACT_BUCKET, key)
    # quantized, so the optimizer writes an artifact (an ONNX source with quantize none is served as is)
    manifest = modelservice(NAME, f"s3://{ARTIFACT_BUCKET}/{key}", quantize="dynamic-int8")
    manifest["spec"]["model"]["credentialsSecret"] = STORE_SECRET
    mserve.apply(manifest, a.namespace)
    return wait_for_phase(mserve, a.namespace, NAME, "Ready", timeout=900)


def test_tenant_modelservice_is_ready_and_serves(
    mserve: Cluster, tenants: tuple[Tenant, Tenant], served_a: dict, digits: DigitsModel
) -> None:
    a, _ = tenants
    artifact = served_a["status"]["artifact"]["uri"]
    assert artifact.startswith(f"s3://{ARTIFACT_BUCKET}/{a.namespace}/{NAME}/"), artifact
    x = np.load(digits.samples)["x"][:32]
    answer = infer_http(service_url(mserve, a.namespace, NAME), NAME, x)
    original = original_logits(str(digits.folder / "model.onnx"), x)
    assert (answer.argmax(1) == original.argmax(1)).mean() >= 0.95


def test_other_namespace_cannot_source_the_tenant_artifact(
    mserve: Cluster, tenants: tuple[Tenant, Tenant], served_a: dict
) -> None:
    _, b = tenants
    stolen = served_a["status"]["artifact"]["uri"]
    # quantized, so B's optimizer Job (which holds B's store keys) is what tries to read it
    manifest = modelservice("stolen", stolen, quantize="dynamic-int8")
    del manifest["spec"]["model"]["credentialsSecret"]
    mserve.apply(manifest, b.namespace)
    failed = wait_for_phase(mserve, b.namespace, "stolen", "Failed", timeout=600)
    message = failed["status"].get("message", "") + " | " + condition(failed, "Optimized").get("message", "")
    assert stolen in message, message
    assert re.search(r"access denied|AccessDenied|no S3 credentials", message, re.IGNORECASE), message
    # never read, never served: no runtime Deployment in B
    assert not mserve.get("-n", b.namespace, "deployments")["items"]
