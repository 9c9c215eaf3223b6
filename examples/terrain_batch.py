#!/usr/bin/env python3
"""Runs a batch of terrain variations on an Atelier server with an API key, and follows the jobs
through their webhook instead of polling.

What it does, with the API key (scopes sessions:read, sessions:write, jobs:run):
  1. starts a webhook receiver (a small HTTP server in this process) and reads the account's
     signing secret (GET /me/webhook-secret);
  2. makes a session and writes its graph over REST (PUT /sessions/{id}/graph): a terrain node
     wired to an output;
  3. starts a Pro runtime (POST /sessions/{id}/runtime);
  4. for each variation, changes the terrain node's seed and difficulty with a JSON Merge Patch
     made conditional on the graph's version (If-Match), and runs the graph with a webhook
     (POST /sessions/{id}/jobs {webhook: {url, events}});
  5. waits for every job's `job.completed` / `job.failed` message — each checked against its
     Standard Webhooks signature, duplicates (a retried message keeps its webhook-id) dropped —
     and downloads the heightmaps (GET /media/{id}) into --out;
  6. stops the runtime and prints what it cost.

    ATELIER_URL=http://127.0.0.1:8080 ATELIER_API_KEY=atk_... python3 examples/terrain_batch.py --count 4

The server must be able to reach the receiver: `--webhook-host` is the address it is published
on (default 127.0.0.1, which needs ATELIER_WEBHOOK_ALLOW_PRIVATE=1 on the server). Standard
library only.
"""

import argparse
import base64
import hashlib
import hmac
import http.server
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request

TOLERANCE_S = 300


class Api:
    """A tiny client of the Atelier HTTP API (JSON, errors as {"error": {"code", "message"}})."""

    def __init__(self, base, key):
        self.base = base.rstrip("/") + "/api/v1"
        self.key = key

    def call(self, method, path, body=None, content_type="application/json", headers=None, raw=False):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Authorization", "Bearer " + self.key)
        if data is not None:
            req.add_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            req.add_header(name, value)
        while True:
            try:
                with urllib.request.urlopen(req, timeout=60) as res:
                    payload = res.read()
                    return payload if raw else (json.loads(payload) if payload else None)
            except urllib.error.HTTPError as e:
                if e.code == 429:
                    # The key's rate limit: wait as told.
                    time.sleep(float(e.headers.get("Retry-After", "1")))
                    continue
                text = e.read().decode(errors="replace")
                raise ApiError(e.code, text) from None


class ApiError(Exception):
    def __init__(self, status, text):
        try:
            err = json.loads(text)["error"]
            self.code, message = err["code"], err["message"]
        except (ValueError, KeyError, TypeError):
            self.code, message = "http_%d" % status, text
        super().__init__("%d %s: %s" % (status, self.code, message))
        self.status = status


def verify(secret, headers, body):
    """Standard Webhooks: v1,base64(HMAC-SHA256(key, id.timestamp.body)), fresh timestamps only."""
    msg_id, stamp, signatures = (headers.get(h) for h in ("webhook-id", "webhook-timestamp", "webhook-signature"))
    if not (msg_id and stamp and signatures):
        return False
    try:
        if abs(time.time() - int(stamp)) > TOLERANCE_S:
            return False
    except ValueError:
        return False
    key = base64.b64decode(secret[len("whsec_"):] if secret.startswith("whsec_") else secret)
    mac = hmac.new(key, ("%s.%s.%s" % (msg_id, stamp, body)).encode(), hashlib.sha256).digest()
    expected = "v1," + base64.b64encode(mac).decode()
    return any(hmac.compare_digest(expected, s) for s in signatures.split(" "))


class Receiver:
    """Receives webhook messages: verified, deduplicated on webhook-id, kept per job."""

    def __init__(self, host, secret):
        self.secret = secret
        self.seen_ids = set()
        self.events = {}  # job id -> list of payloads
        self.duplicates = 0
        self.rejected = 0
        self.changed = threading.Condition()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(min(length, 1 << 20)).decode()
                headers = {k.lower(): v for k, v in self.headers.items()}
                status = receiver.accept(headers, body)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("0.0.0.0", 0), Handler)
        self.url = "http://%s:%d/atelier-webhook" % (host, self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def accept(self, headers, body):
        if not verify(self.secret, headers, body):
            self.rejected += 1
            return 401
        with self.changed:
            if headers["webhook-id"] in self.seen_ids:
                self.duplicates += 1
                return 200  # already handled: acknowledge, do nothing
            self.seen_ids.add(headers["webhook-id"])
            payload = json.loads(body)
            self.events.setdefault(payload["data"]["job_id"], []).append(payload)
            self.changed.notify_all()
        return 200

    def wait_until_done(self, jobs, timeout_s):
        deadline = time.time() + timeout_s
        with self.changed:
            while True:
                ended = {j: self.end_of(j) for j in jobs}
                if all(ended.values()):
                    return ended
                left = deadline - time.time()
                if left <= 0:
                    missing = [j for j, e in ended.items() if not e]
                    raise TimeoutError("no end message for %d job(s): %s" % (len(missing), missing))
                self.changed.wait(left)

    def end_of(self, job):
        for payload in self.events.get(job, []):
            if payload["type"] in ("job.completed", "job.failed", "job.cancelled"):
                return payload
        return None


def terrain_graph(model):
    return {
        "nodes": {
            # The terrain model is a one-step model (no `steps`); the tiny test denoiser samples.
            "terrain": {"type": model, "x": 80, "y": 80, "params": {} if model == "terrain" else {"steps": 1}},
            "out": {"type": "output", "x": 380, "y": 80, "params": {}},
        },
        "edges": {"e1": {"source": "terrain", "source_port": port_of(model), "target": "out", "target_port": "image"}},
    }


def port_of(model):
    return "heightmap" if model == "terrain" else "image"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=os.environ.get("ATELIER_URL", "http://127.0.0.1:8080"))
    parser.add_argument("--key", default=os.environ.get("ATELIER_API_KEY"), help="an API key (atk_...); default $ATELIER_API_KEY")
    parser.add_argument("--count", type=int, default=4, help="how many variations")
    parser.add_argument("--model", default="terrain", help="the node type to vary (terrain, or tiny-denoiser for a quick run)")
    parser.add_argument("--gpu-class", default="cpu")
    parser.add_argument("--webhook-host", default="127.0.0.1", help="the address the server reaches this receiver at")
    parser.add_argument("--out", default="terrain-batch", help="where the heightmaps go")
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    if not args.key:
        parser.error("an API key is needed: --key or ATELIER_API_KEY")
    api = Api(args.url, args.key)

    secret = api.call("GET", "/me/webhook-secret")["secret"]
    receiver = Receiver(args.webhook_host, secret)
    session = api.call("POST", "/sessions", {"title": "Terrain batch %s" % time.strftime("%Y-%m-%d %H:%M")})["id"]
    graph = api.call("PUT", "/sessions/%s/graph" % session, terrain_graph(args.model))
    print("session %s, graph at version %s" % (session, graph["version"]))
    lease = api.call("POST", "/sessions/%s/runtime" % session, {"gpu_class": args.gpu_class, "prepaid_minutes": 5})
    print("runtime %s on %s" % (lease.get("lease_id", "?"), args.gpu_class))

    jobs = {}
    try:
        for i in range(args.count):
            params = {"seed": 1000 + i}
            if args.model == "terrain":
                params["difficulty"] = 10 + (80 * i) // max(1, args.count - 1)
            # Conditional on the version just read: a concurrent editor makes this a 412, never
            # a silent overwrite. Then retried on the new version.
            while True:
                try:
                    graph = api.call(
                        "PATCH", "/sessions/%s/graph" % session, {"nodes": {"terrain": {"params": params}}},
                        content_type="application/merge-patch+json", headers={"If-Match": '"%s"' % graph["version"]},
                    )
                    break
                except ApiError as e:
                    if e.status != 412:
                        raise
                    graph = api.call("GET", "/sessions/%s/graph" % session)
            job = api.call("POST", "/sessions/%s/jobs" % session, {
                "webhook": {"url": receiver.url, "events": ["started", "completed", "failed", "cancelled"]},
            })
            jobs[job["id"]] = params
            print("job %s: %s" % (job["id"], json.dumps(params)))

        ended = receiver.wait_until_done(list(jobs), args.timeout)
    finally:
        stopped = api.call("DELETE", "/sessions/%s/runtime" % session)
        print("runtime stopped: used %.1f s, charged %s, refunded %s millicredits" % (
            stopped["used_ms"] / 1000, stopped["charged"], stopped["refunded"]))

    os.makedirs(args.out, exist_ok=True)
    failed = 0
    for job, end in ended.items():
        if end["type"] != "job.completed":
            failed += 1
            print("job %s %s: %s" % (job, end["type"], end["data"].get("error")))
            continue
        for n, media in enumerate(end["data"]["outputs"]):
            path = os.path.join(args.out, "%s-%d.png" % (job, n))
            with open(path, "wb") as f:
                f.write(api.call("GET", "/media/%s" % media, raw=True))
            print("job %s: %s (%s)" % (job, path, json.dumps(jobs[job])))
    deliveries = api.call("GET", "/jobs/%s/webhook-deliveries" % next(iter(jobs)))
    print("webhooks: %d messages received, %d duplicates dropped, %d rejected; first job's deliveries: %s" % (
        len(receiver.seen_ids), receiver.duplicates, receiver.rejected,
        ", ".join("%s=%s/%d" % (d["event"], d["status"], d["attempts"]) for d in deliveries)))
    receiver.server.shutdown()
    if failed or receiver.rejected:
        sys.exit(1)


if __name__ == "__main__":
    main()
