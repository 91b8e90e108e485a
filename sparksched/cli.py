"""The `sparksched` command line: a thin shell over the library.

Each command lives in its own module under `sparksched/commands/` and is imported only when it
runs; `import sparksched` loads its names lazily too, so `sparksched --help`, `sparksched trace`
and `sparksched simulate` without a model never import torch. Library errors become one-line
`click.ClickException`s in those modules, never tracebacks: exit 2 for usage errors, 1 for runtime
errors (sparksched/commands/_common.py); Ctrl-C exits 130.
"""

from __future__ import annotations

import importlib

import click

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for a command stopped by Ctrl-C

# command name -> "module:attribute" of the click command implementing it
COMMANDS: dict[str, str] = {
    "profile": "sparksched.commands.profile:profile",
    "trace": "sparksched.commands.trace:trace",
    "simulate": "sparksched.commands.simulate:simulate",
    "pareto": "sparksched.commands.pareto:pareto",
    "whatif": "sparksched.commands.pareto:whatif",
    "train": "sparksched.commands.train:train",
    "compare": "sparksched.commands.compare:compare",
    "calibration": "sparksched.commands.calibration:calibration",
}


class LazyGroup(click.Group):
    """A click group that imports each subcommand's module on first use."""

    def __init__(self, *args, lazy: dict[str, str], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy:
            module_name, attr = self.lazy[cmd_name].split(":")
            return getattr(importlib.import_module(module_name), attr)
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> object:
        """Run the command; Ctrl-C (SIGINT) ends it with the shell's convention, exit 130, one line."""
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("\ninterrupted", err=True)
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None


EXAMPLES = """\b
Examples:
  sparksched simulate --trace chat --timeline -o runs/chat
  sparksched pareto --trace chat -o pareto-out
  sparksched whatif --from pareto-out --sla 120
  sparksched compare bench.json runs/chat
  sparksched <command> --help

\b
Exit status: 0 success, 2 usage error (bad option, value or scenario key), 1 runtime error,
130 interrupted (Ctrl-C).
"""


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]},
             epilog=EXAMPLES)
@click.version_option(package_name="sparksched")
def main() -> None:
    """Confidence-scheduled speculative decoding: profile, schedule, verify, simulate."""


if __name__ == "__main__":
    main()
