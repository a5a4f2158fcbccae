#!/usr/bin/env python3
"""The peer benchmark (../shared/bench/peer_bench.py) with every repository on S3.

One s3s-fs server on loopback (it checks SigV4 signatures; objects are plain files under
its root, so the repository size is still measured with du), and in front of it a small
counting proxy: every HTTP request each tool makes is counted by kind (list, read, ranged
read, write, delete, stat), per step. Same corpus, same steps, same measurements as
peer_bench.py, which this script imports and reuses unchanged (shared/ is read-only).

    python3 benches/remote_bench.py --tools restic,rustic,cairn --size-mb 1024 \
        --cairn-bin target/release/cairn --md-out /tmp/remote.md

Needs s3s-fs on PATH (or ~/.cargo/bin): cargo install s3s-fs@0.14.1 --features binary --locked
"""

import argparse
import collections
import hashlib
import hmac
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True

KEY, SECRET = "benchkey", "bench-secret-not-a-secret"
COUNTS = collections.Counter()
COUNTS_LOCK = threading.Lock()


# --------------------------------------------------------------------------- counting proxy

def classify(method, target, headers):
    path, _, query = target.partition("?")
    if method == "GET":
        if "list-type" in query or "prefix=" in query or path.count("/") <= 1 or query.startswith("uploads"):
            return "list"
        return "ranged read" if "range" in headers else "read"
    return {"PUT": "write", "POST": "write", "DELETE": "delete", "HEAD": "stat"}.get(method, method)


def drop_empty_delimiter(start, head, headers):
    """s3s-fs 0.14 takes an empty `delimiter=` (restic's recursive listing of data/) as
    a delimiter and answers with prefixes instead of the packs, so restic sees no packs.
    Such a request is re-sent without the parameter, signed again with the bench's own
    key: the same one request, now answered as S3 answers it."""
    method, target, version = start.decode("latin-1").split(" ", 2)
    path, _, query = target.partition("?")
    params = urllib.parse.parse_qsl(query, keep_blank_values=True)
    if method != "GET" or ("delimiter", "") not in params:
        return start, head
    params = [(k, v) for k, v in params if not (k == "delimiter" and v == "")]
    q = "&".join(f"{quote(k)}={quote(v)}" for k, v in sorted(params))
    auth = headers["authorization"]
    signed = auth.split("SignedHeaders=")[1].split(",")[0].strip()
    scope = auth.split("Credential=")[1].split(",")[0].split("/", 1)[1]
    canonical = "\n".join([method, path, q,
                           "".join(f"{h}:{headers[h].strip()}\n" for h in signed.split(";")),
                           signed, headers.get("x-amz-content-sha256", "UNSIGNED-PAYLOAD")])
    to_sign = "\n".join(["AWS4-HMAC-SHA256", headers["x-amz-date"], scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + SECRET).encode()
    for part in scope.split("/"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    sig = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    new_auth = f"AWS4-HMAC-SHA256 Credential={KEY}/{scope}, SignedHeaders={signed}, Signature={sig}"
    start = f"{method} {path}?{q} {version}".encode("latin-1")
    head = [start] + [(f"Authorization: {new_auth}\r\n".encode("latin-1")
                       if line.lower().startswith(b"authorization:") else line) for line in head[1:]]
    return start, head


def quote(s):
    return urllib.parse.quote(s, safe="-_.~")


def pipe_requests(client, server):
    """Client to server: parse each HTTP/1.1 request (headers, then a body by
    Content-Length or chunked), count it, forward it byte for byte."""
    cf = client.makefile("rb")
    try:
        while True:
            start = cf.readline(65536)
            if not start:
                break
            head = [start]
            headers = {}
            while True:
                line = cf.readline(65536)
                head.append(line)
                if line in (b"\r\n", b"\n", b""):
                    break
                k, _, v = line.decode("latin-1").partition(":")
                headers[k.strip().lower()] = v.strip()
            start, head = drop_empty_delimiter(start, head, headers)
            method, target = start.decode("latin-1").split(" ")[:2]
            with COUNTS_LOCK:
                COUNTS[classify(method, target, headers)] += 1
            server.sendall(b"".join(head))
            if headers.get("transfer-encoding", "").lower() == "chunked":
                while True:
                    size_line = cf.readline(65536)
                    server.sendall(size_line)
                    size = int(size_line.split(b";")[0].strip() or b"0", 16)
                    chunk = cf.read(size + 2)
                    server.sendall(chunk)
                    if size == 0:
                        break
            else:
                left = int(headers.get("content-length", "0") or 0)
                while left > 0:
                    buf = cf.read(min(left, 1 << 20))
                    if not buf:
                        return
                    server.sendall(buf)
                    left -= len(buf)
    except (OSError, ValueError):
        pass
    finally:
        try:
            server.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def pipe_raw(src, dst):
    try:
        while True:
            buf = src.recv(1 << 20)
            if not buf:
                break
            dst.sendall(buf)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def serve_proxy(listen_port, upstream_port):
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", listen_port))
    ls.listen(256)

    def handle(client):
        try:
            server = socket.create_connection(("127.0.0.1", upstream_port))
        except OSError:
            client.close()
            return
        for s in (client, server):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        up = threading.Thread(target=pipe_requests, args=(client, server), daemon=True)
        down = threading.Thread(target=pipe_raw, args=(server, client), daemon=True)
        up.start()
        down.start()
        up.join()
        down.join()
        client.close()
        server.close()

    def accept():
        while True:
            c, _ = ls.accept()
            threading.Thread(target=handle, args=(c,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port):
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing answers on port {port}")


# --------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tools", default="restic,rustic,cairn")
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workdir", default="/tmp/remote-bench")
    ap.add_argument("--cairn-bin", default="target/release/cairn")
    ap.add_argument("--shared-bench", default=os.path.join(HERE, "..", "..", "shared", "bench"),
                    help="folder of peer_bench.py (default ../shared/bench beside the project)")
    ap.add_argument("--json-out")
    ap.add_argument("--md-out")
    ap.add_argument("--step-timeout", type=int, default=1800)
    args = ap.parse_args()
    sys.path.insert(0, os.path.abspath(args.shared_bench))
    import peer_bench as pb  # noqa: E402

    s3s = shutil.which("s3s-fs") or os.path.expanduser("~/.cargo/bin/s3s-fs")
    if not os.path.exists(s3s):
        sys.exit("s3s-fs not found: cargo install s3s-fs@0.14.1 --features binary --locked")
    w = os.path.abspath(args.workdir)
    shutil.rmtree(w, ignore_errors=True)
    os.makedirs(w)
    # The s3s-fs root is the work folder: bucket "repo-TOOL" is the folder peer_bench
    # measures with du.
    s3_port, proxy_port = free_port(), free_port()
    server = subprocess.Popen([s3s, "--host", "127.0.0.1", "--port", str(s3_port), "--access-key", KEY,
                               "--secret-key", SECRET, w], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(s3_port)
        serve_proxy(proxy_port, s3_port)
        wait_port(proxy_port)
        endpoint = f"http://127.0.0.1:{proxy_port}"
        creds = {"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET}
        pb.TOOLS["restic"]["env"].update(creds)
        pb.TOOLS["restic"]["env"]["RESTIC_REPOSITORY"] = f"s3:{endpoint}/repo-restic/repo"
        # rustic reaches S3 through OpenDAL, like cairn; it takes the service's settings
        # from OPENDAL_* variables (rustic-rs 0.11, src/commands.rs).
        pb.TOOLS["rustic"]["env"].update({
            "RUSTIC_REPOSITORY": "opendal:s3",
            "OPENDAL_BUCKET": "repo-rustic",
            "OPENDAL_ROOT": "/repo",
            "OPENDAL_ENDPOINT": endpoint,
            "OPENDAL_REGION": "us-east-1",
            "OPENDAL_ACCESS_KEY_ID": KEY,
            "OPENDAL_SECRET_ACCESS_KEY": SECRET,
        })
        cairn = pb.TOOLS["cairn"]
        cairn["bin"] = os.path.abspath(args.cairn_bin)
        cairn["env"].update(creds)
        url = ["-r", "s3:repo-cairn/repo", "-o", f"endpoint={endpoint}"]
        for kind, cmds in cairn["steps"].items():
            cairn["steps"][kind] = [url + [a for a in c if a not in ("-r", "{repo}")] for c in cmds]

        original_run_step = pb.run_step

        def counted_run_step(step, spec, ctx, env, a, logdir):
            os.makedirs(ctx["repo"], exist_ok=True)  # the bucket
            with COUNTS_LOCK:
                before = COUNTS.copy()
            m = original_run_step(step, spec, ctx, env, a, logdir)
            with COUNTS_LOCK:
                delta = COUNTS - before
            m["requests"] = dict(delta)
            m["requests_total"] = sum(delta.values())
            return m

        pb.run_step = counted_run_step
        pargs = argparse.Namespace(workdir=w, keep=False, step_timeout=args.step_timeout, drop_caches=False,
                                   cairn_bin=cairn["bin"])
        logdir = os.path.join(w, "logs")
        os.makedirs(logdir)
        corpus = pb.Corpus(os.path.join(w, "src"), args.size_mb, args.seed, os.path.join(logdir, "corpus.log"))
        results = {}
        for tool in args.tools.split(","):
            results[tool] = pb.bench_tool(tool, pb.TOOLS[tool], corpus, pargs, logdir)
    finally:
        server.terminate()

    tools = [t for t in args.tools.split(",") if "steps" in results[t] and results[t]["steps"]]
    lines = [f"Corpus {args.size_mb} MiB (seed {args.seed}); s3s-fs on loopback behind a counting proxy.", "",
             "| step | " + " | ".join(f"{t} s | {t} requests" for t in tools) + " | cairn / best peer (time) |",
             "|---|" + "---|---|" * len(tools) + "---|"]
    for step in pb.STEPS:
        row = [step.title]
        walls = {}
        for t in tools:
            m = results[t]["steps"].get(step.id)
            if not m:
                row += ["—", "—"]
                continue
            walls[t] = m["wall"] if m["status"] == "ok" or m["status"].startswith("warn") else None
            req = m.get("requests", {})
            detail = ", ".join(f"{k} {v}" for k, v in sorted(req.items()))
            row += [f"{m['wall']:.2f}" + ("" if m["status"] == "ok" else f" ({m['status']})"),
                    f"{m.get('requests_total', 0)} ({detail})"]
        peers = [walls[t] for t in walls if t != "cairn" and walls[t]]
        row.append(f"{walls['cairn'] / min(peers):.2f}" if walls.get("cairn") and peers else "—")
        lines.append("| " + " | ".join(row) + " |")
    verify = {t: results[t].get("verify", {}).get("mismatches") for t in tools}
    lines += ["", f"Restore mismatches: {verify}",
              "Versions: " + ", ".join(f"{t} {results[t].get('version')}" for t in tools)]
    md = "\n".join(lines)
    print(md)
    if args.md_out:
        with open(args.md_out, "w") as f:
            f.write(md + "\n")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(results, f, indent=1, default=str)


if __name__ == "__main__":
    main()
