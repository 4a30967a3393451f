"""`kubectl mserve`: the kubectl plugin (an executable `kubectl-mserve` on PATH) that mserve ships.

The same commands as `mserve revisions` and `mserve rollback`, under kubectl's name for them;
kubectl hands the plugin every argument after `mserve`, `-n NAMESPACE` included.
"""

from __future__ import annotations

import click

from mserve_cli.main import SUBCOMMANDS, LazyGroup

PLUGIN_COMMANDS = ("revisions", "rollback")


class PluginGroup(LazyGroup):
    subcommands = {name: SUBCOMMANDS[name] for name in PLUGIN_COMMANDS}


@click.group(cls=PluginGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mserve")
def cli() -> None:
    """Revisions and rollback of mserve ModelServices.

    \b
    kubectl mserve revisions digits -n team-a
    kubectl mserve rollback digits --to 3 -n team-a --wait
    """


def main() -> None:
    cli(prog_name="kubectl mserve")
