#!/usr/bin/env python3
"""Alert receivers for the aws-recovery-controller tests: SMTP + Slack webhooks, one process.

Usage
-----
    python server.py [--host 127.0.0.1] [--smtp-port 0] [--http-port 0] [--ready-file FILE]
                     [--smtp-user U --smtp-password P] [--starttls [--cert-dir DIR]]

Ports 0 pick free ones.  Once both listen, FILE receives (atomically):
    {"smtp": "127.0.0.1:PORT", "slack": "http://127.0.0.1:PORT/slack",
     "control": "http://127.0.0.1:PORT/_control", "pid": PID,
     "starttls": false, "cert": null}          (cert: PEM path when --starttls)
SIGTERM/SIGINT stop it with exit status 0.

SMTP (aiosmtpd): plain SMTP on a loopback port.  AUTH PLAIN/LOGIN is offered without
TLS and accepts any credentials, unless --smtp-user/--smtp-password are given: then
only those pass, and MAIL without AUTH is refused (530).  --starttls offers STARTTLS
with a self-signed certificate for 127.0.0.1/localhost generated at start (written to
--cert-dir, default a temp dir removed at exit; path in the ready file); it is
optional for clients.

Slack: POST /slack/<anything> with a JSON body (or form "payload=<json>") answers
200 "ok" like an incoming webhook and is stored.

Control API (JSON; all under /_control)
GET    /_control                      {"ok": true, "mail": N, "slack": N}
POST   /_control/reset                clear messages, payloads and failure modes
GET    /_control/mail[?to=&subject=&since=SEQ&wait=SECONDS&min=N]
       [{"seq", "time", "mailFrom", "rcptTos", "from", "to", "cc", "subject", "messageId",
         "inReplyTo", "references", "date", "headers": {name: value | [values]},
         "text", "html", "authUser", "tls", "raw"}, ...]
       to= matches an envelope recipient or a To/Cc address (case-insensitive);
       subject= is a substring; wait= blocks until at least min (default 1) match.
DELETE /_control/mail[?to=&subject=]  delete (the matching) messages
POST   /_control/smtp/fail {"code": 451, "message": "4.3.0 try again later",
                            "stage": "data"|"rcpt"|"mail", "count": N|null}
                        the next N transactions get that reply at that stage (null = until
                        cleared); failed transactions are not stored
DELETE /_control/smtp/fail
GET    /_control/slack[?path=/slack/ns-a&since=SEQ&all=true&wait=&min=]
       [{"seq", "time", "path", "headers": {...}, "json": {...} | null, "body": "...",
         "status": 200}, ...]
       path= matches that path or anything below it; only delivered (status 200)
       payloads unless all=true (then failed attempts too).
DELETE /_control/slack[?path=]
POST   /_control/slack/fail {"status": 500, "count": N|null, "body": "...",
                             "retryAfter": 1 (header, for 429), "path": "/slack/x" (optional)}
DELETE /_control/slack/fail

PagerDuty: POST /pagerduty/v2/enqueue, the Events API v2 contract: 202 {"status": "success",
"message": "Event processed", "dedup_key"} for a valid event (a trigger without dedup_key
gets one); 400 {"status": "invalid event", "errors": [...]} for an invalid one (routing_key
not 32 characters, unknown event_action, a trigger without payload.summary/source/severity
in critical|error|warning|info, acknowledge/resolve without dedup_key). Alerts are kept by
(routing_key, dedup_key): a trigger on an open alert is deduplicated into it, resolve closes it,
a trigger after that opens a new one.
GET    /_control/pagerduty[?all=true]     events received (202 only unless all=true), each
                                          {"seq", "time", "json", "status", "headers",
                                           "outcome": created|deduplicated|acknowledged|resolved|ignored}
GET    /_control/pagerduty/alerts[?routing_key=]
                                          [{"routing_key", "dedup_key", "status", "events",
                                            "summary", "severity"}, ...]
POST   /_control/pagerduty/fail {"status": 429|500, "count": N|null, "retryAfter": S}
DELETE /_control/pagerduty/fail

Slack Web API: POST /slack-api/chat.postMessage (the ready file's "slackApi" is the base URL),
JSON body, "Authorization: Bearer <token>".  Like Slack it answers HTTP 200 with
{"ok": true, "channel": "C...", "ts": "<seconds>.<micros>", "message": {...}} or
{"ok": false, "error": CODE}: not_authed (no token), invalid_auth (a token no workspace
registered), channel_not_found (a channel name or id that does not exist), not_in_channel (the
token's app was not invited), no_text (neither text nor blocks).  A thread_ts must be the ts
of a top-level message in that channel, else thread_not_found (stricter than Slack, so a reply
to the wrong message fails loudly).  The channel is a name (with or without "#") or an id.
POST   /_control/slack-api/workspace {"token": "xoxb-...", "channels": ["incidents", ...]}
                        registers the token, creates the channels that do not exist and
                        invites the token's app to them: {"channels": {"incidents": "C..."}}
GET    /_control/slack-api/messages[?channel=NAME|ID&thread_ts=TS&all=true]
                        posted messages (refused ones too with all=true), each {"seq", "time",
                        "channel", "channelName", "ts", "threadTs", "replyBroadcast", "json",
                        "ok", "error", "status"}
POST   /_control/slack-api/fail {"status": 429|500|200, "error": "ratelimited", "count": N|null,
                                 "retryAfter": S}
                        the next N calls get that HTTP status (200: {"ok": false, "error"})
DELETE /_control/slack-api/fail
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import email
import email.policy
import email.utils
import ipaddress
import json
import os
import shutil
import signal
import ssl
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import warnings

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

# aiosmtpd itself still sets the deprecated Session.login_data on every AUTH
warnings.filterwarnings("ignore", message="Session.login_data is deprecated")


class Store:
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.reset()

    def reset(self) -> None:
        with self.cond:
            self.mail: list[dict] = []
            self.slack: list[dict] = []
            self.seq = 0
            self.smtp_fail: dict | None = None
            self.slack_fail: dict | None = None
            # PagerDuty Events API v2: every event received, and the alerts they make, by
            # (routing_key, dedup_key).
            self.pagerduty: list[dict] = []
            self.pd_alerts: dict[tuple, dict] = {}
            self.pagerduty_fail: dict | None = None
            # Slack Web API: registered tokens (each with the channel ids its app is in),
            # channels by id, messages posted.
            self.slack_tokens: dict[str, set] = {}
            self.slack_channels: dict[str, str] = {}
            self.slack_api: list[dict] = []
            self.slack_api_fail: dict | None = None
            self.cond.notify_all()

    def add(self, kind: str, item: dict) -> dict:
        with self.cond:
            self.seq += 1
            item["seq"] = self.seq
            item["time"] = time.time()
            getattr(self, kind).append(item)
            self.cond.notify_all()
            return item

    @staticmethod
    def take_failure(fail: dict | None, path: str | None = None) -> dict | None:
        if not fail:
            return None
        if path is not None and fail.get("path") and not path_matches(path, fail["path"]):
            return None
        if fail.get("remaining") is not None:
            if fail["remaining"] <= 0:
                return None
            fail["remaining"] -= 1
        fail["hits"] = fail.get("hits", 0) + 1
        return fail


STORE = Store()


PD_SEVERITIES = ("critical", "error", "warning", "info")


def pagerduty_errors(event) -> list[str]:
    """What PagerDuty would refuse in an Events API v2 event."""
    if not isinstance(event, dict):
        return ["Event must be a JSON object"]
    errors = []
    key = event.get("routing_key")
    if not isinstance(key, str) or len(key) != 32:
        errors.append("'routing_key' must be a 32 character integration key")
    action = event.get("event_action")
    if action not in ("trigger", "acknowledge", "resolve"):
        errors.append("'event_action' must be one of trigger, acknowledge, resolve")
    dedup = event.get("dedup_key")
    if dedup is not None and (not isinstance(dedup, str) or not dedup or len(dedup) > 255):
        errors.append("'dedup_key' must be a string of at most 255 characters")
    if action in ("acknowledge", "resolve") and not dedup:
        errors.append("'dedup_key' is required for acknowledge and resolve")
    if action == "trigger":
        payload = event.get("payload")
        if not isinstance(payload, dict):
            errors.append("'payload' is missing or not an object")
        else:
            summary = payload.get("summary")
            if not isinstance(summary, str) or not summary or len(summary) > 1024:
                errors.append("'payload.summary' is required and at most 1024 characters")
            if not isinstance(payload.get("source"), str) or not payload.get("source"):
                errors.append("'payload.source' is required")
            if payload.get("severity") not in PD_SEVERITIES:
                errors.append("'payload.severity' must be one of critical, error, warning, info")
    return errors


def pd_apply(event: dict, dedup: str) -> str:
    """Applies a valid event to the alerts (under STORE.cond): what became of it."""
    key = (event["routing_key"], dedup)
    alert = STORE.pd_alerts.get(key)
    action = event["event_action"]
    if action == "trigger":
        if alert and alert["status"] != "resolved":
            alert["events"] += 1
            return "deduplicated"
        STORE.pd_alerts[key] = {"status": "triggered", "events": 1,
                                "summary": event["payload"]["summary"],
                                "severity": event["payload"]["severity"]}
        return "created"
    if not alert or alert["status"] == "resolved":
        return "ignored"
    alert["events"] += 1
    alert["status"] = "resolved" if action == "resolve" else "acknowledged"
    return alert["status"]


def slack_channel_id(store, channel) -> str | None:
    """A channel's id from a name ("#incidents", "incidents") or an id (under STORE.cond)."""
    if not isinstance(channel, str) or not channel:
        return None
    if channel in store.slack_channels:
        return channel
    name = channel.lstrip("#")
    return next((cid for cid, n in store.slack_channels.items() if n == name), None)


def slack_post_message(store, token, body) -> tuple[int, dict, dict]:
    """chat.postMessage against the fake workspace (under STORE.cond): (status, answer, record)."""
    fail = store.take_failure(store.slack_api_fail)
    if fail:
        status = int(fail.get("status", 500))
        answer = {"ok": False, "error": fail.get("error") or ("ratelimited" if status == 429 else "internal_error")}
        return status, answer, {}
    if not token:
        return 200, {"ok": False, "error": "not_authed"}, {}
    if token not in store.slack_tokens:
        return 200, {"ok": False, "error": "invalid_auth"}, {}
    if not isinstance(body, dict):
        return 200, {"ok": False, "error": "invalid_arguments"}, {}
    cid = slack_channel_id(store, body.get("channel"))
    if cid is None:
        return 200, {"ok": False, "error": "channel_not_found"}, {}
    if cid not in store.slack_tokens[token]:
        return 200, {"ok": False, "error": "not_in_channel"}, {}
    if not body.get("text") and not body.get("blocks"):
        return 200, {"ok": False, "error": "no_text"}, {}
    thread = body.get("thread_ts")
    if thread is not None and not any(m["ok"] and m["channel"] == cid and m["ts"] == thread and not m["threadTs"]
                                      for m in store.slack_api):
        return 200, {"ok": False, "error": "thread_not_found"}, {}
    ts = f"{int(time.time())}.{store.seq + 1:06d}"
    message = {"type": "message", "text": body.get("text", ""), "ts": ts}
    if thread:
        message["thread_ts"] = thread
    return 200, {"ok": True, "channel": cid, "ts": ts, "message": message}, {
        "channel": cid, "channelName": store.slack_channels[cid], "ts": ts, "threadTs": thread,
        "replyBroadcast": bool(body.get("reply_broadcast"))}


def path_matches(path: str, prefix: str) -> bool:
    prefix = prefix.rstrip("/")
    return path == prefix or path.startswith(prefix + "/")


def addresses(values) -> list[str]:
    return [addr.lower() for _, addr in email.utils.getaddresses([str(v) for v in values if v])]


def mail_matches(msg: dict, query: dict) -> bool:
    if "to" in query:
        want = query["to"].lower()
        if want not in [a.lower() for a in msg["rcptTos"]] + addresses(msg["to"] + msg["cc"]):
            return False
    if "subject" in query and query["subject"] not in (msg["subject"] or ""):
        return False
    if "since" in query and msg["seq"] <= int(query["since"]):
        return False
    return True


def slack_matches(item: dict, query: dict) -> bool:
    if "path" in query and not path_matches(item["path"], query["path"]):
        return False
    if "since" in query and item["seq"] <= int(query["since"]):
        return False
    if query.get("all", "").lower() not in ("1", "true", "yes") and item["status"] != 200:
        return False
    return True


# ---------------------------------------------------------------------------
# SMTP
# ---------------------------------------------------------------------------

def parse_message(raw: bytes) -> dict:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    headers: dict = {}
    for name, value in msg.items():
        value = str(value)
        if name in headers:
            headers[name] = (headers[name] if isinstance(headers[name], list)
                             else [headers[name]]) + [value]
        else:
            headers[name] = value

    def body(kind: str):
        try:
            part = msg.get_body(preferencelist=(kind,))
        except Exception:
            part = None
        if part is None:
            return None
        try:
            return part.get_content()
        except Exception:
            return part.get_payload(decode=True).decode("utf-8", "replace")

    return {
        "from": str(msg.get("From", "")),
        "to": [str(v) for v in msg.get_all("To", [])],
        "cc": [str(v) for v in msg.get_all("Cc", [])],
        "subject": str(msg.get("Subject", "")),
        "messageId": str(msg.get("Message-ID", "")) or None,
        "inReplyTo": str(msg.get("In-Reply-To", "")) or None,
        "references": str(msg.get("References", "")).split() if msg.get("References") else [],
        "date": str(msg.get("Date", "")) or None,
        "headers": headers,
        "text": body("plain"),
        "html": body("html"),
    }


class MailHandler:
    def _failure(self, stage: str):
        with STORE.cond:
            fail = STORE.smtp_fail
            if fail and fail.get("stage", "data") == stage:
                fail = STORE.take_failure(fail)
                if fail:
                    return f"{fail.get('code', 451)} {fail.get('message') or 'injected failure'}"
        return None

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        reply = self._failure("mail")
        if reply:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self._failure("rcpt")
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        reply = self._failure("data")
        if reply:
            return reply
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8")
        item = parse_message(raw)
        auth = session.auth_data
        item.update({
            "mailFrom": envelope.mail_from,
            "rcptTos": list(envelope.rcpt_tos),
            "authUser": auth.login.decode("utf-8", "replace")
            if isinstance(auth, LoginPassword) else None,
            "tls": session.ssl is not None,
            "raw": raw.decode("utf-8", "replace"),
        })
        STORE.add("mail", item)
        return "250 Message accepted for delivery"


def make_authenticator(user: str | None, password: str | None):
    def authenticator(server, session, envelope, mechanism, auth_data):
        if user is None:
            return AuthResult(success=True, handled=False, auth_data=auth_data)
        ok = (isinstance(auth_data, LoginPassword)
              and auth_data.login.decode() == user and auth_data.password.decode() == password)
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    return authenticator


def self_signed(cert_dir: str) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = os.path.join(cert_dir, "smtp-cert.pem")
    key_path = os.path.join(cert_dir, "smtp-key.pem")
    with open(cert_path, "wb") as fh:
        fh.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM,
                                   serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    os.chmod(key_path, 0o600)
    return cert_path, key_path


class SmtpThread(threading.Thread):
    def __init__(self, host, port, user, password, tls_context):
        super().__init__(daemon=True, name="smtp")
        self.host, self.port = host, port
        self.user, self.password, self.tls_context = user, password, tls_context
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.loop = asyncio.new_event_loop()

    def run(self) -> None:
        asyncio.set_event_loop(self.loop)
        handler = MailHandler()

        def factory():
            return SMTP(
                handler, hostname="fake-smtp.test", ident="fake-smtp (aiosmtpd)",
                authenticator=make_authenticator(self.user, self.password),
                auth_require_tls=False, auth_required=self.user is not None,
                tls_context=self.tls_context, require_starttls=False, loop=self.loop,
            )

        try:
            server = self.loop.run_until_complete(
                self.loop.create_server(factory, self.host, self.port))
            self.port = server.sockets[0].getsockname()[1]
        except BaseException as exc:  # reported by the main thread
            self.error = exc
            self.ready.set()
            return
        self.ready.set()
        try:
            self.loop.run_forever()
        finally:
            server.close()
            self.loop.run_until_complete(server.wait_closed())
            self.loop.close()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.join(timeout=5)


# ---------------------------------------------------------------------------
# HTTP: Slack webhooks + control API
# ---------------------------------------------------------------------------

class Handler(BaseHTTPRequestHandler):
    server_version = "fake-receivers/1"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet
        pass

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, payload, content_type="application/json", headers=None):
        data = payload if isinstance(payload, bytes) else (
            payload.encode() if isinstance(payload, str) else json.dumps(payload).encode())
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.route("GET")

    def do_POST(self):
        self.route("POST")

    def do_DELETE(self):
        self.route("DELETE")

    def do_PUT(self):
        self.route("PUT")

    def route(self, method: str) -> None:
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        body = self._body()
        try:
            if path == "/slack" or path.startswith("/slack/"):
                return self.slack(method, path, body)
            if path == "/pagerduty/v2/enqueue":
                return self.pagerduty(method, body)
            if path == "/slack-api/chat.postMessage":
                return self.slack_api(method, body)
            if path == "/_control" or path.startswith("/_control/"):
                doc = json.loads(body) if body.strip() else {}
                status, result = self.control(method, path[len("/_control"):], query, doc)
                return self._send(status, result)
            return self._send(404, {"error": f"no route {method} {path}"})
        except ValueError as exc:
            return self._send(400, {"error": str(exc)})

    def slack(self, method, path, body):
        if method != "POST":
            return self._send(405, "invalid_method", "text/plain")
        text = body.decode("utf-8", "replace")
        parsed = None
        ctype = self.headers.get("Content-Type", "")
        try:
            if "x-www-form-urlencoded" in ctype:
                parsed = json.loads(parse_qs(text).get("payload", [""])[-1])
            else:
                parsed = json.loads(text)
        except ValueError:
            parsed = None
        with STORE.cond:
            fail = STORE.take_failure(STORE.slack_fail, path)
            status = int(fail.get("status", 500)) if fail else (200 if parsed is not None else 400)
            reply = (fail.get("body") if fail and fail.get("body") is not None else
                     "ok" if status == 200 else
                     "invalid_payload" if status == 400 else
                     "rate_limited" if status == 429 else "internal_error")
            STORE.add("slack", {"path": path, "headers": dict(self.headers.items()),
                                "json": parsed, "body": text, "status": status})
        headers = {}
        if fail and fail.get("retryAfter") is not None:
            headers["Retry-After"] = str(fail["retryAfter"])
        return self._send(status, reply, "text/plain", headers)

    def pagerduty(self, method, body):
        """PagerDuty Events API v2 (https://developer.pagerduty.com/docs/events-api-v2/):
        202 and the dedup_key for a valid event; 400 "invalid event" with errors; a trigger
        whose dedup_key names an open alert is folded into it, a resolve closes it."""
        if method != "POST":
            return self._send(405, {"status": "invalid method"})
        try:
            event = json.loads(body)
        except ValueError:
            event = None
        errors = pagerduty_errors(event)
        with STORE.cond:
            fail = STORE.take_failure(STORE.pagerduty_fail)
            if fail:
                status = int(fail.get("status", 500))
                reply = ({"status": "throttle event", "message": "Requests for this service are arriving too "
                          "quickly. Please retry later."} if status == 429 else {"status": "error"})
            elif errors:
                status, reply = 400, {"status": "invalid event", "message": "Event object is invalid",
                                      "errors": errors}
            else:
                status = 202
                key = event.get("dedup_key") or uuid.uuid4().hex
                reply = {"status": "success", "message": "Event processed", "dedup_key": key}
            item = {"json": event, "status": status, "headers": dict(self.headers.items())}
            if status == 202:
                item["outcome"] = pd_apply(event, reply["dedup_key"])
            STORE.add("pagerduty", item)
        headers = {}
        if fail and fail.get("retryAfter") is not None:
            headers["Retry-After"] = str(fail["retryAfter"])
        return self._send(status, reply, "application/json", headers)

    def slack_api(self, method, body):
        if method != "POST":
            return self._send(405, {"ok": False, "error": "invalid_method"})
        auth = self.headers.get("Authorization", "")
        token = auth[len("Bearer "):].strip() if auth.startswith("Bearer ") else ""
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        with STORE.cond:
            status, answer, record = slack_post_message(STORE, token, doc)
            record.setdefault("channel", None)
            record.setdefault("channelName", None)
            record.setdefault("ts", None)
            record.setdefault("threadTs", None)
            record.setdefault("replyBroadcast", False)
            STORE.add("slack_api", dict(record, json=doc, ok=answer["ok"], error=answer.get("error"),
                                        status=status))
            fail = STORE.slack_api_fail
        headers = {}
        if status == 429 and fail and fail.get("retryAfter") is not None:
            headers["Retry-After"] = str(fail["retryAfter"])
        return self._send(status, answer, "application/json", headers)

    def control(self, method, route, query, doc):
        if route == "" and method == "GET":
            with STORE.cond:
                return 200, {"ok": True, "mail": len(STORE.mail), "slack": len(STORE.slack)}
        if route == "/reset" and method == "POST":
            STORE.reset()
            return 200, {"ok": True}
        if route in ("/mail", "/slack"):
            kind = route[1:]
            match = mail_matches if kind == "mail" else slack_matches
            if method == "GET":
                wait = float(query.get("wait", 0))
                want = int(query.get("min", 1))
                deadline = time.time() + wait
                with STORE.cond:
                    while True:
                        found = [dict(i) for i in getattr(STORE, kind) if match(i, query)]
                        left = deadline - time.time()
                        if len(found) >= want or left <= 0:
                            return 200, found
                        STORE.cond.wait(left)
            if method == "DELETE":
                q = dict(query, all="true")
                with STORE.cond:
                    items = getattr(STORE, kind)
                    keep = [i for i in items if not match(i, q)] if query else []
                    setattr(STORE, kind, keep)
                    return 200, {"deleted": len(items) - len(keep)}
        if route == "/pagerduty" and method == "GET":
            with STORE.cond:
                return 200, [dict(i) for i in STORE.pagerduty
                             if query.get("all") == "true" or i["status"] == 202]
        if route == "/pagerduty/alerts" and method == "GET":
            with STORE.cond:
                return 200, [dict(a, routing_key=k[0], dedup_key=k[1]) for k, a in STORE.pd_alerts.items()
                             if "routing_key" not in query or k[0] == query["routing_key"]]
        if route == "/slack-api/workspace" and method == "POST":
            token = doc.get("token")
            if not isinstance(token, str) or not token.startswith("xox"):
                raise ValueError("token must be a Slack token (xoxb-...)")
            with STORE.cond:
                member = STORE.slack_tokens.setdefault(token, set())
                ids = {}
                for name in doc.get("channels", []):
                    cid = slack_channel_id(STORE, name)
                    if cid is None:
                        cid = f"C{len(STORE.slack_channels) + 1:010d}"
                        STORE.slack_channels[cid] = name.lstrip("#")
                    member.add(cid)
                    ids[name] = cid
                return 200, {"channels": ids}
        if route == "/slack-api/messages" and method == "GET":
            with STORE.cond:
                cid = slack_channel_id(STORE, query["channel"]) if "channel" in query else None
                return 200, [dict(m) for m in STORE.slack_api
                             if (query.get("all") == "true" or m["ok"])
                             and ("channel" not in query or m["channel"] == cid)
                             and ("thread_ts" not in query or m["threadTs"] == query["thread_ts"])]
        if route in ("/slack/fail", "/smtp/fail", "/pagerduty/fail", "/slack-api/fail"):
            attr = {"/slack/fail": "slack_fail", "/smtp/fail": "smtp_fail",
                    "/slack-api/fail": "slack_api_fail"}.get(route, "pagerduty_fail")
            with STORE.cond:
                if method == "DELETE":
                    setattr(STORE, attr, None)
                    return 200, {"ok": True}
                if method == "POST":
                    fail = dict(doc)
                    count = fail.get("count")
                    fail["remaining"] = None if count is None else int(count)
                    fail["hits"] = 0
                    if attr == "smtp_fail" and fail.get("stage", "data") not in (
                            "mail", "rcpt", "data"):
                        raise ValueError("stage must be mail, rcpt or data")
                    setattr(STORE, attr, fail)
                    return 200, fail
                if method == "GET":
                    return 200, getattr(STORE, attr)
        return 404, {"error": f"no control endpoint {method} /_control{route}"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--smtp-port", type=int, default=0)
    ap.add_argument("--http-port", type=int, default=0)
    ap.add_argument("--ready-file")
    ap.add_argument("--smtp-user")
    ap.add_argument("--smtp-password")
    ap.add_argument("--starttls", action="store_true", help="offer STARTTLS (self-signed)")
    ap.add_argument("--cert-dir", help="where --starttls writes its cert (default: temp dir)")
    args = ap.parse_args(argv)
    if (args.smtp_user is None) != (args.smtp_password is None):
        ap.error("--smtp-user and --smtp-password go together")

    cert_path = None
    tls_context = None
    own_cert_dir = None
    if args.starttls:
        cert_dir = args.cert_dir or tempfile.mkdtemp(prefix="fake-smtp-")
        own_cert_dir = None if args.cert_dir else cert_dir
        os.makedirs(cert_dir, exist_ok=True)
        cert_path, key_path = self_signed(cert_dir)
        tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls_context.load_cert_chain(cert_path, key_path)

    smtp = SmtpThread(args.host, args.smtp_port, args.smtp_user, args.smtp_password, tls_context)
    smtp.start()
    smtp.ready.wait()
    if smtp.error:
        print(f"receivers: SMTP failed to start: {smtp.error}", file=sys.stderr)
        return 1

    httpd = ThreadingHTTPServer((args.host, args.http_port), Handler)
    httpd.daemon_threads = True
    http_port = httpd.server_address[1]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.2},
                              daemon=True)
    thread.start()

    base = f"http://{args.host}:{http_port}"
    info = {"smtp": f"{args.host}:{smtp.port}", "slack": f"{base}/slack",
            "pagerduty": f"{base}/pagerduty/v2/enqueue", "slackApi": f"{base}/slack-api/",
            "control": f"{base}/_control", "pid": os.getpid(),
            "starttls": bool(args.starttls), "cert": cert_path}
    if args.ready_file:
        tmp = f"{args.ready_file}.tmp.{os.getpid()}"
        with open(tmp, "w") as fh:
            json.dump(info, fh)
        os.replace(tmp, args.ready_file)
    print(f"receivers: smtp {info['smtp']}, http {base}", file=sys.stderr, flush=True)
    while not stop.wait(1.0):
        pass
    httpd.shutdown()
    httpd.server_close()
    smtp.stop()
    if own_cert_dir:
        shutil.rmtree(own_cert_dir, ignore_errors=True)
    print("receivers: stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
