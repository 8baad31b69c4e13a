"""Candidates: the seed fix first; if it fails, a tournament around the failure; if it
passes, at most one refinement when the predictor expects clearly better.

A candidate changes at most `max_changes` parameters of the production configuration and
stays inside the actuator bounds. After each failure the next candidate is chosen again
with everything learnt so far: the failure kinds the run's canaries showed widen the
actuators searched, configurations known to fail in this environment are never tried
again, and the rest are ranked by the predictor, best first. The first candidate to pass
its canary wins; when none is left, or the tournament's budget is spent, the run escalates
with every candidate and the reason each failed.

A passing seed is not taken blindly: where the predictor gives fitness (the simulator
does; a real deployment's does not, and then the seed wins at once), the same pool is
ranked, and if its best beats the seed's predicted fitness by `REFINE_MARGIN`, that one
config gets a canary too. The run then promotes whichever of the two passed with the
higher measured fitness; a refinement rejected in pre-flight or failing its canary leaves
the seed to be promoted.

A real deployment has no predictor of its own: its candidates are predicted by the calibration
from what vLLM printed for it (handlers/predict.CalibratedPredictor), which says whether a config
starts but gives no fitness. The search then follows the failure (models/directed.py), tries
first what is predicted to start, never what is predicted not to, and spends no canary on a
seed predicted not to start when something else is predicted to. A search that finds nothing
escalates with the retry hint an intent's alert carries (projections/intents.retry_hint).
"""
from __future__ import annotations

import hashlib

import msgspec

from selfheal.eventstore.store import Recorded, derived_id
from selfheal.handlers.intents import bound_seed
from selfheal.handlers.models.directed import (
    beyond, deployment_kv_size, describe, directed, directions_of, held, order_key, powerless, stuck, ways_of,
)
from selfheal.handlers.observe import load_ruleset
from selfheal.handlers.models.search import REFINE_MARGIN, climb, neighbourhood, relevant_actuators
from selfheal.handlers.ports import NoPredictor
from selfheal.handlers.predict import CalibratedPredictor, own_or_calibrated
from selfheal.handlers.runtime import Emitted, Reactor
from selfheal.projections.base import View
from selfheal.projections.intents import retry_hint
from selfheal.projections.runs import CandidateSummary, RunSummary
from selfheal.schemas.events import (
    CandidateEvidence, CandidateProposed, CandidateScored, EscalationRaised, IntentArchived, PreflightRejected,
    PromotionProposed, RunFinished, RunStarted,
)
from selfheal.schemas.serving import TUNABLE, ServingConfig

def evidence(run: RunSummary) -> list[CandidateEvidence]:
    return [CandidateEvidence(candidate_id=c.candidate_id, config=c.config, outcome=c.outcome,
                              failure_kind=c.canary.failure_kind if c.canary else None, fitness=c.fitness)
            for c in run.candidates]


def evidence_hash(run: RunSummary) -> str:
    body = msgspec.json.encode([evidence(run), [c.canary for c in run.candidates]])
    return "sha256:" + hashlib.sha256(body).hexdigest()


class Tournament(Reactor):
    """The seed first, then the best predicted untried config (at most one refinement after a passing seed); promote the fittest or escalate; a rejection for an unreadable inventory ends the run."""

    name = "tournament"
    subscribes_to = (RunStarted, PreflightRejected, CandidateScored)
    emits = (CandidateProposed, PromotionProposed, EscalationRaised, RunFinished, IntentArchived)

    def __init__(self, deployments: dict, max_candidates: int, max_changes: int, safety_buffer: float = 0.10):
        self.deployments = deployments
        self.max_candidates = max_candidates
        self.max_changes = max_changes
        self.safety_buffer = safety_buffer
        self._predictions: dict[tuple, object] = {}
        self._rulesets: dict[str, object] = {}
        self._calibrated: tuple[tuple, object] | None = None

    def react(self, event: Recorded, view: View) -> Emitted:
        e = event.event
        run = view["runs"].by_id.get(e.run_id)
        if run is None or run.status != "running":
            return ()
        if run.deployment not in self.deployments:
            # removed from the config while its run was open: close the run with the reason, so
            # that it neither fails every `run` nor holds the deployment's rate limit forever
            return self._escalate(event, run, view, f"deployment {run.deployment!r} is no longer configured; "
                                                    "the run is closed without a promotion")
        if event.type == "PreflightRejected" and e.inventory_unavailable:
            return self._end_blind(event, run, view, e.reason)
        if event.type == "RunStarted":
            intent = view["intents"].by_id[e.intent_id]
            seed = run.current.changed(**intent.seed_fix)
            # no seed: the fix lay outside the bounds and the intent found something inside
            # them predicted to work (handlers/intents.py); the tournament searches from here
            if intent.seed_fix and not view["runs"].known_failure(run.environment, seed):
                instead = self._instead_of_seed(event, run, view, seed)
                return instead or [self._propose(event, run, view, seed, "seed", 0, "the observer's seed fix")]
            return self._next(event, run, view)
        candidate = run.candidate(e.candidate_id)
        if candidate is not None and candidate.origin == "refine":
            # the refinement is settled (rejected in pre-flight, failed or passed its canary), and a
            # refinement follows only a passing seed: promote the passing candidate measured fittest
            passing = [c for c in run.candidates if c.passed]
            return self._promote(event, run, max(passing, key=lambda c: (c.fitness or 0.0, -c.rank)))
        if event.type == "CandidateScored" and e.passed:
            if candidate.origin == "seed":
                refinement = self._refine(event, run, view, candidate)
                if refinement:
                    return refinement
            return self._promote(event, run, candidate)
        return self._next(event, run, view)

    def _predictor(self, run: RunSummary, view: View):
        """The deployment's own predictor (the simulator for a sim deployment); a real deployment
        has none (NoPredictor), and then the one calibrated from what vLLM printed for it so far
        (issue 15.5), built once per decision: a canary measured since changes it."""
        def calibrated() -> CalibratedPredictor:
            at = (run.run_id, id(view), view.position)
            if self._calibrated is None or self._calibrated[0] != at:
                self._calibrated = (at, CalibratedPredictor.from_view(view, run.run_id))
            return self._calibrated[1]
        return own_or_calibrated(self.deployments[run.deployment].predictor, view, calibrated)

    def _predict(self, run: RunSummary, view: View, config: ServingConfig):
        predictor = self._predictor(run, view)
        if isinstance(predictor, CalibratedPredictor):
            return predictor.predict(config, run.current)  # a few sums: not worth keeping
        key = (run.deployment, config, run.current)
        if key not in self._predictions:
            self._predictions[key] = predictor.predict(config, run.current)
        return self._predictions[key]

    def _propose(self, event: Recorded, run: RunSummary, view: View, config: ServingConfig, origin: str, rank: int,
                 reason: str) -> tuple:
        prediction = self._predict(run, view, config)
        changes = {k: [old, new] for k, (old, new) in run.current.diff(config).items()}
        proposed = CandidateProposed(run_id=run.run_id, candidate_id=derived_id(run.run_id, "candidate", str(rank)),
                                     deployment=run.deployment, config=config, changes=changes, origin=origin,
                                     rank=rank, predicted=prediction.fitness, reason=reason)
        return (f"run-{run.run_id}", event.follow(proposed, f"candidate-{rank}"))

    def _kinds(self, run: RunSummary, view: View) -> list[str]:
        """The intent's failure kind, then every kind the run's canaries showed."""
        intent = view["intents"].by_id[run.intent_id]
        return [intent.kind] + [c.canary.failure_kind for c in run.candidates
                                if c.canary is not None and c.canary.failure_kind]

    def _lost(self, run: RunSummary, kinds: list[str]) -> dict[str, str]:
        """The actuators a setting of the deployment makes powerless against `kinds`, and why."""
        return powerless(kinds, deployment_kv_size(self.deployments[run.deployment]))

    def _anchor(self, run: RunSummary) -> ServingConfig:
        """What the search starts nearest to: the seed that was tried, else production."""
        seeds = [c.config for c in run.candidates if c.origin == "seed"]
        return seeds[0] if seeds else run.current

    def _pool(self, run: RunSummary, view: View, kinds: list[str]) -> list[tuple[ServingConfig, float | None]]:
        """Untried configs around `kinds`, neither known nor predicted to fail, with their
        predicted fitness: best predicted first, then fewest changes, then nearest the seed
        and TUNABLE's order (models/directed.order_key), never the JSON's byte order."""
        edges = self.deployments[run.deployment]
        tried = {c.config for c in run.candidates}
        lost, anchor = self._lost(run, kinds), self._anchor(run)
        names = [n for n in relevant_actuators(kinds) if n not in lost]
        ranked = []
        for config in neighbourhood(run.current, names, edges.bounds, self.max_changes):
            if config in tried or view["runs"].known_failure(run.environment, config):
                continue
            prediction = self._predict(run, view, config)
            if prediction.passes is False:
                continue
            fitness = prediction.fitness if prediction.fitness is not None else float("-inf")
            changed = len(run.current.diff(config))
            ranked.append((-fitness, changed, order_key(config, anchor, run.current, edges.bounds), config,
                           prediction.fitness))
        ranked.sort(key=lambda item: item[:3])
        return [(item[3], item[4]) for item in ranked]

    def _blind(self, run: RunSummary, view: View) -> bool:
        """No fitness to rank by (a real deployment, whose own predictor is NoPredictor): the search
        follows the failure, ranked by the calibrated prediction where it says whether a config
        starts. A predictor that says a failing production fails (the simulator) is not blind."""
        if isinstance(self.deployments[run.deployment].predictor, NoPredictor):
            return True
        prediction = self._predict(run, view, run.current)
        return prediction.passes is None and prediction.fitness is None

    def _canary_finding(self, run: RunSummary, view: View, candidate: CandidateSummary):
        """What the active rules read in a failed canary's recorded error, as if it were an
        incident of that config: vLLM's own numbers for the next step (its estimated length)."""
        if candidate.canary is None or not candidate.canary.excerpt:
            return None
        active = view["rulesets"].active if "rulesets" in view.states else None
        key = active.ruleset_id if active else "builtin"
        if key not in self._rulesets:
            self._rulesets[key] = load_ruleset(active.text if active else None, f"ruleset {key}")
        diagnosis = self._rulesets[key].diagnose(candidate.canary.excerpt, current=candidate.config,
                                                 bounds=self.deployments[run.deployment].bounds,
                                                 safety_buffer=self.safety_buffer)
        return diagnosis.primary

    def _options(self, run: RunSummary, view: View, kinds: list[str]) -> tuple[tuple | None, list]:
        """What following the failure offers (models/directed.py): the best, and what the
        calibrated prediction says each will not start. Every failure, production's and each
        canary's, names ways to move from the config that failed; a candidate moves none of them
        back and goes further along one of each. First the last canary's own finding (vLLM's
        numbers, bounded as a seed is), then the configs nearest the seed. Where the calibration
        says whether a config starts (a real deployment, issue 15.5), those predicted to start go
        first and those predicted not to are left out. Returns the best (config, why, predicted to
        start), None where nothing is left, and [(config, failure kind)] of those left out."""
        edges = self.deployments[run.deployment]
        intent = view["intents"].by_id[run.intent_id]
        lost, anchor = self._lost(run, kinds), self._anchor(run)
        failures = [(run.current, ways_of(intent.kind, intent.seed_fix, run.current, lost))]
        latest = None
        for c in run.candidates:
            if c.passed is False and c.canary is not None:
                finding = self._canary_finding(run, view, c)
                direction = finding.fix_direction if finding is not None else {}
                failures.append((c.config, ways_of(c.canary.failure_kind or "", {}, c.config, lost, direction)))
                latest = (c, finding)
        tried = {c.config for c in run.candidates}

        def skip(config: ServingConfig) -> bool:
            return config in tried or view["runs"].known_failure(run.environment, config)

        named, still = ", ".join(dict.fromkeys(kinds)), held(lost)
        options = []
        if latest is not None and latest[1] is not None and latest[1].action == "tune":
            failed, finding = latest
            config, _ = bound_seed(failed.config, finding.fix, finding.fix_direction, edges.bounds, len(TUNABLE), lost)
            if (config is not None and len(run.current.diff(config)) <= self.max_changes and not skip(config)
                    and all(beyond(config, f) for f in failures)):
                options.append((config, f"the last canary's own failure ({finding.kind}, {finding.rule}) names "
                                        f"{describe(config, failed.config)}{still}"))
        pool = [c for c in directed(run.current, anchor, failures, edges.bounds, self.max_changes, skip)
                if not options or c != options[0][0]]
        options += [(c, None) for c in pool]
        predicted = [(config, why, self._predict(run, view, config)) for config, why in options]
        # a stable sort: nearest first among those predicted to start, then among the undecided
        ranked = sorted(((c, w, p) for c, w, p in predicted if p.passes is not False),
                        key=lambda x: x[2].passes is not True)
        doomed = [(c, p.failure_kind or "a failed start") for c, _, p in predicted if p.passes is False]
        if not ranked:
            return None, doomed
        config, why, prediction = ranked[0]
        why = ("predicted to start (calibrated from vLLM's printed numbers): " if prediction.passes
               else "no prediction: ") + (why or f"the nearest of {len(pool)} untried configurations that move the "
                                                 f"way {named} names ({describe(config, run.current)}){still}")
        if doomed:
            why += f"; {len(doomed)} predicted not to start were left out"
        return (config, why, prediction.passes), doomed

    def _follow(self, event: Recorded, run: RunSummary, view: View, kinds: list[str]) -> Emitted:
        """Without a fitness to rank by: the first of `_options`; none left escalates, naming
        what holds each actuator, or what each config was predicted to fail with."""
        best, doomed = self._options(run, view, kinds)
        if best is not None:
            config, reason, _ = best
            return [self._propose(event, run, view, config, "tournament", len(run.candidates), reason)]
        named = ", ".join(dict.fromkeys(kinds))
        lost = self._lost(run, kinds)
        if doomed:
            # what holds an actuator still (an explicit KV size) is said here too (issue 15.3)
            first = "; ".join(f"{describe(c, run.current)} predicted {kind}" for c, kind in doomed[:3])
            return self._give_up(event, run, view, f"every one of the {len(doomed)} untried configurations inside "
                                                   f"the bounds that move the way {named} names is predicted not "
                                                   f"to start, from vLLM's printed numbers: {first}"
                                                   + held(lost))
        intent = view["intents"].by_id[run.intent_id]
        ways = directions_of(run.current, intent.seed_fix, kinds)
        why = stuck(self._anchor(run), {n: w for n, w in ways.items() if n not in lost},
                    self.deployments[run.deployment].bounds, lost)
        return self._give_up(event, run, view, f"nothing untried inside the bounds moves the way {named} "
                                               f"names further than what failed" + (f": {why}" if why else ""))

    def _instead_of_seed(self, event: Recorded, run: RunSummary, view: View, seed: ServingConfig) -> Emitted:
        """A real deployment's seed that the calibration says cannot start is not run where a
        config the failure names is predicted to start: the tournament starts with that one, and
        its reason says why (each canary is a cold vLLM start). Else nothing: the seed runs."""
        prediction = self._predict(run, view, seed)
        if prediction.passes is not False or not self._blind(run, view):
            return ()
        best, _ = self._options(run, view, self._kinds(run, view))
        if best is None or best[2] is not True:
            return ()
        config, reason, _ = best
        reason = (f"the seed fix ({describe(seed, run.current)}) is predicted not to start "
                  f"({prediction.failure_kind or 'a failed start'}), from vLLM's printed numbers, so it is not run; "
                  + reason)
        return [self._propose(event, run, view, config, "tournament", 0, reason)]

    @staticmethod
    def _survey(pool: list, kinds: list[str]) -> str:
        return f"best predicted of {len(pool)} untried configurations around {', '.join(dict.fromkeys(kinds))}"

    def _next(self, event: Recorded, run: RunSummary, view: View) -> Emitted:
        played = [c for c in run.candidates if c.origin == "tournament"]
        if len(played) >= self.max_candidates:
            return self._give_up(event, run, view, f"tournament budget of {self.max_candidates} candidates spent")
        kinds = self._kinds(run, view)
        if self._blind(run, view):
            return self._follow(event, run, view, kinds)
        pool = self._pool(run, view, kinds)
        if not pool:
            return self._give_up(event, run, view, "no untried configuration inside the bounds is predicted to work")
        return [self._propose(event, run, view, pool[0][0], "tournament", len(run.candidates),
                              self._survey(pool, kinds))]

    def _refine(self, event: Recorded, run: RunSummary, view: View, seed: CandidateSummary) -> Emitted:
        """One more candidate after a passing seed, when the predictor expects clearly better; else nothing."""
        if seed.predicted is None:
            return ()
        kinds = self._kinds(run, view)
        lost = self._lost(run, kinds)
        names = [n for n in relevant_actuators(kinds) if n not in lost]
        config, predicted, spent = self._climb(run, view, seed.config, seed.predicted, names)
        if config == seed.config or predicted < seed.predicted * REFINE_MARGIN:
            return ()
        reason = (f"the seed passed, but this is predicted at {predicted:g} against the seed's {seed.predicted:g}; "
                  f"best of {spent} predictions climbing from the seed along {', '.join(names)}, one and two at a time")
        return [self._propose(event, run, view, config, "refine", len(run.candidates), reason)]

    def _climb(self, run: RunSummary, view: View, start: ServingConfig, start_fitness: float,
               names: list[str]) -> tuple[ServingConfig, float, int]:
        """search.climb on the predictor, never onto a tried or known-failing config.
        Returns (best config, its predicted fitness, predictions made)."""
        edges, tried, spent = self.deployments[run.deployment], {c.config for c in run.candidates}, 0

        def fitness(config: ServingConfig) -> float:
            nonlocal spent
            if config in tried or view["runs"].known_failure(run.environment, config):
                return float("-inf")
            spent += (run.deployment, config, run.current) not in self._predictions
            prediction = self._predict(run, view, config)
            ok = prediction.passes is not False and prediction.fitness is not None
            return prediction.fitness if ok else float("-inf")

        best, best_fitness = climb(start, start_fitness, names, run.current, edges.bounds, self.max_changes,
                                   fitness, lambda: spent)
        return best, best_fitness, spent

    def _finish(self, event: Recorded, run: RunSummary, outcome: str, inventory_unavailable: bool = False) -> list:
        canaries = run.canaries
        finished = RunFinished(run_id=run.run_id, deployment=run.deployment, outcome=outcome,
                               succeeded=outcome == "promoted", canaries=canaries,
                               inventory_unavailable=inventory_unavailable)
        archived = IntentArchived(intent_id=run.intent_id, deployment=run.deployment, outcome=outcome,
                                  run_id=run.run_id)
        return [(f"run-{run.run_id}", event.follow(finished, "finished")),
                (f"intent-{run.intent_id}", event.follow(archived, "archived"))]

    def _escalate(self, event: Recorded, run: RunSummary, view: View, reason: str, retry: str = "",
                  inventory_unavailable: bool = False) -> Emitted:
        failures = "; ".join(f"{c.candidate_id[:8]} {c.outcome}" for c in run.candidates)
        full = f"{reason} ({len(run.candidates)} candidates: {failures})" if run.candidates else reason
        escalation = EscalationRaised(run_id=run.run_id, intent_id=run.intent_id, deployment=run.deployment,
                                      reason=full, candidates=evidence(run), retry=retry)
        return ([(f"run-{run.run_id}", event.follow(escalation, "escalation"))]
                + self._finish(event, run, "escalated", inventory_unavailable))

    def _give_up(self, event: Recorded, run: RunSummary, view: View, reason: str) -> Emitted:
        """The search found nothing (nothing passed, nothing inside the bounds): the escalation says,
        as an intent's alert does, until when a repeat folds into it and how to force a retry."""
        intent = view["intents"].by_id.get(run.intent_id)
        until = intent.dedupe_until if intent else None
        return self._escalate(event, run, view, reason, retry=retry_hint(run.intent_id, until))

    def _end_blind(self, event: Recorded, run: RunSummary, view: View, why: str) -> Emitted:
        """No blind runs (issue 15.6): an inventory that cannot be read (no NVML, no driver) would
        refuse every candidate for the same reason, so its first rejection ends the run, marked so
        that the rate limit counts it neither as a run nor as a failure (projections/rate_limit.py):
        nothing was tried, and the person who installs NVML may heal at once."""
        intent = view["intents"].by_id.get(run.intent_id)
        retry = retry_hint(run.intent_id, intent.dedupe_until if intent else None)
        reason = ("pre-flight cannot read the GPU inventory, so no candidate can be checked; the run ends "
                  f"without trying the others (not counted by the rate limit): {why}")
        return self._escalate(event, run, view, reason, retry=f"once the inventory reads: {retry}",
                              inventory_unavailable=True)

    def _promote(self, event: Recorded, run: RunSummary, winner: CandidateSummary) -> Emitted:
        promotion_id = derived_id(run.run_id, "promotion")
        promotion = PromotionProposed(
            promotion_id=promotion_id, run_id=run.run_id, deployment=run.deployment,
            candidate_id=winner.candidate_id, config=winner.config, previous=run.current,
            fitness=winner.fitness or 0.0, evidence_hash=evidence_hash(run), simulated=winner.simulated,
            requires_approval=run.mode == "prod")
        return [(f"promotion-{promotion_id}", event.follow(promotion, "promotion"))] + self._finish(event, run, "promoted")
