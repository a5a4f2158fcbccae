#!/bin/bash
# Restore over S3, one run of three restorers, into tmpfs and onto the disk, twice each,
# page cache dropped before every restore. Needs s3s-fs on 127.0.0.1:9100 (access key
# benchkey, secret bench-secret-not-a-secret, a folder `bkt` in its root), restic, and a
# corpus (python3 ../shared/bench/gen_corpus.py generate CORPUS --size-mb 1024 --seed 1).
# Usage: benches/remote_restore.sh CORPUS OLD_CAIRN NEW_CAIRN [WORK]
set -u
CORPUS=$1 OLD=$2 NEW=$3 WORK=${4:-/tmp/rb}
export AWS_ACCESS_KEY_ID=benchkey AWS_SECRET_ACCESS_KEY=bench-secret-not-a-secret
export CAIRN_PASSWORD=benchpw RESTIC_PASSWORD=benchpw
EP=http://127.0.0.1:9100
C="-r s3:bkt/cairn -o endpoint=$EP"
R="-r s3:$EP/bkt/restic"
mkdir -p "$WORK"
if [ ! -e "$WORK/.setup" ]; then
  "$OLD" $C init >/dev/null 2>&1
  "$OLD" $C backup "$CORPUS" >/dev/null 2>&1
  restic $R init >/dev/null 2>&1
  restic $R backup "$CORPUS" >/dev/null 2>&1
  touch "$WORK/.setup"
fi
run() { # name target cmd...
  local name=$1 target=$2; shift 2
  rm -rf "$target"; mkdir -p "$target"; sync; echo 3 > /proc/sys/vm/drop_caches
  local t0=$(date +%s.%N)
  "$@" > "$WORK/out-$name.log" 2>&1
  local rc=$?
  sync
  local t1=$(date +%s.%N)
  printf "%-10s %-14s rc=%d %6.2f s\n" "$name" "$target" $rc $(echo "$t1 - $t0" | bc)
}
for round in 1 2; do
  for where in /dev/shm/rt "$WORK/rt"; do
    run cairn-old $where "$OLD" $C -v restore latest --target $where
    run cairn-new $where "$NEW" $C -v restore latest --target $where
    run restic $where restic $R restore latest --target $where
  done
done
rm -rf /dev/shm/rt "$WORK/rt"
