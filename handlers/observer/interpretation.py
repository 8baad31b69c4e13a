"""Hits (hits.py: one regex match each) folded into findings: in log order, the context each sets
(numbers, open regions, engine restarts) and the findings it makes (each made by finding.py, with
its seed fix: the rule's compiled fix program, fixes.py), into a `Diagnosis` (`Interpretation`).

engine.py finds the hits while the log is read and hands them here in log order.
"""
from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import msgspec

from selfheal.handlers.observer.endings import another_cause, foreign_traceback, logged
from selfheal.handlers.observer.expr import Env
from selfheal.handlers.observer.finding import make_finding, opener_text
from selfheal.handlers.observer.fixes import FixProgram
from selfheal.handlers.observer.hits import Hit, said, times
from selfheal.handlers.observer.spec import CONTEXT
from selfheal.schemas.actuators import ActuatorBounds
from selfheal.schemas.events import Finding  # the one Finding type: observations record it as is
from selfheal.schemas.serving import ServingConfig

if TYPE_CHECKING:
    from selfheal.handlers.observer.engine import Matcher

__all__ = ["CAUSE_LINES", "MAX_LISTED", "Diagnosis", "Finding", "Hit", "Interpretation", "Repeated", "interpret"]


class Repeated(msgspec.Struct, frozen=True, kw_only=True):
    """A finding seen more often than `Diagnosis.findings` lists it: `findings[index]` is its
    latest occurrence; `count` is how often it was seen in all, from `first_line` to `last_line`."""
    index: int
    count: int
    first_line: int
    last_line: int


class Diagnosis(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """`findings`: every finding in log order, except that one seen more than MAX_LISTED times
    is listed only at its first MAX_LISTED - 1 occurrences and its latest, and counted in
    `repeated` (left out when empty). `primary` is one of `findings`."""
    primary: Finding | None
    findings: list[Finding]
    repeated: list[Repeated] = []


#: a distinct finding seen more often than this is listed this many times: its first
#: occurrences and its latest; the rest are counted (Diagnosis.repeated). A log that repeats
#: one failure on every line then needs memory for the failure, not for every line
MAX_LISTED = 16
#: the kinds whose accounting compares the KV cache with max_model_len, which vLLM overstates
#: for a model whose layers do not all keep every token (sliding windows, Mamba)
COUNTED_AGAINST_MAX_MODEL_LEN = frozenset({"max_model_len_exceeds_kv_cache"})
#: distinct findings of `retried` rules held in one start attempt; past this many they are counted
#: at once (a log so full of retried allocations is no longer one that recovers quietly)
MAX_HELD_RETRIED = 256
#: findings of one kind this many lines apart in one attempt tell of one failure (Interpretation._with_cause)
CAUSE_LINES = 60
#: the namespaces of the rules that read PyTorch's own messages, its device plugins' included
#: (Ascend's torch_npu, Gaudi's bridge), which any program that uses them prints alike
#: (Interpretation._not_vllms)
PYTORCH = ("torch", "torch_npu", "habana")
#: fixes remembered by an Interpretation (it starts over when full)
REMEMBERED_FIXES = 256
#: a value a rule's `when` tests for (its expression language's known(name); not current.* or bounds.*)
_KNOWN = re.compile(r"\bknown\((\w+)\)")


class _Seen:
    __slots__ = ("count", "listed", "first_line", "latest", "latest_at")

    def __init__(self, first_line: int):
        self.count = self.listed = self.latest_at = 0
        self.first_line = first_line
        self.latest: Finding | None = None


def _identity(f: Finding) -> str:
    """What makes findings the same failure: all but where it was seen (line, evidence). As a
    repr, so that 1 and 1.0, or 0.0 and -0.0, are told apart as the JSON of the findings would."""
    return repr((f.kind, f.rule, f.rule_version, f.numbers, f.fix_direction, f.fix, f.action, f.note))


class Interpretation:
    """The hits of a log folded, in log order, into findings (`add` each hit, then `diagnosis()`).

    A finding that recurs is counted, not kept: memory grows with the distinct failures of a
    log, not with its length. The diagnosis is that of every occurrence kept: the primary
    finding is the most specific one (the latest on a tie) of the last start attempt that
    failed, or None when the server reported itself ready after every finding.
    """

    def __init__(self, current: ServingConfig | None, bounds: ActuatorBounds, buffer: float,
                 matchers: tuple[Matcher, ...] = ()):
        self.settings = (current, bounds, buffer)
        # rules that speak when the log ends inside a region (`cut_in`): the failure was not seen
        self.cut_rules = [m for m in matchers if m.rule.cut_in]
        self.streaks: dict[str, tuple[int, int]] = {}  # kind -> (matches in a row, line of the last)
        # kind -> the latest finding of a streak that has not reached its rule's `sustain`: told
        # at the log's end when the log shows nothing else (_unsustained)
        self.short: dict[str, tuple[int, Finding]] = {}
        self.sites: list[tuple[int, Finding]] = []  # raise-site findings of this attempt, held back
        # findings of a log cut inside a region, held back: (priority, finding, the region's opener)
        self.cuts: list[tuple[int, Finding, str]] = []
        # findings of `retried` rules (a warning the code retries after) in this start attempt, held
        # until it ends: identity -> [priority, first finding, occurrences, latest finding]
        self.retried: dict[str, list] = {}
        # what the context lines read said, with the line that first said it (a line a wrapper
        # mirrors says nothing more): a log cut in a phase shows more than its opener
        self.context_said: dict[tuple[str, str], int] = {}
        self.context: dict[str, tuple[float | int, Hit]] = {}
        self.regions: dict[str, Hit] = {}
        self.ready_after_last_finding = False
        # the hit of this attempt's latest finding when no phase re-read it (_reported_late)
        self.unphased: Hit | None = None
        self.seen: dict[str, _Seen] = {}
        self.listed: dict[int, Finding] = {}  # occurrence number -> finding, in log order
        # identity -> (priority, occurrence number of its latest) in the current start attempt,
        # and in the last one that had findings
        self.attempt: dict[str, tuple[int, int]] = {}
        self.failed: dict[str, tuple[int, int]] = {}
        self.occurrences = 0
        # the latest line of accounting that showed nothing wrong, and the one before it (a rule
        # may find on that line after another found it calm); the line of the latest finding
        # (`_withdraw_inferred`)
        self.calm_line = self.calm_before = self.finding_line = 0
        # the rules that read vLLM's accounting, not its errors (`_withdraw_inferred`), each with the
        # names its `when` needs known: where one is not, its silence compared nothing, and held nothing
        self.accounting_rules = _accounting_rules(matchers)
        self.fixes: dict[tuple, tuple[dict, str]] = {}

    def add(self, hit: Hit) -> None:
        rule = hit.matcher.rule
        if rule.kind == CONTEXT:
            if rule.within and rule.within not in self.regions:
                return  # it tells something only inside that phase
            if len(self.context_said) < 2:  # two tell a log from a quote: no more are kept
                self.context_said.setdefault(said(hit), hit.line)
            for mark in rule.marks:
                if mark == "reset":
                    self._release_retried()
                    self._release_cuts()
                    self._flush_sites()
                    self.unphased = None
                    self.context.clear()
                    self.regions.clear()
                    self.streaks.clear()
                    self.short.clear()
                    if self.attempt:
                        self.failed, self.attempt = self.attempt, {}
                elif mark == "ready":
                    self.retried.clear()  # the retries succeeded: the server came up
                    self._release_cuts()
                    self._flush_sites()
                    self.unphased = None
                    self.ready_after_last_finding = True
                    self.regions.clear()  # serving: every startup phase is over
                elif mark == "initialised":
                    self._withdraw_inferred()
                elif mark.startswith("open:"):
                    # opened by what happened inside another phase: from that phase's start, where
                    # what a cut log states after it is read for another cause
                    self.regions[mark[5:]] = self.regions[rule.within] if rule.within else hit
                    if self.unphased is not None and times(hit) > 1:
                        self._reported_late(mark[5:], hit)
                else:
                    self.regions.pop(mark[6:], None)
            for key, value in hit.numbers.items():
                self.context[key] = (value, hit)
            return
        if rule.cut_in and rule.cut_in not in self.regions:
            return  # the process died, but not in the phase this rule reads it in
        made = make_finding(hit, self.context, self.regions, self._fix, self._confidence(hit))
        # a streak is of a symptom, not of one rule: the rules of a kind that differ only in
        # the literal that selects their lines (a cache at 9x% and at 100%) count together
        if made is None:  # the rule's `when` is false here: a calm match ends a streak
            if rule.confidence == "inferred" and hit.line not in (self.finding_line, self.calm_line) and all(
                    key in hit.numbers or key in self.context for key in self.accounting_rules.get(rule.id, ())):
                # accounting that holds, on a line where nothing was found (so far: see _count)
                self.calm_before, self.calm_line = self.calm_line, hit.line
            if rule.sustain > 1:
                self.streaks.pop(rule.kind, None)
                self.short.pop(rule.kind, None)
            return
        if rule.sustain > 1:
            count, last = self.streaks.get(rule.kind, (0, hit.line))
            if rule.gap and hit.line - last > rule.gap:  # too far from the last: a new streak
                count = 0
            count += times(hit)
            self.streaks[rule.kind] = (count, hit.line)
            if count < rule.sustain:
                short = None if rule.alone == "silent" else make_finding(hit, self.context, self.regions,
                                                                         self._fix, "unsustained")
                if short is not None:
                    if rule.alone == "undirected":
                        short = (short[0], msgspec.structs.replace(short[1], fix_direction={}))
                    self.short[rule.kind] = short
                return
            self.short.pop(rule.kind, None)
        priority, finding = made
        if rule.retried:
            held = self.retried.get(_identity(finding))
            if held is None:
                if len(self.retried) >= MAX_HELD_RETRIED:  # memory grows with distinct warnings, not the log
                    self._release_retried()
                self.retried[_identity(finding)] = [priority, finding, 1, finding]
            else:
                held[2] += 1
                held[3] = finding
            return
        self._release_retried()  # an error after the warnings: the attempt failed, they are part of it
        if hit.site:  # the message itself may follow, and says more: held back until it does not
            self.sites.append((priority, finding))
            return
        # an error stated after raise sites is what they raised: they said less
        self.sites = []
        self._release_cuts()
        self.unphased = hit if rule.refine and not any(r.when in self.regions for r in rule.refine) else None
        if rule.cut_in:  # counted once the log goes on; at its end, only if its last lines state no other cause
            self.cuts.append((priority, finding, opener_text(self.regions[rule.cut_in])))
            self.ready_after_last_finding = False
            self.regions.clear()
            return
        self._found(priority, finding)

    def _release_retried(self) -> None:
        """Count the held warnings of a start attempt that did not come up. A warning the code
        retried after ended no phase (a failure does: `_found`), so the regions stay as they are."""
        held, self.retried = self.retried, {}
        if held:
            self.ready_after_last_finding = False
        for priority, first, occurrences, latest in held.values():
            self._count(priority, first)
            for _ in range(occurrences - 1):
                self._count(priority, latest)

    def _release_cuts(self) -> None:
        cuts, self.cuts = self.cuts, []
        for priority, finding, _ in cuts:
            self._count(priority, finding)

    def _found(self, priority: int, finding: Finding) -> None:
        self.ready_after_last_finding = False
        self.regions.clear()  # whatever phase was running ended with this failure
        self._count(priority, finding)

    def _reported_late(self, phase: str, opener: Hit) -> None:
        """A phase opened by Ray's summary of a line its workers repeated ("... [repeated 7x across
        cluster]"), after an error that no phase re-read: Ray prints that summary some seconds
        after the records it folds, which its workers wrote before, so the error came in that
        phase (all eight workers capturing CUDA graphs when one ran out of memory). The error is
        read again in it."""
        hit, self.unphased = self.unphased, None
        if not any(r.when == phase for r in hit.matcher.rule.refine):
            return
        made = make_finding(hit, self.context, {phase: opener}, self._fix, self._confidence(hit))
        if made is not None:
            priority, finding = made
            note = f"{finding.note}; Ray's summary at line {opener.line} folds records its workers wrote before the error"
            self._found(priority, msgspec.structs.replace(finding, note=note))

    def _flush_sites(self) -> None:
        sites, self.sites = self.sites, []
        for priority, finding in sites:
            self._found(priority, finding)

    def _confidence(self, hit: Hit) -> str:
        rule = hit.matcher.rule
        if rule.cut_in:
            return "truncated"
        return "inferred" if hit.site else rule.confidence

    def _with_cause(self, primary: Finding, attempt: dict) -> Finding:
        """The primary finding with the numbers of the same failure told twice: a vLLM wrapper's
        message and the PyTorch OOM it wraps (or re-raises) are findings of one kind a few lines
        apart in one attempt; what the primary does not state itself is taken from the nearest."""
        ats = {at for _, at in attempt.values()}
        near = sorted((f for at, f in self.listed.items() if at in ats and f is not primary and f.kind == primary.kind
                       and abs(f.line - primary.line) <= CAUSE_LINES), key=lambda f: abs(f.line - primary.line))
        extra: dict = {}
        for f in near:
            for key, value in f.numbers.items():
                extra.setdefault(key, value)
        extra = {k: v for k, v in extra.items() if k not in primary.numbers}
        if not extra:
            return primary
        merged = msgspec.structs.replace(primary, numbers={**primary.numbers, **extra})
        for at, f in list(self.listed.items()):
            if f is primary:
                self.listed[at] = merged
        return merged

    def _cut_short(self, tail: Callable[[], str]) -> None:
        """The log ends inside a region a `cut_in` rule names, with no failure since it opened:
        the process died there, or the paste stops there. A finding of lower confidence, unless
        the log's last lines (`tail`) state another cause after the region opened (endings.py)."""
        # the opening line alone is a quoted line, not a startup that stopped
        if len(self.context_said) < 2 and all(
                self.context_said.get(said(r), r.line) <= 1 for r in self.regions.values()):
            return
        if self.attempt or self.failed:  # a failure the log shows says more than where it stops
            return
        if not logged(tail):  # the phase's message quoted in prose, not a log that stopped in it
            return
        for m in self.cut_rules:
            opener = self.regions.get(m.rule.cut_in)
            if opener is not None and another_cause(tail, opener_text(opener)) is None:
                made = make_finding(Hit(m, None, opener.line, list(opener.evidence), opener.line), self.context,
                                    self.regions, self._fix, "truncated")
                if made is not None:
                    self._found(*made)

    def _unsustained(self) -> None:
        """A runtime symptom the log shows fewer times than its rule's `sustain` (one over-long
        prompt refused, one full-cache stats line), in a log that shows nothing else: what a
        person who pastes that line asks about, told at lower confidence and never tuned (a
        window decides whether it is sustained; intents.py). The most specific one, the latest
        on a tie."""
        if self.seen or not self.short:
            return
        priority, finding = max(self.short.values(), key=lambda pf: (pf[0], pf[1].line))
        self.short.clear()
        self._found(priority, finding)

    def _withdraw_inferred(self) -> None:
        """The engine came up (it made its KV cache and warmed up): what this attempt inferred from
        vLLM's accounting before it, that max_model_len could not fit, did not hold (a
        sliding-window model needs less KV cache than its concurrency line counts). Memory that
        the accounting showed negative or zero is no such count: vLLM raises on it, so an engine
        that came up after it is another start's, and it stays. Where an error (or the line that
        raises it) stated a failure in the attempt, it failed, and the engine that came up is a
        retry's: all stays. So does what was inferred before accounting that showed nothing wrong: a retry
        that printed its own (an application's, with no engine restart line between)."""
        if self.sites or any(self.seen[identity].latest.rule not in self.accounting_rules for identity in self.attempt):
            return  # an error, or its raise site, stated a failure
        gone = {identity for identity in self.attempt if identity not in self.failed
                and self.seen[identity].latest.kind in COUNTED_AGAINST_MAX_MODEL_LEN
                and self.seen[identity].latest.line > self.calm_line}
        if not gone:
            return
        self.listed = {at: f for at, f in self.listed.items() if _identity(f) not in gone}
        for identity in gone:
            self.seen.pop(identity, None)
            self.attempt.pop(identity, None)

    def _not_vllms(self, tail: Callable[[], str]) -> None:
        """PyTorch's own messages (rules named "torch.", "torch_npu.") are printed alike by every
        program that uses it: in a log whose end is another program's traceback with no trace of
        vLLM (endings.foreign_traceback), they are that program's failure, and no finding."""
        generic = {_identity(f) for f in self.listed.values() if f.rule.split(".", 1)[0] in PYTORCH}
        if not generic or foreign_traceback(tail) is None:
            return
        self.listed = {at: f for at, f in self.listed.items() if _identity(f) not in generic}
        for identity in generic:
            for kept in (self.seen, self.attempt, self.failed):
                kept.pop(identity, None)

    def _fix(self, program: FixProgram, numbers: dict, groups: dict) -> tuple[dict, str] | None:
        """The fix `program` gives for these numbers and captures; the last ones are remembered
        (a repeated failure repeats them), as running a program is most of a finding's cost."""
        key = (program, repr(numbers), repr(groups))  # repr: 0.0 is not -0.0, 1 is not 1.0 here
        done = self.fixes.get(key)
        if done is None:
            if len(self.fixes) >= REMEMBERED_FIXES:
                self.fixes.clear()
            current, bounds, buffer = self.settings
            done = self.fixes[key] = program.run(Env.build(numbers, current, bounds, buffer, groups))
        return None if done is None else (dict(done[0]), done[1])

    def _count(self, priority: int, finding: Finding) -> None:
        self.occurrences += 1
        self.finding_line = finding.line
        if self.calm_line == finding.line:  # not calm after all
            self.calm_line = self.calm_before
        at, identity = self.occurrences, _identity(finding)
        seen = self.seen.get(identity)
        if seen is None:
            seen = self.seen[identity] = _Seen(finding.line)
        seen.count += 1
        if seen.listed < MAX_LISTED:
            seen.listed += 1
        else:  # the latest occurrence listed so far makes room for this one
            del self.listed[seen.latest_at]
        self.listed[at] = seen.latest = finding
        seen.latest_at = at
        self.attempt[identity] = (priority, at)

    def diagnosis(self, tail: str | Callable[[], str] = "") -> Diagnosis:
        """The diagnosis of the log read so far. Call it once, at the end: what the end of the
        log means (raise sites with no message after them, a log cut inside a phase) is added.
        `tail` is the log's last characters (endings.tail_of), where a cut may be explained, or a
        function that reads them: called at most once, and only where the log ends inside a phase."""
        tail = functools.cache(tail) if callable(tail) else functools.partial(str, tail)
        cuts, self.cuts = self.cuts, []
        for priority, finding, since in cuts:
            if another_cause(tail, since) is None:
                self._count(priority, finding)
        self._flush_sites()
        self._cut_short(tail)  # before the held warnings: a retried one is no failure the log shows
        self._release_retried()  # the log ends before the server came up
        self._not_vllms(tail)  # before a lone runtime line is told: what is left is all the log shows
        self._unsustained()
        attempt = self.attempt or self.failed
        primary = None
        if attempt and not self.ready_after_last_finding:
            primary = self._with_cause(self.seen[max(attempt, key=attempt.__getitem__)].latest, attempt)
        index = {at: i for i, at in enumerate(self.listed)}
        repeated = [Repeated(index=index[s.latest_at], count=s.count, first_line=s.first_line, last_line=s.latest.line)
                    for s in self.seen.values() if s.count > s.listed]
        return Diagnosis(primary=primary, findings=list(self.listed.values()),
                         repeated=sorted(repeated, key=lambda r: r.index))


@functools.lru_cache(maxsize=16)
def _accounting_rules(matchers: tuple[Matcher, ...]) -> dict[str, tuple[str, ...]]:
    """The rules that read vLLM's accounting, each with the names its `when` tests with known(),
    read from the compiled guard's canonical form (one spelling, whatever the rule file's spacing);
    worked out once per rule set, not per log."""
    return {m.rule.id: tuple(_KNOWN.findall(m.program.guard.canonical)) if m.program.guard is not None else ()
            for m in matchers if m.rule.confidence == "inferred"}


def interpret(hits: Iterable[Hit], current: ServingConfig | None, bounds: ActuatorBounds, buffer: float,
              matchers: tuple[Matcher, ...] = ()) -> Diagnosis:
    """Fold hits, in log order, into a diagnosis (Interpretation)."""
    fold = Interpretation(current, bounds, buffer, matchers)
    for hit in hits:
        fold.add(hit)
    return fold.diagnosis()
