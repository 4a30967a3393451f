"""`mserve revisions NAME` and `mserve rollback NAME [--to N]` (also `kubectl mserve ...`).

They act with the caller's own kubeconfig and rights: listing needs `get` on modelservices,
a rollback `patch`. Decisions live in `rollback.py`; this module reads, patches and waits.
"""

from __future__ import annotations

import json
import time

import click
import kubernetes
import yaml
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from mserve_operator.kube_api import KubeApi
from mserve_operator.revisions import serving_number
from mserve_operator.rollback import RevisionError, history_of, previous_number, rollback_patch, table
from mserve_operator.spec import API_GROUP, API_VERSION

MSVC = (f"{API_GROUP}/{API_VERSION}", "ModelService")
# The field manager a rollback's changes are recorded under (managedFields), like kubectl's.
ROLLBACK_MANAGER = "kubectl-mserve-rollback"


def _target(namespace: str | None, kubeconfig: str | None, context: str | None) -> tuple[KubeApi, str]:
    """The API client and the namespace: --namespace, else the kubeconfig context's, else default."""
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_kube_config(
            config_file=kubeconfig, context=context, client_configuration=configuration
        )
        if namespace is None:
            contexts, active = kubernetes.config.list_kube_config_contexts(config_file=kubeconfig)
            if context:
                active = next(c for c in contexts if c["name"] == context)
            namespace = (active.get("context") or {}).get("namespace")
    except (kubernetes.config.ConfigException, OSError, StopIteration) as exc:
        raise click.ClickException(
            f"cannot load the kubeconfig ({kubeconfig or '$KUBECONFIG'}): {exc}"
        ) from exc
    return KubeApi(configuration), namespace or "default"


def _read(api: KubeApi, namespace: str, name: str) -> dict:
    try:
        msvc = api.get(*MSVC, namespace, name)
    except ApiException as exc:
        raise click.ClickException(_api_error(exc, f"read ModelService {namespace}/{name}")) from exc
    except HTTPError as exc:
        raise click.ClickException(
            f"cannot read ModelService {namespace}/{name}: the API server is unreachable ({exc})"
        ) from exc
    if msvc is None:
        raise click.ClickException(
            f"ModelService {namespace}/{name} not found (kubectl get modelservices -n {namespace})"
        )
    return msvc


def _api_error(exc: ApiException, doing: str) -> str:
    try:
        message = json.loads(exc.body or "{}").get("message", "")
    except ValueError:
        message = ""
    return f"cannot {doing}: {exc.status} {exc.reason}: {message or exc.body}"


_COMMON = [
    click.argument("name"),
    click.option(
        "--namespace", "-n", default=None, help="The ModelService's namespace (default: the context's)."
    ),
    click.option("--kubeconfig", default=None, envvar="KUBECONFIG", help="Path to the kubeconfig file."),
    click.option("--context", default=None, help="The kubeconfig context to use."),
]


def _common(command):
    for decorator in reversed(_COMMON):
        command = decorator(command)
    return command


@click.command()
@_common
@click.option(
    "--output", "-o", type=click.Choice(["table", "json", "yaml"]), default="table", show_default=True
)
def revisions(
    name: str, namespace: str | None, kubeconfig: str | None, context: str | None, output: str
) -> None:
    """List the revisions of ModelService NAME (the last ten), oldest first."""
    api, namespace = _target(namespace, kubeconfig, context)
    history = history_of(_read(api, namespace, name))
    if output == "json":
        click.echo(json.dumps(history, indent=2))
    elif output == "yaml":
        click.echo(yaml.safe_dump(history, sort_keys=False), nl=False)
    elif not history:
        click.echo(f"ModelService {namespace}/{name} has no revisions yet")
    else:
        rows = table(history)
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            click.echo(
                "   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            )


@click.command()
@_common
@click.option(
    "--to",
    "number",
    type=click.IntRange(min=1),
    default=None,
    help="The revision number to go back to (default: the one served before the serving one).",
)
@click.option("--wait/--no-wait", default=False, help="Wait until the revision serves on every replica.")
@click.option(
    "--timeout", type=click.FloatRange(min=1), default=300, show_default=True, help="Seconds --wait waits."
)
def rollback(
    name: str,
    namespace: str | None,
    kubeconfig: str | None,
    context: str | None,
    number: int | None,
    wait: bool,
    timeout: float,
) -> None:
    """Serve an earlier revision of ModelService NAME again.

    Like `kubectl rollout undo`, it writes the revision's spec.model and spec.optimization back
    into the ModelService (field manager kubectl-mserve-rollback); the operator serves it again
    with its cached artifact, without an optimization Job. Under GitOps, commit the same
    change, or the next sync undoes the rollback.
    """
    api, namespace = _target(namespace, kubeconfig, context)
    msvc = _read(api, namespace, name)
    try:
        number = previous_number(msvc) if number is None else number
        ops = rollback_patch(msvc, number)
    except RevisionError as exc:
        raise click.ClickException(str(exc)) from exc
    if not ops:
        click.echo(f"modelservice/{name}: the spec already asks for revision {number}; nothing to change")
    else:
        try:
            api.json_patch(*MSVC, namespace, name, ops, field_manager=ROLLBACK_MANAGER)
        except HTTPError as exc:
            raise click.ClickException(
                f"cannot patch ModelService {namespace}/{name}: the API server is unreachable ({exc})"
            ) from exc
        except ApiException as exc:
            if exc.status in (409, 422):
                raise click.ClickException(
                    f"ModelService {namespace}/{name} changed while rolling back; run the command again"
                    f" ({_api_error(exc, 'patch it')})"
                ) from exc
            raise click.ClickException(_api_error(exc, f"patch ModelService {namespace}/{name}")) from exc
        click.echo(f"modelservice/{name} rolled back to revision {number}")
    if wait:
        _wait_served(api, namespace, name, number, timeout)


def _wait_served(api: KubeApi, namespace: str, name: str, number: int, timeout: float) -> None:
    """Until the operator reports the revision served and the rollout complete on every replica."""
    deadline = time.monotonic() + timeout
    while True:
        msvc = _read(api, namespace, name)
        status = msvc.get("status") or {}
        current = status.get("observedGeneration") == msvc["metadata"].get("generation")
        if current and serving_number(history_of(msvc)) == number and status.get("phase") == "Ready":
            click.echo(f"modelservice/{name} serves revision {number} on {status.get('ready')} replicas")
            return
        if time.monotonic() > deadline:
            raise click.ClickException(
                f"ModelService {namespace}/{name} does not serve revision {number} after {timeout:g}s: "
                f"phase {status.get('phase')}, {status.get('message')}"
            )
        time.sleep(0.25)
