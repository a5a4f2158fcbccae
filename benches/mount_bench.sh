#!/bin/bash
# cairn mount against restic mount on the same contents: ls -lR of a whole snapshot,
# cat of the largest file, tar c of a subtree, ls -l of a 200 000-entry folder.
# Each tool's mount is fresh (page cache dropped) for every step; the mount process's
# peak RSS (VmHWM) is read after each step.
# Usage: [TOOLS="restic cairn"] benches/mount_bench.sh CORPUS CAIRN [WORK]   (root; fuse3; restic)
set -u
CORPUS=$1 CAIRN=$2 WORK=${3:-/tmp/mb}
export CAIRN_PASSWORD=benchpw RESTIC_PASSWORD=benchpw
mkdir -p "$WORK"
WIDE="$WORK/wide"
if [ ! -e "$WORK/.setup" ]; then
  mkdir -p "$WIDE/d"
  python3 - "$WIDE/d" <<'PY'
import os, sys
d = sys.argv[1]
for i in range(200000):
    open(os.path.join(d, f"f{i:06d}"), "w").close()
PY
  "$CAIRN" -r "$WORK/repo-cairn" init >/dev/null
  "$CAIRN" -r "$WORK/repo-cairn" backup "$CORPUS" "$WIDE" -q
  restic -r "$WORK/repo-restic" init >/dev/null
  restic -r "$WORK/repo-restic" backup "$CORPUS" "$WIDE" -q
  touch "$WORK/.setup"
fi
LARGEST=$(find "$CORPUS" -type f -printf '%s %p\n' | sort -n | tail -1 | cut -d' ' -f2-)
SUBTREE=$(find "$CORPUS" -mindepth 1 -maxdepth 1 -type d | head -1)
mnt() { # tool mountpoint -> pid
  case $1 in
    cairn) "$CAIRN" -r "$WORK/repo-cairn" mount "$2" >/dev/null 2>&1 & ;;
    restic) restic -r "$WORK/repo-restic" mount "$2" >/dev/null 2>&1 & ;;
  esac
  echo $!
}
step() { # tool name command...
  local tool=$1 name=$2; shift 2
  local mp="$WORK/mp-$tool"
  mkdir -p "$mp"; sync; echo 3 > /proc/sys/vm/drop_caches
  local pid=$(mnt $tool "$mp")
  for _ in $(seq 200); do [ -d "$mp/snapshots/latest" ] && break; sleep 0.05; done
  local base="$mp/snapshots/latest"
  local t0=$(date +%s.%N)
  ( cd "$base" && eval "$@" ) >/dev/null 2>&1
  local rc=$?
  local t1=$(date +%s.%N)
  local rss=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
  kill -INT $pid; wait $pid 2>/dev/null
  umount -l "$mp" 2>/dev/null
  printf "%-7s %-22s rc=%d %7.2f s %7d MiB\n" $tool "$name" $rc $(echo "$t1 - $t0" | bc) $((rss / 1024))
}
for tool in ${TOOLS:-restic cairn}; do
  step $tool "ls -lR snapshot" "ls -lR . | wc -l"
  step $tool "cat largest file" "cat .$LARGEST > /dev/null"
  step $tool "tar c subtree" "tar cf - .$SUBTREE | wc -c"
  step $tool "ls -l 200000 entries" "ls -l .$WIDE/d | wc -l"
done
