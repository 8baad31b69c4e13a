"""Commands that drive the loop and print its timeline as it is recorded: run, heal, demo."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import click

import selfheal
from selfheal.cli import exits
from selfheal.cli.logging_setup import interrupted
from selfheal.cli.inputs import AFile, check_deployment_name
from selfheal.cli.live import Timeline, follow_log, last_position, outcome_code
from selfheal.cli.loop_commands import json_option, logs_command, with_content
from selfheal.cli.output import emit_json
from selfheal.edges.demo import default_demo_path, demo_name
from selfheal.edges.live import stop_on_signals
from selfheal.edges.sim import load_scenario


@click.command("run")
@click.option("--follow", is_flag=True, help="Keep handling new events until interrupted (SIGINT or SIGTERM).")
@click.option("--interval", type=float, default=2.0, show_default=True, help="Seconds between polls with --follow.")
@json_option
@click.pass_obj
def run_command(ctx, follow: bool, interval: float, as_json: bool) -> None:
    """Drive the handlers until no work is left, printing each event as it is recorded
    (--json: one report per poll, as JSON Lines)."""
    last = {}

    def report(done) -> None:
        if as_json:
            emit_json(done)
        last["done"] = done

    settings = ctx.settings
    with stop_on_signals() as stop:
        work = lambda: selfheal.run(follow=follow, interval=interval, on_report=report, stop=stop,  # noqa: E731
                                    node=ctx.node, config=settings, **ctx.db)
        if as_json:
            work()
        else:
            follow_log(ctx.db_path, work, as_json=False, synchronous=ctx.synchronous)
    if "done" in last and not (as_json or follow):  # after the events it sums up, not among them
        done = last["done"]
        click.echo(f"handled {done.handled} event{'s' * (done.handled != 1)}, recorded {done.emitted}, "
                   f"log at {done.head}")
    if stop.is_set():
        interrupted()


@click.command()
@click.argument("files", nargs=-1, required=True)
@click.option("--force", is_flag=True,
              help="Raise an intent even if the same failure's intent (one that alerted or escalated) is inside "
                   "the dedupe window; recorded, so replay does the same. The rate limit still applies.")
@logs_command
def heal(ctx, files: tuple[str, ...], force: bool, deployment: str | None, as_json: bool) -> None:
    """Observe log files and run the loop to its outcome, printing each event as it is
    recorded (--json: the events as `events --json` prints them). Exit 0 when healed (or
    nothing was wrong), 3 when not healed."""
    check_deployment_name(ctx.settings, deployment)
    files = tuple(with_content(files))  # an empty input would be recorded as an empty incident
    if not files:
        click.echo("selfheal: nothing to heal: every input was empty", err=True)
        sys.exit(exits.NOT_HEALED)
    work = lambda: selfheal.heal(files, deployment=deployment, node=ctx.node, force=force,  # noqa: E731
                                 config=ctx.config_path, **ctx.db)
    healed, timeline = follow_log(ctx.db_path, work, as_json=as_json, synchronous=ctx.synchronous)
    outcomes = [timeline.outcomes.get(h.incident_id, "no failure found") for h in healed]
    if not as_json:
        click.echo(f"\n{outcome_line(timeline, [h.incident_id for h in healed], ctx)}")
    sys.exit(outcome_code(outcomes))


def outcome_line(timeline: Timeline, incidents: list[str], ctx=None, db: str | None = None) -> str:
    """The one `outcome:` line: each incident's outcome, and how to explore it."""
    where = f"--db {db} " if db else (f"--db {ctx.db_path} " if ctx is not None and ctx.db_chosen else "")
    if len(incidents) == 1:
        (incident,) = incidents
        run = timeline.runs.get(incident)
        explore = f"selfheal {where}show {run[:8]}" if run else f"selfheal {where}events --correlation {incident[:8]}"
        waiting = timeline.waiting.get(incident)
        approve = f" (waiting for approval: selfheal {where}approve {waiting[:8]} --by NAME)" if waiting else ""
        return f"outcome: {timeline.outcomes.get(incident, 'no failure found')}{approve}. Explore it: {explore}"
    return "outcome: " + ", ".join(f"{timeline.outcomes.get(i, 'no failure found')} (incident {i[:8]})"
                                   for i in incidents)


@click.command()
@click.option("--scenario", default=None, help="A bundled scenario (see --list) or a scenario file, by any path.")
@click.option("--list", "list_scenarios", is_flag=True, help="List the bundled scenarios.")
@click.option("--out", type=AFile(),
              help="Where to write the fresh log (default: --db or $SELFHEAL_DB when given, else a new temp folder).")
@json_option
@click.pass_obj
def demo(ctx, scenario: str | None, list_scenarios: bool, out: str | None, as_json: bool) -> None:
    """Run one whole incident on the simulator and print its timeline as it is recorded
    (--json: the events as `events --json` prints them). Exit 0 when promoted or the scenario's server
    was healthy, 3 otherwise."""
    if list_scenarios:
        found = selfheal.scenarios()
        if as_json:
            emit_json(found)
        for name, description in ({} if as_json else found).items():
            click.echo(f"{name:<28} {description}")
        return
    scenario = scenario or selfheal.DEFAULT_SCENARIO
    _check_scenario(scenario)
    made = None
    if out:
        path = Path(out)
    elif ctx.db_chosen:
        path = ctx.db_path
    else:
        path = made = default_demo_path(demo_name(scenario))
    held = last_position(path, ctx.synchronous) if made is None else 0
    if held:  # refused before anything is printed: the timeline would show the old log's events
        raise FileExistsError(f"{path}: already holds events, and the demo writes a fresh log; "
                              "give --db (or $SELFHEAL_DB, or --out) a path that does not exist yet")
    if not as_json:
        click.echo(f"scenario {demo_name(scenario)}; log at {path}\n")
    try:
        result, timeline = follow_log(path, lambda: selfheal.demo(scenario, db=path, node=ctx.node), as_json=as_json,
                                      after=0)
    except BaseException:
        if made is not None:  # a failed demo leaves no empty temp folder behind
            shutil.rmtree(made.parent, ignore_errors=True)
        raise
    if not as_json:
        timeline.outcomes[result.incident_id] = result.outcome
        click.echo(f"\n{outcome_line(timeline, [result.incident_id], db=str(path))}")
    # as heal: 0 when healed or when the scenario's server was healthy, 3 otherwise
    sys.exit(outcome_code([result.outcome]))


def _check_scenario(scenario: str) -> None:
    if scenario in selfheal.scenarios():
        return
    if "/" in scenario or scenario.endswith(".toml"):
        if not Path(scenario).is_file():
            raise click.BadParameter(f"{scenario}: no such scenario file", param_hint="--scenario")
        load_scenario(scenario)  # a file that does not load is its one error line, before the header
        return
    raise click.BadParameter(f"no bundled scenario {scenario!r}; bundled: {', '.join(selfheal.scenarios())} "
                             "(or give a scenario file by its path)", param_hint="--scenario")


def register(group: click.Group) -> None:
    for command in (run_command, heal, demo):
        group.add_command(command)

