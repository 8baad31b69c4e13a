"""Commands of rule evolution and replay: rules (list, test, propose, shadow, approve,
promote), verdict, replay, export."""
from __future__ import annotations

import click

from selfheal.cli.loop_commands import _as_of, as_of_option, json_option
from selfheal.cli.output import emit_json, to_json
from selfheal.eventstore.recorder import system_clock as _now


@click.group()
def rules() -> None:
    """The observer's rules: what is active, and how a new version gets there."""


@rules.command("list")
@as_of_option
@json_option
@click.pass_obj
def rules_list(ctx, as_of, as_json) -> None:
    """The active version of every rule, and the history of rule sets."""
    from selfheal.handlers.observe import load_ruleset
    from selfheal.projections import view_as_of

    with ctx.store(create=True) as store:
        sets = view_as_of(store, None if as_of is None else store.as_of(_as_of(as_of)))["rulesets"]
    active = sets.active
    ruleset = load_ruleset(active.text if active else None)
    body = {"active": {"ruleset_id": active.ruleset_id if active else "builtin", "version": ruleset.version,
                       "rules": [{"id": r.id, "version": r.version, "kind": r.kind} for r in ruleset.rules]},
            "history": [{"ruleset_id": s.ruleset_id, "version": s.version, "source": s.source,
                         "proposed_at": s.proposed_at, "reports": s.reports, "approvals": s.approvals,
                         "activated_at": s.activated_at} for s in sets.by_id.values()]}
    if as_json:
        emit_json(body)
        return
    click.echo(f"active: {body['active']['ruleset_id']} ({ruleset.version}), {len(ruleset.rules)} rules")
    for r in body["active"]["rules"]:
        click.echo(f"  {r['id']:<44} v{r['version']}  {r['kind']}")
    for s in body["history"]:
        state = "active" if active and s["ruleset_id"] == active.ruleset_id else (
            "activated before" if s["activated_at"] else "proposed")
        click.echo(f"{s['ruleset_id'][:19]}  {s['version']:<16} {state:<16} {len(s['reports'])} reports  {s['source']}")


@rules.command("test")
@click.argument("rules_file", type=click.Path(dir_okay=False, exists=True))
@click.argument("log_file")
@json_option
def rules_test(rules_file, log_file, as_json) -> None:
    """What RULES_FILE finds in LOG_FILE (the log store is not touched)."""
    from pathlib import Path

    from selfheal.handlers.loop import read_input
    from selfheal.handlers.observe import load_ruleset
    from selfheal.handlers.observer import format_diagnosis

    ruleset = load_ruleset(Path(rules_file).read_text(encoding="utf-8"), rules_file)
    text, _ = read_input(log_file)
    diagnosis = ruleset.diagnose(text)
    emit_json(diagnosis) if as_json else click.echo(format_diagnosis(diagnosis))


@rules.command("propose")
@click.argument("rules_file", type=click.Path(dir_okay=False, exists=True))
@json_option
@click.pass_obj
def rules_propose(ctx, rules_file, as_json) -> None:
    """Record RULES_FILE as a candidate rule set."""
    from selfheal.handlers import rules_lifecycle

    with ctx.store(create=True) as store:
        proposed = rules_lifecycle.propose(store, rules_file, _now())
    if as_json:
        emit_json({"ruleset_id": proposed.ruleset_id, "version": proposed.version, "source": proposed.source})
    else:
        click.echo(f"proposed {proposed.ruleset_id} ({proposed.version})")


@rules.command("shadow")
@click.argument("candidate")
@json_option
@click.pass_obj
def rules_shadow(ctx, candidate, as_json) -> None:
    """Replay every captured incident through CANDIDATE and the active rules; record the report."""
    from selfheal.handlers import rules_lifecycle

    with ctx.store() as store:
        report = rules_lifecycle.shadow(store, candidate, _now(), ctx.settings.observer.safety_buffer)
    if as_json:
        emit_json(report)
        return
    pr = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
    click.echo(f"{report.incidents} incidents: {report.agreements} agree, {len(report.disagreements)} differ; "
               f"precision {pr(report.precision)}, recall {pr(report.recall)} over {report.labelled} verdicts; "
               f"report {report.report_hash}")
    for d in report.disagreements:
        click.echo(f"  {d['incident_id'][:8]}: active {d['active'] or 'none'} | candidate {d['candidate'] or 'none'}")


@rules.command("approve")
@click.argument("candidate")
@click.option("--by", required=True)
@click.option("--note", default="")
@click.pass_obj
def rules_approve(ctx, candidate, by, note) -> None:
    """Approve CANDIDATE's latest shadow report (needed to promote in prod mode)."""
    from selfheal.handlers import rules_lifecycle

    with ctx.store() as store:
        approved = rules_lifecycle.approve(store, candidate, by, _now(), note)
    click.echo(f"approved report {approved.report_hash} of {approved.ruleset_id} by {by}")


@rules.command("promote")
@click.argument("candidate")
@click.option("--by", required=True)
@click.pass_obj
def rules_promote(ctx, candidate, by) -> None:
    """Make CANDIDATE the active rule set (needs a shadow report; in prod, its approval)."""
    from selfheal.handlers import rules_lifecycle

    with ctx.store() as store:
        activated = rules_lifecycle.promote(store, ctx.settings, candidate, by, _now())
    click.echo(f"active rules: {activated.ruleset_id} ({activated.version}), by {by}")


@click.command()
@click.argument("incident_id")
@click.option("--kind", required=True, help="A finding kind, or none.")
@click.option("--by", required=True)
@click.option("--note", default="")
@click.pass_obj
def verdict(ctx, incident_id, kind, by, note) -> None:
    """Record a person's judgement of an incident (the labelled corpus for rules)."""
    from selfheal.handlers import rules_lifecycle

    with ctx.store() as store:
        recorded = rules_lifecycle.verdict(store, incident_id, kind, by, _now(), note)
    click.echo(f"incident {recorded.incident_id}: {recorded.kind} (by {by})")


@click.command()
@click.option("--since", help="Incidents that occurred at or after this ISO-8601 time.")
@click.option("--until", help="Incidents that occurred before this ISO-8601 time.")
@click.option("--rules", "candidate", help="Replay through this proposed rule set instead of the active rules.")
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE", help="What if: e.g. rate_limit.runs=5.")
@click.option("--mode", type=click.Choice(["dev", "prod", "disabled"]))
@click.option("--bundle", type=click.Path(dir_okay=False, exists=True), help="Replay an exported bundle instead.")
@json_option
@click.pass_obj
def replay(ctx, since, until, candidate, assignments, mode, bundle, as_json) -> None:
    """Replay captured incidents through the loop in a scratch store; report what differs."""
    from pathlib import Path

    from selfheal.edges import deployments
    from selfheal.handlers import replay as replaying
    from selfheal.handlers.observe import load_ruleset
    from selfheal.eventstore.recorder import parse_utc, utc_iso

    since = utc_iso(parse_utc(since)) if since else None
    until = utc_iso(parse_utc(until)) if until else None
    if bundle:
        settings, store = replaying.import_bundle(Path(bundle).read_text(encoding="utf-8").splitlines(), bundle)
    else:
        settings, store = ctx.settings, ctx.store()
    with store:
        settings = replaying.apply_overrides(settings, assignments, mode)
        ruleset = None
        if candidate:
            from selfheal.handlers.rules_lifecycle import _candidate

            _, summary = _candidate(store, candidate)
            ruleset = load_ruleset(summary.text, summary.source)
        report = replaying.replay(store, settings, deployments.build(settings), since=since, until=until,
                                  ruleset=ruleset, mode=mode)
    if as_json:
        emit_json(report)
        return
    click.echo(f"replayed {report.incidents} incidents; {report.differing} decided differently; "
               f"canaries answered: {to_json(report.canary_answers)}")
    for r in report.results:
        mark = "DIFFERS" if r.differs else "same   "
        click.echo(f"{mark} {r.occurred_at}  {r.incident_id[:8]}  {r.deployment}: {r.replayed['outcome']}")
        for key in r.differs:
            click.echo(f"          {key}: {r.original[key]}  ->  {r.replayed[key]}")


@click.command()
@click.argument("incident_id")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the bundle here (default: stdout).")
@click.pass_obj
def export(ctx, incident_id, output) -> None:
    """Write an incident and its whole chain as a portable bundle (JSON Lines)."""
    from selfheal.handlers.replay import export_bundle

    with ctx.store() as store:
        lines = export_bundle(store, ctx.settings, incident_id)
    text = "\n".join(lines) + "\n"
    if output:
        from pathlib import Path

        Path(output).write_text(text, encoding="utf-8")
        click.echo(f"{len(lines) - 1} events written to {output}")
    else:
        click.echo(text, nl=False)


def register(group: click.Group) -> None:
    for command in (rules, verdict, replay, export):
        group.add_command(command)
