"""The demo's AWS side, on the local moto + fault layer (AWS_ENDPOINT_URL, RECOVERY_FAULTS_URL).

  python aws.py setup     create cluster "demo" with service "checkout" (3 tasks)
  python aws.py break     pin runningCount at 1 of 3 (what an outage looks like to ECS)
  python aws.py restarts  print how many UpdateService calls the controller made
  python aws.py heal      let the new deployment finish: 3 of 3 running
"""

import json
import os
import sys
import urllib.request

import boto3


def faults(path, body=None, method=None):
    url = os.environ["RECOVERY_FAULTS_URL"] + path
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method or ("POST" if data else "GET"),
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req) as resp:
        return json.loads(resp.read() or b"null")


def main(cmd):
    if cmd == "setup":
        ecs = boto3.client("ecs", region_name="us-east-1")
        ecs.create_cluster(clusterName="demo")
        ecs.register_task_definition(family="checkout", containerDefinitions=[
            {"name": "app", "image": "nginx", "memory": 128}])
        ecs.create_service(cluster="demo", serviceName="checkout", taskDefinition="checkout", desiredCount=3)
    elif cmd == "break":
        faults("/ecs/services", {"cluster": "demo", "service": "checkout", "runningCount": 1})
    elif cmd == "heal":
        faults("/ecs/services", {"cluster": "demo", "service": "checkout", "runningCount": 3, "completeRollout": True})
    elif cmd == "restarts":
        log = faults("/log?service=ecs&operation=UpdateService")
        print(len([e for e in log if e["params"].get("cluster") == "demo"]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "")
