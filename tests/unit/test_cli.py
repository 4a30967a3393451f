"""The `mserve` entry point: subcommands are listed without importing their components."""

import subprocess
import sys

from click.testing import CliRunner
from mserve_cli.main import SUBCOMMANDS, cli


def test_help_lists_every_subcommand() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in SUBCOMMANDS:
        assert name in result.output


def test_help_imports_no_component() -> None:
    code = (
        "import sys; from click.testing import CliRunner; from mserve_cli.main import cli; "
        "r = CliRunner().invoke(cli, ['--help']); assert r.exit_code == 0; "
        "heavy = ('mserve_runtime', 'mserve_optimizer', 'mserve_operator', 'onnxruntime', 'torch'); "
        "loaded = [m for m in heavy"
        " if m in sys.modules]; print(loaded); assert not loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_each_subcommand_has_help() -> None:
    for name in SUBCOMMANDS:
        result = CliRunner().invoke(cli, [name, "--help"])
        assert result.exit_code == 0, result.output
        assert "Usage:" in result.output


def test_unknown_subcommand_is_a_clear_error() -> None:
    result = CliRunner().invoke(cli, ["servee"])
    assert result.exit_code == 2
    assert "No such command 'servee'" in result.output
