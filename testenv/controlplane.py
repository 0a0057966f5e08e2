#!/usr/bin/env python3
"""Run a real, minimal Kubernetes control plane (etcd + kube-apiserver) for tests.

Stdlib-only Python 3 plus the ``openssl`` CLI. Linux only. Everything listens
on 127.0.0.1, on free ports chosen at run time.

Usage:
    python3 testenv/controlplane.py --workdir DIR --ready-file FILE
        [--tools-dir CACHE_DIR] [--no-build] [--timeout SECONDS]
        [--restart-downtime SECONDS] [--stop-grace SECONDS] [--no-audit]
        [--watch-pid PID]

Binaries: taken from $RECOVERY_ETCD, $RECOVERY_KUBE_APISERVER, $RECOVERY_KUBECTL
when set; otherwise from ``testenv/tools.sh path NAME``, which builds them into
its cache on first use (minutes; ``--no-build`` makes a missing binary an error
instead). ``--tools-dir`` overrides that cache dir (= $RECOVERY_TOOLS_CACHE).

Lifecycle:
  * Starts etcd (data in DIR/etcd-data, wiped at every start, --unsafe-no-fsync),
    then kube-apiserver (TLS with a CA made here, admin client cert in group
    system:masters, a static admin token, RBAC+Node authorization, a
    service-account signing key so TokenRequest works, no ServiceAccount
    admission plugin since no controller-manager runs).
  * Once https://127.0.0.1:PORT/readyz answers "ok" it writes DIR/kubeconfig
    and then FILE (atomically, by rename) as JSON, see READY FILE below, and
    prints the same JSON as one line on stdout. Logs go to stderr.
  * Stays in the foreground supervising:
      SIGTERM / SIGINT  stop kube-apiserver, then etcd (SIGTERM, SIGKILL after
                        --stop-grace seconds), remove FILE, exit 0.
      SIGUSR1           restart kube-apiserver on the same port.
      SIGUSR2           restart etcd on the same ports (kube-apiserver keeps
                        running and reconnects). etcd gets SIGTERM and, since
                        its graceful stop hangs ~5 s on kube-apiserver's watch
                        streams, SIGKILL after 1 s; its data survives.
    A restart stops the process, waits --restart-downtime seconds (default 0),
    starts it again, waits until etcd is healthy and /readyz is ok, then
    rewrites FILE with the new pids and an incremented
    "restarts": {"kube-apiserver": N, "etcd": M} counter. To restart and wait:
    read the counter, send the signal, poll FILE until the counter grows.
    Signals received during a restart are queued.
  * A child that dies unexpectedly is reported on stderr (with the tail of its
    log); the other child is stopped; exit status 1. Startup failure: exit 2.
    Missing binaries that cannot be built: exit 3, with a message.
  * Children get PR_SET_PDEATHSIG=SIGKILL, so they never outlive this process
    even if it is SIGKILLed. --watch-pid PID makes this process shut down in
    order (as on SIGTERM) once PID has exited: pass the test process's own pid
    (or set $RECOVERY_PARENT_PID, the default) so a crashed or killed test run
    leaves nothing behind. (It polls /proc;
    PR_SET_PDEATHSIG is not used for this on purpose: it fires when the
    *thread* that spawned us exits, e.g. one cargo test thread.)

Files in DIR: pki/ (certs and keys), etcd-data/, etcd.log, kube-apiserver.log,
audit.log (JSON lines, level Metadata; --no-audit disables), kubeconfig.

READY FILE (JSON object):
  kubeconfig   path of DIR/kubeconfig (embedded CA, admin client cert+key,
               current-context "recovery-test")
  server       "https://127.0.0.1:PORT"
  kubectl      path of the kubectl to use with this server
  etcd         "http://127.0.0.1:PORT" (client URL)
  pids         {"controlplane": N, "etcd": N, "kube-apiserver": N}
  version      server gitVersion, e.g. "v1.37.2"
  ca_file, client_cert_file, client_key_file   PEM paths (admin user,
               CN=recovery-admin, O=system:masters)
  token        static bearer token of the same admin (user "recovery-admin-token",
               group system:masters)
  restarts     {"kube-apiserver": N, "etcd": N}
  workdir, logs {"etcd": path, "kube-apiserver": path, "audit": path|null}
"""

from __future__ import annotations

import argparse
import base64
import collections
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
TOOLS_SH = os.path.join(HERE, "tools.sh")
LOOPBACK = "127.0.0.1"

EXIT_CHILD_DIED = 1
EXIT_STARTUP = 2
EXIT_NO_BINARIES = 3


def log(msg: str) -> None:
    sys.stderr.write(f"controlplane: {msg}\n")
    sys.stderr.flush()


class StartupError(Exception):
    pass


class Stop(Exception):
    """Raised inside waits when SIGTERM/SIGINT arrived."""


# --------------------------------------------------------------------------
# binaries


def find_binaries(args, stopping) -> dict:
    env_names = {
        "etcd": "RECOVERY_ETCD",
        "kube-apiserver": "RECOVERY_KUBE_APISERVER",
        "kubectl": "RECOVERY_KUBECTL",
    }
    paths = {}
    for name, var in env_names.items():
        p = os.environ.get(var)
        if p:
            if not (os.path.isfile(p) and os.access(p, os.X_OK)):
                raise SystemExit(_no_binaries(f"${var}={p} is not an executable file"))
            paths[name] = p
            continue
        env = dict(os.environ)
        if args.tools_dir:
            env["RECOVERY_TOOLS_CACHE"] = os.path.abspath(args.tools_dir)
        if args.no_build:
            env["RECOVERY_TOOLS_NO_BUILD"] = "1"
        log(f"locating {name} via testenv/tools.sh (builds it on first use) ...")
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            try:
                proc = subprocess.Popen(["bash", TOOLS_SH, "path", name], env=env,
                                        stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                        start_new_session=True)
            except OSError as e:
                raise SystemExit(_no_binaries(f"cannot run {TOOLS_SH}: {e}"))
            while proc.poll() is None:
                if stopping():
                    # Abandon a (long) build: kill tools.sh and its go build.
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait()
                    raise Stop()
                time.sleep(0.2)
            out.seek(0)
            err.seek(0)
            stdout = out.read().decode(errors="replace").strip()
            stderr = err.read().decode(errors="replace").strip()
        if proc.returncode != 0 or not stdout:
            raise SystemExit(_no_binaries(
                f"`testenv/tools.sh path {name}` failed (exit {proc.returncode}):\n" + stderr[-3000:]))
        if stderr:
            sys.stderr.write(stderr + "\n")
        paths[name] = stdout.splitlines()[-1]
    return paths


def _no_binaries(detail: str) -> str:
    log(
        "the test control plane binaries (etcd, kube-apiserver, kubectl) are not available.\n"
        f"  {detail}\n"
        "  Build them once with `testenv/tools.sh` (needs Go and the Go module proxy;\n"
        "  cached in ${RECOVERY_TOOLS_CACHE:-~/.cache/aws-recovery-controller/tools}),\n"
        "  or point RECOVERY_ETCD, RECOVERY_KUBE_APISERVER and RECOVERY_KUBECTL at\n"
        "  existing binaries. See testenv/README.md."
    )
    return EXIT_NO_BINARIES  # SystemExit(int)


# --------------------------------------------------------------------------
# certificates (openssl CLI)


def _openssl(*argv: str) -> None:
    r = subprocess.run(["openssl", *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        raise StartupError(f"openssl {' '.join(argv)} failed:\n{r.stdout}")


def make_pki(pki: str) -> dict:
    """CA, serving cert, admin client cert, service-account key; reused if present."""
    os.makedirs(pki, exist_ok=True)
    f = {n: os.path.join(pki, n) for n in (
        "ca.crt", "ca.key", "serving.crt", "serving.key", "admin.crt", "admin.key",
        "sa.key", "sa.pub", "tokens.csv", "audit-policy.yaml")}
    if not all(os.path.exists(p) for p in f.values()):
        if shutil.which("openssl") is None:
            raise StartupError("the openssl CLI is required (apt-get install openssl)")
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "3650",
                 "-keyout", f["ca.key"], "-out", f["ca.crt"], "-subj", "/CN=recovery-test-ca",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
                 "-addext", "subjectKeyIdentifier=hash")

        def leaf(name: str, subj: str, ext: str) -> None:
            extfile = os.path.join(pki, name + ".ext")
            with open(extfile, "w") as fh:
                fh.write(ext)
            csr = os.path.join(pki, name + ".csr")
            _openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", f[name + ".key"],
                     "-out", csr, "-subj", subj)
            _openssl("x509", "-req", "-in", csr, "-CA", f["ca.crt"], "-CAkey", f["ca.key"],
                     "-CAcreateserial", "-sha256", "-days", "3650", "-out", f[name + ".crt"],
                     "-extfile", extfile)
            os.unlink(csr)
            os.unlink(extfile)

        leaf("serving", "/CN=kube-apiserver",
             "basicConstraints=critical,CA:FALSE\n"
             "keyUsage=critical,digitalSignature,keyEncipherment\n"
             "extendedKeyUsage=serverAuth\n"
             "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,"
             "DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:10.0.0.1\n"
             "authorityKeyIdentifier=keyid\n")
        leaf("admin", "/O=system:masters/CN=recovery-admin",
             "basicConstraints=critical,CA:FALSE\n"
             "keyUsage=critical,digitalSignature,keyEncipherment\n"
             "extendedKeyUsage=clientAuth\n"
             "authorityKeyIdentifier=keyid\n")
        _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", f["sa.key"])
        _openssl("pkey", "-in", f["sa.key"], "-pubout", "-out", f["sa.pub"])
        with open(f["tokens.csv"], "w") as fh:
            fh.write(f'{secrets.token_hex(24)},recovery-admin-token,recovery-admin-token-uid,"system:masters"\n')
        with open(f["audit-policy.yaml"], "w") as fh:
            fh.write("apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\n"
                     "rules:\n- level: Metadata\n")
        for p in f.values():
            os.chmod(p, 0o600)
    with open(f["tokens.csv"]) as fh:
        f["token"] = fh.read().split(",", 1)[0]
    return f


# --------------------------------------------------------------------------
# processes


def free_port(exclude=()) -> int:
    for _ in range(100):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((LOOPBACK, 0))
            port = s.getsockname()[1]
        finally:
            s.close()
        if port not in exclude:
            return port
    raise StartupError("no free loopback port")


_LIBC = None


def _libc():
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL(None, use_errno=True)
        except OSError:
            _LIBC = False
    return _LIBC


def _make_pdeathsig():
    """preexec_fn for the children: die with the supervisor (Linux prctl)."""
    libc, parent = _libc(), os.getpid()  # resolved before fork

    def pre() -> None:
        if libc:
            libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the supervisor died before prctl
            os._exit(1)

    return pre


class Child:
    def __init__(self, name: str, argv: list, logpath: str):
        self.name, self.argv, self.logpath = name, argv, logpath
        self.proc = None

    def start(self) -> None:
        logf = open(self.logpath, "ab")
        logf.write(f"\n==== controlplane: starting {self.name} at {time.strftime('%H:%M:%S')}: "
                   f"{' '.join(self.argv)}\n".encode())
        logf.flush()
        # Own session: a terminal ^C reaches only the supervisor, which stops
        # the children in order.
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=logf,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     preexec_fn=_make_pdeathsig(), close_fds=True)
        logf.close()

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                log(f"{self.name} (pid {self.proc.pid}) ignored SIGTERM for {grace}s; SIGKILL")
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log_tail(self, n: int = 30) -> str:
        try:
            with open(self.logpath, "rb") as fh:
                fh.seek(0, 2)
                fh.seek(max(0, fh.tell() - 64 * 1024))
                lines = fh.read().decode(errors="replace").splitlines()
            return "\n".join("    " + line for line in lines[-n:])
        except OSError:
            return "    (no log)"

    def log_since_start_contains(self, needle: str) -> bool:
        try:
            with open(self.logpath, "rb") as fh:
                text = fh.read().decode(errors="replace")
            return needle in text.rsplit("==== controlplane: starting", 1)[-1]
        except OSError:
            return False


# --------------------------------------------------------------------------
# the control plane


class ControlPlane:
    def __init__(self, args, bins: dict):
        self.args = args
        self.bins = bins
        self.workdir = os.path.abspath(args.workdir)
        self.ready_file = os.path.abspath(args.ready_file)
        self.pki = {}
        self.etcd_port = self.peer_port = self.api_port = None
        self.etcd = self.api = None
        self.restarts = {"kube-apiserver": 0, "etcd": 0}
        self.version = None
        self.stopping = False
        self.requests = collections.deque()
        self.ssl_ctx = None

    # signals ---------------------------------------------------------------

    def install_signals(self) -> None:
        def on_stop(signum, _frame):
            if not self.stopping:
                log(f"got {signal.Signals(signum).name}; shutting down")
            self.stopping = True

        def on_restart(signum, _frame):
            self.requests.append("kube-apiserver" if signum == signal.SIGUSR1 else "etcd")

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGUSR1, on_restart)
        signal.signal(signal.SIGUSR2, on_restart)

    def check_watched(self) -> None:
        pid = self.args.watch_pid
        if pid and not self.stopping and not pid_alive(pid):
            log(f"watched process {pid} is gone; shutting down")
            self.stopping = True

    def check_stop(self) -> None:
        self.check_watched()
        if self.stopping:
            raise Stop()

    # paths -----------------------------------------------------------------

    def p(self, *names: str) -> str:
        return os.path.join(self.workdir, *names)

    @property
    def etcd_url(self) -> str:
        return f"http://{LOOPBACK}:{self.etcd_port}"

    @property
    def server(self) -> str:
        return f"https://{LOOPBACK}:{self.api_port}"

    # etcd ------------------------------------------------------------------

    def etcd_child(self) -> Child:
        peer = f"http://{LOOPBACK}:{self.peer_port}"
        argv = [
            self.bins["etcd"],
            "--name=default",
            f"--data-dir={self.p('etcd-data')}",
            f"--listen-client-urls={self.etcd_url}",
            f"--advertise-client-urls={self.etcd_url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=default={peer}",
            "--initial-cluster-state=new",
            "--unsafe-no-fsync",
            "--log-level=warn",
        ]
        return Child("etcd", argv, self.p("etcd.log"))

    def etcd_healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.etcd_url + "/health", timeout=2) as r:
                return json.load(r).get("health") == "true"
        except (OSError, ValueError):
            return False

    def start_etcd(self, fixed_ports: bool) -> None:
        for attempt in range(5):
            if not fixed_ports:
                self.etcd_port = free_port()
                self.peer_port = free_port(exclude=(self.etcd_port,))
            self.etcd = self.etcd_child()
            self.etcd.start()
            deadline = time.monotonic() + self.args.timeout
            while time.monotonic() < deadline:
                self.check_stop()
                if not self.etcd.alive():
                    break
                if self.etcd_healthy():
                    log(f"etcd ready at {self.etcd_url} (pid {self.etcd.pid})")
                    return
                time.sleep(0.2)
            else:
                self.etcd.stop(self.args.stop_grace)
                raise StartupError(f"etcd not healthy after {self.args.timeout}s:\n{self.etcd.log_tail()}")
            if self.etcd.log_since_start_contains("address already in use"):
                log(f"etcd port collision (attempt {attempt + 1}); retrying")
                self.etcd.proc = None
                time.sleep(0.5 if fixed_ports else 0)
                continue
            raise StartupError(f"etcd exited with {self.etcd.proc.returncode}:\n{self.etcd.log_tail()}")
        raise StartupError("etcd: could not get its ports after 5 attempts")

    # kube-apiserver --------------------------------------------------------

    def api_child(self) -> Child:
        f = self.pki
        argv = [
            self.bins["kube-apiserver"],
            f"--etcd-servers={self.etcd_url}",
            f"--bind-address={LOOPBACK}",
            f"--advertise-address={LOOPBACK}",
            f"--secure-port={self.api_port}",
            f"--cert-dir={self.p('apiserver-certs')}",
            f"--tls-cert-file={f['serving.crt']}",
            f"--tls-private-key-file={f['serving.key']}",
            f"--client-ca-file={f['ca.crt']}",
            f"--token-auth-file={f['tokens.csv']}",
            "--authorization-mode=Node,RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={f['sa.pub']}",
            f"--service-account-signing-key-file={f['sa.key']}",
            "--endpoint-reconciler-type=none",
            "--disable-admission-plugins=ServiceAccount",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--allow-privileged=true",
            "--profiling=false",
            "--v=1",
        ]
        if not self.args.no_audit:
            argv += [
                f"--audit-policy-file={f['audit-policy.yaml']}",
                f"--audit-log-path={self.p('audit.log')}",
                "--audit-log-mode=batch",
                "--audit-log-maxsize=200",
                "--audit-log-maxbackup=1",
            ]
        return Child("kube-apiserver", argv, self.p("kube-apiserver.log"))

    def https_get(self, path: str, timeout: float = 3) -> tuple:
        req = urllib.request.Request(self.server + path)
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self.ssl_ctx) as r:
                return r.status, r.read().decode(errors="replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")

    def api_ready(self) -> bool:
        try:
            status, body = self.https_get("/readyz")
            return status == 200 and body.strip() == "ok"
        except (OSError, ssl.SSLError):
            return False

    def wait_api_ready(self) -> None:
        deadline = time.monotonic() + self.args.timeout
        while time.monotonic() < deadline:
            self.check_stop()
            if not self.api.alive():
                raise StartupError(
                    f"kube-apiserver exited with {self.api.proc.returncode}:\n{self.api.log_tail()}")
            if self.etcd is not None and not self.etcd.alive():
                raise StartupError(f"etcd died while waiting for kube-apiserver:\n{self.etcd.log_tail()}")
            if self.api_ready():
                return
            time.sleep(0.25)
        detail = ""
        try:
            detail = self.https_get("/readyz?verbose")[1]
        except Exception as e:  # noqa: BLE001
            detail = str(e)
        raise StartupError(f"kube-apiserver not ready after {self.args.timeout}s:\n{detail}\n"
                           f"{self.api.log_tail()}")

    def start_api(self, fixed_port: bool) -> None:
        for attempt in range(5):
            if not fixed_port:
                self.api_port = free_port(exclude=(self.etcd_port, self.peer_port))
            self.api = self.api_child()
            self.api.start()
            try:
                self.wait_api_ready()
            except StartupError:
                if not self.api.alive() and self.api.log_since_start_contains("address already in use"):
                    log(f"kube-apiserver port collision (attempt {attempt + 1}); retrying")
                    self.api.proc = None
                    time.sleep(0.5 if fixed_port else 0)
                    continue
                self.api.stop(self.args.stop_grace)
                raise
            log(f"kube-apiserver ready at {self.server} (pid {self.api.pid})")
            return
        raise StartupError("kube-apiserver: could not get its port after 5 attempts")

    # outputs ---------------------------------------------------------------

    def write_kubeconfig(self) -> str:
        def b64(path):
            with open(path, "rb") as fh:
                return base64.b64encode(fh.read()).decode()

        kc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "recovery-test", "cluster": {
                "server": self.server,
                "certificate-authority-data": b64(self.pki["ca.crt"])}}],
            "users": [{"name": "recovery-admin", "user": {
                "client-certificate-data": b64(self.pki["admin.crt"]),
                "client-key-data": b64(self.pki["admin.key"])}}],
            "contexts": [{"name": "recovery-test", "context": {
                "cluster": "recovery-test", "user": "recovery-admin", "namespace": "default"}}],
            "current-context": "recovery-test",
            "preferences": {},
        }
        path = self.p("kubeconfig")
        _atomic_write(path, json.dumps(kc, indent=2) + "\n", 0o600)  # JSON is valid YAML
        return path

    def ready_info(self) -> dict:
        return {
            "kubeconfig": self.p("kubeconfig"),
            "server": self.server,
            "kubectl": self.bins["kubectl"],
            "etcd": self.etcd_url,
            "pids": {"controlplane": os.getpid(), "etcd": self.etcd.pid, "kube-apiserver": self.api.pid},
            "version": self.version,
            "ca_file": self.pki["ca.crt"],
            "client_cert_file": self.pki["admin.crt"],
            "client_key_file": self.pki["admin.key"],
            "token": self.pki["token"],
            "restarts": dict(self.restarts),
            "workdir": self.workdir,
            "logs": {"etcd": self.p("etcd.log"), "kube-apiserver": self.p("kube-apiserver.log"),
                     "audit": None if self.args.no_audit else self.p("audit.log")},
        }

    def write_ready(self) -> None:
        info = self.ready_info()
        _atomic_write(self.ready_file, json.dumps(info, indent=2) + "\n", 0o600)
        return info

    # lifecycle -------------------------------------------------------------

    def start(self) -> None:
        os.makedirs(self.workdir, exist_ok=True)
        if os.path.exists(self.ready_file):
            os.unlink(self.ready_file)
        shutil.rmtree(self.p("etcd-data"), ignore_errors=True)
        self.pki = make_pki(self.p("pki"))
        self.ssl_ctx = ssl.create_default_context(cafile=self.pki["ca.crt"])
        self.ssl_ctx.load_cert_chain(self.pki["admin.crt"], self.pki["admin.key"])
        t0 = time.monotonic()
        self.start_etcd(fixed_ports=False)
        self.start_api(fixed_port=False)
        status, body = self.https_get("/version")
        self.version = json.loads(body).get("gitVersion") if status == 200 else None
        self.write_kubeconfig()
        info = self.write_ready()
        log(f"control plane {self.version} ready in {time.monotonic() - t0:.1f}s; ready file {self.ready_file}")
        try:
            sys.stdout.write(json.dumps(info) + "\n")
            sys.stdout.flush()
        except OSError:
            pass  # nobody reads stdout; the ready file is what counts

    def restart(self, which: str) -> None:
        log(f"restarting {which}")
        if which == "kube-apiserver":
            self.api.stop(self.args.stop_grace)
            time.sleep(self.args.restart_downtime)
            self.start_api(fixed_port=True)
        else:
            # etcd's graceful stop waits ~5 s for kube-apiserver's open watch
            # streams; do not wait for that: SIGKILL after 1 s (no data is lost,
            # the writes are in the kernel already).
            self.etcd.stop(min(self.args.stop_grace, 1.0))
            time.sleep(self.args.restart_downtime)
            self.start_etcd(fixed_ports=True)
            self.wait_api_ready()
        self.restarts[which] += 1
        self.write_ready()
        log(f"{which} restarted (restarts: {self.restarts})")

    def supervise(self) -> int:
        while True:
            self.check_watched()
            if self.stopping:
                return 0
            for child in (self.etcd, self.api):
                if not child.alive():
                    rc = child.proc.returncode if child.proc else None
                    log(f"{child.name} (pid {child.pid}) died unexpectedly with status {rc}; "
                        f"last lines of {child.logpath}:\n{child.log_tail()}")
                    return EXIT_CHILD_DIED
            if self.requests:
                self.restart(self.requests.popleft())
                continue
            time.sleep(0.2)

    def shutdown(self) -> None:
        for child in (self.api, self.etcd):
            if child is not None:
                child.stop(self.args.stop_grace)
        try:
            os.unlink(self.ready_file)
        except FileNotFoundError:
            pass


def pid_alive(pid: int) -> bool:
    """True if pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _atomic_write(path: str, text: str, mode: int) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="See the module docstring / testenv/README.md for details.")
    ap.add_argument("--workdir", required=True, help="directory for certs, etcd data, logs, kubeconfig")
    ap.add_argument("--ready-file", required=True, help="JSON written once the control plane is ready")
    ap.add_argument("--tools-dir", help="binary cache dir for tools.sh (default: $RECOVERY_TOOLS_CACHE "
                                        "or ~/.cache/aws-recovery-controller/tools)")
    ap.add_argument("--no-build", action="store_true",
                    help="fail instead of building missing binaries (exit 3)")
    ap.add_argument("--timeout", type=float, default=180.0,
                    help="seconds to wait for each component to become ready (default 180)")
    ap.add_argument("--stop-grace", type=float, default=5.0,
                    help="seconds between SIGTERM and SIGKILL when stopping a child (default 5)")
    ap.add_argument("--restart-downtime", type=float, default=0.0,
                    help="seconds to stay down during a SIGUSR1/SIGUSR2 restart (default 0)")
    ap.add_argument("--no-audit", action="store_true", help="do not write DIR/audit.log")
    parent = os.environ.get("RECOVERY_PARENT_PID", "")
    ap.add_argument("--watch-pid", type=int, metavar="PID",
                    default=int(parent) if parent.isdigit() else None,
                    help="shut down (as on SIGTERM) once process PID is gone, e.g. the test "
                         "binary that started this (default: $RECOVERY_PARENT_PID)")
    args = ap.parse_args(argv)

    cp = ControlPlane(args, bins={})
    cp.install_signals()  # before the (possibly long) tools.sh build, so ^C is orderly
    try:
        cp.bins = find_binaries(args, lambda: (cp.check_watched(), cp.stopping)[1])
        cp.check_stop()
        cp.start()
        rc = cp.supervise()
    except Stop:
        rc = 0
    except StartupError as e:
        log(f"startup failed: {e}")
        rc = EXIT_STARTUP
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else EXIT_NO_BINARIES
    except BaseException:
        cp.shutdown()
        raise
    # Further signals must not interrupt the orderly stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    cp.shutdown()
    log(f"stopped (exit {rc})")
    return rc


if __name__ == "__main__":
    sys.exit(main())
