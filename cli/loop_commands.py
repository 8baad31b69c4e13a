"""Commands of the healing loop: diagnose, observe, run, heal, demo, and the queries over it."""
from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

import click

from selfheal.cli.describe import timeline_line
from selfheal.cli.output import emit_json, to_json
from selfheal.schemas.config import ConfigError


def _as_of(value: str | None):
    if value is None:
        return None
    return int(value) if value.isdigit() else value


as_of_option = click.option("--as-of", "as_of", help="What selfheal believed at a position or ISO-8601 time.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def _deployment(ctx, name: str | None):
    from selfheal.edges import deployments

    settings = ctx.settings
    if not settings.deployments:
        raise ConfigError("no deployments are configured: add a [deployments.NAME] table to selfheal.toml "
                          "(see README), or try `selfheal demo`")
    if name is None:
        if len(settings.deployments) > 1:
            raise ConfigError(f"several deployments are configured ({', '.join(sorted(settings.deployments))}): "
                              "choose one with --deployment")
        name = next(iter(settings.deployments))
    settings.deployment(name)
    return deployments.build(settings), name


def _parse_current(pairs: tuple[str, ...], config_file: str | None) -> dict:
    from selfheal.schemas.serving import TUNABLE
    from selfheal.schemas.vllm_yaml import read_serving_values

    values = read_serving_values(config_file) if config_file else {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in TUNABLE:
            raise click.BadParameter(f"{pair!r}: expected KEY=VALUE with KEY one of {', '.join(TUNABLE)}",
                                     param_hint="--current")
        values[key] = raw.strip().lower() in ("1", "true", "yes") if key == "enforce_eager" else float(raw)
    return values


@click.command()
@click.argument("file", default="-")
@click.option("--current", multiple=True, metavar="KEY=VALUE", help="The server's current value of a parameter.")
@click.option("--config", "vllm_config", type=click.Path(dir_okay=False),
              help="The server's vLLM config YAML (what `vllm serve --config` reads).")
@json_option
def diagnose(file: str, current: tuple[str, ...], vllm_config: str | None, as_json: bool) -> None:
    """Explain one vLLM log excerpt (FILE, or - for standard input)."""
    from selfheal.handlers.loop import InputError, read_raw
    from selfheal.handlers.observer import diagnose as run_diagnose, format_diagnosis
    from selfheal.schemas.serving import ServingConfig

    values = _parse_current(current, vllm_config)
    config = None
    if values:
        ints = {"max_model_len", "max_num_seqs", "max_num_batched_tokens"}
        config = ServingConfig(**{k: int(v) if k in ints else v for k, v in values.items()})
    # a file is read in pieces (handlers/observer/logfile.py), standard input whole; both as
    # UTF-8 with U+FFFD, like every input edge
    source = read_raw(file)[0] if file == "-" else Path(file)
    try:
        diagnosis = run_diagnose(source, current=config)
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
    import signal
    import threading

    from selfheal.handlers import loop

    live = sum(bool(x) for x in (follow, unit, metrics_url))
    if live > 1 or (live and (len(files) != (1 if follow else 0))) or (not live and not files):
        raise click.UsageError("give FILE... ; or --follow FILE ; or --journal UNIT ; or --metrics URL")
    edges, name = _deployment(ctx, deployment)
    with ctx.store(create=True) as store:
        if not live:
            ids = loop.observe(store, edges[name], list(files))
            if as_json:
                emit_json({"deployment": name, "incidents": ids})
            else:
                for path, incident_id in zip(files, ids):
                    click.echo(f"{path}: incident {incident_id}")
            return
        from selfheal.edges import live as live_inputs
        from selfheal.schemas.events import IncidentSource

        stop = threading.Event()
        report = (lambda i: emit_json({"deployment": name, "incident": i})) if as_json else \
            (lambda i: click.echo(f"incident {i}"))
        # SIGINT and SIGTERM ask the watch to stop at its next step, so that an incident being
        # recorded is finished rather than interrupted wherever the signal lands
        previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            if metrics_url:
                live_inputs.watch_metrics(store, edges[name], metrics_url, stop, interval_s=interval, on_incident=report)
                return
            if follow:
                from selfheal.edges.follow import follow as follow_file

                lines, source = follow_file(files[0], stop=stop), IncidentSource(kind="file", path=files[0])
            else:
                from selfheal.edges.journal import journal

                lines, source = journal(unit, stop=stop), IncidentSource(kind="journald", unit=unit)
            live_inputs.watch_lines(store, edges[name], lines, source, stop, quiet_s=quiet_seconds,
                                    on_incident=report)
        except KeyboardInterrupt:
            stop.set()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


@click.command("run")
@click.option("--follow", is_flag=True, help="Keep handling new events until interrupted.")
@click.option("--interval", type=float, default=2.0, show_default=True, help="Seconds between polls with --follow.")
@json_option
@click.pass_obj
def run_command(ctx, follow: bool, interval: float, as_json: bool) -> None:
    """Drive the handlers until no work is left."""
    from selfheal.edges import deployments
    from selfheal.handlers import loop

    from selfheal.handlers.escrow import lapse_expired

    with ctx.store(create=True) as store:
        runner = loop.runner(store, ctx.settings, deployments.build(ctx.settings))
        while True:
            lapse_expired(store, ctx.settings, datetime.now(timezone.utc), runner.view)
            report = runner.run_until_idle()
            if as_json:
                emit_json(report)
            elif report.handled or not follow:
                click.echo(f"handled {report.handled} events, recorded {report.emitted}, log at {store.last_position()}")
            if not follow:
                return
            time.sleep(interval)


@click.command()
@click.argument("files", nargs=-1, required=True)
@logs_command
def heal(ctx, files: tuple[str, ...], deployment: str | None, as_json: bool) -> None:
    """Observe log files and run the loop to its outcome."""
    from selfheal.eventstore.audit import events
    from selfheal.eventstore.store import typed
    from selfheal.handlers import loop

    edges, name = _deployment(ctx, deployment)
    with ctx.store(create=True) as store:
        for incident_id in loop.heal(store, ctx.settings, edges, name, list(files)):
            for row in map(typed, events(store, correlation=incident_id)):
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
    import os

    from selfheal.edges.demo import DEFAULT_SCENARIO, demo as run_demo
    from selfheal.edges.sim import bundled_scenarios, load_scenario
    from selfheal.eventstore.store import open_store

    if list_scenarios:
        for name in bundled_scenarios():
            click.echo(f"{name:<28} {load_scenario(name).description}")
        return
    mode = os.environ.get("SELFHEAL_MODE") or "dev"
    result = run_demo(scenario or DEFAULT_SCENARIO, out, mode=mode)
    if as_json:
        emit_json(result)
        return
    click.echo(f"scenario {result.scenario}; log at {result.db}\n")
    with open_store(result.db) as store:
        for row in store.read():
            click.echo(timeline_line(row))
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
    from selfheal.projections import queries

    with ctx.store() as store:
        runs = queries.history(store, as_of=_as_of(as_of), deployment=deployment)
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
    from selfheal.eventstore.recorder import parse_utc
    from selfheal.projections import queries

    now = parse_utc(at) if at else datetime.now(timezone.utc)
    with ctx.store() as store:
        rows = queries.state(store, ctx.settings.rate_limit, now, as_of=_as_of(as_of))
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
    from selfheal.projections import queries

    with ctx.store() as store:
        rows = queries.promotions(store, as_of=_as_of(as_of), waiting_only=not show_all)
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
    from selfheal.projections import queries

    with ctx.store() as store:
        rows = queries.intents(store, as_of=_as_of(as_of), status=status)
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
    from selfheal.projections import queries
    from selfheal.eventstore.store import typed

    with ctx.store() as store:
        chain = queries.show(store, run_id, as_of=_as_of(as_of))
        if as_json:
            emit_json(chain)
            return
        click.echo(f"run {chain.run.run_id} ({chain.run.deployment}): {chain.run.status}")
        for item in chain.chain:
            row = typed(store.recorder.get(item.event_id))
            click.echo("  " * item.depth + timeline_line(row))


def register(group: click.Group) -> None:
    for command in (diagnose, observe, run_command, heal, demo, history, state, promotions, intents, show):
        group.add_command(command)
