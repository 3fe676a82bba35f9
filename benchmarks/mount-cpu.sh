#!/bin/bash
# Where a mount's CPU goes during one cold `tar` of part of a snapshot: the
# server `snapfs mount` starts in the background (so with the V8 and malloc
# settings it deploys), the page cache dropped, then `tar -cf - last/PART`,
# and per thread of the server its CPU time and context switches, with the
# binding's request counts (the SIGUSR2 memory line). Root only (drop_caches).
#
#   bash benchmarks/mount-cpu.sh CHECKOUT REPO SOURCE PART
#   bash benchmarks/mount-cpu.sh . /var/tmp/snapfs-bench/snapfs-repo bench spool
#
# CHECKOUT: a compiled snapfs checkout (its dist/ and native/build). PART: a path
# under the snapshot ('.' for all of it). Environment: NODE_OPTIONS_EXTRA, more
# node flags for the server (--cpu-prof, --trace-gc; the mount command that
# starts it gets them too); PERF=1 records the
# server with perf into $MNT.perf.data while tar runs; MNT, the mount point
# (default /var/tmp/snapfs-mount-cpu). One line per thread that used CPU: the
# first is the JS thread.
set -euo pipefail
[ $# -eq 4 ] || { sed -n '2,17p' "$0"; exit 2; }
checkout=$(cd "$1" && pwd); repo=$2; source=$3; part=$4
mnt=${MNT:-/var/tmp/snapfs-mount-cpu}
mkdir -p "$mnt"
if mountpoint -q "$mnt"; then echo "$mnt is mounted already" >&2; exit 1; fi

cli=$checkout/dist/cli/main.js
# The background server is started with the mount command's node flags too.
ready=$(node ${NODE_OPTIONS_EXTRA:-} "$cli" mount "$repo" "$mnt" --json)
server=$(echo "$ready" | node -e 'const m = JSON.parse(require("fs").readFileSync(0, "utf8")).mounted; console.log(m.pid, m.log)')
log=${server#* }; server=${server%% *}
trap 'node "$cli" umount "$mnt" > /dev/null' EXIT

# Per thread: user+sys clock ticks, voluntary and forced context switches, minor
# page faults (each costs several microseconds on a virtual machine).
thread_counts() {
  for t in /proc/$server/task/*; do
    local f; f=$(sed 's/.*) //' "$t/stat")
    set -- $f
    echo "$(basename "$t") $(( ${12} + ${13} )) $8 $(awk '/^voluntary_ctxt/{v=$2} /^nonvoluntary_ctxt/{n=$2} END{print v, n}' "$t/status")"
  done
}

sync; echo 3 > /proc/sys/vm/drop_caches
before=$(thread_counts)
perf_pid=
if [ -n "${PERF:-}" ]; then perf record -q -F 2000 -g -p $server -o "$mnt.perf.data" 2>/dev/null & perf_pid=$!; sleep 0.3; fi
start=$(date +%s.%N)
tar -cf - -C "$mnt/$source/last" "$part" | wc -c > /dev/null
end=$(date +%s.%N)
if [ -n "$perf_pid" ]; then kill -INT $perf_pid; wait $perf_pid || true; fi
after=$(thread_counts)

tick=$(getconf CLK_TCK)
echo "tar of last/$part, cold: $(echo "$end - $start" | bc) s"
join <(echo "$before" | sort) <(echo "$after" | sort) | sort -n | awk -v tick="$tick" '
  { ms = ($6 - $2) * 1000 / tick; faults = $7 - $3
    if (ms > 0) { printf "  thread %s: %d ms CPU, %d voluntary and %d forced switches, %d page faults\n", $1, ms, $8 - $4, $9 - $5, faults; total += ms }
    all_faults += faults }
  END { printf "  server: %d ms CPU, %d page faults\n", total, all_faults }'
echo "  server: peak RSS $(awk '/^VmHWM/ {printf "%.1f MiB", $2 / 1024}' /proc/$server/status)"
kill -USR2 $server; sleep 0.5
grep -o 'kernel requests: .*' "$log" | tail -1 | tr ',' '\n' | grep -v ' 0$' | paste -sd, -
