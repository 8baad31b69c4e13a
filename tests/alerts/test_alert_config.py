"""sink_from_config: each kind built from its entry; bad entries refused naming key and allowed values."""
from __future__ import annotations

import pytest

from selfheal.edges.alerts import CommandSink, JsonlSink, WebhookSink, sink_from_config


def test_each_kind(tmp_path):
    jsonl = sink_from_config({"type": "jsonl", "path": "alerts.jsonl"}, base_dir=tmp_path)
    assert isinstance(jsonl, JsonlSink) and jsonl.path == tmp_path / "alerts.jsonl"
    absolute = sink_from_config({"type": "jsonl", "path": "/var/log/a.jsonl"}, base_dir=tmp_path)
    assert str(absolute.path) == "/var/log/a.jsonl"
    hook = sink_from_config({"type": "webhook", "url": "https://hooks.example/T0/abc", "retries": 3,
                             "backoff_s": 1, "headers": {"Authorization": "Bearer x"}})
    assert isinstance(hook, WebhookSink) and hook.retries == 3 and hook.backoff_s == 1
    assert hook.target == "https://hooks.example"
    cmd = sink_from_config({"type": "command", "argv": ["notify-send", "selfheal"], "timeout_s": 5})
    assert isinstance(cmd, CommandSink) and cmd.argv == ["notify-send", "selfheal"]
    assert cmd.timeout_s == 5


@pytest.mark.parametrize("spec, words", [
    ({"type": "smtp"}, ["'type'", "command, jsonl, webhook", "'smtp'"]),
    ({"path": "x"}, ["'type'", "command, jsonl, webhook"]),
    ({"type": "jsonl"}, ["missing required key 'path'"]),
    ({"type": "jsonl", "path": "x", "mode": 0o644}, ["unknown key 'mode'", "path, type"]),
    ({"type": "webhook", "url": "http://h/", "retries": "3"}, ["'retries'", "an integer"]),
    ({"type": "webhook", "url": "http://h/", "retries": True}, ["'retries'", "an integer"]),
    ({"type": "webhook", "url": "http://h/", "retries": -2}, ["'retries'", ">= 0"]),
    ({"type": "webhook", "url": "h.example"}, ["'url'", "http://"]),
    ({"type": "webhook", "url": "http://h/", "retry": 3}, ["unknown key 'retry'", "retries"]),
    ({"type": "command", "argv": "notify-send hi"}, ["'argv'", "a list"]),
    ({"type": "command", "argv": []}, ["'argv'", "non-empty list of strings"]),
    ({"type": "command", "argv": ["x", 1]}, ["'argv'", "non-empty list of strings"]),
    (["jsonl"], ["expected a table"]),
])
def test_bad_specs_are_refused_clearly(spec, words):
    with pytest.raises(ValueError) as info:
        sink_from_config(spec)
    for w in words:
        assert w in str(info.value)
