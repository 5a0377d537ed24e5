#!/usr/bin/env bash
# crust against CRIU 4.2, row by row (issue 16's table): each row runs both
# tools in turn, RUNS times, on a fresh copy of the same program, and prints
# the minimum and the median of each and the ratio crust/CRIU of the
# medians. Peak RSS (GNU time's maximum resident set) of each tool is printed
# beside its times.
#
#   bench/compare.sh                      every row, 5 runs
#   bench/compare.sh --runs 9 --rows mem1g,tree300
#   bench/compare.sh --quick              2 runs, smaller rows (a smoke run)
#
# Rows (--rows, comma separated):
#   mem1g     1 GiB of random anonymous memory (bigmem): dump -R (its
#             frozen time, from --display-stats), dump, restore
#   mem4g     the same with 4 GiB: dump, restore
#   mem16g    the same with 16 GiB, images on disk ($BENCH_BIG_DIR, default
#             /var/tmp: 16 GiB of images beside 16 GiB of process do not fit
#             in this machine's 24 GiB as tmpfs); the limit is then write()
#             to a file there (page cache, written back to the disk)
#   tiny      a tiny process (loop): dump, restore
#   tree100, tree300, tree1000   a tree of N processes (forest)
#   vma10k, vma30k               one process with N VMAs (manyvmas)
#   tcp500    500 established TCP connections, --network-lock nftables
#             (bench/tcp-conns.sh, which runs both tools in turn)
#   thp1g     1 GiB of random memory backed by transparent huge pages
#             (thpmem, MADV_HUGEPAGE): dump, restore; a third tool,
#             "crust 4k", is crust restoring the same set without its
#             crust-thp-N.img (crust before issue 16: 4 KiB pages); the
#             AnonHugePages of the restored task (MiB) is printed per tool
# The memory rows also measure, in the same run, what this machine can do
# (write() to tmpfs, process_vm_readv from the dumped process, filling fresh
# anonymous pages on one thread) and print crust's speed as a fraction of
# them: a dump writes the pages it reads to tmpfs, a restore fills fresh
# pages.
#
# Timing: a dump ends when the tool exits; a restore (restore -d) ends when
# the tool has exited and the restored task's RSS is back to what it was
# before the dump (every page resident), polled after the exit. Every program
# checks its own state after the restore (SIGTERM, then its --result file):
# a failed check, dump or restore fails the row (and the script's status),
# and the row's figures are not printed.
#
# CRIU is $CRIU_BIN, else what ../shared/criu/build.sh prints (CRIU cannot
# raise RLIMIT_NOFILE here, which it logs as an error and survives). crust
# is $CRUST_BIN, else target/release/crust. Images go to $BENCH_DIR
# (default /dev/shm: the limits above are tmpfs'). Needs root, GNU time,
# python3 and `cargo build --release -p crust -p crust-testprogs`. Runs
# under tests/e2e/reaper (a child subreaper, so killed tasks are reaped at
# once). Kills every process it starts and removes its files.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [[ -z ${BENCH_UNDER_REAPER:-} ]]; then
    export BENCH_UNDER_REAPER=1
    exec python3 "$ROOT/tests/e2e/reaper" bash "$0" "$@"
fi

RUNS=5
QUICK=0
RUNS_SET=0
ROWS=mem1g,mem4g,mem16g,tiny,tree100,tree300,tree1000,vma10k,vma30k,tcp500,thp1g
while (($#)); do
    case $1 in
        --runs) RUNS=$2; RUNS_SET=1; shift 2 ;;
        --quick) QUICK=1; shift ;;
        --rows) ROWS=$2; shift 2 ;;
        -h | --help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
if ((QUICK)); then
    ((RUNS_SET)) || RUNS=2
    # Smaller rows: 256 MiB for 1 GiB, 1 GiB for 4 GiB, and so on.
    MEM1=256 MEM4=1024 MEM16=2048 TREES="tree100" VMA_SCALE=10 TCP_N=100
else
    MEM1=1024 MEM4=4096 MEM16=16384 TREES="" VMA_SCALE=1 TCP_N=500
fi

BIN=$ROOT/target/release
CRUST=${CRUST_BIN:-$BIN/crust}
CRIU=${CRIU_BIN:-}
# ../shared beside the main checkout (a worktree's is one more level up).
for b in "$ROOT/../shared/criu/build.sh" "$ROOT/../../shared/criu/build.sh"; do
    [[ -z $CRIU && -x $b ]] || continue
    CRIU=$("$b" 2>/dev/null | tail -n 1) || CRIU=
done
[[ -n $CRIU && -x $CRIU ]] || { echo "no CRIU 4.2: set CRIU_BIN" >&2; exit 1; }
for b in "$CRUST" "$BIN/bigmem" "$BIN/thpmem" "$BIN/loop" "$BIN/forest" "$BIN/manyvmas" /usr/bin/time; do
    [[ -x $b ]] || { echo "missing $b (cargo build --release -p crust -p crust-testprogs; GNU time)" >&2; exit 1; }
done

WORK=$(mktemp -d "${BENCH_DIR:-/dev/shm}/crust-compare.XXXXXX")
chmod 0755 "$WORK"
# Where a row's images go (mem16g: BIGWORK, on disk).
RUNDIR=$WORK
BIGWORK=
# ROOTS, descendants, kill_all.
. "$ROOT/bench/lib.sh"
trap 'kill_all; rm -rf "$WORK" ${BIGWORK:+"$BIGWORK"}' EXIT

# Microseconds now (no fork).
now_us() { local t=${EPOCHREALTIME/./}; echo "$((10#$t))"; }
wait_file() { # FILE SECONDS
    local i
    for ((i = 0; i < $2 * 50; i++)); do
        [[ -e $1 ]] && return 0
        sleep 0.02
    done
    return 1
}
wait_gone() { # PID: the dumped task is reaped (its pid is free for the restore)
    local i
    for ((i = 0; i < 500; i++)); do
        [[ -e /proc/$1 ]] || return 0
        sleep 0.01
    done
    return 1
}
rss_kib() { # PID: VmRSS in KiB, summed over the tree rooted at PID
    local p k v _ sum=0
    for p in "$1" $(descendants "$1"); do
        while read -r k v _; do
            [[ $k == VmRSS: ]] && sum=$((sum + v))
        done <"/proc/$p/status" 2>/dev/null || true
    done
    echo "$sum"
}

# Values: $WORK/v/ROW.METRIC.TOOL, one a line.
mkdir -p "$WORK/v"
put() { echo "$4" >>"$WORK/v/$1.$2.$3"; } # ROW METRIC TOOL VALUE

FAILED=0
fail_row() { # ROW MESSAGE
    echo "  $1: FAILED: $2" >&2
    touch "$WORK/v/$1.failed"
    FAILED=1
}

# timed OUT CMD...: run CMD under GNU time (peak RSS into OUT.kib); sets
# T_US to its wall time in microseconds. Its stdout goes to OUT.
timed() {
    local out=$1 t0
    shift
    t0=$(now_us)
    if ! timeout 900 /usr/bin/time -o "$out.kib" -f '%M' "$@" >"$out" 2>"$out.err"; then
        T_US=$(($(now_us) - t0))
        return 1
    fi
    T_US=$(($(now_us) - t0))
}

# cycle ROW TOOL MEM_CHECK PROG ARGS...: start PROG, (for mem1g a dump -R
# first), dump it, restore it, check it. MEM_CHECK=1: the restore waits for
# the RSS of before the dump.
cycle() {
    local row=$1 tool=$2 memcheck=$3 prog=$4 d pid bin=$CRUST img rss0 t0 want
    shift 4
    [[ $tool == criu ]] && bin=$CRIU
    d=$RUNDIR/run
    rm -rf "$d"
    mkdir -p "$d/img" "$d/img0"
    pid=$(setsid "$BIN/$prog" --ready "$d/ready" --result "$d/result" "$@" </dev/null >"$d/prog.out" 2>&1 & echo $!)
    ROOTS+=("$pid")
    wait_file "$d/ready" 300 || { fail_row "$row" "$tool: $prog did not get ready"; kill_all; return 1; }
    sleep 0.3
    img=$d/img
    # Every pid of the tree: the restore needs them all free again.
    local tree_pids
    tree_pids=$(descendants "$pid")
    if [[ $row == mem* || $row == thp* ]]; then
        rss0=$(rss_kib "$pid")
        limits_vm_readv "$row" "$tool" "$pid"
    fi
    if [[ $row == mem1g ]]; then
        if ! timed "$d/dumpR" "$bin" dump -t "$pid" -D "$d/img0" -R --display-stats -o dump.log; then
            fail_row "$row" "$tool dump -R: $(tail -n 2 "$d/dumpR.err")"; kill_all; return 1
        fi
        put "$row" frozen_ms "$tool" "$(awk '/^Frozen time:/ { printf "%.1f", $3 / 1000 }' "$d/dumpR")"
        rm -rf "$d/img0"
    fi
    if ! timed "$d/dump" "$bin" dump -t "$pid" -D "$img" -o dump.log; then
        fail_row "$row" "$tool dump: $(tail -n 2 "$d/dump.err"; grep -h Error "$img/dump.log" | tail -n 2)"; kill_all; return 1
    fi
    put "$row" dump_s "$tool" "$T_US"
    put "$row" dump_mib "$tool" "$(cat "$d/dump.kib")"
    local p
    for p in "$pid" $tree_pids; do
        wait_gone "$p" || { fail_row "$row" "$tool: pid $p not reaped after the dump"; kill_all; return 1; }
    done
    # crust before issue 16: the same set without its huge page ranges.
    [[ $tool == crust4k ]] && rm -f "$img"/crust-thp-*.img
    t0=$(now_us)
    if ! timed "$d/restore" "$bin" restore -D "$img" -d -o restore.log; then
        fail_row "$row" "$tool restore: $(tail -n 2 "$d/restore.err"; grep -h Error "$img/restore.log" | grep -v RLIMIT_NOFILE | tail -n 2)"
        kill_all; return 1
    fi
    if [[ $memcheck == 1 ]]; then
        want=$((rss0 * 99 / 100))
        while (($(rss_kib "$pid") < want)); do
            (($(now_us) - t0 < 60000000)) || { fail_row "$row" "$tool: RSS $(rss_kib "$pid") KiB < $want after restore"; kill_all; return 1; }
        done
    fi
    put "$row" restore_s "$tool" "$(($(now_us) - t0))"
    put "$row" restore_mib "$tool" "$(cat "$d/restore.kib")"
    [[ $row != thp* ]] || put "$row" thp_mib "$tool" "$(awk '/^AnonHugePages:/ { s += $2 } END { print int(s / 1024) }' "/proc/$pid/smaps")"
    kill -TERM "$pid" 2>/dev/null || true
    wait_file "$d/result" 300 || true
    local verdict
    verdict=$(head -n 1 "$d/result" 2>/dev/null || echo "no result")
    kill_all
    [[ $verdict == PASS ]] || { fail_row "$row" "$tool: check after restore: $verdict"; return 1; }
    rm -rf "$d"
}

# The machine's limits, in GB/s (GiB/s, as the tools' rates): MiB through
# write() into a file of the images' directory (tmpfs but for mem16g), and
# MiB of fresh anonymous pages filled by memset on one thread; best of 3
# (of 1 for 8 GiB and more).
limits_local() { # ROW MIB
    local row=$1 mib=$2
    python3 - "$RUNDIR" "$mib" >"$WORK/limits" <<'EOF'
import ctypes, mmap, os, sys, time
work, mib = sys.argv[1], int(sys.argv[2])
size = mib << 20
buf = bytearray(os.urandom(1 << 20)) * 16
w_best = f_best = 0.0
libc = ctypes.CDLL(None, use_errno=True)
for _ in range(3 if mib < 8192 else 1):
    path = os.path.join(work, "limits.tmp")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    t = time.perf_counter()
    done = 0
    while done < size:
        done += os.write(fd, buf[: min(len(buf), size - done)])
    w = time.perf_counter() - t
    os.close(fd)
    os.unlink(path)
    m = mmap.mmap(-1, size)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
    t = time.perf_counter()
    libc.memset(ctypes.c_void_p(addr), 0x5A, ctypes.c_size_t(size))
    f = time.perf_counter() - t
    del addr
    m.close()
    w_best = max(w_best, mib / 1024 / w)
    f_best = max(f_best, mib / 1024 / f)
print(f"{w_best:.2f} {f_best:.2f}")
EOF
    local w f
    read -r w f <"$WORK/limits"
    put "$row" limit_tmpfs_write all "$w"
    put "$row" limit_fresh_fill all "$f"
}

# process_vm_readv of every private writable anonymous mapping of PID into
# one reused 64 MiB buffer, in GB/s.
limits_vm_readv() { # ROW TOOL PID
    [[ $2 == crust ]] || return 0
    local r
    r=$(python3 - "$3" <<'EOF'
import ctypes, sys, time
pid = int(sys.argv[1])
class Iov(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
libc = ctypes.CDLL(None, use_errno=True)
libc.process_vm_readv.restype = ctypes.c_ssize_t
chunk = 64 << 20
buf = ctypes.create_string_buffer(chunk)
ranges = []
for line in open(f"/proc/{pid}/maps"):
    f = line.split()
    if f[1].startswith("rw") and len(f) == 5:
        a, b = (int(x, 16) for x in f[0].split("-"))
        ranges.append((a, b))
total = 0
t = time.perf_counter()
for a, b in ranges:
    while a < b:
        n = min(chunk, b - a)
        loc, rem = Iov(ctypes.addressof(buf), n), Iov(a, n)
        got = libc.process_vm_readv(pid, ctypes.byref(loc), 1, ctypes.byref(rem), 1, 0)
        if got <= 0:
            break
        total += got
        a += got
s = time.perf_counter() - t
print(f"{total / (1 << 30) / s:.2f}")
EOF
    ) || r=-
    put "$1" limit_vm_readv all "$r"
}

# ------------------------------------------------------------------ output

# median and minimum of the values in FILE, scaled by DIV, with PREC digits
median_min() { # FILE DIV PREC
    sort -g "$1" | awk -v d="$2" -v p="$3" '{ v[NR] = $1 / d }
        END { if (NR == 0) { print "- -"; exit }
              m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
              printf "%.*f %.*f\n", p, m, p, v[1] }'
}

# show ROW METRIC LABEL DIV PREC: one line, crust and CRIU side by side.
show() {
    local row=$1 m=$2 label=$3 div=$4 prec=$5 cm cn rm rn ratio
    [[ -s $WORK/v/$row.$m.crust || -s $WORK/v/$row.$m.criu ]] || return 0
    read -r cm cn < <(median_min "$WORK/v/$row.$m.crust" "$div" "$prec" 2>/dev/null || echo "- -")
    read -r rm rn < <(median_min "$WORK/v/$row.$m.criu" "$div" "$prec" 2>/dev/null || echo "- -")
    ratio=$(awk -v a="$cm" -v b="$rm" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f", a / b }')
    printf '%-34s %10s %10s %10s %10s %7s\n' "$label" "$cm" "$cn" "$rm" "$rn" "$ratio"
}

header() {
    printf '\n%-34s %10s %10s %10s %10s %7s\n' "$1" "crust med" "crust min" "CRIU med" "CRIU min" ratio
}

# Speeds for a memory row: crust's and the machine's limits (medians).
show_speeds() { # ROW MIB
    local row=$1 mib=$2 dump_s restore_s w f v
    [[ -s $WORK/v/$row.dump_s.crust && ! -e $WORK/v/$row.failed ]] || return 0
    read -r dump_s _ < <(median_min "$WORK/v/$row.dump_s.crust" 1e6 4)
    read -r restore_s _ < <(median_min "$WORK/v/$row.restore_s.crust" 1e6 4)
    read -r w _ < <(median_min "$WORK/v/$row.limit_tmpfs_write.all" 1 2)
    read -r f _ < <(median_min "$WORK/v/$row.limit_fresh_fill.all" 1 2)
    read -r v _ < <(median_min "$WORK/v/$row.limit_vm_readv.all" 1 2)
    local where=tmpfs
    [[ $row != mem16g ]] || where=disk
    awk -v where="$where" -v mib="$mib" -v d="$dump_s" -v r="$restore_s" -v w="$w" -v f="$f" -v v="$v" 'BEGIN {
        dr = mib / 1024 / d; rr = mib / 1024 / r
        printf "  machine (GB/s): write() to %s %s, process_vm_readv %s, fresh-page fill %s\n", where, w, v, f
        printf "  crust dump %.2f GB/s = %.2f of %s write; restore %.2f GB/s = %.2f of fresh-page fill\n",
            dr, (w > 0 ? dr / w : 0), where, rr, (f > 0 ? rr / f : 0) }'
}

# A failed row says so instead of its figures (status 0 then).
row_failed() { # ROW
    [[ -e $WORK/v/$1.failed ]] || return 1
    echo "  FAILED (see the messages above): no figures"
}

print_row() { # ROW TITLE [MIB]
    local row=$1
    header "$2"
    row_failed "$row" && return 0
    show "$row" frozen_ms "dump -R frozen (ms)" 1 1
    show "$row" dump_s "dump (s)" 1e6 3
    show "$row" restore_s "restore, all resident (s)" 1e6 3
    show "$row" dump_mib "dump peak RSS (MiB)" 1024 1
    show "$row" restore_mib "restore peak RSS (MiB)" 1024 1
    [[ -z ${3:-} ]] || show_speeds "$row" "$3"
}

# The THP row: crust, crust without the huge page ranges, CRIU.
print_thp_row() { # ROW TITLE
    local row=$1 m t med mn
    header "$2"
    row_failed "$row" && return 0
    show "$row" dump_s "dump (s)" 1e6 3
    show "$row" restore_s "restore, all resident (s)" 1e6 3
    show "$row" thp_mib "AnonHugePages after restore (MiB)" 1 0
    for m in restore_s thp_mib; do
        [[ -s $WORK/v/$row.$m.crust4k ]] || continue
        read -r med mn < <(median_min "$WORK/v/$row.$m.crust4k" "$([[ $m == restore_s ]] && echo 1e6 || echo 1)" 3)
        t=$([[ $m == restore_s ]] && echo "restore (s)" || echo "AnonHugePages (MiB)")
        printf '%-34s %10s %10s\n' "  crust 4k (no crust-thp): $t" "$med" "$mn"
    done
}

# ------------------------------------------------------------------ rows

mem_row() { # ROW MIB
    local row=$1 mib=$2 i tool
    echo "== $row: ${mib} MiB, $RUNS runs" >&2
    for ((i = 0; i < RUNS; i++)); do
        limits_local "$row" "$mib"
        for tool in crust criu; do
            cycle "$row" "$tool" 1 bigmem --mb "$mib" || return 0
        done
    done
}

prog_row() { # ROW PROG ARGS...
    local row=$1 i tool
    shift
    echo "== $row: $*, $RUNS runs" >&2
    for ((i = 0; i < RUNS; i++)); do
        for tool in crust criu; do
            cycle "$row" "$tool" 0 "$@" || return 0
        done
    done
}

thp_row() { # ROW MIB
    local row=$1 mib=$2 i tool
    echo "== $row: ${mib} MiB with MADV_HUGEPAGE, $RUNS runs" >&2
    for ((i = 0; i < RUNS; i++)); do
        for tool in crust crust4k criu; do
            cycle "$row" "$tool" 1 thpmem --hg-mb "$mib" --sparse-mb 0 --plain-mb 0 --expect-huge 0 || return 0
        done
    done
}

tcp_row() { # ROW N
    local row=$1 n=$2 i out
    echo "== $row: $n TCP connections, nftables, $RUNS runs" >&2
    for ((i = 0; i < RUNS; i++)); do
        out=$WORK/tcp.out
        if ! NETLOCK=nftables CRUST_BIN=$CRUST CRIU_BIN=$CRIU LOG_LEVEL=1 \
            bash "$ROOT/bench/tcp-conns.sh" "$n" >"$out" 2>"$out.err"; then
            fail_row "$row" "bench/tcp-conns.sh: $(tail -n 3 "$out.err") $(grep -E 'peer|lock' "$out" | tr '\n' ' ')"
            return 0
        fi
        awk -v f="$WORK/v/$row" '
            /^crust / { t = "crust" } /^criu / { t = "criu" }
            /^  dump / { print $2 * 1e6 >> (f ".dump_s." t) }
            /^  restore / { print $2 * 1e6 >> (f ".restore_s." t) }' "$out"
    done
}

has_row() { [[ ,$ROWS, == *,$1,* ]]; }

echo "crust $CRUST; CRIU $CRIU; images in $WORK; $RUNS runs; $(uptime | sed 's/.*load/load/')" >&2
MAN1=$((10000 / VMA_SCALE)) MAN3=$((30000 / VMA_SCALE))
has_row mem1g && mem_row mem1g "$MEM1"
has_row mem4g && mem_row mem4g "$MEM4"
if has_row mem16g; then
    BIGWORK=$(mktemp -d "${BENCH_BIG_DIR:-/var/tmp}/crust-compare.XXXXXX")
    chmod 0755 "$BIGWORK"
    RUNDIR=$BIGWORK
    mem_row mem16g "$MEM16"
    RUNDIR=$WORK
    rm -rf "$BIGWORK"
fi
has_row tiny && prog_row tiny loop
for n in 100 300 1000; do
    [[ -z $TREES || " $TREES " == *" tree$n "* ]] || continue
    has_row "tree$n" && prog_row "tree$n" forest --n "$n"
done
has_row vma10k && prog_row vma10k manyvmas --n "$MAN1"
has_row vma30k && prog_row vma30k manyvmas --n "$MAN3"
has_row tcp500 && tcp_row tcp500 "$TCP_N"
has_row thp1g && thp_row thp1g "$MEM1"

echo
echo "crust/CRIU 4.2, $RUNS runs each, interleaved; ratio = crust median / CRIU median; $(uptime | sed 's/.*load/load/')"
has_row mem1g && print_row mem1g "$MEM1 MiB anonymous memory" "$MEM1"
has_row mem4g && print_row mem4g "$MEM4 MiB anonymous memory" "$MEM4"
has_row mem16g && print_row mem16g "$MEM16 MiB anonymous memory, images on disk" "$MEM16"
has_row tiny && print_row tiny "tiny process (loop)"
for n in 100 300 1000; do
    [[ -z $TREES || " $TREES " == *" tree$n "* ]] || continue
    has_row "tree$n" && print_row "tree$n" "$n processes (forest)"
done
has_row vma10k && print_row vma10k "$MAN1 VMAs (manyvmas)"
has_row vma30k && print_row vma30k "$MAN3 VMAs (manyvmas)"
has_row tcp500 && print_row tcp500 "$TCP_N TCP connections, nftables lock"
has_row thp1g && print_thp_row thp1g "$MEM1 MiB with transparent huge pages"
exit $FAILED
