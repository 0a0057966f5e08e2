#!/usr/bin/env python3
"""Self-test of testenv/receivers/server.py: one e-mail over SMTP (plain, STARTTLS, AUTH),
Slack webhooks with failures, filters, waits, and a clean SIGTERM exit.

    "$(testenv/venv.sh)" testenv/receivers/selftest.py

Prints one line per check and a closing "N passed, N failed" line; exits 1 on failure.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import smtplib
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request
from email.message import EmailMessage

HERE = os.path.dirname(os.path.abspath(__file__))
TMPDIRS: list[str] = []


def start(extra):
    tmp = tempfile.mkdtemp(prefix="receivers-selftest-")
    TMPDIRS.append(tmp)
    ready = os.path.join(tmp, "ready.json")
    log = open(os.path.join(tmp, "server.log"), "w")
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "server.py"),
                             "--ready-file", ready, *extra], stdout=log, stderr=log)
    t0 = time.time()
    while not os.path.exists(ready):
        if proc.poll() is not None or time.time() - t0 > 30:
            raise RuntimeError(open(log.name).read())
        time.sleep(0.05)
    return proc, json.load(open(ready)), log.name


def ctl(info, method, path, doc=None, expect=200):
    req = urllib.request.Request(info["control"] + path, method=method,
                                 data=None if doc is None else json.dumps(doc).encode())
    try:
        with urllib.request.urlopen(req) as resp:
            status, body = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    assert status == expect, (method, path, status, body)
    return json.loads(body)


def post_slack(info, path, doc):
    req = urllib.request.Request(info["slack"] + path, data=json.dumps(doc).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status, resp.read().decode(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


def message(to, subject, msgid, in_reply_to=None):
    m = EmailMessage()
    m["From"] = "recovery@example.com"
    m["To"] = to
    m["Subject"] = subject
    m["Message-ID"] = msgid
    if in_reply_to:
        m["In-Reply-To"] = in_reply_to
        m["References"] = in_reply_to
    m.set_content(f"{subject}\nbody line 2\n")
    m.add_alternative(f"<p>{subject}</p>", subtype="html")
    return m


def smtp_plain(info):
    host, port = info["smtp"].split(":")
    with smtplib.SMTP(host, int(port), timeout=10) as s:
        s.send_message(message("Ops A <ops@ns-a.example.com>", "[recovery] web degraded",
                               "<1@ctrl>"))
        s.login("anyone", "anything")
        s.send_message(message("ops@ns-b.example.com", "[recovery] web recovered", "<2@ctrl>",
                               in_reply_to="<1@ctrl>"))
    a = ctl(info, "GET", "/mail?to=OPS@ns-a.example.com")
    assert len(a) == 1, a
    m = a[0]
    assert m["subject"] == "[recovery] web degraded" and m["messageId"] == "<1@ctrl>", m
    assert m["rcptTos"] == ["ops@ns-a.example.com"] and m["mailFrom"] == "recovery@example.com"
    assert m["text"].startswith("[recovery] web degraded") and "<p>" in m["html"], m
    assert m["authUser"] is None and m["tls"] is False, m
    b = ctl(info, "GET", "/mail?to=ops@ns-b.example.com")[0]
    assert b["inReplyTo"] == "<1@ctrl>" and b["references"] == ["<1@ctrl>"], b
    assert b["authUser"] == "anyone", b
    assert b["headers"]["Message-ID"] == "<2@ctrl>", b["headers"]
    assert len(ctl(info, "GET", "/mail?subject=recovered")) == 1
    assert ctl(info, "DELETE", "/mail?to=ops@ns-a.example.com") == {"deleted": 1}
    assert [x["messageId"] for x in ctl(info, "GET", "/mail")] == ["<2@ctrl>"]


def smtp_fail_and_wait(info):
    host, port = info["smtp"].split(":")
    ctl(info, "POST", "/smtp/fail", {"code": 451, "message": "4.3.0 try later", "count": 1})
    try:
        with smtplib.SMTP(host, int(port), timeout=10) as s:
            s.send_message(message("w@ns-c.example.com", "x", "<3@ctrl>"))
        raise AssertionError("expected 451")
    except smtplib.SMTPDataError as exc:
        assert exc.smtp_code == 451, exc

    def later():
        time.sleep(0.3)
        with smtplib.SMTP(host, int(port), timeout=10) as s:
            s.send_message(message("w@ns-c.example.com", "y", "<4@ctrl>"))

    threading.Thread(target=later).start()
    t0 = time.time()
    got = ctl(info, "GET", "/mail?to=w@ns-c.example.com&wait=5")
    assert [x["messageId"] for x in got] == ["<4@ctrl>"] and time.time() - t0 < 4, got


def slack(info):
    assert post_slack(info, "/ns-a/T0/B0/x", {"text": "hello"})[:2] == (200, "ok")
    ctl(info, "POST", "/slack/fail", {"status": 429, "count": 1, "retryAfter": 2,
                                      "path": "/slack/ns-a"})
    status, body, headers = post_slack(info, "/ns-a/T0/B0/x", {"text": "again"})
    assert (status, body, headers.get("Retry-After")) == (429, "rate_limited", "2"), headers
    assert post_slack(info, "/ns-b/T0/B0/y", {"blocks": []})[0] == 200
    assert post_slack(info, "/ns-a/T0/B0/x", {"text": "third"})[0] == 200
    ctl(info, "POST", "/slack/fail", {"status": 500, "count": None})
    assert post_slack(info, "/ns-b/T0/B0/y", {"text": "x"})[0] == 500
    ctl(info, "DELETE", "/slack/fail")
    got = ctl(info, "GET", "/slack?path=/slack/ns-a")
    assert [g["json"]["text"] for g in got] == ["hello", "third"], got
    assert got[0]["headers"]["Content-Type"] == "application/json"
    assert len(ctl(info, "GET", "/slack?path=/slack/ns-a&all=true")) == 3
    assert len(ctl(info, "GET", "/slack?path=/slack/ns-b")) == 1
    assert len(ctl(info, "GET", "/slack?path=/slack/ns")) == 0  # path segments, not prefixes
    ctl(info, "DELETE", "/slack?path=/slack/ns-b")
    assert ctl(info, "GET", "")["slack"] == 3


def post_json(url, doc, headers=None):
    req = urllib.request.Request(url, method="POST", data=json.dumps(doc).encode(),
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status, json.loads(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null"), dict(exc.headers)


def post_pagerduty(info, doc):
    return post_json(info["pagerduty"], doc)


def pagerduty(info):
    key = "R" * 32
    trigger = {"routing_key": key, "event_action": "trigger", "dedup_key": "inc-1",
               "payload": {"summary": "checkout down", "source": "ecs/prod/checkout", "severity": "error"}}
    status, body, _ = post_pagerduty(info, trigger)
    assert (status, body["status"], body["dedup_key"]) == (202, "success", "inc-1"), body
    assert post_pagerduty(info, trigger)[0] == 202  # a resend: deduplicated, not a second alert
    alerts = ctl(info, "GET", "/pagerduty/alerts")
    assert [(a["dedup_key"], a["status"], a["events"]) for a in alerts] == [("inc-1", "triggered", 2)], alerts
    for bad, why in [
        (dict(trigger, routing_key="short"), "routing_key"),
        (dict(trigger, event_action="page"), "event_action"),
        (dict(trigger, payload={"summary": "x", "source": "y", "severity": "high"}), "severity"),
        ({"routing_key": key, "event_action": "resolve"}, "dedup_key"),
    ]:
        status, body, _ = post_pagerduty(info, bad)
        assert status == 400 and body["status"] == "invalid event", body
        assert any(why in e for e in body["errors"]), (why, body)
    ctl(info, "POST", "/pagerduty/fail", {"status": 429, "count": 1, "retryAfter": 3})
    status, body, headers = post_pagerduty(info, {"routing_key": key, "event_action": "resolve", "dedup_key": "inc-1"})
    assert (status, body["status"], headers.get("Retry-After")) == (429, "throttle event", "3"), body
    assert post_pagerduty(info, {"routing_key": key, "event_action": "resolve", "dedup_key": "inc-1"})[0] == 202
    alerts = ctl(info, "GET", "/pagerduty/alerts")
    assert [(a["status"], a["events"]) for a in alerts] == [("resolved", 3)], alerts
    fresh = dict(trigger, dedup_key=None)
    status, body, _ = post_pagerduty(info, fresh)
    assert status == 202 and body["dedup_key"], body
    outcomes = [e["outcome"] for e in ctl(info, "GET", "/pagerduty")]
    assert outcomes == ["created", "deduplicated", "resolved", "created"], outcomes
    assert len(ctl(info, "GET", "/pagerduty?all=true")) == 9


def post_slack_api(info, token, doc):
    return post_json(info["slackApi"] + "chat.postMessage", doc, {"Authorization": f"Bearer {token}"} if token else {})


def slack_api(info):
    token, other = "xoxb-1-selftest", "xoxb-2-outsider"
    ids = ctl(info, "POST", "/slack-api/workspace", {"token": token, "channels": ["incidents", "#ops"]})["channels"]
    ctl(info, "POST", "/slack-api/workspace", {"token": other, "channels": []})
    cid = ids["incidents"]
    assert cid.startswith("C") and ids["#ops"] != cid, ids
    status, first, _ = post_slack_api(info, token, {"channel": "#incidents", "text": "down"})
    assert status == 200 and first["ok"] and first["channel"] == cid and first["ts"], first
    _, reply, _ = post_slack_api(info, token, {"channel": cid, "text": "fixed", "thread_ts": first["ts"],
                                               "reply_broadcast": True})
    assert reply["ok"] and reply["message"]["thread_ts"] == first["ts"], reply
    for tok, doc, error in [
        (None, {"channel": cid, "text": "x"}, "not_authed"),
        ("xoxb-unknown", {"channel": cid, "text": "x"}, "invalid_auth"),
        (token, {"channel": "#nowhere", "text": "x"}, "channel_not_found"),
        (other, {"channel": cid, "text": "x"}, "not_in_channel"),
        (token, {"channel": cid}, "no_text"),
        (token, {"channel": cid, "text": "x", "thread_ts": "1.000001"}, "thread_not_found"),
        (token, {"channel": cid, "text": "x", "thread_ts": reply["ts"]}, "thread_not_found"),  # a reply is no thread
    ]:
        status, body, _ = post_slack_api(info, tok, doc)
        assert (status, body) == (200, {"ok": False, "error": error}), (error, status, body)
    ctl(info, "POST", "/slack-api/fail", {"status": 429, "count": 1, "retryAfter": 2})
    status, body, headers = post_slack_api(info, token, {"channel": cid, "text": "x"})
    assert (status, body["error"], headers.get("Retry-After")) == (429, "ratelimited", "2"), (status, body)
    ctl(info, "POST", "/slack-api/fail", {"status": 200, "error": "internal_error", "count": 1})
    assert post_slack_api(info, token, {"channel": cid, "text": "x"})[1] == {"ok": False, "error": "internal_error"}
    posted = ctl(info, "GET", "/slack-api/messages?channel=incidents")
    assert [(m["json"]["text"], m["threadTs"], m["replyBroadcast"]) for m in posted] == [
        ("down", None, False), ("fixed", first["ts"], True)], posted
    assert len(ctl(info, "GET", f"/slack-api/messages?thread_ts={first['ts']}")) == 1
    assert len(ctl(info, "GET", "/slack-api/messages?all=true")) == 11


def auth_required_and_starttls():
    proc, info, log = start(["--smtp-user", "alerts", "--smtp-password", "s3cret", "--starttls"])
    try:
        host, port = info["smtp"].split(":")
        assert info["starttls"] and os.path.exists(info["cert"]), info
        with smtplib.SMTP(host, int(port), timeout=10) as s:
            try:
                s.send_message(message("x@ns-d.example.com", "no auth", "<5@ctrl>"))
                raise AssertionError("expected 530")
            except smtplib.SMTPSenderRefused as exc:
                assert exc.smtp_code == 530, exc
        with smtplib.SMTP(host, int(port), timeout=10) as s:
            try:
                s.login("alerts", "wrong")
                raise AssertionError("expected auth failure")
            except smtplib.SMTPAuthenticationError:
                pass
        with smtplib.SMTP(host, int(port), timeout=10) as s:
            s.starttls(context=ssl.create_default_context(cafile=info["cert"]))
            s.login("alerts", "s3cret")
            s.send_message(message("x@ns-d.example.com", "tls", "<6@ctrl>"))
        m = ctl(info, "GET", "/mail")[0]
        assert (m["authUser"], m["tls"], m["messageId"]) == ("alerts", True, "<6@ctrl>"), m
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def main() -> int:
    passed = failed = 0
    proc, info, log = start([])
    print(f"ready: {json.dumps(info)}")
    for fn in (smtp_plain, smtp_fail_and_wait, slack, pagerduty, slack_api):
        try:
            fn(info)
            passed += 1
            print(f"ok   {fn.__name__}")
        except Exception:
            failed += 1
            print(f"FAIL {fn.__name__}\n{traceback.format_exc()}")
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=10)
    if code == 0:
        passed += 1
        print("ok   sigterm_exit_0")
    else:
        failed += 1
        print(f"FAIL sigterm_exit_0: exit {code}\n{open(log).read()}")
    try:
        auth_required_and_starttls()
        passed += 1
        print("ok   auth_required_and_starttls")
    except Exception:
        failed += 1
        print(f"FAIL auth_required_and_starttls\n{traceback.format_exc()}")
    if not failed:
        for tmp in TMPDIRS:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
