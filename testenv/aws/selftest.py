#!/usr/bin/env python3
"""Self-test of testenv/aws/server.py with boto3: starts the server, drives every fault
rule kind, override and setting, then stops it with SIGTERM (must exit 0).

    "$(testenv/venv.sh)" testenv/aws/selftest.py [-k NAME_SUBSTRING] [-v]

Prints one line per check and a closing "N passed, N failed" line; exits 1 on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


class Env:
    def __init__(self, ready: dict):
        self.endpoint = ready["endpoint"]
        self.control = ready["control"]
        self.kw = dict(endpoint_url=self.endpoint, region_name="us-east-1",
                       aws_access_key_id="AKIDSELFTEST", aws_secret_access_key="secret",
                       config=Config(retries={"mode": "standard", "max_attempts": 3}))

    def client(self, name, **cfg):
        kw = dict(self.kw)
        if cfg:
            kw["config"] = Config(**cfg)
        return boto3.client(name, **kw)

    def ctl(self, method, path, doc=None, expect=200):
        req = urllib.request.Request(
            self.control + path, method=method,
            data=None if doc is None else json.dumps(doc).encode(),
            headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req) as resp:
                status, body = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read()
        result = json.loads(body) if body else None
        assert status == expect, f"{method} {path} -> {status} {result}"
        return result


def eq(actual, expected, what=""):
    assert actual == expected, f"{what}: expected {expected!r}, got {actual!r}"


# -- fixtures -----------------------------------------------------------------

def ecs_service(env, cluster="c1", name="web", desired=2):
    ecs = env.client("ecs")
    ecs.create_cluster(clusterName=cluster)
    ecs.register_task_definition(family=name, containerDefinitions=[
        {"name": name, "image": "nginx", "memory": 128}])
    existing = ecs.describe_services(cluster=cluster, services=[name])["services"]
    if not existing or existing[0]["status"] != "ACTIVE":
        ecs.create_service(cluster=cluster, serviceName=name, taskDefinition=name,
                           desiredCount=desired)
    return ecs


def rds_instance(env, ident, multi_az=False):
    rds = env.client("rds")
    try:
        rds.create_db_instance(DBInstanceIdentifier=ident, DBInstanceClass="db.t3.micro",
                               Engine="postgres", MasterUsername="u",
                               MasterUserPassword="password123", AllocatedStorage=20,
                               MultiAZ=multi_az)
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "DBInstanceAlreadyExists":
            raise
    return rds


def zone_and_check(env):
    r53 = env.client("route53")
    zone = r53.create_hosted_zone(Name="example.com", CallerReference=str(time.time()))
    hc = r53.create_health_check(CallerReference=str(time.time()), HealthCheckConfig={
        "Type": "HTTP", "FullyQualifiedDomainName": "app.example.com", "Port": 80,
        "ResourcePath": "/health"})
    return r53, zone["HostedZone"]["Id"], hc["HealthCheck"]["Id"]


# -- checks -------------------------------------------------------------------

@check
def counter_and_log(env):
    ecs = ecs_service(env)
    env.ctl("DELETE", "/calls")
    env.ctl("DELETE", "/log")
    ecs.describe_services(cluster="c1", services=["web"])
    ecs.update_service(cluster="c1", service="web", desiredCount=3)
    env.client("sts").get_caller_identity()
    calls = env.ctl("GET", "/calls")
    eq(calls, {"ecs.DescribeServices": 1, "ecs.UpdateService": 1, "sts.GetCallerIdentity": 1},
       "calls")
    log = env.ctl("GET", "/log?operation=UpdateService")
    eq(len(log), 1, "log entries")
    eq(log[0]["params"], {"cluster": "c1", "service": "web", "desiredCount": 3}, "params")
    eq(log[0]["status"], 200, "status")
    since = env.ctl("GET", "/log")[-1]["seq"]
    ecs.list_clusters()
    eq([e["operation"] for e in env.ctl("GET", f"/log?since={since}")], ["ListClusters"], "since")


@check
def ecs_describe_missing(env):
    ecs = ecs_service(env)
    out = ecs.describe_services(cluster="c1", services=["web", "nope"])
    eq([s["serviceName"] for s in out["services"]], ["web"], "found")
    eq(out["failures"][0]["reason"], "MISSING", "failure reason")
    try:
        ecs.describe_services(cluster="no-such-cluster", services=["web"])
        raise AssertionError("expected ClusterNotFoundException")
    except ClientError as exc:
        eq(exc.response["Error"]["Code"], "ClusterNotFoundException", "code")


@check
def throttling_retried_and_counted(env):
    ecs = ecs_service(env)
    env.ctl("DELETE", "/calls")
    rule = env.ctl("POST", "/rules", {"service": "ecs", "operation": "DescribeServices",
                                     "error": "ThrottlingException", "count": 2})
    out = ecs.describe_services(cluster="c1", services=["web"])
    eq(out["ResponseMetadata"]["RetryAttempts"], 2, "retries")
    eq(env.ctl("GET", "/calls")["ecs.DescribeServices"], 3, "counted incl. retries")
    eq(env.ctl("GET", f"/rules/{rule['id']}")["remaining"], 0, "rule used up")
    log = env.ctl("GET", "/log?operation=DescribeServices")[-3:]
    eq([(e["faulted"], e["attempt"]) for e in log], [(True, 1), (True, 2), (False, 3)],
       "faulted attempts in log")
    eq(len({e["invocationId"] for e in log}), 1, "one invocation")


@check
def ecs_error_wire_format(env):
    env.ctl("POST", "/rules", {"service": "ecs", "operation": "ListClusters",
                               "error": "ThrottlingException", "count": None})
    ecs = env.client("ecs", retries={"mode": "standard", "max_attempts": 2})
    try:
        ecs.list_clusters()
        raise AssertionError("expected throttling")
    except ClientError as exc:
        eq(exc.response["Error"]["Code"], "ThrottlingException", "code")
        eq(exc.response["ResponseMetadata"]["HTTPStatusCode"], 400, "status")
        eq(exc.response["ResponseMetadata"]["HTTPHeaders"].get("x-amzn-errortype"),
           "ThrottlingException", "header")
    env.ctl("DELETE", "/rules")
    # raw wire check
    req = urllib.request.Request(env.endpoint + "/", data=b"{}", method="POST", headers={
        "X-Amz-Target": "AmazonEC2ContainerServiceV20141113.ListClusters",
        "Content-Type": "application/x-amz-json-1.1"})
    env.ctl("POST", "/rules", {"service": "ecs", "error": "ServerException", "status": 500,
                               "count": 1})
    try:
        urllib.request.urlopen(req)
        raise AssertionError("expected 500")
    except urllib.error.HTTPError as exc:
        eq(exc.code, 500, "status")
        eq(json.loads(exc.read())["__type"], "ServerException", "__type")


@check
def rds_throttling_query_xml(env):
    rds = rds_instance(env, "db-thr")
    env.ctl("DELETE", "/calls")
    env.ctl("POST", "/rules", {"service": "rds", "operation": "DescribeDBInstances",
                               "error": "Throttling", "count": 2})
    out = rds.describe_db_instances(DBInstanceIdentifier="db-thr")
    eq(out["ResponseMetadata"]["RetryAttempts"], 2, "retries")
    eq(env.ctl("GET", "/calls")["rds.DescribeDBInstances"], 3, "calls")
    env.ctl("POST", "/rules", {"service": "rds", "error": "Throttling", "count": 1})
    try:
        urllib.request.urlopen(urllib.request.Request(
            env.endpoint + "/", data=b"Action=DescribeDBInstances&Version=2014-10-31",
            method="POST", headers={"Content-Type": "application/x-www-form-urlencoded"}))
        raise AssertionError("expected 400")
    except urllib.error.HTTPError as exc:
        body = exc.read().decode()
        assert "<Code>Throttling</Code>" in body and "<Type>Sender</Type>" in body, body
        assert body.find("<ErrorResponse") >= 0 and "<RequestId>" in body, body


@check
def route53_errors_and_prior_request(env):
    r53, zone, _ = zone_and_check(env)
    env.ctl("POST", "/rules", {"service": "route53", "operation": "ListHostedZones",
                               "error": "Throttling", "count": 1})
    eq(r53.list_hosted_zones()["ResponseMetadata"]["RetryAttempts"], 1, "throttling retried")
    env.ctl("POST", "/rules", {"service": "route53", "operation": "ChangeResourceRecordSets",
                               "error": "PriorRequestNotComplete", "count": 1})
    out = r53.change_resource_record_sets(HostedZoneId=zone, ChangeBatch={"Changes": [{
        "Action": "UPSERT", "ResourceRecordSet": {"Name": "a.example.com", "Type": "A",
                                                  "TTL": 60,
                                                  "ResourceRecords": [{"Value": "192.0.2.1"}]}}]})
    eq(out["ResponseMetadata"]["RetryAttempts"], 1, "PriorRequestNotComplete retried")
    env.ctl("POST", "/rules", {"service": "route53", "error": "NoSuchHostedZone", "status": 404,
                               "message": "gone", "count": 1})
    try:
        env.client("route53").get_hosted_zone(Id=zone)
        raise AssertionError("expected NoSuchHostedZone")
    except ClientError as exc:
        eq(exc.response["Error"]["Code"], "NoSuchHostedZone", "code")
        eq(exc.response["Error"]["Message"], "gone", "message")


@check
def status_503_and_500_retried(env):
    ecs_service(env)
    env.ctl("POST", "/rules", {"service": "ecs", "status": 503, "count": 1})
    env.ctl("POST", "/rules", {"service": "ecs", "status": 500, "count": 1})
    out = env.client("ecs").list_clusters()
    eq(out["ResponseMetadata"]["RetryAttempts"], 2, "retries")
    codes = [e["status"] for e in env.ctl("GET", "/log?operation=ListClusters")[-3:]]
    eq(codes, [503, 500, 200], "statuses")


@check
def reset_and_delay_rules(env):
    ecs = ecs_service(env)
    env.ctl("POST", "/rules", {"service": "ecs", "operation": "ListClusters", "reset": True,
                               "count": 1})
    eq(ecs.list_clusters()["ResponseMetadata"]["RetryAttempts"], 1, "reset retried")
    env.ctl("POST", "/rules", {"service": "ecs", "operation": "ListClusters", "delayMs": 400,
                               "count": 1})
    t0 = time.time()
    ecs.list_clusters()
    took = time.time() - t0
    assert 0.4 <= took < 2, took
    short = env.client("ecs", read_timeout=0.3, retries={"total_max_attempts": 1})
    env.ctl("POST", "/rules", {"service": "ecs", "operation": "ListClusters", "delayMs": 1000,
                               "count": 1})
    try:
        short.list_clusters()
        raise AssertionError("expected a read timeout")
    except Exception as exc:  # ReadTimeoutError
        assert "timeout" in type(exc).__name__.lower() or "timed out" in str(exc), repr(exc)


@check
def held_answers_leave_when_released(env):
    """moto answers a held request as of its arrival; the answer leaves on release."""
    import threading

    ecs = ecs_service(env)
    env.ctl("POST", "/ecs/services", {"cluster": "c1", "service": "web", "runningCount": 0})
    rule = env.ctl("POST", "/rules", {"service": "ecs", "operation": "DescribeServices",
                                      "match": {"services": "web"}, "hold": True})
    got = {}

    def ask():
        out = ecs.describe_services(cluster="c1", services=["web"])
        got["running"] = out["services"][0]["runningCount"]
        got["at"] = time.time()

    t = threading.Thread(target=ask)
    t0 = time.time()
    t.start()
    time.sleep(0.5)
    # The state changes while the answer is held; the held answer is as of the request.
    env.ctl("POST", "/ecs/services", {"cluster": "c1", "service": "web", "runningCount": 2})
    assert "running" not in got, got
    env.ctl("DELETE", f"/rules/{rule['id']}")
    t.join(5)
    eq(got.get("running"), 0, "held answer as of the request")
    assert got["at"] - t0 >= 0.5, got
    entry = env.ctl("GET", "/log?operation=DescribeServices")[-1]
    eq(entry.get("held"), True, "logged as held")
    env.ctl("DELETE", "/ecs/services?cluster=c1&service=web")


@check
def rule_match_skip_and_delete(env):
    ecs = ecs_service(env)
    ecs_service(env, name="api")
    r = env.ctl("POST", "/rules", {"service": "ecs", "operation": "UpdateService",
                                   "match": {"service": "api"}, "error": "AccessDeniedException",
                                   "status": 400})
    ecs.update_service(cluster="c1", service="web", desiredCount=2)  # not matched
    try:
        ecs.update_service(cluster="c1", service="api", desiredCount=2)
        raise AssertionError("expected AccessDenied")
    except ClientError as exc:
        eq(exc.response["Error"]["Code"], "AccessDeniedException", "code")
    env.ctl("DELETE", f"/rules/{r['id']}")
    ecs.update_service(cluster="c1", service="api", desiredCount=2)
    env.ctl("POST", "/rules", {"service": "ecs", "operation": "DescribeServices", "skip": 1,
                               "count": 1, "error": "InvalidParameterException"})
    ecs.describe_services(cluster="c1", services=["web"])  # skipped
    try:
        ecs.describe_services(cluster="c1", services=["web"])
        raise AssertionError("expected the 2nd call to fail")
    except ClientError as exc:
        eq(exc.response["Error"]["Code"], "InvalidParameterException", "code")
    ecs.describe_services(cluster="c1", services=["web"])  # rule used up
    env.ctl("POST", "/rules", {"service": "ecs", "bogus": 1}, expect=400)


@check
def ecs_force_new_deployment(env):
    ecs = ecs_service(env, name="fnd")
    before = ecs.describe_services(cluster="c1", services=["fnd"])["services"][0]
    eq(before["runningCount"], 2, "settled running")
    eq(len(before["deployments"]), 1, "one deployment")
    old = before["deployments"][0]
    eq(old["rolloutState"], "COMPLETED", "settled rollout")
    env.ctl("POST", "/ecs/services", {"cluster": "c1", "service": "fnd", "rolloutSeconds": None})
    out = ecs.update_service(cluster="c1", service="fnd", forceNewDeployment=True)["service"]
    deps = out["deployments"]
    eq([d["status"] for d in deps], ["PRIMARY", "ACTIVE"], "statuses")
    assert deps[0]["id"] != old["id"], "new id"
    eq(deps[1]["id"], old["id"], "old kept as ACTIVE")
    assert deps[0]["createdAt"] > old["createdAt"], "newer createdAt"
    eq(deps[0]["rolloutState"], "IN_PROGRESS", "new rollout")
    log = env.ctl("GET", "/log?operation=UpdateService")[-1]
    eq(log["result"]["deploymentId"], deps[0]["id"], "deployment id logged")
    state = env.ctl("GET", "/ecs/services?cluster=c1&service=fnd")
    eq(state["rollout"]["deploymentId"], deps[0]["id"], "rollout tracked")
    # complete it now
    env.ctl("POST", "/ecs/services", {"cluster": "c1", "service": "fnd", "completeRollout": True})
    after = ecs.describe_services(cluster="c1", services=["fnd"])["services"][0]
    eq([(d["id"], d["rolloutState"]) for d in after["deployments"]],
       [(deps[0]["id"], "COMPLETED")], "completed")
    assert "steady state" in after["events"][0]["message"], after["events"][0]


@check
def ecs_rollout_completes_by_time(env):
    ecs = ecs_service(env, name="roll")
    env.ctl("POST", "/settings", {"ecs": {"rolloutSeconds": 0.5}})
    dep = ecs.update_service(cluster="c1", service="roll",
                             forceNewDeployment=True)["service"]["deployments"][0]
    eq(dep["rolloutState"], "IN_PROGRESS", "in progress")
    now = ecs.describe_services(cluster="c1", services=["roll"])["services"][0]
    eq(len(now["deployments"]), 2, "still two")
    time.sleep(0.6)
    done = ecs.describe_services(cluster="c1", services=["roll"])["services"][0]
    eq([d["rolloutState"] for d in done["deployments"]], ["COMPLETED"], "completed")
    # a pinned runningCount below desired holds the rollout
    env.ctl("POST", "/ecs/services", {"cluster": "c1", "service": "roll", "runningCount": 1})
    ecs.update_service(cluster="c1", service="roll", forceNewDeployment=True)
    time.sleep(0.6)
    held = ecs.describe_services(cluster="c1", services=["roll"])["services"][0]
    eq(held["deployments"][0]["rolloutState"], "IN_PROGRESS", "held")
    eq(held["runningCount"], 1, "pinned running")


@check
def ecs_taskdef_change_is_new_deployment(env):
    ecs = ecs_service(env, name="td")
    arn = ecs.register_task_definition(family="td", containerDefinitions=[
        {"name": "td", "image": "nginx:2", "memory": 128}])["taskDefinition"]["taskDefinitionArn"]
    out = ecs.update_service(cluster="c1", service="td", taskDefinition="td")["service"]
    eq(out["taskDefinition"], arn, "service taskdef")
    eq(out["deployments"][0]["taskDefinition"], arn, "primary taskdef")
    eq([d["status"] for d in out["deployments"]], ["PRIMARY", "ACTIVE"], "new deployment")
    out = ecs.update_service(cluster="c1", service="td", desiredCount=4)["service"]
    eq(len(out["deployments"]), len(env.client("ecs").describe_services(
        cluster="c1", services=["td"])["services"][0]["deployments"]), "no extra deployment")


@check
def ecs_overrides_counts_events_deployments(env):
    ecs = ecs_service(env, name="ovr")
    env.ctl("POST", "/ecs/services", {
        "cluster": "c1", "service": "ovr", "runningCount": 0, "pendingCount": 1,
        "events": [{"message": "(service ovr) was unable to place a task.",
                    "createdAt": "2024-05-01T10:00:00Z"},
                   {"message": "(service ovr) newer event", "createdAt": 1714557700}]})
    svc = ecs.describe_services(cluster="c1", services=["ovr"])["services"][0]
    eq((svc["runningCount"], svc["pendingCount"], svc["desiredCount"]), (0, 1, 2), "counts")
    eq(svc["events"][0]["message"], "(service ovr) newer event", "newest first")
    eq(svc["events"][1]["createdAt"].isoformat()[:19], "2024-05-01T10:00:00", "createdAt")
    # moto recomputes runningCount on UpdateService(desiredCount): the pin wins
    ecs.update_service(cluster="c1", service="ovr", desiredCount=3)
    svc = ecs.describe_services(cluster="c1", services=["ovr"])["services"][0]
    eq((svc["runningCount"], svc["desiredCount"]), (0, 3), "pinned after update")
    env.ctl("DELETE", "/ecs/services?cluster=c1&service=ovr")
    ecs.update_service(cluster="c1", service="ovr", desiredCount=2)
    svc = ecs.describe_services(cluster="c1", services=["ovr"])["services"][0]
    eq(svc["runningCount"], 2, "unpinned")
    # explicit deployments: a stuck second PRIMARY
    env.ctl("POST", "/ecs/services", {"cluster": "c1", "service": "ovr", "deployments": [
        {"id": "ecs-svc/2", "status": "PRIMARY", "rolloutState": "IN_PROGRESS",
         "createdAt": "2024-05-01T09:00:00Z", "runningCount": 0, "failedTasks": 3},
        {"id": "ecs-svc/1", "status": "ACTIVE", "rolloutState": "COMPLETED",
         "createdAt": "2024-04-01T09:00:00Z", "runningCount": 2}]})
    svc = ecs.describe_services(cluster="c1", services=["ovr"])["services"][0]
    eq([(d["id"], d["status"], d["rolloutState"], d["failedTasks"]) for d in svc["deployments"]],
       [("ecs-svc/2", "PRIMARY", "IN_PROGRESS", 3), ("ecs-svc/1", "ACTIVE", "COMPLETED", 0)],
       "deployments")
    env.ctl("POST", "/ecs/services", {"cluster": "c1", "service": "ovr",
                                      "primaryDeployment": {"rolloutState": "FAILED"}})
    svc = ecs.describe_services(cluster="c1", services=["ovr"])["services"][0]
    eq(svc["deployments"][0]["rolloutState"], "FAILED", "patched primary")
    env.ctl("POST", "/ecs/services", {"cluster": "c1", "service": "ovr",
                                      "newDeployment": {"id": "ecs-svc/3"}})
    svc = ecs.describe_services(cluster="c1", services=["ovr"])["services"][0]
    eq([(d["id"], d["status"]) for d in svc["deployments"]],
       [("ecs-svc/3", "PRIMARY"), ("ecs-svc/2", "ACTIVE"), ("ecs-svc/1", "ACTIVE")], "new")
    env.ctl("POST", "/ecs/services", {"cluster": "c1", "service": "nope"}, expect=404)


@check
def rds_overrides_reboot_failover(env):
    rds = rds_instance(env, "db-a", multi_az=True)
    rds_instance(env, "db-b")
    env.ctl("POST", "/rds/instances", {"dbInstanceIdentifier": "db-a",
                                       "secondaryAvailabilityZone": "us-east-1c"})
    db = rds.describe_db_instances(DBInstanceIdentifier="db-a")["DBInstances"][0]
    eq((db["MultiAZ"], db["AvailabilityZone"], db.get("SecondaryAvailabilityZone")),
       (True, "us-east-1a", "us-east-1c"), "multi-az")
    out = rds.reboot_db_instance(DBInstanceIdentifier="db-a", ForceFailover=True)["DBInstance"]
    eq((out["DBInstanceStatus"], out["AvailabilityZone"], out["SecondaryAvailabilityZone"]),
       ("rebooting", "us-east-1c", "us-east-1a"), "failover swaps AZs")
    db = rds.describe_db_instances(DBInstanceIdentifier="db-a")["DBInstances"][0]
    eq(db["DBInstanceStatus"], "available", "back after rebootSeconds=0")
    try:
        rds.reboot_db_instance(DBInstanceIdentifier="db-b", ForceFailover=True)
        raise AssertionError("expected InvalidParameterCombination")
    except ClientError as exc:
        eq(exc.response["Error"]["Code"], "InvalidParameterCombination", "code")
    rds.reboot_db_instance(DBInstanceIdentifier="db-b")
    reboots = [(e["params"].get("DBInstanceIdentifier"), e["params"].get("ForceFailover"),
                e["status"]) for e in env.ctl("GET", "/log?operation=RebootDBInstance")[-3:]]
    eq(reboots, [("db-a", True, 200), ("db-b", True, 400), ("db-b", None, 200)], "reboot log")
    # status: one-shot vs pinned, and rebootSeconds
    env.ctl("POST", "/settings", {"rds": {"rebootSeconds": 0.4}})
    env.ctl("POST", "/rds/instances", {"dbInstanceIdentifier": "db-b", "status": "failed"})
    eq(rds.describe_db_instances(DBInstanceIdentifier="db-b")["DBInstances"][0][
        "DBInstanceStatus"], "failed", "status override")
    rds.reboot_db_instance(DBInstanceIdentifier="db-b")
    eq(rds.describe_db_instances(DBInstanceIdentifier="db-b")["DBInstances"][0][
        "DBInstanceStatus"], "rebooting", "rebooting")
    time.sleep(0.5)
    eq(rds.describe_db_instances(DBInstanceIdentifier="db-b")["DBInstances"][0][
        "DBInstanceStatus"], "available", "rebooted")
    env.ctl("POST", "/rds/instances", {"dbInstanceIdentifier": "db-b", "status": "stopped",
                                       "pin": True})
    rds.reboot_db_instance(DBInstanceIdentifier="db-b")
    time.sleep(0.5)
    eq(rds.describe_db_instances(DBInstanceIdentifier="db-b")["DBInstances"][0][
        "DBInstanceStatus"], "stopped", "pinned survives reboot")
    env.ctl("DELETE", "/rds/instances?dbInstanceIdentifier=db-b")
    env.ctl("POST", "/rds/instances", {"dbInstanceIdentifier": "db-b", "status": "available"})


@check
def rds_cluster_failover_takes_time_and_leaves_events(env):
    """FailoverDBCluster: failing-over with the old writer for failoverSeconds, then the new."""
    rds = env.client("rds")
    rds.create_db_cluster(DBClusterIdentifier="aurora-1", Engine="aurora-postgresql",
                          MasterUsername="u", MasterUserPassword="password123")
    for ident in ("aurora-1-a", "aurora-1-b"):
        rds.create_db_instance(DBInstanceIdentifier=ident, DBClusterIdentifier="aurora-1",
                               DBInstanceClass="db.r6g.large", Engine="aurora-postgresql")

    def state():
        c = rds.describe_db_clusters(DBClusterIdentifier="aurora-1")["DBClusters"][0]
        writer = [m["DBInstanceIdentifier"] for m in c["DBClusterMembers"] if m["IsClusterWriter"]]
        return c["Status"], writer

    status, before = state()
    eq((status, len(before)), ("available", 1), "one writer to start")
    env.ctl("POST", "/settings", {"rds": {"failoverSeconds": 1}})
    try:
        out = rds.failover_db_cluster(DBClusterIdentifier="aurora-1")["DBCluster"]
        eq(out["Status"], "failing-over", "the answer says failing-over")
        eq(state(), ("failing-over", before), "the old writer stays while failing over")
        time.sleep(1.1)
        status, after = state()
        eq(status, "available", "done after failoverSeconds")
        assert after and after != before, (before, after)
        events = rds.describe_events(SourceIdentifier="aurora-1", SourceType="db-cluster")["Events"]
        messages = [e["Message"] for e in events]
        assert any(m.startswith("Started cross AZ failover") for m in messages), messages
        assert any(m.startswith("Completed failover") for m in messages), messages
    finally:
        env.ctl("POST", "/settings", {"rds": {"failoverSeconds": 0}})
    # Per cluster: a failover that lasts until the test finishes it.
    env.ctl("POST", "/rds/clusters", {"dbClusterIdentifier": "aurora-1", "failoverSeconds": 3600})
    rds.failover_db_cluster(DBClusterIdentifier="aurora-1")
    eq(state(), ("failing-over", after), "held failing over")
    out = env.ctl("POST", "/rds/clusters", {"dbClusterIdentifier": "aurora-1", "completeFailover": True})
    eq(out["failingOverTo"], before[0], "back to the first writer")
    eq(state(), ("available", before), "finished on demand")


@check
def rds_filters(env):
    rds = rds_instance(env, "f1")
    rds_instance(env, "f2")
    rds_instance(env, "f3")
    arn = rds.describe_db_instances(DBInstanceIdentifier="f2")["DBInstances"][0]["DBInstanceArn"]
    got = rds.describe_db_instances(Filters=[{"Name": "db-instance-id",
                                              "Values": ["f1", arn, "missing"]}])["DBInstances"]
    eq(sorted(d["DBInstanceIdentifier"] for d in got), ["f1", "f2"], "multi-value filter")
    log = env.ctl("GET", "/log?operation=DescribeDBInstances")[-1]
    eq(log["params"]["Filters"], {"db-instance-id": ["f1", arn, "missing"]}, "filters logged")
    try:
        rds.describe_db_instances(DBInstanceIdentifier="missing")
        raise AssertionError("expected DBInstanceNotFound")
    except ClientError as exc:
        eq(exc.response["Error"]["Code"], "DBInstanceNotFound", "code")


@check
def route53_health_and_changes(env):
    r53, zone, hc = zone_and_check(env)
    obs = r53.get_health_check_status(HealthCheckId=hc)["HealthCheckObservations"]
    assert len(obs) == 1 and obs[0]["StatusReport"]["Status"].startswith("Success"), obs
    env.ctl("POST", "/route53/healthchecks", {"healthCheckId": hc, "failing": 2, "total": 3})
    obs = r53.get_health_check_status(HealthCheckId=hc)["HealthCheckObservations"]
    eq([o["StatusReport"]["Status"].split(":")[0] for o in obs],
       ["Failure", "Failure", "Success"], "observations")
    assert "503" in obs[0]["StatusReport"]["Status"], obs[0]
    env.ctl("DELETE", f"/route53/healthchecks/{hc}")
    eq(len(r53.get_health_check_status(HealthCheckId=hc)["HealthCheckObservations"]), 1, "clear")
    try:
        r53.get_health_check_status(HealthCheckId="00000000-0000-0000-0000-000000000000")
        raise AssertionError("expected NoSuchHealthCheck")
    except ClientError as exc:
        eq(exc.response["Error"]["Code"], "NoSuchHealthCheck", "code")

    def upsert(name, ident):
        return r53.change_resource_record_sets(HostedZoneId=zone, ChangeBatch={"Changes": [{
            "Action": "UPSERT", "ResourceRecordSet": {
                "Name": name, "Type": "A", "SetIdentifier": ident, "Weight": 0, "TTL": 60,
                "ResourceRecords": [{"Value": "192.0.2.1"}]}}]})["ChangeInfo"]

    a, b = upsert("w.example.com", "blue"), upsert("w.example.com", "green")
    assert a["Id"] != b["Id"] and a["Id"].startswith("/change/C"), (a, b)
    eq(r53.get_change(Id=a["Id"])["ChangeInfo"]["Status"], "INSYNC", "default insync")
    env.ctl("POST", "/settings", {"route53": {"changePendingCalls": 2}})
    c = upsert("w.example.com", "blue")
    eq(c["Status"], "PENDING", "pending")
    eq([r53.get_change(Id=c["Id"])["ChangeInfo"]["Status"] for _ in range(3)],
       ["PENDING", "PENDING", "INSYNC"], "pending calls")
    env.ctl("POST", "/settings", {"route53": {"changePendingCalls": 0,
                                              "changePendingSeconds": 0.4}})
    d = upsert("w.example.com", "green")
    eq(r53.get_change(Id=d["Id"])["ChangeInfo"]["Status"], "PENDING", "pending by time")
    time.sleep(0.5)
    eq(r53.get_change(Id=d["Id"].split("/")[-1])["ChangeInfo"]["Status"], "INSYNC", "by time")
    log = env.ctl("GET", "/log?operation=ChangeResourceRecordSets")[-1]
    eq(log["params"]["changes"][0]["SetIdentifier"], "green", "change logged")
    eq(log["result"]["changeId"], d["Id"], "change id logged")
    eq(log["params"]["HostedZoneId"], zone.split("/")[-1], "zone logged")


@check
def reset_endpoints(env):
    ecs = ecs_service(env)
    env.ctl("POST", "/rules", {"service": "ecs", "error": "ThrottlingException"})
    env.ctl("POST", "/reset")
    eq(env.ctl("GET", "/rules"), [], "rules")
    eq(env.ctl("GET", "/calls"), {}, "calls")
    ecs.list_clusters()  # rule gone
    req = urllib.request.Request(env.endpoint + "/moto-api/reset", method="POST", data=b"")
    urllib.request.urlopen(req).read()
    eq(ecs.list_clusters()["clusterArns"], [], "moto data wiped")
    eq(env.ctl("GET", "/calls"), {"ecs.ListClusters": 2}, "moto-api not counted")


EXAMPLES = os.path.join(HERE, "..", "..", "examples", "events")


def event_queue(env, patterns=("pattern-ecs-rds.json",)):
    """A queue of its own that the shipped patterns' rules (named after their files) send
    to (moto's data outlives each check's reset: rules of another check would send here too)."""
    sqs, events = env.client("sqs"), env.client("events")
    name = f"recovery-events-{len(events.list_rules()['Rules'])}"
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    for file in patterns:
        rule = f"{name}-{file.removesuffix('.json')}"
        with open(os.path.join(EXAMPLES, file)) as f:
            events.put_rule(Name=rule, EventPattern=f.read())
        events.put_targets(Rule=rule, Targets=[{"Id": "queue", "Arn": arn}])
    return sqs, events, url


def ecs_event(detail_type="ECS Service Action", event_type="ERROR", service="web"):
    return {"Source": "aws.ecs", "DetailType": detail_type,
            "Resources": [f"arn:aws:ecs:us-east-1:123456789012:service/c1/{service}"],
            "Detail": json.dumps({"eventType": event_type, "eventName": "SERVICE_TASK_START_IMPAIRED"})}


@check
def put_events_reach_a_queue_through_rules(env):
    sqs, events, url = event_queue(env, patterns=("pattern-ecs-rds.json", "pattern-ecs-tasks.json"))
    second = url.rsplit("/", 1)[-1] + "-again"
    events.put_rule(Name=second, EventPattern=open(os.path.join(EXAMPLES, "pattern-ecs-rds.json")).read())
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_targets(Rule=second, Targets=[{"Id": "queue", "Arn": arn}])
    out = events.put_events(Entries=[
        ecs_event(),
        # Not in any pattern: a task that stopped for a deployment, another source.
        {"Source": "aws.ecs", "DetailType": "ECS Task State Change", "Resources": [],
         "Detail": json.dumps({"lastStatus": "STOPPED", "stopCode": "ServiceSchedulerInitiated"})},
        {"Source": "acme.orders", "DetailType": "Order Placed", "Detail": "{}"},
        # In the tasks pattern.
        {"Source": "aws.ecs", "DetailType": "ECS Task State Change", "Resources": [],
         "Detail": json.dumps({"lastStatus": "STOPPED", "stopCode": "TaskFailedToStart", "group": "service:web"})},
    ])
    eq(out["FailedEntryCount"], 0, "accepted")
    got = []
    while True:
        batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                    MessageSystemAttributeNames=["SentTimestamp"]).get("Messages", [])
        if not batch:
            break
        got += batch
        sqs.delete_message_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)])
    bodies = [json.loads(m["Body"]) for m in got]
    ids = [b["id"] for b in bodies]
    first = out["Entries"][0]["EventId"]
    eq(sorted(ids), sorted([first, first, out["Entries"][3]["EventId"]]),
       "two rules deliver the service event twice with one id; the failed task once")
    service = next(b for b in bodies if b["id"] == first)
    eq((service["source"], service["detail-type"], service["resources"], service["detail"]["eventType"]),
       ("aws.ecs", "ECS Service Action", ecs_event()["Resources"], "ERROR"), "the envelope")
    assert service["time"].endswith("Z") and service["account"] == "123456789012", service
    assert all("SentTimestamp" in m["Attributes"] for m in got), got
    log = env.ctl("GET", "/log?operation=PutEvents")
    eq([e["Source"] for e in log[-1]["params"]["entries"]][:2], ["aws.ecs", "aws.ecs"], "logged entries")


@check
def route53_alarm_pattern_matches_nested_metrics(env):
    sqs, events, url = event_queue(env, patterns=("pattern-route53-alarms.json",))

    def alarm(namespace):
        return {"Source": "aws.cloudwatch", "DetailType": "CloudWatch Alarm State Change",
                "Detail": json.dumps({"state": {"value": "ALARM"}, "configuration": {"metrics": [
                    {"id": "m1", "metricStat": {"metric": {"namespace": namespace, "name": "HealthCheckStatus",
                                                           "dimensions": {"HealthCheckId": "abc"}}}}]}})}
    events.put_events(Entries=[alarm("AWS/Route53"), alarm("AWS/EC2")])
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    eq([json.loads(m["Body"])["detail"]["configuration"]["metrics"][0]["metricStat"]["metric"]["namespace"]
        for m in got], ["AWS/Route53"], "only the Route 53 alarm")


@check
def long_polls_wait_without_blocking_other_calls(env):
    import threading

    sqs, events, url = event_queue(env)
    result = {}

    def poll():
        t0 = time.time()
        msgs = env.client("sqs").receive_message(QueueUrl=url, WaitTimeSeconds=3).get("Messages", [])
        result["waited"], result["messages"] = time.time() - t0, msgs

    waiter = threading.Thread(target=poll)
    waiter.start()
    time.sleep(0.3)
    t0 = time.time()
    env.client("ecs").list_clusters()
    other = time.time() - t0
    assert other < 1.0, f"another call waited {other:.2f}s behind the long poll"
    events.put_events(Entries=[ecs_event()])
    waiter.join(10)
    eq(len(result["messages"]), 1, "the long poll returns the message that arrived")
    assert result["waited"] < 2.5, f"it returned when the message came, not at the end: {result['waited']:.2f}s"
    t0 = time.time()
    eq(sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1).get("Messages", []), [], "nothing left")
    assert 0.9 <= time.time() - t0 < 3, "an empty long poll waits its WaitTimeSeconds"
    eq(env.ctl("GET", "/log?operation=ReceiveMessage")[-1]["params"]["WaitTimeSeconds"], 1, "logged")


@check
def sqs_errors_wire_format(env):
    sqs = env.client("sqs", retries={"mode": "standard", "max_attempts": 1})
    env.ctl("POST", "/rules", {"service": "sqs", "operation": "ReceiveMessage", "error": "AccessDenied",
                               "message": "not allowed", "count": 1})
    try:
        sqs.receive_message(QueueUrl=env.endpoint + "/123456789012/none")
        raise AssertionError("no error")
    except ClientError as exc:
        eq((exc.response["Error"]["Code"], exc.response["Error"]["Message"]), ("AccessDenied", "not allowed"), "error")
    try:
        sqs.receive_message(QueueUrl=env.endpoint + "/123456789012/none")
        raise AssertionError("no error")
    except ClientError as exc:
        assert "NonExistentQueue" in exc.response["Error"]["Code"], exc.response


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-k", default="")
    ap.add_argument("-v", action="store_true")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="fakeaws-selftest-")
    ready_path = os.path.join(tmp, "ready.json")
    log_path = os.path.join(tmp, "server.log")
    t0 = time.time()
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, os.path.join(HERE, "server.py"), "--port", "0",
                                 "--ready-file", ready_path], stdout=log, stderr=log)
    while not os.path.exists(ready_path):
        if proc.poll() is not None or time.time() - t0 > 60:
            print(open(log_path).read())
            print("0 passed, 1 failed")
            return 1
        time.sleep(0.05)
    print(f"server ready in {time.time() - t0:.2f}s")
    env = Env(json.load(open(ready_path)))
    passed = failed = 0
    for fn in CHECKS:
        if args.k not in fn.__name__:
            continue
        env.ctl("POST", "/reset")
        t1 = time.time()
        try:
            fn(env)
            passed += 1
            print(f"ok   {fn.__name__} ({time.time() - t1:.2f}s)")
        except Exception:
            failed += 1
            print(f"FAIL {fn.__name__} ({time.time() - t1:.2f}s)\n{traceback.format_exc()}")
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = "timeout"
    if code == 0:
        passed += 1
        print("ok   sigterm_exit_0")
    else:
        failed += 1
        print(f"FAIL sigterm_exit_0: exit {code}")
    if failed or args.v:
        print(open(log_path).read())
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
