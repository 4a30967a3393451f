"""`mserve` and its subcommands.

Each subcommand lives in its component and is imported only when it runs, so the
operator image (no onnxruntime, no torch) and the runtime image (no torch, no kopf)
can both carry the same `mserve` entry point.
"""

from __future__ import annotations

import importlib

import click

# name -> ("module:attribute", one-line help shown by `mserve --help`)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("mserve_runtime.cli:serve", "Serve an ONNX model over the V2 inference protocol."),
    "fetch": ("mserve_runtime.cli:fetch", "Download a model (s3, http, pvc, file), digest-checked."),
    "optimize": ("mserve_optimizer.cli:optimize", "Convert to ONNX, quantize, prune and validate a model."),
    "operator": ("mserve_operator.cli:operator", "Run the operator that reconciles ModelServices."),
    "revisions": (
        "mserve_operator.revisions_cli:revisions",
        "List a ModelService's revisions (the last ten).",
    ),
    "rollback": (
        "mserve_operator.revisions_cli:rollback",
        "Serve an earlier revision of a ModelService again.",
    ),
}


class LazyGroup(click.Group):
    """A click group that imports a subcommand's module only when that subcommand runs."""

    subcommands = SUBCOMMANDS

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(self.subcommands)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.subcommands:
            return None
        target, _ = self.subcommands[cmd_name]
        module_name, attribute = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            extra = module_name.split("_", 1)[1].split(".")[0]
            raise click.ClickException(
                f"'mserve {cmd_name}' needs the '{extra}' extra: pip install 'mserve[{extra}]' ({exc})"
            ) from exc
        return getattr(module, attribute)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Listing subcommands must not import every component (and its heavy libraries).
        rows = [(name, self.subcommands[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mserve")
def cli() -> None:
    """mserve: optimize a trained model and serve it, locally or on Kubernetes.

    \b
    Locally:     mserve optimize model.pt2 --input-shape x=-1,64 --output ./artifacts
                 mserve serve ./artifacts/<digest>/model.onnx --name digits
    On a cluster: kubectl apply -f examples/digits.yaml
    """
