"""The healing loop, declared once: who reacts to what, and what each records.

`LOOP` lists the handlers in the order the runner offers them each event; every handler
class declares its subscriptions and its outputs as event classes (handlers.runtime), so
this module is the one place the flow is read from: `handlers()` builds the loop, replay
builds it too (leaving out the activities that reach production), the README's loop table
is `table()`, and tests/architecture/test_flow.py
checks that every subscription names a real event and every recorded event is consumed,
an input, or declared terminal here with the reason.
"""
from __future__ import annotations

from selfheal.handlers.alerting import DeliverAlert, RaiseAlert
from selfheal.handlers.baseline import CommitPromotion, ReloadAndVerify, RollBackUnhealthy, WriteConfig
from selfheal.handlers.canary import RunCanary, StartCanary
from selfheal.handlers.gate import Gate
from selfheal.handlers.intents import RaiseIntent
from selfheal.handlers.observe import ObserveIncident
from selfheal.handlers.ports import DeploymentEdges
from selfheal.handlers.predict import PredictCanary
from selfheal.handlers.preflight import Preflight
from selfheal.handlers.runtime import Activity, Handler
from selfheal.handlers.scoring import ScoreCanary
from selfheal.handlers.tournament import Tournament
from selfheal.schemas import events as ev
from selfheal.schemas.config import Settings

LOOP: tuple[type[Handler], ...] = (
    ObserveIncident, RaiseIntent, Gate, Tournament, Preflight, StartCanary, PredictCanary, RunCanary, ScoreCanary,
    CommitPromotion, WriteConfig, ReloadAndVerify, RollBackUnhealthy, RaiseAlert, DeliverAlert,
)

#: events recorded from outside the loop, and by what
INPUTS: dict[type, str] = {
    ev.IncidentCaptured: "`observe`, `heal`, the live watchers (the canary activity records canary logs too)",
    ev.BaselineImported: "the first incident of a deployment, or `baseline import`",
    ev.PromotionApproved: "`approve` (a person, prod mode)",
    ev.PromotionRejected: "`reject` (a person, prod mode)",
    ev.PromotionLapsed: "`run` when an approval waited past its TTL",
    ev.RuleSetProposed: "`rules propose`",
    ev.RuleSetShadowed: "`rules shadow`",
    ev.RuleSetApproved: "`rules approve`",
    ev.RuleSetActivated: "`rules promote`",
    ev.VerdictRecorded: "`verdict` (a person labels an incident)",
    ev.IncidentForgotten: "`forget` (a person destroys the key of an incident's sealed text)",
    ev.RetryForced: "`heal --force` (a person retries a failure the dedupe window would fold)",
}

#: recorded by the loop and read only by projections and people: the chain ends there
TERMINAL: dict[type, str] = {
    ev.IncidentUnmatched: "no rule explains the incident; kept for replay through future rules",
    ev.IntentDeduplicated: "folded into the intent already raised",
    ev.IntentArchived: "every intent ends archived with its outcome",
    ev.RunRequested: "the gate's record of the mode a run was asked under (rate limit, audit)",
    ev.RunRefused: "the rate limit's answer, with the next allowed time",
    ev.RunFinished: "the run's outcome (history, rate limit)",
    ev.CanaryLaunched: "the canary's process, recorded while it runs, so a restart can reap it",
    ev.CanaryPredicted: "the calibrated predictor's expectation, beside the canary's measurement",
    ev.CanaryOrphanReaped: "a process a crashed selfheal left behind, stopped",
    ev.PromotionNotCommitted: "simulated, or no config file: the promotion stays a proposal",
    ev.BaselineCommitted: "the new baseline version (its reload is requested beside it)",
    ev.AlertDelivered: "each sink's answer, every attempt",
}


def handlers(settings: Settings, deployments: dict[str, DeploymentEdges], mode: str,
             node: str = "") -> list[Handler]:
    """The loop's handlers, configured, in LOOP's order; `node` names this fleet member in the
    runs its gate records."""
    made: dict[type, Handler] = {
        ObserveIncident: ObserveIncident(deployments, settings.observer.safety_buffer),
        RaiseIntent: RaiseIntent(deployments, settings.observer.dedupe_window_minutes, settings.tournament.max_changes),
        Gate: Gate(mode, settings.rate_limit, node),
        Tournament: Tournament(deployments, settings.tournament.max_candidates, settings.tournament.max_changes,
                               settings.observer.safety_buffer),
        Preflight: Preflight(deployments, settings.preflight.margin_gib),
        StartCanary: StartCanary(deployments),
        PredictCanary: PredictCanary(deployments),
        RunCanary: RunCanary(deployments),
        ScoreCanary: ScoreCanary(settings.preflight.margin_gib),
        CommitPromotion: CommitPromotion(deployments),
        WriteConfig: WriteConfig(deployments),
        ReloadAndVerify: ReloadAndVerify(deployments),
        RollBackUnhealthy: RollBackUnhealthy(),
        RaiseAlert: RaiseAlert(),
        DeliverAlert: DeliverAlert(deployments, settings.alerts.group_minutes),
    }
    return [made[cls] for cls in LOOP]


def _names(classes) -> str:
    return ", ".join(f"`{c.__name__}`" for c in classes)


def table() -> str:
    """The README's loop table, from the declarations."""
    rows = ["| handler | kind | reacts to | records | what it does |", "|---|---|---|---|---|"]
    for cls in LOOP:
        if issubclass(cls, Activity):
            kind = f"activity (`{cls.port}`{'' if cls.replayable else ', never replayed'})"
        else:
            kind = "reactor"
        what = (cls.__doc__ or "").strip().splitlines()[0]
        rows.append(f"| `{cls.name}` | {kind} | {_names(cls.subscribes_to)} | {_names(cls.emits)} | {what} |")
    return "\n".join(rows)
