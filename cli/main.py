"""`selfheal`: the command line. Each command is a thin wrapper over the library function
of the same name; errors are one line on stderr and a non-zero exit, never a traceback
(set SELFHEAL_DEBUG=1 to see one)."""
from __future__ import annotations

import os
import sys
import traceback
from importlib.metadata import PackageNotFoundError, version

import click

from selfheal.cli import baseline_commands, log_commands, loop_commands, migrate_commands, rules_commands
from selfheal.cli.context import Context
from selfheal.eventstore.errors import StoreError
from selfheal.schemas.config import ConfigError

EXIT_FAILURE = 1


def _version() -> str:
    try:
        return version("vllm-selfheal")
    except PackageNotFoundError:
        return "unknown"


class SelfhealGroup(click.Group):
    """Turns every exception into one line on stderr."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except (StoreError, ConfigError, OSError, ValueError, LookupError) as exc:
            self._fail(exc)
        except KeyboardInterrupt:
            click.echo("selfheal: interrupted", err=True)
            sys.exit(130)
        except Exception as exc:  # the promise is one line, whatever went wrong
            self._fail(exc, unexpected=True)

    @staticmethod
    def _fail(exc: BaseException, unexpected: bool = False) -> None:
        if os.environ.get("SELFHEAL_DEBUG"):
            traceback.print_exc()
        prefix = f"unexpected {type(exc).__name__}: " if unexpected else ""
        message = " ".join(str(exc).split()) or type(exc).__name__
        click.echo(f"selfheal: error: {prefix}{message}", err=True)
        sys.exit(EXIT_FAILURE)


@click.group(cls=SelfhealGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", "db_path", type=click.Path(dir_okay=False), default=None,
              help="The event log. Default: $SELFHEAL_DB, else $XDG_STATE_HOME/selfheal/selfheal.db "
                   "(~/.local/state/selfheal/selfheal.db).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="selfheal.toml. Default: $SELFHEAL_CONFIG, else ./selfheal.toml if present, else built-in defaults.")
@click.option("--synchronous", type=click.Choice(["FULL", "NORMAL", "EXTRA", "OFF"], case_sensitive=False),
              default="FULL", show_default=True, help="SQLite durability of each append.")
@click.version_option(_version(), "--version", prog_name="selfheal")
@click.pass_context
def cli(ctx: click.Context, db_path: str | None, config_path: str | None, synchronous: str) -> None:
    """selfheal: heals vLLM serving configurations, with every decision in an append-only log."""
    ctx.obj = Context(db_path=db_path, config_path=config_path, synchronous=synchronous.upper())


def _register() -> None:
    log_commands.register(cli)
    loop_commands.register(cli)
    baseline_commands.register(cli)
    rules_commands.register(cli)
    migrate_commands.register(cli)


_register()


def main() -> None:
    cli(prog_name="selfheal")


if __name__ == "__main__":
    main()
