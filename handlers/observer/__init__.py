"""Observer: reads vLLM logs, recognises config failures, proposes bounded seed fixes.

Pure library code (no I/O, no store). `diagnose(text)` is the entry point; the rules are data
in `rules.RULES`.
"""
from handlers.observer.diagnose import diagnose, format_diagnosis
from handlers.observer.engine import Diagnosis, Finding
from handlers.observer.rules import RULES

__all__ = ["Finding", "Diagnosis", "diagnose", "RULES", "format_diagnosis"]
