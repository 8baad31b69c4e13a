"""What a rule is: plain records, read from the TOML files in `rules/` and compiled by `compiler.py`.

Every field is a plain value (str, int, tuple, dict), so a rule set encodes to JSON and back and
its digest is computed from content, not from the file's layout.

Pattern language (a regular expression with three conventions, applied by the compiler):

- a space outside a character class matches any run of whitespace, or none: vLLM's own
  double spaces ("GiB).  Try") and a hard-wrapped paste that dropped the space at the break
  ("on" / "device" joined as "ondevice") both still match;
- ``{num}`` is a decimal number with optional sign, ``{int}`` an integer with optional
  thousands separators ("43,392"), ``{size}`` a number followed by its unit ("605.88 MiB",
  "0 bytes", "4.00 GB");
- captures are NAMED; `numbers` maps a capture to a key of `Finding.numbers` and the unit the
  text is in (units.SOURCE_UNITS); the key's suffix gives the unit it is converted to
  (``_gib``, ``_mib``, ``_utilization`` = a ratio, anything else = a count).

`prefilter` is a literal that must occur in a record before any regex runs: most log lines are
rejected without any Python work, by a few C-speed searches over the whole text that find
every literal at once (see prefilter.py). `prefilter_next`, when given, names the characters one
of which follows the literal in every match (a digit after "GPU KV cache usage: 9", for 9x%): a
line where none does is left out as the log is read, at no Python step (a stats line at 9.5%).
Only lines are so left out: a record wrapped over several lines is compared with the literal alone.

Two roles:

- failure rules (`kind` is one of KINDS) produce findings;
- context rules (`kind` = "context") produce no finding. They supply numbers that a later
  failure may use (`uses`, e.g. the negative "Available KV cache memory" before the no-KV
  error) and mark phases (`marks`): "open:NAME" / "close:NAME" a region, "reset" at an engine
  (re)start, "ready" when the API server starts serving (a failure before it is then over),
  "initialised" when the engine made its KV cache and warmed up (what the attempt's accounting
  inferred, with no error stating a failure, did not hold and is withdrawn). A context rule
  that says `within = "NAME"` does so only while that region is open, and the regions it opens
  open from that region's opener (a traceback begun in the profile run opens the region of a
  dummy batch that raised, as from the run's start: an error stated since then is the cause). A
  failure inside an open region can be re-read through `refine` (a PyTorch OOM while CUDA
  graphs are captured is a `cuda_graph_oom`). Any failure closes every open region.

One line is never a sustained runtime failure: a single over-long prompt refused ("Input
prompt (N tokens) is too long ...", "This model's maximum context length is ...") or one
preemption is a client matter, and vLLM keeps serving. Rules for such lines say `sustain = N`:
a finding that may tune comes only from the N-th match in a row, and a match whose `when` is
false (a stats line with a calm KV cache) starts the count again, as the /metrics rules
(rules/40_metrics.toml) wait for sustained symptoms. Fewer matches, in a log that shows nothing
else, are what a person who pastes them asks about: a rule that says `alone = "told"` tells them
as an "unsustained" finding, alerted and never tuned (a request refused was a request lost); one
that says `alone = "undirected"` tells the kind without a direction, where one line cannot say
which parameter binds (V0's "exceeds limit of N": max_model_len or the token budget). The
default, "silent", is for what one line does not make a problem (one preemption: the request
is recomputed and served).

How a finding knows (`confidence`): "stated" when vLLM's error says it; "inferred" when a rule
reads vLLM's accounting (a negative "Available KV cache memory", "# GPU blocks: 0", a maximum
concurrency below 1) or the raise site of a traceback whose message was cut off (engine.py:
the source line's string literals hold the rule's literal); "truncated" when the log ends
inside a region that a `cut_in` rule names (CUDA-graph capture: the process died there, or the
paste stops there); "unsustained" for a runtime symptom seen too seldom (above). The loop's
policy for each is in handlers/intents.py: stated and inferred may tune, the others only alert.

`priority` is specificity: the primary finding of a start attempt is the one with the highest
priority (the last one on a tie). `direction` lists every parameter whose move would address
the failure: the one the seed fix changes plus the alternatives a later search may try.

Seed fixes are data too (`expr.py` is the language): `derived` names values computed once per
finding (in order; one that cannot be computed is simply absent), and `fix` lists candidate
fixes. The first candidate whose `when` holds and whose expressions all compute wins; it sets
parameters (`set`) and explains itself (`note`, a template: ``{expr}``, ``{expr:.0%}``,
``{if expr}...{else}...{end}``, ``{{``/``}}`` for braces). A candidate that sets nothing is
an alert with its note. When no candidate computes, the finding is an alert whose note says
why ("fix not computable: ..."). Conventions, all on the side of safety:

- the buffer shrinks what we take from a measurement we fit under (free memory, available
  KV) and grows what we must cover (a deficit, an allocation);
- rounding goes to the actuator grid in the safe direction (`floor_step` when lowering,
  `ceil_step` when raising);
- values are NOT clamped to the bounds: a fix that needs a value outside them must stay
  visible, so that the caller escalates instead of running a config that cannot work.
"""
from __future__ import annotations

import msgspec

from selfheal.schemas.failures import FINDING_KINDS

#: the kinds a failure rule may name (schemas/failures.py has the list and what each means)
KINDS = FINDING_KINDS
CONTEXT = "context"
DIRECTIONS = ("increase", "decrease", "enable")
#: how a finding knows its failure (Finding.confidence): the error stated it; vLLM's accounting
#: lines or the raise site in a traceback imply it; the log was cut where it would have been
CONFIDENCES = ("stated", "inferred", "truncated", "unsustained")  # schemas/events.py Finding.confidence
#: what a `sustain` rule's matches say when fewer than `sustain` of them are all a log shows
#: (RuleSpec.alone): nothing; the finding, "unsustained"; or the finding without the direction,
#: where one line cannot tell which parameter binds
ALONE = ("silent", "told", "undirected")
ACTIONS = ("tune", "alert")


class Number(msgspec.Struct, frozen=True, kw_only=True):
    capture: str
    key: str
    unit: str


class FixSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One candidate seed fix."""

    when: str = ""                  # boolean expression; "" = always
    set: dict[str, str] = {}        # parameter -> expression
    note: str = ""                  # template
    action: str = ""                # "tune" | "alert"; "" = "tune" exactly when it sets something


class Refinement(msgspec.Struct, frozen=True, kw_only=True):
    when: str                       # a region that is open at the match
    kind: str
    priority: int
    direction: dict[str, str] = {}
    note: str = ""
    fix: tuple[FixSpec, ...] = ()   # uses the rule's numbers and derived values


class RuleSpec(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    version: int = 1
    kind: str
    prefilter: str                  # literal that must be in the record before any regex runs
    patterns: tuple[str, ...]       # tried in order; the first that matches the record is used
    numbers: tuple[Number, ...] = ()
    derived: dict[str, str] = {}    # name -> expression, computed in order
    fix: tuple[FixSpec, ...] = ()   # candidates, first computable wins; () for an alert / context rule
    direction: dict[str, str] = {}  # parameter -> "increase" | "decrease" | "enable"
    priority: int = 0
    window: int = 1                 # records matched together (pydantic spreads one error over 3)
    uses: tuple[str, ...] = ()      # number keys taken from earlier context lines
    marks: tuple[str, ...] = ()
    refine: tuple[Refinement, ...] = ()
    note: str = ""
    versions: str = ""              # where in vLLM / PyTorch the text comes from
    # how the finding knows the failure: "stated" (the error says so) or "inferred" (vLLM's
    # accounting lines, or the source line of the raise, say the config cannot work)
    confidence: str = "stated"
    when: str = ""                  # a condition on the numbers: no finding where it is false
    sustain: int = 1                # a finding only from the sustain-th match in a row (when: false breaks it)
    gap: int = 0                    # ... in a row: at most this many lines apart (0: anywhere in the attempt)
    # what fewer than `sustain` matches say in a log that shows nothing else (ALONE)
    alone: str = "silent"
    cut_in: str = ""                # a region: the finding is made when the log ends inside it
    within: str = ""                # a region: a context rule marks and sets numbers only inside it
    # the patterns read a traceback's frame line ('File ".../vllm/...", line N, in FUNC') of a
    # function whose raise statements all raise this rule's failure: a match speaks only where
    # the frame's next line is a `raise` (the message not shown), as a raise site (engine.py)
    raise_frame: bool = False
    prefilter_next: str = ""        # characters, one of which follows the prefilter in every match
    # a warning after which the code retries (PyTorch's caching allocator frees its cache and tries
    # again): the finding is held until the start attempt ends, and dropped where the server comes up
    retried: bool = False


class RuleProblem(ValueError):
    """A rule that cannot be compiled. `path` names the offending field, e.g. ("fix", 1, "when"),
    so that a rule file can point at its line."""

    def __init__(self, path: tuple, problem: str, rule: str = ""):
        super().__init__(problem)
        self.path, self.problem, self.rule = tuple(path), problem, rule

    def __str__(self) -> str:
        return f"rule {self.rule}: {self.problem}" if self.rule else self.problem
