"""The engine's and nginx's floor for one blue-green deploy, without the reconciler.

Called by bench/bluegreen_overhead.sh: python3 bluegreen_floor.py SOCK RELEASE ROUNDS NGINX_CONF.
Does by hand, ROUNDS times, the requests a blue-green deploy of reconciler-test/app needs, on
one connection per request to the engine's socket, each timed alone: create + start the new
color on a network, upload the upstream file into nginx, `nginx -t` (exec create, start,
inspect), SIGHUP and process listings until a new worker serves and no old one accepts, then
stop + remove the old color. Not timed, as in the reconciler's overhead: the gate and the
drain; nor the listing before the signal (the reconciler takes it while `nginx -t` runs).
Prints one row per round. Everything it creates carries the label io.reconciler.release=RELEASE
(the calling script removes it by that label).
"""

import http.client
import io
import json
import socket
import sys
import tarfile
import time

SOCK, REL, ROUNDS, NGINX_CONF = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
LABEL = {"io.reconciler.release": REL}


class EngineConnection(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(SOCK)


def req(method, path, body=None, ctype="application/json"):
    """One request to the engine; returns (milliseconds, response body)."""
    conn = EngineConnection("engine")
    headers = {}
    if body is not None:
        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
        headers["Content-Type"] = ctype
    t0 = time.monotonic()
    conn.request(method, path, body=body, headers=headers)
    reply = conn.getresponse()
    data = reply.read()
    ms = (time.monotonic() - t0) * 1000
    conn.close()
    if reply.status >= 400:
        sys.exit(f"{method} {path}: {reply.status} {data[:300]!r}")
    return ms, data


def tar_of(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path, content in files.items():
            info = tarfile.TarInfo(path)
            info.size = len(content)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def upstreams(name):
    return {"etc/nginx/reconciler/upstreams.conf": f"upstream web {{ server {name}:8000; }}\n".encode()}


NETWORK = f"{REL}-floor"
PROXY = f"{REL}-floor-nginx"


def start_app(name):
    created, _ = req("POST", f"/containers/create?name={name}", {
        "Image": "reconciler-test/app:v1", "Labels": LABEL, "StopTimeout": 10,
        "HostConfig": {"NetworkMode": NETWORK}})
    started, _ = req("POST", f"/containers/{name}/start")
    return created, started


def workers():
    """nginx's workers as the engine's top lists them: {pid: is shutting down}."""
    _, data = req("GET", f"/containers/{PROXY}/top?ps_args=-o%20pid,args")
    top = json.loads(data)
    pid, args = top["Titles"].index("PID"), top["Titles"].index("COMMAND")
    return {row[pid]: "shutting down" in row[args]
            for row in top["Processes"] if row[args].startswith("nginx: worker process")}


def main():
    req("POST", "/networks/create", {"Name": NETWORK, "Labels": LABEL})
    old = f"{REL}-floor-a"
    start_app(old)
    req("POST", f"/containers/create?name={PROXY}", {
        "Image": "reconciler-test/nginx:1", "Labels": LABEL, "HostConfig": {"NetworkMode": NETWORK}})
    files = upstreams(old)
    with open(NGINX_CONF, "rb") as conf:
        files["etc/nginx/nginx.conf"] = conf.read()
    req("PUT", f"/containers/{PROXY}/archive?path=/", tar_of(files), "application/x-tar")
    req("POST", f"/containers/{PROXY}/start")
    deadline = time.monotonic() + 10
    while not workers():
        if time.monotonic() > deadline:
            sys.exit("nginx never started its workers")
        time.sleep(0.02)

    print("%-8s %7s %7s %7s %7s %7s %7s %7s  %s" % (
        "round", "create", "start", "upload", "test", "reload", "remove", "floor",
        "(ms: the engine's answer times; reload: SIGHUP until a new worker serves and no old one accepts)"))
    for i in range(1, ROUNDS + 1):
        new = f"{REL}-floor-{i}"
        created, started = start_app(new)
        uploaded, _ = req("PUT", f"/containers/{PROXY}/archive?path=/", tar_of(upstreams(new)),
                          "application/x-tar")
        e1, data = req("POST", f"/containers/{PROXY}/exec",
                       {"Cmd": ["nginx", "-t", "-q"], "AttachStdout": True, "AttachStderr": True})
        exec_id = json.loads(data)["Id"]
        e2, _ = req("POST", f"/exec/{exec_id}/start", {"Detach": False})
        e3, data = req("GET", f"/exec/{exec_id}/json")
        if json.loads(data)["ExitCode"] != 0:
            sys.exit("nginx -t failed in the floor run")
        before = {p for p, shutting_down in workers().items() if not shutting_down}
        r0 = time.monotonic()
        req("POST", f"/containers/{PROXY}/kill?signal=SIGHUP")
        while True:
            serving = {p for p, shutting_down in workers().items() if not shutting_down}
            if serving - before and not serving & before:
                break
            if time.monotonic() - r0 > 5:
                sys.exit("nginx did not reload within 5 s")
        reloaded = (time.monotonic() - r0) * 1000
        drain_deadline = time.monotonic() + 10
        while any(workers().values()) and time.monotonic() < drain_deadline:
            time.sleep(0.02)
        stopped, _ = req("POST", f"/containers/{old}/stop")
        removed, _ = req("DELETE", f"/containers/{old}")
        old = new
        tested = e1 + e2 + e3
        print("%-8d %7.0f %7.0f %7.0f %7.0f %7.0f %7.0f %7.0f" % (
            i, created, started, uploaded, tested, reloaded, stopped + removed,
            created + started + uploaded + tested + reloaded + stopped + removed))


main()
