#!/usr/bin/env python3
"""Fake AWS for the aws-recovery-controller tests: moto + a fault layer, one process.

moto's server (a WSGI app) runs in-process, wrapped by a thin WSGI middleware
that counts and logs every AWS call, injects faults, and lets tests override
state that moto cannot reach through the AWS API.

Usage
-----
    python server.py [--host 127.0.0.1] [--port 0] [--ready-file FILE]
                     [--account-id 123456789012] [--log-requests]

--port 0 picks a free port.  Once serving, FILE receives (atomically):
    {"endpoint": "http://127.0.0.1:PORT", "control": "http://127.0.0.1:PORT/_faults",
     "pid": PID, "accountId": "123456789012", "region": "us-east-1"}
SIGTERM/SIGINT stop it with exit status 0.

Clients: AWS_ENDPOINT_URL=http://127.0.0.1:PORT, any dummy credentials,
region us-east-1.  The service of each call is taken from the SigV4 credential
scope (".../us-east-1/ecs/aws4_request"), falling back on X-Amz-Target, the
Route 53 path prefix and the query-protocol Version.  moto's own API stays at
/moto-api/ (POST /moto-api/reset wipes moto's data).

Control API (JSON in, JSON out; all under /_faults)
---------------------------------------------------
GET    /_faults                      {"ok": true, ...}
POST   /_faults/reset                clear rules, overrides, counters, log, tracked
                                     changes/rollouts and settings (not moto's data)

Fault rules (first matching live rule wins, in creation order)
POST   /_faults/rules  {"service": "ecs"|"rds"|"route53"|"sts"|"*",
                        "operation": "DescribeServices"|"*"|null,
                        "region": "eu-west-3" (optional: only requests signed for this region),
                        "match": {"cluster": "c1", "service": "web"}   (optional, see "params" in the log;
                                  list-valued params match if they contain the value),
                        "error": "ThrottlingException", "status": 400, "message": "Rate exceeded",
                        "count": 3 (matching requests to affect; null = until removed),
                        "skip": 0 (let this many matching requests through first),
                        "delayMs": 0 (latency added before answering/erroring/resetting),
                        "reset": false (close the connection without answering: the client
                                        reads EOF, no status line),
                        "hold": false (moto answers at once, as of the request, but the
                                       answer is sent only when the rule is removed, or
                                       after "holdMs" (default 30000): a held answer that
                                       arrives late, as behind a slow network or retries)}
                       -> {"id": "r1", ...rule, "hits": 0, "remaining": 3}
                     error without status -> 503 for ServiceUnavailable*, 500 for
                     InternalFailure/InternalError/ServerException/..., else 400 (throttling
                     and other client errors); status without error -> a code
                     chosen by status (400 throttling, 500 InternalFailure, 503 ServiceUnavailable).
                     Error bodies use each protocol's wire format:
                       ecs, events (awsJson1_1), sqs (awsJson1_0): {"__type": CODE, "message": MSG}
                                         + x-amzn-ErrorType header
                       rds/sts (awsQuery): <ErrorResponse><Error><Type>Sender|Receiver</Type>
                                           <Code>CODE</Code><Message>MSG</Message></Error><RequestId/>
                       route53 (restXml): same shape, xmlns="https://route53.amazonaws.com/doc/2013-04-01/"
GET    /_faults/rules                [rule, ...]
GET    /_faults/rules/{id}           rule
DELETE /_faults/rules                clear all          DELETE /_faults/rules/{id}  one

Calls and log (every AWS request, faulted or not)
GET    /_faults/calls                {"ecs.DescribeServices": 3, ...}
DELETE /_faults/calls                reset the counter
GET    /_faults/log[?service=&operation=&since=SEQ]
       [{"seq": 1, "time": 1700000000.1, "service": "ecs", "operation": "UpdateService",
         "region": "us-east-1", "params": {"cluster": "c1", "service": "web", "forceNewDeployment": true},
         "faulted": false, "rule": null, "status": 200, "durationMs": 3.2,
         "attempt": 1, "invocationId": "...",      (from the SDK's amz-sdk-request /
                                                   amz-sdk-invocation-id headers, if sent)
         "result": {"deploymentId": "ecs-svc/..."}}, ...]
       status 0 = connection reset by a rule
       params: ecs -> cluster/service/services/serviceName/desiredCount/taskDefinition/forceNewDeployment/...
               rds -> DBInstanceIdentifier/ForceFailover/Filters {"name": [values]}/...
               route53 -> path ids (Id/HostedZoneId) + "changes": [{"Action","Name","Type","SetIdentifier",...}]
               sqs -> QueueUrl/WaitTimeSeconds/MaxNumberOfMessages/...; events -> Name/Rule/...,
                      PutEvents "entries": [{"Source","DetailType","Resources","EventBusName"}]
DELETE /_faults/log

Behaviour settings (POST merges; GET shows; reset restores these defaults)
POST   /_faults/settings {"ecs": {"settleOnCreate": true, "rolloutSeconds": 0},
                          "rds": {"rebootSeconds": 0, "strictForceFailover": true,
                                  "failoverSeconds": 0},
                          "route53": {"changePendingSeconds": 0, "changePendingCalls": 0}}
  ecs.settleOnCreate    CreateService yields runningCount=desiredCount, PRIMARY COMPLETED
                        (moto alone starts every service at runningCount 0).
  ecs.rolloutSeconds    UpdateService(forceNewDeployment or a new taskDefinition) creates a
                        new PRIMARY deployment (new id, createdAt, IN_PROGRESS, runningCount 0)
                        and demotes the old one to ACTIVE; the first ECS call at least this
                        many seconds later completes it (ACTIVE removed, COMPLETED, running =
                        desired, steady-state events).  null = never by itself.  A pinned
                        runningCount < desiredCount also holds the rollout IN_PROGRESS.
  rds.rebootSeconds     RebootDBInstance answers DBInstanceStatus "rebooting"; the first RDS
                        call this many seconds later sees "available".  ForceFailover=true on a
                        MultiAZ instance swaps AvailabilityZone and SecondaryAvailabilityZone.
  rds.strictForceFailover  ForceFailover=true on a single-AZ instance fails with
                        InvalidParameterCombination (as AWS does; moto alone accepts it).
  rds.failoverSeconds   FailoverDBCluster leaves the cluster "failing-over" with its old
                        writer for this long (moto flips the writer at once); the first RDS
                        call later completes it. Both ends are cluster events (DescribeEvents
                        SourceType db-cluster): "Started cross AZ failover to DB instance"
                        and "Completed failover to DB instance".
  route53.changePending*   ChangeResourceRecordSets gets a unique change id (moto alone always
                        answers /change/C2682N5HXP0BZ4) and GetChange says PENDING until both
                        N seconds have passed and N GetChange calls for it were answered PENDING.

ECS service overrides
POST   /_faults/ecs/services {"cluster": "c1", "service": "web",
          "runningCount": 1, "pendingCount": 0,   (pinned: re-applied before every ECS call
                                                   unless "pin": false; also shown on PRIMARY)
          "desiredCount": 2,                      (set once, like UpdateService)
          "events": [{"message": "...", "createdAt": 1700000000 | "2024-01-01T00:00:00Z", "id": "..."}],
          "replaceEvents": false,                 (events are prepended newest-first)
          "deployments": [{"id", "status": "PRIMARY"|"ACTIVE", "rolloutState", "rolloutStateReason",
                           "createdAt", "updatedAt", "runningCount", "pendingCount",
                           "desiredCount", "failedTasks", "taskDefinition"}],  (replace all)
          "primaryDeployment": {...fields...},    (patch the PRIMARY deployment, e.g.
                                                   {"rolloutState": "COMPLETED"})
          "newDeployment": {...fields...},        (what forceNewDeployment does: new PRIMARY,
                                                   old PRIMARY -> ACTIVE; deployments made by
                                                   these two fields are never completed by
                                                   rolloutSeconds)
          "completeRollout": true,                (finish the rollout now: PRIMARY COMPLETED,
                                                   others dropped, running = desired)
          "rolloutSeconds": 5 | null,             (per-service ecs.rolloutSeconds)
          "region": "us-east-1", "accountId": "123456789012"}
       -> the service's state (as GET)
GET    /_faults/ecs/services?cluster=c1&service=web   state + pins + rollout
DELETE /_faults/ecs/services[?cluster=&service=]     drop pins (all or one)

RDS instance overrides
POST   /_faults/rds/instances {"dbInstanceIdentifier": "db1", "status": "failed",
          "multiAZ": true, "availabilityZone": "us-east-1a",
          "secondaryAvailabilityZone": "us-east-1b", "pin": false}
       status is pinned (re-applied before every RDS call, beating reboots) only with "pin": true
       -> instance state
GET    /_faults/rds/instances?dbInstanceIdentifier=db1
DELETE /_faults/rds/instances[?dbInstanceIdentifier=]
POST   /_faults/rds/clusters {"dbClusterIdentifier": "c1", "failoverSeconds": 3600,
          "completeFailover": true}   per-cluster rds.failoverSeconds; finish a failover now

Route 53
POST   /_faults/route53/healthchecks {"healthCheckId": "ID", "failing": 2, "total": 3,
          "failureMessage": "Failure: HTTP Status Code 503, Service Unavailable. Resolved IP: 192.0.2.10"}
       GetHealthCheckStatus then lists `total` checkers, the first `failing` failing.
GET    /_faults/route53/healthchecks
DELETE /_faults/route53/healthchecks[/ID]    back to moto's single Success observation
GET    /_faults/route53/changes              tracked changes and their status
POST   /_faults/route53/changes/{id} {"status": "INSYNC"}   force a tracked change's status
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import io
import json
import os
import random
import re
import signal
import socket
import string
import struct
import sys
import threading
import time
import traceback
import uuid
from urllib.parse import parse_qs, unquote

DEFAULT_REGION = "us-east-1"
ROUTE53_NS = "https://route53.amazonaws.com/doc/2013-04-01/"
QUERY_NS = {
    "rds": "http://rds.amazonaws.com/doc/2014-10-31/",
    "sts": "https://sts.amazonaws.com/doc/2011-06-15/",
}
THROTTLING_CODES = {
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
    "TooManyRequestsException", "ProvisionedThroughputExceededException",
    "TransactionInProgressException", "RequestLimitExceeded", "BandwidthLimitExceeded",
    "LimitExceededException", "RequestThrottled", "SlowDown", "PriorRequestNotComplete",
    "EC2ThrottledException",
}
SERVER_ERROR_CODES = {
    "InternalFailure", "InternalError", "InternalServerError", "InternalServerException",
    "InternalServiceError", "ServerException", "InternalServiceErrorException",
}
DEFAULT_SETTINGS = {
    "ecs": {"settleOnCreate": True, "rolloutSeconds": 0},
    "rds": {"rebootSeconds": 0, "strictForceFailover": True, "failoverSeconds": 0},
    "route53": {"changePendingSeconds": 0, "changePendingCalls": 0},
}
ECS_PARAM_KEYS = (
    "cluster", "service", "services", "serviceName", "desiredCount", "taskDefinition",
    "forceNewDeployment", "tasks", "task", "family", "include", "launchType", "status",
)
# Logged params of the other JSON-protocol services (PutEvents and the batch calls also
# log "entries": each entry's Source/DetailType/Resources/EventBusName/Id).
JSON_PARAM_KEYS = {
    "sqs": ("QueueUrl", "QueueName", "WaitTimeSeconds", "MaxNumberOfMessages", "VisibilityTimeout"),
    "events": ("Name", "Rule", "EventBusName", "EventPattern", "State"),
}
QUERY_PARAM_KEYS = (
    "DBInstanceIdentifier", "ForceFailover", "DBClusterIdentifier", "MaxRecords", "Marker",
    "RoleArn", "RoleSessionName", "ApplyImmediately", "MultiAZ", "SourceIdentifier", "SourceType",
)
CHANGE_KEYS = ("Action", "Name", "Type", "SetIdentifier", "Weight", "Failover", "Region",
               "HealthCheckId", "TTL")
CHECKER_REGIONS = [
    ("us-east-1", "15.177.2.10"), ("us-west-1", "15.177.10.10"), ("us-west-2", "15.177.14.10"),
    ("eu-west-1", "15.177.62.10"), ("ap-southeast-1", "15.177.42.10"),
    ("ap-southeast-2", "15.177.50.10"), ("ap-northeast-1", "15.177.34.10"),
    ("sa-east-1", "15.177.74.10"),
]


def utcnow() -> dt.datetime:
    """Naive UTC, as moto stores its timestamps."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def parse_time(value) -> dt.datetime:
    if value is None:
        return utcnow()
    if isinstance(value, (int, float)):
        return dt.datetime.fromtimestamp(value, dt.timezone.utc).replace(tzinfo=None)
    text = str(value).strip().replace("Z", "+00:00")
    parsed = dt.datetime.fromisoformat(text)
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return parsed


def jsonable(value):
    if isinstance(value, dt.datetime):
        stamp = value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value
        return stamp.isoformat().replace("+00:00", "Z")
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def new_ecs_deployment_id() -> str:
    return f"ecs-svc/{random.randint(10**18, 10**19 - 1)}"


def new_change_id() -> str:
    return "C" + "".join(random.choices(string.ascii_uppercase + string.digits, k=13))


class ControlError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


# WSGI environ key: when the server read the request line (time.time()).
ARRIVED = "fault.arrived"


class ConnectionAborted(ConnectionResetError):
    """Raised to make werkzeug drop the connection without a response."""


class BodyReader(io.RawIOBase):
    """One request's body and nothing after it, for a kept-alive connection.

    werkzeug's server closes every connection, and after each response reads whatever the
    socket holds (for a client still sending a body), which on a kept-alive connection would
    swallow the next request. With this reader as the handler's input, that read ends at the
    body's end, and `drain` reads what the application left, so the next request line is
    where the next read starts. The SDK keeps connections alive against AWS; so does this
    fake, so a benchmark does not pay a TCP connect per call that AWS would not charge.
    """

    def __init__(self, raw, length: int):
        super().__init__()
        self.raw = raw
        self.left = length

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.left)
        if n <= 0:
            return 0
        data = self.raw.read(n)
        buffer[:len(data)] = data
        self.left = 0 if not data else self.left - len(data)
        return len(data)

    def drain(self) -> None:
        while self.left > 0 and self.read(min(self.left, 1 << 16)):
            pass


# ---------------------------------------------------------------------------
# Request identification
# ---------------------------------------------------------------------------

class Route53Operations:
    """Maps (method, path) to a Route 53 operation using botocore's service model."""

    def __init__(self) -> None:
        from botocore.loaders import Loader

        model = Loader().load_service_model("route53", "service-2")
        routes = []
        for name, op in model["operations"].items():
            http = op.get("http", {})
            # URI labels are locationNames; report the input member names instead
            members = model["shapes"].get(op.get("input", {}).get("shape", ""), {}).get(
                "members", {})
            rename = {m.get("locationName"): member for member, m in members.items()
                      if m.get("location") == "uri"}
            uri = http.get("requestUri", "").split("?", 1)[0]
            names = re.findall(r"\{([^}]+)\}", uri)
            literal = len(re.sub(r"\{[^}]+\}", "", uri))
            pattern = ""
            for part in re.split(r"(\{[^}]+\})", uri.rstrip("/")):
                if part.startswith("{"):
                    key = part[1:-1]
                    greedy = key.endswith("+")
                    key = key.rstrip("+")
                    pattern += f"(?P<{key}>{'.+' if greedy else '[^/]+'})"
                else:
                    pattern += re.escape(part)
            routes.append((literal, http.get("method", "GET"), re.compile(f"^{pattern}/?$"), name,
                           {n.rstrip("+"): rename.get(n.rstrip("+"), n.rstrip("+")) for n in names}))
        routes.sort(key=lambda r: -r[0])
        self.routes = routes

    def match(self, method: str, path: str):
        for _, m, regex, name, rename in self.routes:
            if m != method:
                continue
            found = regex.match(path)
            if found:
                return name, {rename.get(k, k): unquote(v) for k, v in found.groupdict().items()}
        return None, {}


def service_from_request(environ, body: bytes, path: str) -> str | None:
    auth = environ.get("HTTP_AUTHORIZATION", "")
    found = re.search(r"Credential=[^/]+/\d{8}/([^/]+)/([^/]+)/aws4_request", auth)
    if found:
        return found.group(2).lower()
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target.startswith("AmazonEC2ContainerService"):
        return "ecs"
    if path.startswith("/2013-04-01/"):
        return "route53"
    form = parse_form(environ, body)
    version = form.get("Version")
    if version == "2014-10-31":
        return "rds"
    if version == "2011-06-15":
        return "sts"
    return None


# How often a long poll asks moto again.
LONG_POLL_STEP = 0.05


def long_poll(service: str, operation: str, body: bytes) -> tuple[bytes, float | None]:
    """An SQS ReceiveMessage that waits: its body as a short poll, and when to stop
    asking (None: not a long poll).  Only the request's own WaitTimeSeconds counts (a
    queue's ReceiveMessageWaitTimeSeconds default is not applied)."""
    if service != "sqs" or operation != "ReceiveMessage":
        return body, None
    try:
        doc = json.loads(body or b"{}")
        wait = int(doc.get("WaitTimeSeconds") or 0)
    except (ValueError, TypeError, AttributeError):
        return body, None
    if wait <= 0:
        return body, None
    doc["WaitTimeSeconds"] = 0
    return json.dumps(doc).encode(), time.time() + wait


def has_messages(out: list[bytes]) -> bool:
    try:
        return bool(json.loads(b"".join(out) or b"{}").get("Messages"))
    except (ValueError, AttributeError):
        return True


def region_from_request(environ) -> str:
    auth = environ.get("HTTP_AUTHORIZATION", "")
    found = re.search(r"Credential=[^/]+/\d{8}/([^/]+)/([^/]+)/aws4_request", auth)
    if found and found.group(1) not in ("aws-global",):
        return found.group(1)
    return DEFAULT_REGION


def parse_form(environ, body: bytes) -> dict:
    qs = environ.get("QUERY_STRING", "")
    merged = {k: v[-1] for k, v in parse_qs(qs, keep_blank_values=True).items()}
    ctype = environ.get("CONTENT_TYPE", "")
    if body and "x-www-form-urlencoded" in ctype:
        for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items():
            merged[k] = v[-1]
    return merged


def query_params(form: dict) -> dict:
    params = {k: form[k] for k in QUERY_PARAM_KEYS if k in form}
    for key in ("ForceFailover", "ApplyImmediately", "MultiAZ"):
        if key in params:
            params[key] = str(params[key]).lower() == "true"
    filters: dict[str, list[str]] = {}
    names = {}
    for key, value in form.items():
        found = re.match(r"^Filters\.Filter\.(\d+)\.Name$", key)
        if found:
            names[found.group(1)] = value
    for idx, name in sorted(names.items(), key=lambda kv: int(kv[0])):
        values = []
        for key, value in form.items():
            found = re.match(rf"^Filters\.Filter\.{idx}\.Values\.Value\.(\d+)$", key)
            if found:
                values.append((int(found.group(1)), value))
        filters[name] = [v for _, v in sorted(values)]
    if filters:
        params["Filters"] = filters
    return params


def route53_changes(body: bytes) -> list[dict]:
    try:
        import xml.etree.ElementTree as ET

        root = ET.fromstring(body)
    except Exception:
        return []

    def local(tag: str) -> str:
        return tag.rsplit("}", 1)[-1]

    changes = []
    for elem in root.iter():
        if local(elem.tag) != "Change":
            continue
        item = {}
        for child in elem.iter():
            name = local(child.tag)
            if name in CHANGE_KEYS and name not in item and child.text and child.text.strip():
                item[name] = child.text.strip()
        values = [c.text for c in elem.iter() if local(c.tag) == "Value" and c.text]
        if values:
            item["Values"] = values
        changes.append(item)
    return changes


# ---------------------------------------------------------------------------
# The fault layer
# ---------------------------------------------------------------------------

class FaultLayer:
    def __init__(self, moto_app, account_id: str, log_limit: int = 20000) -> None:
        self.moto_app = moto_app
        self.account_id = account_id
        self.log_limit = log_limit
        self.state_lock = threading.RLock()  # fault-layer bookkeeping
        self.moto_lock = threading.RLock()  # moto's backends are not thread-safe
        self.r53_ops = Route53Operations()
        self._reset_state()

    # -- state ------------------------------------------------------------
    def _reset_state(self) -> None:
        with self.state_lock:
            self.rules: list[dict] = []
            self.rule_seq = 0
            self.calls: dict[str, int] = {}
            self.log: list[dict] = []
            self.log_seq = 0
            self.settings = copy.deepcopy(DEFAULT_SETTINGS)
            self.ecs_pins: dict[tuple, dict] = {}
            self.ecs_rollouts: dict[tuple, dict] = {}
            self.rds_pins: dict[tuple, dict] = {}
            self.rds_reboots: dict[tuple, float] = {}
            self.rds_failovers: dict[tuple, tuple[float, str]] = {}
            self.rds_cluster_failover_seconds: dict[tuple, float] = {}
            self.r53_health: dict[str, dict] = {}
            self.r53_changes: dict[str, dict] = {}
            # Held answers wait on their rule's event; removing the rule releases them.
            for event in getattr(self, "holds", {}).values():
                event.set()
            self.holds: dict[str, threading.Event] = {}

    # -- moto backends ----------------------------------------------------
    def ecs_backend(self, region: str, account: str | None = None):
        from moto.ecs.models import ecs_backends

        return ecs_backends[account or self.account_id][region]

    def rds_backend(self, region: str, account: str | None = None):
        from moto.rds.models import rds_backends

        return rds_backends[account or self.account_id][region]

    # -- WSGI entry -------------------------------------------------------
    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "") or "/"
        if path == "/_faults" or path.startswith("/_faults/"):
            return self.control(environ, start_response, path)
        if path.startswith("/moto-api"):
            with self.moto_lock:
                return self._call_moto(environ, start_response)
        return self.aws(environ, start_response, path)

    @staticmethod
    def _read_body(environ) -> bytes:
        stream = environ["wsgi.input"]
        length = environ.get("CONTENT_LENGTH")
        if length:
            try:
                body = stream.read(int(length))
            except ValueError:
                body = b""
        elif environ.get("wsgi.input_terminated"):
            body = stream.read()
        else:
            body = b""
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        return body

    def _call_moto(self, environ, start_response):
        captured = {}

        def capture(status, headers, exc_info=None):
            captured["status"] = status
            captured["headers"] = headers
            return lambda data: captured.setdefault("written", []).append(data)

        result = self.moto_app(environ, capture)
        try:
            chunks = captured.pop("written", []) + [c for c in result]
        finally:
            if hasattr(result, "close"):
                result.close()
        body = b"".join(chunks)
        start_response(captured["status"], captured["headers"])
        return [body]

    # -- AWS requests -----------------------------------------------------
    def identify(self, environ, body: bytes, path: str):
        service = service_from_request(environ, body, path) or "unknown"
        method = environ.get("REQUEST_METHOD", "GET")
        params: dict = {}
        operation = None
        if service == "ecs":
            target = environ.get("HTTP_X_AMZ_TARGET", "")
            operation = target.rsplit(".", 1)[-1] if target else None
            try:
                doc = json.loads(body or b"{}")
            except ValueError:
                doc = {}
            if isinstance(doc, dict):
                params = {k: doc[k] for k in ECS_PARAM_KEYS if k in doc}
        elif service in JSON_PARAM_KEYS and environ.get("HTTP_X_AMZ_TARGET"):
            # SQS and EventBridge speak AWS JSON 1.0 / 1.1: X-Amz-Target names the operation.
            operation = environ["HTTP_X_AMZ_TARGET"].rsplit(".", 1)[-1]
            try:
                doc = json.loads(body or b"{}")
            except ValueError:
                doc = {}
            if isinstance(doc, dict):
                params = {k: doc[k] for k in JSON_PARAM_KEYS[service] if k in doc}
                if isinstance(doc.get("Entries"), list):
                    params["entries"] = [
                        {k: e.get(k) for k in ("Source", "DetailType", "Resources", "EventBusName", "Id") if k in e}
                        for e in doc["Entries"] if isinstance(e, dict)
                    ]
        elif service == "route53":
            operation, params = self.r53_ops.match(method, path)
            if operation == "ChangeResourceRecordSets":
                params["changes"] = route53_changes(body)
        else:
            form = parse_form(environ, body)
            operation = form.get("Action")
            params = query_params(form)
        if not operation:
            operation = f"{method} {path}"
        return service, operation, params

    def match_rule(self, service: str, operation: str, params: dict, region: str | None = None):
        with self.state_lock:
            for rule in self.rules:
                if rule["remaining"] is not None and rule["remaining"] <= 0:
                    continue
                if rule["service"] not in (None, "*", service):
                    continue
                if rule["operation"] not in (None, "*", operation):
                    continue
                if rule.get("region") not in (None, region):
                    continue
                if not self._params_match(rule.get("match") or {}, params):
                    continue
                rule["seen"] += 1
                if rule["seen"] <= rule["skip"]:
                    continue
                rule["hits"] += 1
                if rule["remaining"] is not None:
                    rule["remaining"] -= 1
                return copy.deepcopy(rule)
        return None

    @staticmethod
    def _params_match(wanted: dict, params: dict) -> bool:
        for key, value in wanted.items():
            have = params.get(key)
            if isinstance(have, list):
                names = [str(h).rsplit("/", 1)[-1] if isinstance(h, str) else h for h in have]
                if value not in have and value not in names:
                    return False
            elif isinstance(have, dict):
                if value not in have and value not in sum(have.values(), []):
                    return False
            elif isinstance(have, str) and isinstance(value, str):
                if have != value and have.rsplit("/", 1)[-1] != value:
                    return False
            elif have != value:
                return False
        return True

    def aws(self, environ, start_response, path):
        # When the request line was read (see Handler.parse_request), not when this thread
        # got here: under load the two differ by tens of ms, which would blur the log's
        # arrival times (Route 53's requests per second are counted from them).
        started = environ.get(ARRIVED, time.time())
        body = self._read_body(environ)
        service, operation, params = self.identify(environ, body, path)
        region = region_from_request(environ)
        key = f"{service}.{operation}"
        with self.state_lock:
            self.calls[key] = self.calls.get(key, 0) + 1
            self.log_seq += 1
            entry = {
                "seq": self.log_seq, "time": started, "service": service,
                "operation": operation, "region": region, "params": params,
                "faulted": False, "rule": None, "status": None,
            }
            # SDK retry bookkeeping (botocore and the Rust SDK both send these)
            found = re.search(r"attempt=(\d+)", environ.get("HTTP_AMZ_SDK_REQUEST", ""))
            if found:
                entry["attempt"] = int(found.group(1))
            if environ.get("HTTP_AMZ_SDK_INVOCATION_ID"):
                entry["invocationId"] = environ["HTTP_AMZ_SDK_INVOCATION_ID"]
            self.log.append(entry)
            if len(self.log) > self.log_limit:
                del self.log[: len(self.log) - self.log_limit]
        rule = self.match_rule(service, operation, params, region)
        try:
            if rule and rule.get("hold"):
                return self._held(rule, entry, environ, start_response)
            if rule:
                entry["rule"] = rule["id"]
                if rule.get("delayMs"):
                    time.sleep(rule["delayMs"] / 1000.0)
                if rule.get("reset"):
                    entry["faulted"] = True
                    entry["status"] = 0
                    self._abort_connection(environ)
                if rule.get("error") or rule.get("status"):
                    entry["faulted"] = True
                    status, headers, payload = self.error_response(service, rule)
                    entry["status"] = status
                    start_response(f"{status} {http_reason(status)}", headers)
                    return [payload]
            ctx = {"service": service, "operation": operation, "region": region,
                   "params": params, "result": {}}
            # A long poll (SQS ReceiveMessage with WaitTimeSeconds > 0) must not hold moto's
            # lock while it waits, or every other call would wait with it: it is asked of
            # moto as short polls, the lock let go between them, until a message comes or
            # the wait is over.
            body, poll_until = long_poll(service, operation, body)
            while True:
                environ["wsgi.input"] = io.BytesIO(body)
                environ["CONTENT_LENGTH"] = str(len(body))
                with self.moto_lock:
                    self.before_moto(ctx)
                    captured = {}

                    def capture(status, headers, exc_info=None):
                        captured["status"] = status
                        captured["headers"] = headers
                        return lambda data: None

                    THREAD.ctx = ctx
                    try:
                        out = self._call_moto(environ, capture)
                    finally:
                        THREAD.ctx = None
                if poll_until is None or time.time() >= poll_until or has_messages(out):
                    break
                time.sleep(LONG_POLL_STEP)
            start_response(captured.get("status", "500 Internal Server Error"), captured.get("headers", []))
            entry["status"] = int(captured.get("status", "500").split()[0])
            if ctx["result"]:
                entry["result"] = ctx["result"]
            return out
        finally:
            entry["durationMs"] = round((time.time() - started) * 1000, 1)

    def _held(self, rule, entry, environ, start_response):
        """moto answers now; the answer leaves when the rule is removed (or holdMs passes)."""
        entry["rule"] = rule["id"]
        entry["held"] = True
        captured = {}

        def capture(status, headers, exc_info=None):
            captured["status"] = status
            captured["headers"] = headers
            return lambda data: None

        ctx = {"service": entry["service"], "operation": entry["operation"], "region": entry["region"],
               "params": entry["params"], "result": {}}
        with self.moto_lock:
            self.before_moto(ctx)
            THREAD.ctx = ctx
            try:
                body = b"".join(self._call_moto(environ, capture))
            finally:
                THREAD.ctx = None
        with self.state_lock:
            event = self.holds.get(rule["id"])
        if event is not None:
            event.wait((rule.get("holdMs") or 30000) / 1000.0)
        entry["status"] = int(captured.get("status", "500").split()[0])
        start_response(captured.get("status", "500 Internal Server Error"), captured.get("headers", []))
        return [body]

    @staticmethod
    def _abort_connection(environ):
        sock = environ.get("werkzeug.socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        raise ConnectionAborted("fault rule: reset")

    def error_response(self, service: str, rule: dict):
        code = rule.get("error")
        status = rule.get("status")
        if not code:
            code = {400: "Throttling", 429: "Throttling", 503: "ServiceUnavailable"}.get(
                status or 500, "InternalFailure")
            if service == "ecs" and code == "Throttling":
                code = "ThrottlingException"
        if not status:
            if code.startswith("ServiceUnavailable"):
                status = 503
            elif code in SERVER_ERROR_CODES:
                status = 500
            else:
                status = 400  # throttling and every other client-side code
        message = rule.get("message") or (
            "Rate exceeded" if code in THROTTLING_CODES else f"Injected fault {code}")
        request_id = str(uuid.uuid4())
        if service in ("ecs", "sqs", "events"):
            payload = json.dumps({"__type": code, "message": message}).encode()
            version = "1.0" if service == "sqs" else "1.1"
            headers = [("Content-Type", f"application/x-amz-json-{version}"),
                       ("x-amzn-ErrorType", code), ("x-amzn-RequestId", request_id)]
        else:
            kind = "Sender" if status < 500 else "Receiver"
            if service == "route53":
                ns = ROUTE53_NS
            else:
                ns = QUERY_NS.get(service, "")
            xmlns = f' xmlns="{ns}"' if ns else ""
            payload = (
                f'<?xml version="1.0"?>\n<ErrorResponse{xmlns}><Error><Type>{kind}</Type>'
                f"<Code>{xml_escape(code)}</Code><Message>{xml_escape(message)}</Message>"
                f"</Error><RequestId>{request_id}</RequestId></ErrorResponse>"
            ).encode()
            headers = [("Content-Type", "text/xml"), ("x-amzn-RequestId", request_id)]
        headers.append(("Content-Length", str(len(payload))))
        return status, headers, payload

    # -- hooks around moto ------------------------------------------------
    def before_moto(self, ctx) -> None:
        """Runs under moto_lock before moto sees the request."""
        now = time.time()
        if ctx["service"] == "ecs":
            self._ecs_tick(now)
        elif ctx["service"] == "rds":
            self._rds_tick(now)

    def _ecs_service(self, account, region, cluster, name, required=True):
        backend = self.ecs_backend(region, account)
        svc = backend.services.get(f"{cluster}:{name}")
        if svc is None and required:
            raise ControlError(404, f"ECS service {cluster}/{name} not found in moto")
        return svc

    def _ecs_tick(self, now: float) -> None:
        with self.state_lock:
            rollouts = list(self.ecs_rollouts.items())
            pins = list(self.ecs_pins.items())
        for key, roll in rollouts:
            svc = self._ecs_service(*key, required=False)
            if svc is None:
                with self.state_lock:
                    self.ecs_rollouts.pop(key, None)
                continue
            seconds = roll.get("seconds")
            if seconds is None or now < roll["created"] + seconds:
                continue
            pin = self.ecs_pins.get(key, {})
            if "runningCount" in pin and pin["runningCount"] < svc.desired_count:
                continue
            self._ecs_complete_rollout(key, svc)
        for key, pin in pins:
            svc = self._ecs_service(*key, required=False)
            if svc is None:
                continue
            self._ecs_apply_pin(svc, pin)

    @staticmethod
    def _ecs_primary(svc):
        for dep in svc.deployments:
            if dep.get("status") == "PRIMARY":
                return dep
        return svc.deployments[0] if svc.deployments else None

    def _ecs_apply_pin(self, svc, pin) -> None:
        primary = self._ecs_primary(svc)
        if "runningCount" in pin:
            svc.running_count = pin["runningCount"]
            if primary is not None:
                primary["runningCount"] = pin["runningCount"]
        if "pendingCount" in pin:
            svc.pending_count = pin["pendingCount"]
            if primary is not None:
                primary["pendingCount"] = pin["pendingCount"]

    def _ecs_complete_rollout(self, key, svc) -> None:
        with self.state_lock:
            roll = self.ecs_rollouts.pop(key, None)
        primary = self._ecs_primary(svc)
        if primary is None:
            return
        now = utcnow()
        primary.update({
            "rolloutState": "COMPLETED",
            "rolloutStateReason": f"ECS deployment {primary['id']} completed.",
            "runningCount": svc.desired_count, "pendingCount": 0,
            "desiredCount": svc.desired_count, "updatedAt": now,
        })
        svc.deployments = [primary]
        svc.running_count = svc.desired_count
        svc.pending_count = 0
        self._ecs_add_events(svc, [  # newest first, as ECS lists them
            {"message": f"(service {svc.name}) has reached a steady state.", "createdAt": now},
            {"message": f"(service {svc.name}) (deployment {primary['id']}) deployment completed.",
             "createdAt": now},
        ])
        if roll is not None:
            roll["completed"] = True

    @staticmethod
    def _ecs_add_events(svc, events, replace=False) -> None:
        made = []
        for ev in events:
            made.append({
                "id": ev.get("id") or str(uuid.uuid4()),
                "createdAt": parse_time(ev.get("createdAt")),
                "message": ev["message"],
            })
        made.sort(key=lambda e: e["createdAt"], reverse=True)
        if replace:
            svc.events = made
        else:
            svc.events = made + list(svc.events)

    def _ecs_make_deployment(self, svc, fields: dict, template: dict | None) -> dict:
        dep = copy.deepcopy(template) if template else {}
        now = utcnow()
        dep.update({
            "id": new_ecs_deployment_id(), "status": "PRIMARY", "taskDefinition": svc.task_definition,
            "desiredCount": svc.desired_count, "pendingCount": 0, "runningCount": 0,
            "failedTasks": 0, "createdAt": now, "updatedAt": now,
            "launchType": getattr(svc, "launch_type", None), "rolloutState": "IN_PROGRESS",
        })
        for name, value in fields.items():
            dep[name] = parse_time(value) if name in ("createdAt", "updatedAt") else value
        if "rolloutStateReason" not in fields:
            dep["rolloutStateReason"] = (
                f"ECS deployment {dep['id']} completed." if dep["rolloutState"] == "COMPLETED"
                else f"ECS deployment {dep['id']} in progress.")
        return dep

    def ecs_new_deployment(self, key, svc, previous: list[dict], fields: dict | None = None,
                           new_id: str | None = None, created=None, track=True) -> dict:
        """Real ECS: a new PRIMARY deployment, the previous PRIMARY becomes ACTIVE."""
        template = previous[0] if previous else None
        extra = dict(fields or {})
        if new_id and "id" not in extra:
            extra["id"] = new_id
        if created and "createdAt" not in extra:
            extra["createdAt"] = created
        dep = self._ecs_make_deployment(svc, extra, template)
        olds = []
        for old in previous:
            old = copy.deepcopy(old)
            if old.get("status") == "PRIMARY":
                old["status"] = "ACTIVE"
            olds.append(old)
        svc.deployments = [dep] + olds
        svc.pending_count = 0
        if dep["rolloutState"] == "IN_PROGRESS" and track:
            with self.state_lock:
                per = self.ecs_pins.get(key, {}).get("rolloutSeconds", "default")
                seconds = self.settings["ecs"]["rolloutSeconds"] if per == "default" else per
                self.ecs_rollouts[key] = {"deploymentId": dep["id"], "created": time.time(),
                                          "seconds": seconds}
        pin = self.ecs_pins.get(key)
        if pin:
            self._ecs_apply_pin(svc, pin)
        return dep

    def _rds_tick(self, now: float) -> None:
        with self.state_lock:
            reboots = list(self.rds_reboots.items())
            pins = list(self.rds_pins.items())
            failovers = list(self.rds_failovers.items())
        for key, (until, writer) in failovers:
            if now < until:
                continue
            with self.state_lock:
                self.rds_failovers.pop(key, None)
            backend = self.rds_backend(key[1], key[0])
            cluster, new = backend.clusters.get(key[2]), backend.databases.get(writer)
            if cluster is not None and new is not None:
                cluster.failover(new)
                cluster.status = "available"
                backend.add_event("DB_CLUSTER_FAILOVER_COMPLETED", ClusterEvents(cluster))
        for key, until in reboots:
            if now < until:
                continue
            with self.state_lock:
                self.rds_reboots.pop(key, None)
            db = self.rds_backend(key[1], key[0]).databases.get(key[2])
            if db is not None and db.status == "rebooting":
                db.status = "available"
        for key, pin in pins:
            db = self.rds_backend(key[1], key[0]).databases.get(key[2])
            if db is not None and "status" in pin:
                db.status = pin["status"]

    # -- control API ------------------------------------------------------
    def control(self, environ, start_response, path):
        method = environ.get("REQUEST_METHOD", "GET")
        body = self._read_body(environ)
        query = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        try:
            doc = json.loads(body) if body.strip() else {}
        except ValueError:
            return json_response(start_response, 400, {"error": "body is not JSON"})
        try:
            with self.moto_lock:
                status, result = self.dispatch_control(method, path.rstrip("/"), query, doc)
        except ControlError as exc:
            return json_response(start_response, exc.status, {"error": exc.message})
        except Exception as exc:  # pragma: no cover - reported to the test
            traceback.print_exc()
            return json_response(start_response, 500, {"error": f"{type(exc).__name__}: {exc}"})
        return json_response(start_response, status, result)

    def dispatch_control(self, method, path, query, doc):
        parts = path.split("/")[2:]  # after "", "_faults"
        route = "/".join(parts)
        if route == "" and method == "GET":
            return 200, {"ok": True, "accountId": self.account_id, "pid": os.getpid(),
                         "rules": len(self.rules), "calls": sum(self.calls.values())}
        if route == "reset" and method == "POST":
            self._reset_state()
            return 200, {"ok": True}
        if parts[:1] == ["rules"]:
            return self.ctl_rules(method, parts[1:], doc)
        if route == "calls":
            with self.state_lock:
                if method == "GET":
                    return 200, dict(self.calls)
                if method == "DELETE":
                    self.calls = {}
                    return 200, {"ok": True}
        if route == "log":
            with self.state_lock:
                if method == "GET":
                    entries = self.log
                    if "since" in query:
                        entries = [e for e in entries if e["seq"] > int(query["since"])]
                    if "service" in query:
                        entries = [e for e in entries if e["service"] == query["service"]]
                    if "operation" in query:
                        entries = [e for e in entries if e["operation"] == query["operation"]]
                    return 200, copy.deepcopy(entries)
                if method == "DELETE":
                    self.log = []
                    return 200, {"ok": True}
        if route == "settings":
            with self.state_lock:
                if method == "POST":
                    for section, values in doc.items():
                        if section not in self.settings or not isinstance(values, dict):
                            raise ControlError(400, f"unknown settings section {section!r}")
                        for name, value in values.items():
                            if name not in self.settings[section]:
                                raise ControlError(400, f"unknown setting {section}.{name}")
                            self.settings[section][name] = value
                if method in ("GET", "POST"):
                    return 200, copy.deepcopy(self.settings)
        if route == "ecs/services":
            return self.ctl_ecs(method, query, doc)
        if route == "rds/instances":
            return self.ctl_rds(method, query, doc)
        if route == "rds/clusters":
            return self.ctl_rds_cluster(method, doc)
        if parts[:2] == ["route53", "healthchecks"]:
            return self.ctl_r53_health(method, parts[2:], doc)
        if parts[:2] == ["route53", "changes"]:
            return self.ctl_r53_changes(method, parts[2:], doc)
        raise ControlError(404, f"no control endpoint {method} {path}")

    def ctl_rules(self, method, rest, doc):
        with self.state_lock:
            if not rest:
                if method == "GET":
                    return 200, copy.deepcopy(self.rules)
                if method == "DELETE":
                    self.rules = []
                    for event in self.holds.values():
                        event.set()
                    self.holds = {}
                    return 200, {"ok": True}
                if method == "POST":
                    known = {"service", "operation", "region", "match", "error", "status", "message",
                             "count", "skip", "delayMs", "reset", "hold", "holdMs"}
                    unknown = set(doc) - known
                    if unknown:
                        raise ControlError(400, f"unknown rule fields {sorted(unknown)}")
                    if not (doc.get("error") or doc.get("status") or doc.get("delayMs")
                            or doc.get("reset") or doc.get("hold")):
                        raise ControlError(400, "a rule needs error, status, delayMs, reset or hold")
                    self.rule_seq += 1
                    count = doc.get("count")
                    rule = {
                        "id": f"r{self.rule_seq}", "service": doc.get("service"),
                        "operation": doc.get("operation"), "region": doc.get("region"),
                        "match": doc.get("match") or {},
                        "error": doc.get("error"), "status": doc.get("status"),
                        "message": doc.get("message"), "count": count,
                        "skip": int(doc.get("skip") or 0), "delayMs": doc.get("delayMs") or 0,
                        "reset": bool(doc.get("reset")), "hold": bool(doc.get("hold")),
                        "holdMs": doc.get("holdMs"), "hits": 0, "seen": 0,
                        "remaining": None if count is None else int(count),
                    }
                    self.rules.append(rule)
                    if rule["hold"]:
                        self.holds[rule["id"]] = threading.Event()
                    return 200, copy.deepcopy(rule)
            elif len(rest) == 1:
                for rule in self.rules:
                    if rule["id"] == rest[0]:
                        if method == "GET":
                            return 200, copy.deepcopy(rule)
                        if method == "DELETE":
                            self.rules.remove(rule)
                            held = self.holds.pop(rule["id"], None)
                            if held is not None:
                                held.set()
                            return 200, {"ok": True}
                raise ControlError(404, f"no rule {rest[0]}")
        raise ControlError(405, f"{method} not supported here")

    # ECS ---------------------------------------------------------------
    def _ecs_key(self, src: dict):
        cluster = (src.get("cluster") or "default").rsplit("/", 1)[-1]
        service = src.get("service")
        if not service:
            raise ControlError(400, "service is required")
        return (src.get("accountId") or self.account_id, src.get("region") or DEFAULT_REGION,
                cluster, service.rsplit("/", 1)[-1])

    def ecs_state(self, key, svc) -> dict:
        return jsonable({
            "cluster": key[2], "service": key[3], "status": svc.status,
            "desiredCount": svc.desired_count, "runningCount": svc.running_count,
            "pendingCount": svc.pending_count, "taskDefinition": svc.task_definition,
            "deployments": svc.deployments, "events": svc.events,
            "pin": self.ecs_pins.get(key), "rollout": self.ecs_rollouts.get(key),
        })

    def ctl_ecs(self, method, query, doc):
        if method == "DELETE":
            with self.state_lock:
                if query.get("service"):
                    key = self._ecs_key(query)
                    self.ecs_pins.pop(key, None)
                else:
                    self.ecs_pins = {}
            return 200, {"ok": True}
        if method == "GET":
            key = self._ecs_key(query)
            return 200, self.ecs_state(key, self._ecs_service(*key))
        if method != "POST":
            raise ControlError(405, f"{method} not supported here")
        key = self._ecs_key(doc)
        svc = self._ecs_service(*key)
        pin_counts = doc.get("pin", True)
        with self.state_lock:
            pin = dict(self.ecs_pins.get(key, {}))
            for name in ("runningCount", "pendingCount"):
                if name in doc:
                    if doc[name] is None:
                        pin.pop(name, None)
                    elif pin_counts:
                        pin[name] = int(doc[name])
            if "rolloutSeconds" in doc:
                pin["rolloutSeconds"] = doc["rolloutSeconds"]
                if key in self.ecs_rollouts:
                    self.ecs_rollouts[key]["seconds"] = doc["rolloutSeconds"]
            if pin:
                self.ecs_pins[key] = pin
            else:
                self.ecs_pins.pop(key, None)
        if "desiredCount" in doc:
            svc.desired_count = int(doc["desiredCount"])
            primary = self._ecs_primary(svc)
            if primary is not None:
                primary["desiredCount"] = svc.desired_count
        if "deployments" in doc:
            deps = []
            for i, fields in enumerate(doc["deployments"]):
                fields = dict(fields)
                fields.setdefault("status", "PRIMARY" if i == 0 else "ACTIVE")
                fields.setdefault("rolloutState", "COMPLETED" if fields["status"] == "PRIMARY"
                                  and len(doc["deployments"]) == 1 else "IN_PROGRESS")
                deps.append(self._ecs_make_deployment(svc, fields, None))
            svc.deployments = deps
            with self.state_lock:
                self.ecs_rollouts.pop(key, None)
        if "newDeployment" in doc:
            # made by the test: not completed by rolloutSeconds (use completeRollout)
            with self.state_lock:
                self.ecs_rollouts.pop(key, None)
            self.ecs_new_deployment(key, svc, list(svc.deployments), doc["newDeployment"] or {},
                                    track=False)
        if "primaryDeployment" in doc:
            primary = self._ecs_primary(svc)
            if primary is None:
                raise ControlError(409, "service has no deployment")
            for name, value in doc["primaryDeployment"].items():
                primary[name] = parse_time(value) if name in ("createdAt", "updatedAt") else value
            if doc["primaryDeployment"].get("rolloutState") == "COMPLETED":
                with self.state_lock:
                    self.ecs_rollouts.pop(key, None)
        if doc.get("completeRollout"):
            self._ecs_complete_rollout(key, svc)
        if "events" in doc or doc.get("replaceEvents"):
            self._ecs_add_events(svc, doc.get("events") or [], bool(doc.get("replaceEvents")))
        for name in ("runningCount", "pendingCount"):
            if name in doc and doc[name] is not None and not pin_counts:
                setattr(svc, "running_count" if name == "runningCount" else "pending_count",
                        int(doc[name]))
                primary = self._ecs_primary(svc)
                if primary is not None:
                    primary[name] = int(doc[name])
        pin = self.ecs_pins.get(key)
        if pin:
            self._ecs_apply_pin(svc, pin)
        return 200, self.ecs_state(key, svc)

    # RDS ---------------------------------------------------------------
    def _rds_key(self, src: dict):
        ident = src.get("dbInstanceIdentifier") or src.get("DBInstanceIdentifier")
        if not ident:
            raise ControlError(400, "dbInstanceIdentifier is required")
        return (src.get("accountId") or self.account_id, src.get("region") or DEFAULT_REGION,
                ident)

    def _rds_db(self, key):
        db = self.rds_backend(key[1], key[0]).databases.get(key[2])
        if db is None:
            raise ControlError(404, f"DB instance {key[2]} not found in moto")
        return db

    def rds_state(self, key, db) -> dict:
        return {
            "dbInstanceIdentifier": key[2], "status": db.status, "multiAZ": bool(db.multi_az),
            "availabilityZone": db.availability_zone,
            "secondaryAvailabilityZone": getattr(db, "secondary_availability_zone", None),
            "pin": self.rds_pins.get(key),
            "rebootingUntil": self.rds_reboots.get(key),
        }

    def ctl_rds(self, method, query, doc):
        if method == "DELETE":
            with self.state_lock:
                if query.get("dbInstanceIdentifier"):
                    self.rds_pins.pop(self._rds_key(query), None)
                else:
                    self.rds_pins = {}
            return 200, {"ok": True}
        if method == "GET":
            key = self._rds_key(query)
            return 200, self.rds_state(key, self._rds_db(key))
        if method != "POST":
            raise ControlError(405, f"{method} not supported here")
        key = self._rds_key(doc)
        db = self._rds_db(key)
        if "status" in doc:
            db.status = doc["status"]
            with self.state_lock:
                if doc.get("pin"):
                    self.rds_pins[key] = {"status": doc["status"]}
                else:
                    self.rds_pins.pop(key, None)
                self.rds_reboots.pop(key, None)
        if "multiAZ" in doc:
            db.multi_az = bool(doc["multiAZ"])
        if "availabilityZone" in doc:
            db.availability_zone = doc["availabilityZone"]
        if "secondaryAvailabilityZone" in doc:
            db.secondary_availability_zone = doc["secondaryAvailabilityZone"]
        return 200, self.rds_state(key, db)

    def ctl_rds_cluster(self, method, doc):
        """Per cluster: how long its failovers take, and finishing one now."""
        if method != "POST":
            raise ControlError(405, f"{method} not supported here")
        ident = doc.get("dbClusterIdentifier")
        if not ident:
            raise ControlError(400, "dbClusterIdentifier is required")
        key = (doc.get("accountId") or self.account_id, doc.get("region") or DEFAULT_REGION, ident)
        with self.state_lock:
            if "failoverSeconds" in doc:
                self.rds_cluster_failover_seconds[key] = doc["failoverSeconds"]
            if doc.get("completeFailover") and key in self.rds_failovers:
                self.rds_failovers[key] = (0.0, self.rds_failovers[key][1])
            pending = self.rds_failovers.get(key)
        if doc.get("completeFailover"):
            self._rds_tick(time.time())
        return 200, {"dbClusterIdentifier": ident, "failingOverTo": pending[1] if pending else None}

    # Route 53 ----------------------------------------------------------
    def ctl_r53_health(self, method, rest, doc):
        with self.state_lock:
            if method == "GET" and not rest:
                return 200, copy.deepcopy(self.r53_health)
            if method == "DELETE":
                if rest:
                    self.r53_health.pop(rest[0], None)
                else:
                    self.r53_health = {}
                return 200, {"ok": True}
            if method == "POST" and not rest:
                hc = doc.get("healthCheckId")
                if not hc:
                    raise ControlError(400, "healthCheckId is required")
                total = int(doc.get("total", 3))
                failing = int(doc.get("failing", 0))
                if not 0 <= failing <= total or total < 1 or total > len(CHECKER_REGIONS):
                    raise ControlError(400, f"need 0 <= failing <= total, 1 <= total <= "
                                            f"{len(CHECKER_REGIONS)}")
                self.r53_health[hc] = {
                    "failing": failing, "total": total,
                    "failureMessage": doc.get("failureMessage"),
                    "successMessage": doc.get("successMessage"),
                }
                return 200, copy.deepcopy(self.r53_health[hc])
        raise ControlError(405, f"{method} not supported here")

    def ctl_r53_changes(self, method, rest, doc):
        with self.state_lock:
            if method == "GET" and not rest:
                return 200, jsonable(self.r53_changes)
            if method == "POST" and len(rest) == 1:
                change = self.r53_changes.get(rest[0].rsplit("/", 1)[-1])
                if change is None:
                    raise ControlError(404, f"no tracked change {rest[0]}")
                change["forced"] = doc.get("status", "INSYNC")
                return 200, jsonable(change)
        raise ControlError(405, f"{method} not supported here")

    def r53_change_status(self, change_id: str, count_call: bool):
        with self.state_lock:
            change = self.r53_changes.get(change_id)
            if change is None:
                return None
            if change.get("forced"):
                status = change["forced"]
            elif (time.time() < change["created"] + change["pendingSeconds"]
                  or change["pendingAnswered"] < change["pendingCalls"]):
                status = "PENDING"
            else:
                status = "INSYNC"
            if count_call and status == "PENDING":
                change["pendingAnswered"] += 1
            change["status"] = status
            return change


THREAD = threading.local()
LAYER: FaultLayer | None = None


def xml_escape(text: str) -> str:
    return (str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


def http_reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def json_response(start_response, status, doc):
    payload = json.dumps(doc, default=str).encode()
    start_response(f"{status} {http_reason(status)}",
                   [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
    return [payload]


# ---------------------------------------------------------------------------
# Patches on moto (pinned moto version; each patch keeps moto's own behaviour
# and adds what real AWS does)
# ---------------------------------------------------------------------------

class ClusterEvents:
    """What moto's event log needs of a DB cluster (its clusters record no events)."""

    event_source_type = "db-cluster"

    def __init__(self, cluster) -> None:
        self.resource_id = cluster.db_cluster_identifier
        self.arn = cluster.db_cluster_arn


def flatten_event(node, prefix: str = "", result: dict | None = None) -> dict:
    """An event's fields by dotted path, as EventBridge matches them: an array of objects
    contributes each element's fields, so `detail.configuration.metrics.metricStat...`
    holds the values of every metric (moto alone stops at arrays)."""
    if result is None:
        result = {}

    def add(key, value):
        if key in result:
            was = result[key] if isinstance(result[key], list) else [result[key]]
            result[key] = was + (value if isinstance(value, list) else [value])
        else:
            result[key] = value

    if isinstance(node, dict):
        for k, v in node.items():
            key = f"{prefix}.{k}" if prefix else k
            if isinstance(v, dict) and v:
                for sk, sv in flatten_event(v, key, {}).items():
                    add(sk, sv)
            elif isinstance(v, list) and any(isinstance(x, dict) for x in v):
                for x in v:
                    if isinstance(x, dict):
                        for sk, sv in flatten_event(x, key, {}).items():
                            add(sk, sv)
                    else:
                        add(key, [x])
            else:
                add(key, v)
    return result


def install_patches() -> None:
    from moto.events.models import EventPattern
    from moto.events.utils import EventTemplateParser

    # EventBridge delivers the whole event to an SQS target; moto's default input template
    # leaves out its account.
    EventTemplateParser.DEFAULT_EVENT_INPUT_TEMPLATE = EventTemplateParser.DEFAULT_EVENT_INPUT_TEMPLATE.replace(
        '"version": "0",', '"version": "0", "account": "<account>",')
    # Patterns match inside arrays of objects (CloudWatch alarms' metrics), as EventBridge's do.
    EventPattern._flatten_dict = staticmethod(flatten_event)
    from moto.core.responses import ActionResult
    from moto.ecs.models import EC2ContainerServiceBackend
    from moto.rds.exceptions import RDSClientError
    from moto.rds.models import Event as RDSEvent
    from moto.rds.responses import RDSResponse

    # RDS records reboots and failovers as events (DescribeEvents); moto records neither.
    # The controller's check-first read for FailoverDatabase looks for them.
    RDSEvent.EVENT_MAP.setdefault("DB_INSTANCE_REBOOT", {
        "Categories": ["availability"], "Message": "DB instance restarted"})
    RDSEvent.EVENT_MAP.setdefault("DB_INSTANCE_FAILOVER_START", {
        "Categories": ["failover"], "Message": "Multi-AZ instance failover started."})
    from moto.route53.responses import Route53

    orig_create = EC2ContainerServiceBackend.create_service
    orig_update = EC2ContainerServiceBackend.update_service

    def create_service(self, cluster_str, service_name, desired_count, *args, **kwargs):
        svc = orig_create(self, cluster_str, service_name, desired_count, *args, **kwargs)
        layer = LAYER
        if layer is not None and layer.settings["ecs"]["settleOnCreate"] and svc.deployments:
            svc.running_count = svc.desired_count
            svc.pending_count = 0
            dep = svc.deployments[0]
            dep.update({"runningCount": svc.desired_count, "pendingCount": 0,
                        "rolloutState": "COMPLETED",
                        "rolloutStateReason": f"ECS deployment {dep['id']} completed."})
        return svc

    def update_service(self, service_properties):
        layer = LAYER
        force = bool(service_properties.get("force_new_deployment"))
        cluster = (service_properties.get("cluster") or "default").rsplit("/", 1)[-1]
        name = str(service_properties.get("service", "")).rsplit("/", 1)[-1]
        before = self.services.get(f"{cluster}:{name}")
        previous = copy.deepcopy(before.deployments) if before is not None else []
        old_taskdef = before.task_definition if before is not None else None
        svc = orig_update(self, service_properties)
        if layer is None or not svc.deployments:
            return svc
        key = (self.account_id, self.region_name, cluster, name)
        if svc.task_definition and not str(svc.task_definition).startswith("arn:"):
            # moto stores the name given; expose the ARN like CreateService does
            try:
                svc.task_definition = self.describe_task_definition(svc.task_definition).arn
            except Exception:
                pass
        new_taskdef = svc.task_definition != old_taskdef
        if force or new_taskdef:
            moto_dep = svc.deployments[0]
            dep = layer.ecs_new_deployment(key, svc, previous, new_id=moto_dep["id"],
                                           created=moto_dep["createdAt"])
            ctx = getattr(THREAD, "ctx", None)
            if ctx is not None:
                ctx["result"]["deploymentId"] = dep["id"]
                ctx["result"]["previousDeploymentIds"] = [d["id"] for d in previous]
        else:
            primary = layer._ecs_primary(svc)
            if primary is not None:
                primary["desiredCount"] = svc.desired_count
                if key not in layer.ecs_rollouts:
                    primary["runningCount"] = svc.running_count
                    primary["pendingCount"] = svc.pending_count
        pin = layer.ecs_pins.get(key)
        if pin:
            layer._ecs_apply_pin(svc, pin)
        return svc

    EC2ContainerServiceBackend.create_service = create_service
    EC2ContainerServiceBackend.update_service = update_service

    orig_reboot = RDSResponse.reboot_db_instance

    def reboot_db_instance(self):
        layer = LAYER
        ident = self.params.get("DBInstanceIdentifier")
        force = str(self.params.get("ForceFailover", "false")).lower() == "true"
        db = self.backend.describe_db_instances(ident)[0]  # raises DBInstanceNotFound
        if layer is not None and force and not db.multi_az and \
                layer.settings["rds"]["strictForceFailover"]:
            raise RDSClientError(
                "InvalidParameterCombination",
                "Cannot reboot with failover: the DB instance is not a Multi-AZ deployment.")
        if layer is not None:
            if force and db.multi_az:
                # moto never sets SecondaryAvailabilityZone; invent the standby's AZ if needed
                standby = getattr(db, "secondary_availability_zone", None) or (
                    db.availability_zone[:-1] + ("b" if db.availability_zone.endswith("a")
                                                 else "a"))
                db.availability_zone, db.secondary_availability_zone = (
                    standby, db.availability_zone)
            key = (self.current_account, self.region, db.db_instance_identifier)
            with layer.state_lock:
                pinned = key in layer.rds_pins
                if not pinned:
                    db.status = "rebooting"
                    layer.rds_reboots[key] = time.time() + float(
                        layer.settings["rds"]["rebootSeconds"] or 0)
            ctx = getattr(THREAD, "ctx", None)
            if ctx is not None:
                ctx["result"]["forceFailover"] = force
                ctx["result"]["availabilityZone"] = db.availability_zone
            if force and db.multi_az:
                db.add_event("DB_INSTANCE_FAILOVER_START")
            db.add_event("DB_INSTANCE_REBOOT")
        return orig_reboot(self)

    RDSResponse.reboot_db_instance = reboot_db_instance

    # FailoverDBCluster: moto moves the writer at once; RDS keeps the cluster
    # "failing-over" with its old writer for a while, and records both ends as events.
    RDSEvent.EVENT_MAP.setdefault("DB_CLUSTER_FAILOVER_STARTED", {
        "Categories": ["failover"], "Message": "Started cross AZ failover to DB instance"})
    RDSEvent.EVENT_MAP.setdefault("DB_CLUSTER_FAILOVER_COMPLETED", {
        "Categories": ["failover"], "Message": "Completed failover to DB instance"})
    orig_failover = RDSResponse.failover_db_cluster

    def failover_db_cluster(self):
        layer = LAYER
        cluster = self.backend.clusters.get(self.params.get("DBClusterIdentifier"))
        old = cluster.writer if cluster is not None else None
        result = orig_failover(self)  # moto's checks and errors; the answer renders later
        if layer is None or cluster is None:
            return result
        new = cluster.writer
        self.backend.add_event("DB_CLUSTER_FAILOVER_STARTED", ClusterEvents(cluster))
        ctx = getattr(THREAD, "ctx", None)
        if ctx is not None and new is not None:
            ctx["result"]["newWriter"] = new.db_instance_identifier
        key = (self.current_account, self.region, cluster.db_cluster_identifier)
        with layer.state_lock:
            seconds = layer.rds_cluster_failover_seconds.get(key, layer.settings["rds"]["failoverSeconds"])
        seconds = float(seconds or 0)
        if seconds > 0 and old is not None and new is not None and old is not new:
            cluster.failover(old)
            cluster.status = "failing-over"
            with layer.state_lock:
                layer.rds_failovers[key] = (time.time() + seconds, new.db_instance_identifier)
        else:
            self.backend.add_event("DB_CLUSTER_FAILOVER_COMPLETED", ClusterEvents(cluster))
        return result

    RDSResponse.failover_db_cluster = failover_db_cluster

    orig_status = Route53.get_health_check_status
    orig_change = Route53.change_resource_record_sets
    orig_get_change = Route53.get_change

    def get_health_check_status(self):
        result = orig_status(self)  # validates that the health check exists
        layer = LAYER
        hc = self._get_param("HealthCheckId")
        spec = layer.r53_health.get(hc) if layer is not None else None
        if not spec:
            return result
        now = utcnow()
        observations = []
        for i in range(spec["total"]):
            region, ip = CHECKER_REGIONS[i]
            if i < spec["failing"]:
                text = spec.get("failureMessage") or (
                    "Failure: HTTP Status Code 503, Service Unavailable. Resolved IP: 192.0.2.10")
            else:
                text = spec.get("successMessage") or (
                    "Success: HTTP Status Code 200, OK. Resolved IP: 192.0.2.10")
            observations.append({"Region": region, "IPAddress": ip,
                                 "StatusReport": {"Status": text, "CheckedTime": now}})
        return ActionResult({"HealthCheckObservations": observations})

    def change_resource_record_sets(self):
        result = orig_change(self)
        layer = LAYER
        if layer is None:
            return result
        info = result.result["ChangeInfo"]
        change_id = new_change_id()
        settings = layer.settings["route53"]
        with layer.state_lock:
            layer.r53_changes[change_id] = {
                "id": f"/change/{change_id}", "created": time.time(),
                "submittedAt": info["SubmittedAt"],
                "pendingSeconds": float(settings["changePendingSeconds"] or 0),
                "pendingCalls": int(settings["changePendingCalls"] or 0),
                "pendingAnswered": 0, "hostedZoneId": self._get_param("HostedZoneId"),
                "status": None,
            }
        change = layer.r53_change_status(change_id, count_call=False)
        info["Id"] = f"/change/{change_id}"
        info["Status"] = change["status"]
        ctx = getattr(THREAD, "ctx", None)
        if ctx is not None:
            ctx["result"]["changeId"] = info["Id"]
        return result

    def get_change(self):
        result = orig_get_change(self)
        layer = LAYER
        if layer is None:
            return result
        change_id = str(self._get_param("Id")).rsplit("/", 1)[-1]
        change = layer.r53_change_status(change_id, count_call=True)
        if change is not None:
            info = result.result["ChangeInfo"]
            info["Id"] = change["id"]
            info["Status"] = change["status"]
            info["SubmittedAt"] = change["submittedAt"]
        return result

    Route53.get_health_check_status = get_health_check_status
    Route53.change_resource_record_sets = change_resource_record_sets
    Route53.get_change = get_change


# ---------------------------------------------------------------------------
# Start-up
# ---------------------------------------------------------------------------

def warm_up(moto_app) -> None:
    """moto imports each service lazily; do it now, outside any test's timing."""
    from werkzeug.test import Client

    client = Client(moto_app)
    date = time.strftime("%Y%m%d")

    def auth(service):
        return {"Authorization": f"AWS4-HMAC-SHA256 Credential=AKIAWARMUP/{date}/"
                                 f"{DEFAULT_REGION}/{service}/aws4_request, "
                                 "SignedHeaders=host, Signature=0"}

    form = "application/x-www-form-urlencoded"
    client.post("/", headers={**auth("ecs"),
                              "X-Amz-Target": "AmazonEC2ContainerServiceV20141113.ListClusters",
                              "Content-Type": "application/x-amz-json-1.1"}, data="{}")
    client.post("/", headers=auth("rds"), content_type=form,
                data="Action=DescribeDBInstances&Version=2014-10-31")
    client.post("/", headers=auth("sts"), content_type=form,
                data="Action=GetCallerIdentity&Version=2011-06-15")
    client.get("/2013-04-01/hostedzone", headers=auth("route53"))
    client.get("/2013-04-01/healthcheck", headers=auth("route53"))
    client.post("/", headers={**auth("sqs"), "X-Amz-Target": "AmazonSQS.ListQueues",
                              "Content-Type": "application/x-amz-json-1.0"}, data="{}")
    client.post("/", headers={**auth("events"), "X-Amz-Target": "AWSEvents.ListRules",
                              "Content-Type": "application/x-amz-json-1.1"}, data="{}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ready-file")
    parser.add_argument("--account-id", default=os.environ.get("MOTO_ACCOUNT_ID", "123456789012"))
    parser.add_argument("--log-requests", action="store_true",
                        help="werkzeug access log on stderr")
    args = parser.parse_args(argv)

    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)  # before the slow imports and warm-up
    signal.signal(signal.SIGINT, on_signal)

    from moto.server import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    global LAYER
    install_patches()
    moto_app = DomainDispatcherApplication(create_backend_app)
    layer = FaultLayer(moto_app, args.account_id)
    LAYER = layer
    started = time.time()
    warm_up(moto_app)
    warm_seconds = time.time() - started
    if stop.is_set():
        return 0

    class Handler(MotoRequestHandler):
        # A response is several small writes; on a kept-alive connection Nagle's algorithm
        # would hold the later ones until the client's delayed ACK (40 ms per call).
        disable_nagle_algorithm = True

        def log_request(self, *a, **kw):
            if args.log_requests:
                super().log_request(*a, **kw)

        def connection_dropped(self, error, environ=None):
            # a "reset" rule raised ConnectionAborted: don't wait for another request on
            # this keep-alive connection; close it (the client reads EOF, no response)
            self.close_connection = True

        def run_wsgi(self):
            # Keep-alive (see BodyReader): the input ends with this request's body, and what
            # the application did not read is read before the next request. A chunked
            # request body (the SDK sends none) closes the connection as werkzeug does.
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                self.close_connection = True
                return super().run_wsgi()
            raw = self.rfile
            try:
                length = max(0, int(self.headers.get("Content-Length") or 0))
            except ValueError:
                length, self.close_connection = 0, True
            self.rfile = BodyReader(raw, length)
            try:
                super().run_wsgi()
                self.rfile.drain()
            finally:
                self.rfile = raw

        def parse_request(self):
            self.arrived = time.time()  # the request line has just been read
            return super().parse_request()

        def make_environ(self):
            environ = super().make_environ()
            environ[ARRIVED] = self.arrived
            return environ

        def send_header(self, keyword, value):
            # werkzeug says "Connection: close" on every response; keep the connection
            # unless the client or an error asked to close it.
            if keyword.lower() == "connection" and value.lower() == "close" and not self.close_connection:
                return
            super().send_header(keyword, value)

    server = make_server(args.host, args.port, layer, threaded=True, request_handler=Handler)
    port = server.server_port
    base = f"http://{args.host}:{port}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                              daemon=True)
    thread.start()
    if args.ready_file:
        tmp = f"{args.ready_file}.tmp.{os.getpid()}"
        with open(tmp, "w") as fh:
            json.dump({"endpoint": base, "control": f"{base}/_faults", "pid": os.getpid(),
                       "accountId": args.account_id, "region": DEFAULT_REGION}, fh)
        os.replace(tmp, args.ready_file)
    print(f"fake aws listening on {base} (warm-up {warm_seconds:.2f}s)", file=sys.stderr,
          flush=True)
    while not stop.wait(1.0):
        pass
    server.shutdown()
    server.server_close()
    print("fake aws stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
