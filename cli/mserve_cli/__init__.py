"""The `mserve` command line: one entry point, a subcommand per component."""
