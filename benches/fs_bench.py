#!/usr/bin/env python3
"""cairn's native local backend beside OpenDAL's fs service, on the same corpus and steps
as the peer benchmark (../shared/bench/peer_bench.py, imported and reused unchanged):
the numbers behind keeping the native backend (DESIGN: keep it only if measurably
faster).

    python3 benches/fs_bench.py --size-mb 1024 --cairn-bin target/release/cairn --md-out /tmp/fs.md
"""

import argparse
import copy
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=1, help="runs of each variant, alternating")
    ap.add_argument("--workdir", default="/tmp/fs-bench")
    ap.add_argument("--cairn-bin", default="target/release/cairn")
    ap.add_argument("--shared-bench", default=os.path.join(HERE, "..", "..", "shared", "bench"))
    ap.add_argument("--md-out")
    args = ap.parse_args()
    sys.path.insert(0, os.path.abspath(args.shared_bench))
    import peer_bench as pb  # noqa: E402

    native = pb.TOOLS["cairn"]
    native["bin"] = os.path.abspath(args.cairn_bin)
    opendal = copy.deepcopy(native)
    for kind, cmds in opendal["steps"].items():
        opendal["steps"][kind] = [["-r", "opendal:fs", "-o", "root={repo}"] +
                                  [a for a in c if a not in ("-r", "{repo}")] for c in cmds]
    variants = {"native": native, "opendal-fs": opendal}

    w = os.path.abspath(args.workdir)
    shutil.rmtree(w, ignore_errors=True)
    logdir = os.path.join(w, "logs")
    os.makedirs(logdir)
    pargs = argparse.Namespace(workdir=w, keep=False, step_timeout=1800, drop_caches=False, cairn_bin=native["bin"])
    corpus = pb.Corpus(os.path.join(w, "src"), args.size_mb, args.seed, os.path.join(logdir, "corpus.log"))
    walls = {v: {} for v in variants}
    for _ in range(args.rounds):
        for name, spec in variants.items():
            r = pb.bench_tool(f"cairn-{name}", spec, corpus, pargs, logdir)
            for sid, m in r.get("steps", {}).items():
                walls[name].setdefault(sid, []).append(m["wall"] if m["status"] == "ok" else None)
    lines = [f"Corpus {args.size_mb} MiB (seed {args.seed}), {args.rounds} round(s); seconds, best of the rounds.", "",
             "| step | native | OpenDAL fs | OpenDAL / native |", "|---|---|---|---|"]
    for step in pb.STEPS:
        best = {}
        for v in variants:
            xs = [x for x in walls[v].get(step.id, []) if x is not None]
            best[v] = min(xs) if xs else None
        n, o = best["native"], best["opendal-fs"]
        ratio = f"{o / n:.2f}" if n and o else "—"
        lines.append(f"| {step.title} | {pb.fmt(n)} | {pb.fmt(o)} | {ratio} |")
    md = "\n".join(lines)
    print(md)
    if args.md_out:
        with open(args.md_out, "w") as f:
            f.write(md + "\n")


if __name__ == "__main__":
    main()
