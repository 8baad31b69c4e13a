"""Commands of stage 7: baseline, approve, reject, alerts, supervise."""
from __future__ import annotations

import click

import selfheal
from selfheal.cli.inputs import AFile, check_deployment_name, waiting_promotion
from selfheal.cli.loop_commands import as_of_option, check_deployment, json_option
from selfheal.cli.output import as_of as _as_of, emit_json, emit_rows, row_style, show_time, table_options, to_json


@click.command()
@click.argument("words", nargs=-1, metavar="[DEPLOYMENT] | import DEPLOYMENT")
@click.option("--file", "path", type=AFile(),
              help="With import: the YAML to record (default: the deployment's config_file).")
@as_of_option
@json_option
@click.pass_obj
def baseline(ctx, words, path, as_of, as_json) -> None:
    """The known-good configuration of each deployment and its history; `baseline import
    DEPLOYMENT` records the YAML a deployment runs now as its version 1."""
    if words and words[0] == "import":
        if len(words) != 2:
            raise click.UsageError("usage: selfheal baseline import DEPLOYMENT [--file YAML]")
        check_deployment_name(ctx.settings, words[1], "DEPLOYMENT")
        imported = selfheal.baseline_import(words[1], file=path, config=ctx.config_path, **ctx.db)
        if as_json:
            emit_json(imported)
        else:
            click.echo(f"{imported.deployment}: baseline v1 from {imported.source}: {to_json(imported.config)}")
        return
    if len(words) > 1:
        raise click.UsageError("usage: selfheal baseline [DEPLOYMENT]")
    found = selfheal.baseline(words[0] if words else None, as_of=_as_of(as_of), **ctx.db)
    check_deployment(ctx, words[0] if words else None, bool(found), "DEPLOYMENT")
    if as_json:
        emit_json(found)
        return
    for name, versions in found.items():
        current = versions[-1]
        click.echo(f"{name}: v{current.version} {to_json(current.config)}")
        for v in versions:
            verified = {True: "verified", False: "FAILED verification", None: ""}[v.verified]
            click.echo(f"  v{v.version}  {show_time(v.at)}  {v.source:<28} {verified}".rstrip())


@click.command()
@click.argument("promotion_id")
@click.option("--by", required=True, help="Who approves (recorded).")
@click.option("--note", default="", help="Why (recorded).")
@json_option
@click.pass_obj
def approve(ctx, promotion_id, by, note, as_json) -> None:
    """Approve a waiting promotion (prod mode); the commit follows on the next `selfheal run`."""
    promotion_id = waiting_promotion(promotion_id, ctx.db, "approve")  # none, or several: a usage error
    approved = selfheal.approve(promotion_id, by=by, note=note, config=ctx.config_path, **ctx.db)
    if as_json:
        emit_json(approved)
    else:
        click.echo(f"approved {approved.promotion_id} by {by}; evidence {approved.evidence_hash}; "
                   f"valid until {show_time(approved.expires_at)}")


@click.command()
@click.argument("promotion_id")
@click.option("--by", required=True, help="Who rejects (recorded).")
@click.option("--note", default="", help="Why (recorded).")
@json_option
@click.pass_obj
def reject(ctx, promotion_id, by, note, as_json) -> None:
    """Reject a waiting promotion: nothing will be written."""
    promotion_id = waiting_promotion(promotion_id, ctx.db, "reject")  # none, or several: a usage error
    rejected = selfheal.reject(promotion_id, by=by, note=note, **ctx.db)
    if as_json:
        emit_json(rejected)
    else:
        click.echo(f"rejected {rejected.promotion_id} by {by}")


@click.command()
@click.option("--deployment", help="Only this deployment's alerts.")
@as_of_option
@json_option
@table_options
@click.pass_obj
def alerts(ctx, deployment, as_of, as_json, as_table, as_csv) -> None:
    """Every alert raised, with its evidence and where it was delivered."""
    style = row_style(as_json, as_table, as_csv)
    found = selfheal.alerts(deployment=deployment, as_of=_as_of(as_of), **ctx.db)
    check_deployment(ctx, deployment, bool(found))
    if style == "json":
        emit_json(found)
        return
    rows = [{"raised_at": show_time(a.raised_at), "deployment": a.deployment, "kind": a.kind, "summary": a.summary,
             "deliveries": ", ".join(f"{d['sink']} {'ok' if d['ok'] else 'FAILED'} x{d['count']}"
                                     for d in a.deliveries) or "held"} for a in found]
    if style:
        emit_rows(rows, style)
        return
    for row in rows:
        click.echo(f"{row['raised_at']}  {row['deployment']:<20} {row['kind']:<20} {row['summary']}  "
                   f"[{row['deliveries']}]")


@click.command()
@click.option("--deployment", help="Which deployment's vLLM to run.")
@click.option("--pidfile", type=AFile(), help="Write selfheal's pid here (for reload = signal).")
@click.pass_obj
def supervise(ctx, deployment, pidfile) -> None:
    """Run the deployment's vLLM from its baseline YAML; restart it on SIGHUP."""
    check_deployment_name(ctx.settings, deployment)
    selfheal.supervise(deployment, pidfile=pidfile, report=lambda line: click.echo(f"supervise {line}"),
                       config=ctx.config_path)


def register(group: click.Group) -> None:
    for command in (baseline, approve, reject, alerts, supervise):
        group.add_command(command)
