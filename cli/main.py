"""`selfheal`: the command line. Each command is a thin wrapper over the library function
of the same name; errors are one line on stderr and a non-zero exit, never a traceback
(set SELFHEAL_DEBUG=1 to see one)."""
from __future__ import annotations

import errno
import os
import signal
import sys
import traceback
from importlib.metadata import PackageNotFoundError, version

import click

from selfheal.cli import baseline_commands, live_commands, log_commands, loop_commands, migrate_commands, rules_commands
from selfheal.cli import ui_commands
from selfheal.cli import exits
from selfheal.cli.context import Context
from selfheal.cli.logging_setup import interrupted, last_word, logging_options
from selfheal.cli.service import add_service_options
from selfheal.eventstore.errors import StoreError
from selfheal.schemas.config import ConfigError

EXIT_FAILURE = exits.ERROR


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
        except BrokenPipeError:
            _closed_pipe()
        except (StoreError, ConfigError, OSError, ValueError, LookupError) as exc:
            # a bare LookupError is an id that names nothing (or more than one thing): usage
            self._fail(exc, code=exits.USAGE if type(exc) is LookupError else exits.ERROR)
        except KeyboardInterrupt:
            interrupted()
        except Exception as exc:  # the promise is one line, whatever went wrong
            self._fail(exc, unexpected=True)

    @staticmethod
    def _fail(exc: BaseException, unexpected: bool = False, code: int = EXIT_FAILURE) -> None:
        if os.environ.get("SELFHEAL_DEBUG"):
            traceback.print_exc()
        prefix = f"unexpected {type(exc).__name__}: " if unexpected else ""
        message = " ".join(str(exc).split()) or type(exc).__name__
        if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
            message = f"{exc.filename}: {exc.strerror}"  # not Python's "[Errno 2] ...: 'x'"
        last_word(f"selfheal: error: {prefix}{message}")
        sys.exit(code)


def _closed_pipe() -> None:
    """The reader went away (`| head -1`): end quietly. Standard output is pointed at
    /dev/null so that the interpreter's last flush cannot complain either."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    sys.exit(exits.CLOSED_PIPE)


def _terminate(signum, frame) -> None:
    """SIGTERM ends a command as SIGINT does (exit 130); watches install their own handler
    for both, so that they finish the step they are in."""
    raise KeyboardInterrupt


@click.group(cls=SelfhealGroup, context_settings={"help_option_names": ["-h", "--help"]}, epilog=exits.TABLE)
@click.option("--db", "db_path", type=click.Path(), metavar="FILE", default=None,
              help="The event log. Default: $SELFHEAL_DB, else $XDG_STATE_HOME/selfheal/selfheal.db "
                   "(~/.local/state/selfheal/selfheal.db).")
@click.option("--config", "config_path", type=click.Path(), metavar="FILE", default=None,
              help="selfheal.toml. Default: $SELFHEAL_CONFIG, else ./selfheal.toml if present, else built-in defaults.")
@click.option("--synchronous", type=click.Choice(["FULL", "NORMAL", "EXTRA", "OFF"], case_sensitive=False),
              default="FULL", show_default=True, help="SQLite durability of each append.")
@click.option("--node", default=None, metavar="NAME",
              help="This fleet member's name, recorded in the runs that run, heal and demo start or refuse. "
                   "Default: $SELFHEAL_NODE, else the hostname.")
@click.version_option(_version(), "--version", prog_name="selfheal")
@logging_options
@click.pass_context
def cli(ctx: click.Context, db_path: str | None, config_path: str | None, synchronous: str, node: str | None) -> None:
    """selfheal: heals vLLM serving configurations, with every decision in an append-only log."""
    if config_path and not os.path.exists(config_path):  # named, so never ignored by a command that reads none
        raise ConfigError(f"{config_path}: no such config file")
    for given in (db_path, config_path):  # a folder is a file that cannot be used: exit 1, as in every command
        if given and os.path.isdir(given):
            raise IsADirectoryError(errno.EISDIR, "Is a directory", given)
    ctx.obj = Context(db_path=db_path, config_path=config_path, synchronous=synchronous.upper(), node=node)


def _register() -> None:
    log_commands.register(cli)
    loop_commands.register(cli)
    live_commands.register(cli)
    baseline_commands.register(cli)
    rules_commands.register(cli)
    migrate_commands.register(cli)
    ui_commands.register(cli)


_register()
add_service_options(cli)  # --metrics-port and systemd notify for run, observe, supervise


def main() -> None:
    signal.signal(signal.SIGTERM, _terminate)
    try:
        cli(prog_name="selfheal")
    except BrokenPipeError:  # raised while click itself printed (help, usage errors)
        _closed_pipe()


if __name__ == "__main__":
    main()
