"""Commands of the healing loop: diagnose, observe, run, heal, demo, and the queries over it."""
from __future__ import annotations

import sys
from pathlib import Path

import click

import selfheal
from selfheal.cli.describe import timeline_line
from selfheal.cli.output import as_of as _as_of, emit_json, to_json
from selfheal.edges.live import stop_on_signals
from selfheal.handlers.loop import InputError
from selfheal.handlers.observer import format_diagnosis
from selfheal.schemas.serving import TUNABLE

as_of_option = click.option("--as-of", "as_of", help="What selfheal believed at a position or ISO-8601 time.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def _parse_current(pairs: tuple[str, ...]) -> dict:
    values = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in TUNABLE:
            raise click.BadParameter(f"{pair!r}: expected KEY=VALUE with KEY one of {', '.join(TUNABLE)}",
                                     param_hint="--current")
        values[key] = raw.strip().lower() in ("1", "true", "yes") if key == "enforce_eager" else float(raw)
    return values


def log_argument(name: str) -> Path | bytes:
    """A log excerpt argument: a file (read in pieces by the observer), or '-' for standard
    input (read whole)."""
    return sys.stdin.buffer.read() if name == "-" else Path(name)


@click.command()
@click.argument("file", default="-")
@click.option("--current", multiple=True, metavar="KEY=VALUE", help="The server's current value of a parameter.")
@click.option("--config", "vllm_config", type=click.Path(dir_okay=False),
              help="The server's vLLM config YAML (what `vllm serve --config` reads).")
@json_option
def diagnose(file: str, current: tuple[str, ...], vllm_config: str | None, as_json: bool) -> None:
    """Explain one vLLM log excerpt (FILE, or - for standard input)."""
    values = _parse_current(current)
    try:
        diagnosis = selfheal.diagnose(log_argument(file), current=values, config_file=vllm_config)
    except OSError as exc:
        raise InputError.unreadable(file, exc) from None
    if as_json:
        emit_json(diagnosis)
    else:
        click.echo(format_diagnosis(diagnosis))


def logs_command(fn):
    """The arguments shared by the commands that take vLLM logs of a deployment."""
    fn = click.pass_obj(fn)
    fn = json_option(fn)
    fn = click.option("--deployment", help="Which deployment the logs belong to.")(fn)
    return fn


@click.command()
@click.argument("files", nargs=-1)
@click.option("--follow", is_flag=True, help="Follow FILE like tail -F (across rotation) until interrupted.")
@click.option("--journal", "unit", metavar="UNIT", help="Follow a systemd unit through `journalctl -o json -f`.")
@click.option("--metrics", "metrics_url", metavar="URL", help="Poll vLLM's /metrics for sustained runtime symptoms.")
@click.option("--interval", type=float, default=15.0, show_default=True, help="Seconds between /metrics scrapes.")
@click.option("--quiet-seconds", type=float, default=2.0, show_default=True,
              help="A followed incident ends after this long without new lines.")
@logs_command
def observe(ctx, files: tuple[str, ...], follow: bool, unit: str | None, metrics_url: str | None, interval: float,
            quiet_seconds: float, deployment: str | None, as_json: bool) -> None:
    """Record log files (or - for standard input) as incidents; or follow a file, a journald
    unit or /metrics and record the trouble in them as it happens."""
    live = sum(bool(x) for x in (follow, unit, metrics_url))
    if live > 1 or (live and (len(files) != (1 if follow else 0))) or (not live and not files):
        raise click.UsageError("give FILE... ; or --follow FILE ; or --journal UNIT ; or --metrics URL")
    if not live:
        observed = selfheal.observe(files, deployment=deployment, config=ctx.config_path, **ctx.db)
        if as_json:
            emit_json(observed)
        else:
            for path, incident_id in zip(files, observed.incidents):
                click.echo(f"{path}: incident {incident_id}")
        return
    # called once the API has checked the deployment: the one named, else the only one
    report = (lambda i: emit_json({"deployment": deployment or next(iter(ctx.settings.deployments)),
                                   "incident": i})) if as_json else (lambda i: click.echo(f"incident {i}"))
    # SIGINT and SIGTERM ask the watch to stop at its next step, so that an incident being
    # recorded is finished rather than interrupted wherever the signal lands
    with stop_on_signals() as stop:
        selfheal.observe(follow=files[0] if follow else None, journal=unit, metrics=metrics_url, interval=interval,
                         quiet_seconds=quiet_seconds, deployment=deployment, stop=stop, on_incident=report,
                         config=ctx.config_path, **ctx.db)


@click.command("run")
@click.option("--follow", is_flag=True, help="Keep handling new events until interrupted.")
@click.option("--interval", type=float, default=2.0, show_default=True, help="Seconds between polls with --follow.")
@json_option
@click.pass_obj
def run_command(ctx, follow: bool, interval: float, as_json: bool) -> None:
    """Drive the handlers until no work is left."""
    def report(done) -> None:
        if as_json:
            emit_json(done)
        elif done.handled or not follow:
            click.echo(f"handled {done.handled} events, recorded {done.emitted}, log at {done.head}")

    selfheal.run(follow=follow, interval=interval, on_report=report, config=ctx.settings, **ctx.db)


@click.command()
@click.argument("files", nargs=-1, required=True)
@logs_command
def heal(ctx, files: tuple[str, ...], deployment: str | None, as_json: bool) -> None:
    """Observe log files and run the loop to its outcome."""
    for healed in selfheal.heal(files, deployment=deployment, config=ctx.config_path, **ctx.db):
        for row in healed.events:
            if as_json:
                click.echo(to_json({"position": row.position, "type": row.type, "event": row.event}))
            else:
                click.echo(timeline_line(row))


@click.command()
@click.option("--scenario", default=None, help="A bundled scenario (see --list) or a scenario file.")
@click.option("--list", "list_scenarios", is_flag=True, help="List the bundled scenarios.")
@click.option("--out", type=click.Path(dir_okay=False), help="Where to write the fresh log (default: a new temp folder).")
@json_option
def demo(scenario: str | None, list_scenarios: bool, out: str | None, as_json: bool) -> None:
    """Run one whole incident on the simulator and print its timeline."""
    if list_scenarios:
        for name, description in selfheal.scenarios().items():
            click.echo(f"{name:<28} {description}")
        return
    result = selfheal.demo(scenario or selfheal.DEFAULT_SCENARIO, db=out)
    if as_json:
        emit_json(result)
        return
    click.echo(f"scenario {result.scenario}; log at {result.db}\n")
    for row in selfheal.events(db=result.db):
        click.echo(timeline_line(selfheal.typed(row)))
    explore = f"selfheal --db {result.db} show {result.run_id[:8]}" if result.run_id else \
        f"selfheal --db {result.db} events"
    click.echo(f"\noutcome: {result.outcome}. Explore it: {explore}")


@click.command()
@click.option("--deployment")
@as_of_option
@json_option
@click.pass_obj
def history(ctx, deployment, as_of, as_json) -> None:
    """Every run: refused, promoted or escalated."""
    runs = selfheal.history(deployment=deployment, as_of=_as_of(as_of), **ctx.db)
    if as_json:
        emit_json(runs)
        return
    for r in runs:
        detail = r.reason if r.status in ("refused", "escalated") else (
            f"promoted util={r.promoted.gpu_memory_utilization:g} max_model_len={r.promoted.max_model_len} "
            f"max_num_seqs={r.promoted.max_num_seqs}" if r.promoted else "")
        click.echo(f"{r.requested_at.isoformat()}  {r.run_id[:8]}  {r.deployment:<24} {r.status:<9} "
                   f"{r.canaries} canaries  {detail}")


@click.command()
@click.option("--at", "at", help="Count runs in the window ending at this ISO-8601 time (default: now).")
@as_of_option
@json_option
@click.pass_obj
def state(ctx, at, as_of, as_json) -> None:
    """Rate-limit state per deployment: runs in the window, next allowed time, backoff."""
    rows = selfheal.state(at=at or None, as_of=_as_of(as_of), config=ctx.settings, **ctx.db)
    if as_json:
        emit_json(rows)
        return
    limits = ctx.settings.rate_limit
    for s in rows:
        nxt = s.next_allowed_at.isoformat() if s.next_allowed_at else "now"
        back = f", backoff {s.backoff_hours:g} h" if s.backoff_hours else ""
        click.echo(f"{s.deployment}: {s.runs_in_window}/{limits.runs} runs in {limits.window_hours:g} h, "
                   f"{s.consecutive_failures} failed in a row{back}; next run allowed {nxt}")


@click.command()
@click.option("--all", "show_all", is_flag=True, help="Also settled promotions.")
@as_of_option
@json_option
@click.pass_obj
def promotions(ctx, show_all, as_of, as_json) -> None:
    """Promotions waiting for a commit or an approval."""
    rows = selfheal.promotions(all=show_all, as_of=_as_of(as_of), **ctx.db)
    if as_json:
        emit_json(rows)
        return
    for p in rows:
        sim = " simulated" if p.simulated else ""
        click.echo(f"{p.promotion_id[:8]}  {p.deployment:<24} {p.status:<9} fitness {p.fitness:g}{sim}  "
                   f"{to_json(p.config)}")


@click.command()
@click.option("--status", type=click.Choice(["open", "archived"]))
@as_of_option
@json_option
@click.pass_obj
def intents(ctx, status, as_of, as_json) -> None:
    """Intents and how each ended."""
    rows = selfheal.intents(status=status, as_of=_as_of(as_of), **ctx.db)
    if as_json:
        emit_json(rows)
        return
    for i in rows:
        click.echo(f"{i.raised_at.isoformat()}  {i.intent_id[:8]}  {i.deployment:<24} {i.kind:<38} {i.action:<5} "
                   f"{i.outcome or i.status}" + (f" (+{i.repeats} repeats)" if i.repeats else ""))


@click.command()
@click.argument("run_id")
@as_of_option
@json_option
@click.pass_obj
def show(ctx, run_id, as_of, as_json) -> None:
    """The causal chain of a run, from incident to outcome."""
    with selfheal.open_db(**ctx.db) as store:
        chain = selfheal.show(run_id, as_of=_as_of(as_of), db=store)
        if as_json:
            emit_json(chain)
            return
        click.echo(f"run {chain.run.run_id} ({chain.run.deployment}): {chain.run.status}")
        for item in chain.chain:
            click.echo("  " * item.depth + timeline_line(store.get(item.event_id)))


def register(group: click.Group) -> None:
    for command in (diagnose, observe, run_command, heal, demo, history, state, promotions, intents, show):
        group.add_command(command)
