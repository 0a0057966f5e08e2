#!/usr/bin/env python3
"""Run the Argo CD health checks in health/ the way Argo CD runs them, and build the
argocd-cm snippet from them.

Argo CD evaluates a health check with gopher-lua (Lua 5.1) in a fresh state per object:
only the base, package and table libraries and a "safe" os (time, date) are loaded, the
object is the global `obj`, and the script returns a table {status = ..., message = ...}.
`run` reproduces that with the reference Lua 5.1 (PyPI `lupa`, module `lupa.lua51`, which
the project's test venv installs: testenv/requirements.txt): each script runs in its own
environment holding only those libraries, with no `string` or `math` table and with the
string metatable's __index removed, so `s:find(...)`, `string.*` and `math.*` fail as they
do in Argo CD (unless a resource opts into `useOpenLibs`, which these scripts do not).

Usage:
  PY="$(bash testenv/venv.sh)"
  "$PY" deploy/argocd/health.py run < requests.json    # used by tests/chart.rs
      stdin:  [{"script": "<path of a .lua file>" | "source": "<lua text>", "obj": {...}}, ...]
      stdout: [{"status": "...", "message": "..."} | {"error": "..."}, ...]  (same order)
  "$PY" deploy/argocd/health.py eval SCRIPT.lua OBJECT.yaml...   # one JSON line per object
  python3 deploy/argocd/health.py cm > deploy/argocd/argocd-cm.yaml   # stdlib only
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
HEALTH = os.path.join(HERE, "health")
GROUP = "recovery.dev"
KINDS = ("RecoveryPolicy", "Incident", "RecoveryPlan")

# The sandbox: what Argo CD's Lua VM opens (base, package, table, safe os), nothing else.
# Built once per object, so no state leaks from one evaluation to the next.
SANDBOX = r"""
local string_mt = debug.getmetatable("")
string_mt.__index = nil
local base = {
  "assert", "error", "getmetatable", "ipairs", "next", "pairs", "pcall", "rawequal",
  "rawget", "rawset", "select", "setmetatable", "tonumber", "tostring", "type", "unpack",
  "xpcall", "_VERSION",
}
local G = _G
local copy_table = {}
for k, v in G.pairs(G.table) do copy_table[k] = v end
local os_safe = { time = G.os.time, date = G.os.date }
local stderr = G.io.stderr
return function(obj)
  local env = {}
  for _, name in G.ipairs(base) do env[name] = G[name] end
  local tbl = {}
  for k, v in G.pairs(copy_table) do tbl[k] = v end
  env.table = tbl
  env.os = { time = os_safe.time, date = os_safe.date }
  env.print = function(...)
    local parts = {}
    for i = 1, G.select("#", ...) do parts[#parts + 1] = G.tostring(G.select(i, ...)) end
    stderr:write(G.table.concat(parts, "\t"), "\n")
  end
  env._G = env
  env.obj = obj
  return env
end
"""

RUNNER = r"""
local make_env = ...
return function(source, name, obj)
  local chunk, err = loadstring(source, "=" .. name)
  if chunk == nil then
    return nil, "syntax error: " .. tostring(err)
  end
  setfenv(chunk, make_env(obj))
  local ok, result = pcall(chunk)
  if not ok then
    return nil, tostring(result)
  end
  if type(result) ~= "table" then
    return nil, "the script returned " .. type(result) .. ", not a table"
  end
  return result.status, result.message
end
"""

VALID = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}


def runtime():
    try:
        import lupa.lua51 as lua51  # noqa: PLC0415 (only `run` and `eval` need it)
    except ImportError as e:
        sys.exit(
            f"health.py: cannot import lupa.lua51 ({e}). Run this with the test venv's python: "
            '"$(bash testenv/venv.sh)" deploy/argocd/health.py ... (testenv/requirements.txt pins lupa)'
        )
    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    assert lua.eval("_VERSION") == "Lua 5.1", lua.eval("_VERSION")
    make_env = lua.execute(SANDBOX)
    return lua, lua.execute(RUNNER, make_env)


def to_lua(lua, value):
    """Python (decoded JSON) to Lua, as Argo CD's decodeValue does: objects and arrays to
    tables (arrays 1-based), numbers, strings, booleans; null to nil."""
    if isinstance(value, dict):
        t = lua.table()
        for k, v in value.items():
            if v is not None:
                t[k] = to_lua(lua, v)
        return t
    if isinstance(value, list):
        t = lua.table()
        for i, v in enumerate(value, 1):
            if v is not None:
                t[i] = to_lua(lua, v)
        return t
    return value


def evaluate(lua, run, source, name, obj):
    status, message = run(source, name, to_lua(lua, obj))
    if status is None:
        return {"error": message}
    if status not in VALID:
        return {"error": f"invalid health status {status!r} (message {message!r})"}
    out = {"status": status}
    if message is not None:
        out["message"] = message
    return out


def cmd_run():
    requests = json.load(sys.stdin)
    lua, run = runtime()
    results = []
    for r in requests:
        if "source" in r:
            source, name = r["source"], "source"
        else:
            with open(r["script"], encoding="utf-8") as f:
                source, name = f.read(), os.path.basename(r["script"])
        results.append(evaluate(lua, run, source, name, r.get("obj")))
    json.dump(results, sys.stdout)
    sys.stdout.write("\n")


def cmd_eval(script, objects):
    import yaml  # noqa: PLC0415 (PyYAML is in the test venv)

    with open(script, encoding="utf-8") as f:
        source = f.read()
    lua, run = runtime()
    for path in objects:
        with open(path, encoding="utf-8") as f:
            obj = yaml.safe_load(f)
        print(json.dumps({"object": path, **evaluate(lua, run, source, os.path.basename(script), obj)}))


def cm_key(kind):
    return f"resource.customizations.health.{GROUP}_{kind}"


def cmd_cm():
    out = [
        "# Argo CD health checks for the recovery.dev kinds, as entries of the argocd-cm ConfigMap.",
        "# Generated from deploy/argocd/health/*.lua by `python3 deploy/argocd/health.py cm`; do not",
        "# edit by hand (tests/chart.rs checks that it matches). Merge it into Argo CD's config:",
        "#   kubectl -n argocd patch configmap argocd-cm --type merge --patch-file deploy/argocd/argocd-cm.yaml",
        "# See deploy/argocd/README.md for the argo-cd Helm chart and the Argo CD Operator.",
        "apiVersion: v1",
        "kind: ConfigMap",
        "metadata:",
        "  name: argocd-cm",
        "data:",
    ]
    for kind in KINDS:
        path = os.path.join(HEALTH, f"{GROUP}_{kind}.lua")
        with open(path, encoding="utf-8") as f:
            text = f.read()
        if not text.endswith("\n") or text.endswith("\n\n") or any(line != line.rstrip() for line in text.splitlines()):
            sys.exit(f"{path}: must end with exactly one newline and have no trailing spaces (YAML block scalar)")
        out.append(f"  {cm_key(kind)}: |")
        out.extend(f"    {line}" if line else "" for line in text.splitlines())
    sys.stdout.write("\n".join(out) + "\n")


def main(argv):
    if len(argv) >= 2 and argv[1] == "run":
        cmd_run()
    elif len(argv) >= 4 and argv[1] == "eval":
        cmd_eval(argv[2], argv[3:])
    elif len(argv) == 2 and argv[1] == "cm":
        cmd_cm()
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
