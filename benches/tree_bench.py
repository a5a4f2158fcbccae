#!/usr/bin/env python3
"""The peer benchmark (../shared/bench/peer_bench.py) on a real tree instead of the
generated corpus.

The tree (default /usr/share: documentation, locales, icons, scripts and binaries, with
thousands of symlinks) is copied with `cp -a` into the work folder before each tool, so
every tool backs up the same bytes, modes and times; "one day of changes" before the
third backup is deterministic (seeded): every 97th file gets 4 KiB appended, every
499th is deleted, 300 new files (text and random) appear in a new folder. Everything
else (steps, measurements, references, report) is peer_bench.py's, imported unchanged
(shared/ is read-only).

    python3 benches/tree_bench.py --tree /usr/share --tools restic,borg,rustic,cairn \\
        --workdir /tmp/tb --md-out /tmp/tree.md
"""

import os
import random
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True


def main():
    argv = sys.argv[1:]
    tree = "/usr/share"
    if "--tree" in argv:
        i = argv.index("--tree")
        tree = os.path.abspath(argv[i + 1])
        del argv[i:i + 2]
    shared = os.path.join(HERE, "..", "..", "shared", "bench")
    if "--peer-bench-dir" in argv:
        i = argv.index("--peer-bench-dir")
        shared = argv[i + 1]
        del argv[i:i + 2]
    sys.path.insert(0, os.path.abspath(shared))
    import peer_bench as pb  # noqa: E402

    class TreeCorpus(pb.Corpus):
        """A copy of `tree`; `size_mb` and the generator are not used."""

        def fresh(self):
            if self.pristine:
                return
            if os.path.exists(self.path):
                shutil.rmtree(self.path)
            m = pb.run_measured(["cp", "-a", tree, self.path], self.log)
            if m["rc"] != 0:
                sys.exit(f"copying {tree} failed, see {self.log}")
            self.info["generate_s"] = m["wall"]
            self.info["tree"] = tree
            self.pristine = True
            self.warm("initial")

        def mutate(self):
            rng = random.Random(self.seed)
            files = sorted(
                os.path.join(d, f)
                for d, _, names in os.walk(self.path)
                for f in names
                if os.path.isfile(os.path.join(d, f)) and not os.path.islink(os.path.join(d, f))
            )
            for i, p in enumerate(files):
                if i % 499 == 0:
                    os.unlink(p)
                elif i % 97 == 0:
                    with open(p, "ab") as f:
                        f.write(rng.randbytes(4096))
            new = os.path.join(self.path, "zz-new-day")
            os.makedirs(new, exist_ok=True)
            words = [w.encode() for w in "backup restore prune check snapshot tree pack index".split()]
            for i in range(300):
                with open(os.path.join(new, f"f{i:03}"), "wb") as f:
                    if i % 3 == 0:
                        f.write(rng.randbytes(rng.randint(1, 256) << 10))
                    else:
                        f.write(b" ".join(rng.choice(words) for _ in range(rng.randint(10, 20000))))
            subprocess.run(["sync"])
            self.pristine = False
            self.info["mutate_s"] = 0.0
            self.warm("mutated")

    pb.Corpus = TreeCorpus
    sys.argv = [sys.argv[0]] + argv
    pb.main()


if __name__ == "__main__":
    main()
