"""A log written as UTF-16 (Windows PowerShell 5's `>`, Out-File and Tee-Object; Notepad's
"Unicode") is read as the text it holds (handlers/observer/encoding.py), by path, as bytes and
through the installed CLI; every other log is left as it came."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from selfheal.handlers.observer import diagnose, spool
from selfheal.handlers.observer.encoding import as_utf8, utf16_codec

WILD = Path(__file__).parent / "samples" / "wild"
# a committed vllm_log.txt that PowerShell wrote as UTF-16 with its mark (the corpus holds it
# transcoded to UTF-8, its CRLF line ends kept): encoded back, it is the file as committed
POWERSHELL = next((WILD / "no_kv_cache_memory").glob("3404-*.log"))
TEXT = POWERSHELL.read_bytes().decode("utf-8")
SELFHEAL = str(Path(sys.executable).with_name("selfheal"))


def _reading(d):
    return [(f.kind, f.rule, f.numbers, f.line, f.confidence) for f in d.findings]


WANT = _reading(diagnose(TEXT))
ENCODINGS = {"UTF-16 with its mark (PowerShell)": TEXT.encode("utf-16"),
             "UTF-16 LE without a mark": TEXT.encode("utf-16-le"),
             "UTF-16 BE without a mark": TEXT.encode("utf-16-be")}


def test_the_excerpt_shows_its_failure_as_utf8():
    assert WANT and WANT[0][0] == "no_kv_cache_memory" and WANT[0][2] == {"available_kv_gib": -2.14}


@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_a_utf16_log_reads_as_its_text_by_path_and_as_bytes(tmp_path, encoding):
    data = ENCODINGS[encoding]
    path = tmp_path / "vllm_log.txt"
    path.write_bytes(data)
    assert _reading(diagnose(path)) == WANT
    assert _reading(diagnose(data)) == WANT


def test_a_long_utf16_log_is_decoded_a_piece_at_a_time(tmp_path, monkeypatch):
    # spooled in pieces of 97 bytes: UTF-16's pairs and its line ends cut everywhere
    monkeypatch.setattr(spool, "SPOOL_OVER", 0)
    monkeypatch.setattr(spool, "PIECE", 97)
    path = tmp_path / "vllm_log.txt"
    path.write_bytes(ENCODINGS["UTF-16 with its mark (PowerShell)"])
    assert _reading(diagnose(path)) == WANT


def test_the_installed_cli_reads_a_powershell_log(tmp_path):
    path = tmp_path / "vllm_log.txt"
    path.write_bytes(ENCODINGS["UTF-16 with its mark (PowerShell)"])
    out = subprocess.run([SELFHEAL, "diagnose", str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 4, out.stderr  # 4: the log holds a configuration failure
    assert "Failure: no_kv_cache_memory" in out.stdout and "available_kv_gib=-2.14" in out.stdout


def test_other_logs_are_left_as_they_came():
    utf8 = TEXT.encode("utf-8")
    assert as_utf8(utf8) is utf8
    # NULs in a few places (a binary dump, a corrupt tail) are no UTF-16
    odd = b"INFO start\n" + b"\x00\x01\x02\x03" * 8 + b"INFO more text here\n" * 4
    assert utf16_codec(odd) is None and as_utf8(odd) is odd
    assert utf16_codec(b"") is None and utf16_codec(b"\xff") is None
    # text that is not ASCII, as UTF-16 with its mark, keeps its characters
    assert as_utf8("Available KV cache memory: -2.14 GiB — 显存不足\n".encode("utf-16")) == \
        "Available KV cache memory: -2.14 GiB — 显存不足\n"


def test_an_incident_records_the_text_a_utf16_log_holds(tmp_path):
    from selfheal.handlers.loop import read_input
    path = tmp_path / "vllm_log.txt"
    path.write_bytes(ENCODINGS["UTF-16 with its mark (PowerShell)"])
    assert read_input(str(path))[0] == TEXT
