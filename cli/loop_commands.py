"""Commands of the healing loop: diagnose, observe, run, heal, demo, and the queries over it."""
from __future__ import annotations

import errno
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import click

import selfheal
from selfheal.cli import exits
from selfheal.cli.logging_setup import interrupted
from selfheal.cli.describe import timeline_line
from selfheal.cli.inputs import AFile, TIME_HELP, check_deployment_name, parse_time, unknown
from selfheal.cli.output import as_of as _as_of, emit_json, emit_rows, row_style, show_time, table_options, to_json
from selfheal.edges.live import stop_on_signals
from selfheal.eventstore.store import is_server
from selfheal.handlers.loop import InputError
from selfheal.handlers.observer import format_diagnosis
from selfheal.projections.queries import DeploymentState
from selfheal.schemas.actuators import ActuatorBounds
from selfheal.schemas.serving import TUNABLE

as_of_option = click.option("--as-of", "as_of", help=f"What selfheal believed at a position or a time ({TIME_HELP}).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def canaries(n: int) -> str:
    return "1 canary" if n == 1 else f"{n} canaries"


def check_deployment(ctx, deployment: str | None, found: bool, option: str = "--deployment") -> None:
    """A --deployment filter that matched nothing must name something that exists: the
    configured deployments and those the log knows."""
    if deployment is None or found:
        return
    known = set(ctx.settings.deployments) | {r.deployment for r in selfheal.history(**ctx.db)} \
        | set(selfheal.baseline(**ctx.db)) | {i.deployment for i in selfheal.intents(**ctx.db)}
    if deployment not in known:
        raise unknown("deployment", deployment, known, option)


def _parse_current(pairs: tuple[str, ...]) -> dict:
    values = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in TUNABLE:
            raise click.BadParameter(f"{pair!r}: expected KEY=VALUE with KEY one of {', '.join(TUNABLE)}",
                                     param_hint="--current")
        if key == "enforce_eager":
            values[key] = raw.strip().lower() in ("1", "true", "yes")
            continue
        try:
            values[key] = float(raw)
        except ValueError:
            raise click.BadParameter(f"{pair!r}: {raw.strip()!r} is not a number", param_hint="--current") from None
    return values


def _outside_bounds(diagnosis) -> list[str]:
    """The fixes a deployment with the default actuator bounds could not run (the loop would
    escalate them with the evidence)."""
    if diagnosis.primary is None:
        return []
    bounds = ActuatorBounds().numeric()
    return [f"{k}={v:g} is outside the actuator bounds [{bounds[k].min:g}, {bounds[k].max:g}]: the loop would "
            "escalate, not run it (set other bounds in selfheal.toml's [deployments.NAME.actuators])"
            for k, v in diagnosis.primary.fix.items() if k in bounds and not bounds[k].contains(v)]


def log_argument(name: str) -> Path | bytes:
    """A log excerpt argument: a file (read in pieces by the observer), or '-' for standard
    input (read whole)."""
    return sys.stdin.buffer.read() if name == "-" else Path(name)


@click.command()
@click.argument("file", default="-")
@click.option("--current", multiple=True, metavar="KEY=VALUE", help="The server's current value of a parameter.")
@click.option("--vllm-config", "vllm_config", type=AFile(),
              help="The server's vLLM config YAML, the file vLLM serves from.")
# the old spelling: `--config` means selfheal.toml everywhere else, so it is hidden and warned about
@click.option("--config", "old_vllm_config", type=AFile(), hidden=True)
@json_option
@click.pass_obj
def diagnose(ctx, file: str, current: tuple[str, ...], vllm_config: str | None, old_vllm_config: str | None,
             as_json: bool) -> None:
    """Explain one vLLM log excerpt (FILE, or - for standard input). With --db (or $SELFHEAL_DB)
    it reads with the rule set active in that log, else with the built-in rules. Exit 4 when it
    holds a configuration failure, 0 when it does not."""
    if old_vllm_config:
        click.echo("selfheal: warning: `diagnose --config` is deprecated (--config is selfheal.toml): "
                   "use --vllm-config", err=True)
        vllm_config = vllm_config or old_vllm_config
    values = _parse_current(current)
    try:
        # a log chosen but not made yet has no rule set of its own: the built-in rules, nothing created
        db = ctx.db_path if ctx.db_chosen and (is_server(ctx.db_path) or Path(ctx.db_path).exists()) else None
        excerpt = log_argument(file)
        empty = excerpt == b"" or (isinstance(excerpt, Path) and excerpt.is_file() and excerpt.stat().st_size == 0)
        diagnosis = selfheal.diagnose(excerpt, current=values, config_file=vllm_config, db=db)
    except OSError as exc:
        raise InputError.unreadable(file, exc) from None
    if empty:  # "no failure found" alone would read as a healthy server
        click.echo(f"selfheal: nothing to diagnose: {'standard input' if file == '-' else file} is empty", err=True)
    if as_json:
        emit_json(diagnosis)
    else:
        click.echo(format_diagnosis(diagnosis))
        for note in _outside_bounds(diagnosis):
            click.echo(f"Note: {note}")
    if diagnosis.primary is not None:
        sys.exit(exits.FAILURE_FOUND)


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
    check_deployment_name(ctx.settings, deployment)
    if follow and Path(files[0]).is_dir():  # tail -F waits for a missing file; a folder never becomes one
        raise IsADirectoryError(errno.EISDIR, "cannot follow: it is a directory", files[0])
    if follow and not Path(files[0]).exists():  # as tail -F says: the wait is not silent
        click.echo(f"selfheal: {files[0]} does not exist yet: following it from when it appears", err=True)
    if metrics_url:
        _check_url(metrics_url)
    if unit:
        _check_unit(unit)
    if not live:
        files = with_content(files)
        if not files:
            return
        observed = selfheal.observe(files, deployment=deployment, config=ctx.config_path, **ctx.db)
        if as_json:
            emit_json(observed)
        else:
            for path, incident_id in zip(files, observed.incidents):
                click.echo(f"{'standard input' if path == '-' else path}: incident {incident_id}")
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
    if stop.is_set():  # stopped by SIGINT or SIGTERM: the same exit code for both
        interrupted()


def with_content(files: tuple[str, ...]) -> list[str]:
    """The inputs that hold something: an empty one would be an empty incident, so it is
    left out and said so."""
    kept = []
    for name in files:
        if name == "-":
            empty = not sys.stdin.buffer.peek(1) if hasattr(sys.stdin.buffer, "peek") else False
        else:
            try:
                empty = Path(name).stat().st_size == 0 and Path(name).is_file()
            except OSError:
                empty = False  # observe names the missing file, with the reason
        if empty:
            click.echo(f"selfheal: nothing recorded from {'standard input' if name == '-' else name}: it is empty",
                       err=True)
        else:
            kept.append(name)
    return kept


def _check_url(url: str) -> None:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise click.BadParameter(f"{url!r} is not an http(s) URL: give vLLM's /metrics, e.g. "
                                 "http://127.0.0.1:8000/metrics", param_hint="--metrics")


def _check_unit(unit: str) -> None:
    """A unit systemd does not know would be followed forever in silence."""
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        return  # journalctl names its own trouble; without systemctl there is nothing to ask
    try:
        asked = subprocess.run([systemctl, "show", "--property=LoadState", "--value", unit], capture_output=True,
                               text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return
    state = asked.stdout.strip()
    if state == "not-found":
        raise click.BadParameter(f"systemd knows no unit {unit!r} (systemctl show: LoadState=not-found)",
                                 param_hint="--journal")
    if asked.returncode != 0 or not state:  # no systemd here (a container): the watch would wait in silence
        why = " ".join(asked.stderr.split()) or f"systemctl show exited {asked.returncode}"
        click.echo(f"selfheal: warning: systemd cannot say whether unit {unit!r} exists ({why}); "
                   "following its journal anyway", err=True)


@click.command()
@click.option("--deployment", help="Only this deployment's runs.")
@click.option("--node", "node", metavar="NAME", help="Only the runs this fleet node started or refused.")
@as_of_option
@json_option
@table_options
@click.pass_obj
def history(ctx, deployment, node, as_of, as_json, as_table, as_csv) -> None:
    """Every run: refused, promoted or escalated; the fleet's, or one node's (--node)."""
    style = row_style(as_json, as_table, as_csv)
    runs = selfheal.history(deployment=deployment, node=node, as_of=_as_of(as_of), **ctx.db)
    check_deployment(ctx, deployment, bool(runs))
    if style == "json":
        emit_json(runs)
        return
    rows = [{"requested_at": show_time(r.requested_at), "run_id": r.run_id, "deployment": r.deployment,
             "status": r.status, "canaries": r.canaries, "detail": _run_detail(r)} for r in runs]
    if style:
        emit_rows(rows, style)
        return
    for r, row in zip(runs, rows):
        click.echo(f"{row['requested_at']}  {r.run_id[:8]}  {r.deployment:<24} {r.status:<9} "
                   f"{canaries(r.canaries):<11} {row['detail']}".rstrip())


def _run_detail(r) -> str:
    if r.status in ("refused", "escalated"):
        return r.reason
    if r.promoted:
        return (f"promoted util={r.promoted.gpu_memory_utilization:g} max_model_len={r.promoted.max_model_len} "
                f"max_num_seqs={r.promoted.max_num_seqs}")
    return ""


@click.command()
@click.option("--at", "at", help=f"Count the runs in the window ending at this time, as the log stood then "
                                 f"(default: now; {TIME_HELP}).")
@click.option("--node", "node", metavar="NAME",
              help="Only the deployments with runs this fleet node recorded (each budget stays the fleet's).")
@as_of_option
@json_option
@table_options
@click.pass_obj
def state(ctx, at, node, as_of, as_json, as_table, as_csv) -> None:
    """Rate-limit state per deployment: runs in the window, next allowed time, backoff. Every
    configured deployment is listed, with or without runs (with --node: those the node ran)."""
    style = row_style(as_json, as_table, as_csv)
    moment = None if at is None else parse_time(at, "--at")
    # --at asks about a moment: what happened after it cannot count, so the log is read as of it
    position = _as_of(as_of)
    found = selfheal.state(at=moment, as_of=moment if position is None else position, node=node,
                           config=ctx.settings, **ctx.db)
    listed = {s.deployment for s in found}
    fresh = [DeploymentState(
        deployment=name, runs_in_window=0, run_starts=[], consecutive_failures=0, backoff_hours=None,
        next_allowed_at=None, open_runs=[]) for name in sorted(ctx.settings.deployments)
        if name not in listed and node is None]  # a node's view lists only what it ran
    rows = sorted([*found, *fresh], key=lambda s: s.deployment)
    if style == "json":
        emit_json(rows)
        return
    limits = ctx.settings.rate_limit
    table = [{"deployment": s.deployment, "runs_in_window": s.runs_in_window, "window_hours": limits.window_hours,
              "consecutive_failures": s.consecutive_failures, "backoff_hours": s.backoff_hours,
              "next_allowed_at": show_time(s.next_allowed_at, "now" if moment is None else "at that time")}
             for s in rows]
    if style:
        emit_rows(table, style)
        return
    for s, row in zip(rows, table):
        back = f", backoff {s.backoff_hours:g} h" if s.backoff_hours else ""
        click.echo(f"{s.deployment}: {s.runs_in_window}/{limits.runs} runs in {limits.window_hours:g} h, "
                   f"{s.consecutive_failures} failed in a row{back}; next run allowed {row['next_allowed_at']}")


@click.command()
@click.option("--all", "show_all", is_flag=True, help="Also settled promotions.")
@as_of_option
@json_option
@table_options
@click.pass_obj
def promotions(ctx, show_all, as_of, as_json, as_table, as_csv) -> None:
    """Promotions waiting for a commit or an approval."""
    style = row_style(as_json, as_table, as_csv)
    found = selfheal.promotions(all=show_all, as_of=_as_of(as_of), **ctx.db)
    if style == "json":
        emit_json(found)
        return
    rows = [{"promotion_id": p.promotion_id, "deployment": p.deployment, "status": p.status, "fitness": p.fitness,
             "simulated": p.simulated, "config": p.config} for p in found]
    if style:
        emit_rows(rows, style)
        return
    for p in found:
        sim = " simulated" if p.simulated else ""
        click.echo(f"{p.promotion_id[:8]}  {p.deployment:<24} {p.status:<9} fitness {p.fitness:g}{sim}  "
                   f"{to_json(p.config)}")


@click.command()
@click.option("--status", type=click.Choice(["open", "archived"]), help="Only open, or only archived, intents.")
@as_of_option
@json_option
@table_options
@click.pass_obj
def intents(ctx, status, as_of, as_json, as_table, as_csv) -> None:
    """Intents and how each ended."""
    style = row_style(as_json, as_table, as_csv)
    found = selfheal.intents(status=status, as_of=_as_of(as_of), **ctx.db)
    if style == "json":
        emit_json(found)
        return
    rows = [{"raised_at": show_time(i.raised_at), "intent_id": i.intent_id, "deployment": i.deployment,
             "kind": i.kind, "action": i.action, "outcome": i.outcome or i.status, "repeats": i.repeats} for i in found]
    if style:
        emit_rows(rows, style)
        return
    for i, row in zip(found, rows):
        click.echo(f"{row['raised_at']}  {i.intent_id[:8]}  {i.deployment:<24} {i.kind:<38} {i.action:<5} "
                   f"{row['outcome']}" + (f" (+{i.repeats} repeats)" if i.repeats else ""))


@click.command()
@click.argument("run_id")
@as_of_option
@json_option
@click.option("--svg", "svg_file", type=AFile(writable=True), default=None, metavar="FILE",
              help="Also draw the run as a timeline into FILE (SVG; `-`: standard output, instead of the chain).")
@click.pass_obj
def show(ctx, run_id, as_of, as_json, svg_file) -> None:
    """The causal chain of a run, from incident to outcome (RUN_ID: the id or a prefix of it)."""
    if svg_file is not None:
        picture = selfheal.run_picture(run_id, as_of=_as_of(as_of), **ctx.db)
        try:
            with click.open_file(svg_file, "w", encoding="utf-8", atomic=svg_file != "-") as out:
                out.write(picture)
        except OSError as exc:  # named as given, not as click's hidden temp file beside it
            raise OSError(exc.errno, exc.strerror, svg_file) from None
        if svg_file == "-":
            return
    with selfheal.open_db(**ctx.db) as store:
        chain = selfheal.show(run_id, as_of=_as_of(as_of), db=store)
        if as_json:
            emit_json(chain)
            return
        by = f" on node {chain.run.node}" if chain.run.node else ""
        click.echo(f"run {chain.run.run_id} ({chain.run.deployment}){by}: {chain.run.status}; "
                   f"incident {chain.run.correlation_id}")
        for item in chain.chain:
            click.echo("  " * item.depth + timeline_line(store.get(item.event_id)))


def register(group: click.Group) -> None:
    for command in (diagnose, observe, history, state, promotions, intents, show):
        group.add_command(command)
