# System calls per request, for run.sh and peer.sh (sourced) when SYSCALLS=1: the proxies run
# without valgrind at full speed and perf's syscall tracepoints count what each makes while the
# client sends its N requests. Per-request syscalls are what the kernel half of a proxy's CPU
# follows (reads, writes, epoll waits), which instruction counts do not see.

command -v perf >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf >/dev/null; }

# syscalls_run OUT_PREFIX PID_OUT PID_IN -- CMD...: runs CMD while counting each proxy's system
# calls (one perf per process), to OUT_PREFIX.{outbound,inbound}.
syscalls_run() {
  local prefix=$1 out=$2 in=$3 perfs=() p
  shift 4
  for p in "outbound:$out" "inbound:$in"; do
    perf stat -x, -e 'syscalls:sys_enter_*' -p "${p#*:}" -o "$prefix.${p%%:*}" &
    perfs+=($!)
  done
  sleep 1  # perf attaches
  "$@"
  for p in "${perfs[@]}"; do kill -INT "$p"; wait "$p" 2>/dev/null || true; done
}

# syscalls_report OUT_PREFIX N: a table row per proxy: system calls per request in all, and the
# three most frequent by name.
syscalls_report() {
  local prefix=$1 n=$2 side
  printf '| proxy | system calls per request | the most frequent |\n|---|---|---|\n'
  for side in outbound inbound; do
    awk -F, -v n="$n" -v side="$side" '
      $3 ~ /^syscalls:sys_enter_/ && $1 ~ /^[0-9]+$/ && $1 > 0 {
        name = substr($3, 20); count[name] = $1; total += $1
      }
      END {
        top = ""
        for (k = 0; k < 3; k++) {
          best = ""; for (c in count) if (best == "" || count[c] > count[best]) best = c
          if (best == "") break
          top = top sprintf("%s%s %.2f", (top == "" ? "" : ", "), best, count[best] / n); delete count[best]
        }
        printf "| %s | %.2f | %s |\n", side, total / n, top
      }' "$prefix.$side"
  done
}
