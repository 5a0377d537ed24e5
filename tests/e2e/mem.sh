# Memory tests of issue 11: copy-on-write runs across adjacent VMAs,
# reservations nobody touched, a real nginx after a reload.
# Sourced by run.sh.

# Copy-on-write pages shared by parent and child across the boundary of two
# adjacent anonymous VMAs with identical flags: the dump must write images
# the restore takes, and the tree must come back.
t_cow_split_vmas() {
    need_cr || return $?
    start_prog cowsplit --kb 256 || return 1
    do_dump "$D/img" || return 1
    do_restore "$D/img" || return 1
    expect_pass "$D/img/restore.log"
    local rc=$?
    kill_tree "$PID" "$BIN/cowsplit"
    return $rc
}

ALL_TESTS+=(cow-split-vmas)

# Many small VMAs (issue 16): 5,000 one-page anonymous VMAs, every other one
# read-only (manyvmas checks every page and that they are still apart).
# crust's restore maps them with one mmap and sets their protections as the
# fill goes; its dump scans their pagemap as one range. Also restored by
# CRIU 4.2 from crust's images.
t_manyvmas() { cr_test manyvmas --n 5000; }

t_manyvmas_to_criu() {
    local criu rc
    need_cr || return $?
    criu=$(criu_bin) && [ -x "$criu" ] || { skip "no CRIU 4.2 (../shared/criu/build.sh or CRIU_BIN)"; return 2; }
    start_prog manyvmas --n 5000 || return 1
    do_dump "$D/img" || return 1
    criu_restore_as_dumped "$criu" || return 1
    expect_pass "$D/img/restore.log"
    rc=$?
    kill_tree "$PID" "$BIN/manyvmas"
    return $rc
}

ALL_TESTS+=(manyvmas manyvmas-to-criu)

# A dump whose images would not restore (spoilt on purpose with
# CRUST_FAULT=unrestorable-images once they are written) fails, says so,
# removes its images and leaves the whole tree running as it was.
t_err_dump_unrestorable() {
    need_cr || return $?
    start_prog cowsplit --kb 64 || return 1
    proc_snapshot "$PID" >"$D/before"
    mkdir -p "$D/img"
    CRUST_FAULT=unrestorable-images crust_run dump dump -t "$PID" -D "$D/img" -v4 -o dump.log
    expect_error dump "$D/img/dump.log" || return 1
    grep -q "would not restore" "$D/dump.err" ||
        { fail "the error does not say the images would not restore: $(head -c 300 "$D/dump.err")" "$D/img/dump.log"; return 1; }
    expect_same_proc "$PID" "$D/before" "the failed dump" || return 1
    expect_untouched "$PID" || return 1
    ls "$D"/img/*.img >/dev/null 2>&1 && { fail "the failed dump left images: $(ls "$D/img")" "$D/img/dump.log"; return 1; }
    expect_pass "$D/img/dump.log"
    local rc=$?
    kill_tree "$PID" "$BIN/cowsplit"
    return $rc
}

ALL_TESTS+=(err-dump-unrestorable)

# --- nginx from Debian's package, reloaded once before the dump ---

# Install what is missing (nginx from Debian's package).
need_nginx() {
    [ -x /usr/sbin/nginx ] && return 0
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx; } >"$D/apt.log" 2>&1 ||
        { fail "cannot install nginx: $(tail -c 300 "$D/apt.log")" "$D/apt.log"; return 1; }
    # Debian starts the packaged service: it is not ours to run.
    if [ -f /run/nginx.pid ]; then /usr/sbin/nginx -s quit 2>/dev/null; fi
    [ -x /usr/sbin/nginx ] || { fail "nginx is not at /usr/sbin/nginx after installing it"; return 1; }
}

# The worker pids of nginx master $1, sorted, on one line.
nginx_workers() { tr ' ' '\n' </proc/"$1"/task/"$1"/children 2>/dev/null | grep . | sort -n | tr '\n' ' '; }

# GET / from nginx on port $1; prints the body.
nginx_get() {
    python3 -c "import sys, urllib.request
print(urllib.request.urlopen('http://127.0.0.1:%s/' % sys.argv[1], timeout=5).read().decode().strip())" "$1"
}

# Does process $1 have two adjacent anonymous private VMAs with the same
# permissions (what nginx's reload leaves in its workers' heap)?
adjacent_anon_vmas() {
    awk 'NF <= 6 || $6 == "[heap]" {
            if ($2 ~ /p$/ && prev_perm == $2 && prev_end == substr($1, 1, index($1, "-") - 1)) found = 1
            prev_end = substr($1, index($1, "-") + 1); prev_perm = $2; next
        }
        { prev_end = ""; prev_perm = "" }
        END { exit !found }' /proc/"$1"/maps
}

nginx_stop() {
    local m=$1 n=100
    [ -n "$m" ] && [ "$(exe_of "$m")" = /usr/sbin/nginx ] || return 0
    kill -QUIT "$m" 2>/dev/null
    while [ $n -gt 0 ] && [ "$(exe_of "$m")" = /usr/sbin/nginx ] && [ "$(pstate "$m")" != Z ]; do
        sleep 0.05
        n=$((n - 1))
    done
    kill_tracked "$m" /usr/sbin/nginx
}

# nginx (master and 2 workers, 127.0.0.1 only) reloaded with SIGHUP: its new
# workers' heap is two adjacent anonymous VMAs with identical flags, sharing
# pages copy-on-write with the master across the boundary. Dump, restore,
# and it serves a request.
t_nginx_reloaded() {
    need_cr || return $?
    need_nginx || return 1
    local port=$((20000 + RANDOM % 20000)) n=100 old new body w rc=0 master
    mkdir -p "$D/nginx" "$D/img"
    cat >"$D/nginx/nginx.conf" <<CONF
worker_processes 2;
pid $D/nginx/nginx.pid;
error_log $D/nginx/error.log;
events { worker_connections 64; }
http {
    access_log $D/nginx/access.log;
    client_body_temp_path $D/nginx/body;
    proxy_temp_path $D/nginx/proxy;
    fastcgi_temp_path $D/nginx/fastcgi;
    uwsgi_temp_path $D/nginx/uwsgi;
    scgi_temp_path $D/nginx/scgi;
    server {
        listen 127.0.0.1:$port;
        location / { return 200 "crust-nginx-ok\n"; }
    }
}
CONF
    # Without the fds this shell holds (the e2e lock among them).
    (
        for f in /proc/$BASHPID/fd/*; do
            f=${f##*/}
            [ "$f" -gt 2 ] 2>/dev/null && exec {f}>&-
        done
        exec setsid /usr/sbin/nginx -c "$D/nginx/nginx.conf" -p "$D/nginx/"
    ) </dev/null >"$D/nginx/start.out" 2>&1 ||
        { fail "nginx did not start: $(head -c 300 "$D/nginx/start.out")" "$D/nginx/error.log"; return 1; }
    wait_file "$D/nginx/nginx.pid" 5 || { fail "nginx wrote no pid file" "$D/nginx/error.log"; return 1; }
    master=$(cat "$D/nginx/nginx.pid")
    track "$master" /usr/sbin/nginx
    PID=$master
    (
        while [ $n -gt 0 ] && [ "$(nginx_workers "$master" | wc -w)" != 2 ]; do sleep 0.05; n=$((n - 1)); done
        [ $n -gt 0 ]
    ) || { fail "nginx did not start 2 workers" "$D/nginx/error.log"; nginx_stop "$master"; return 1; }
    old=$(nginx_workers "$master")
    body=$(nginx_get "$port") && [ "$body" = crust-nginx-ok ] ||
        { fail "nginx does not answer before the dump: '$body'" "$D/nginx/error.log"; nginx_stop "$master"; return 1; }
    # Reload; wait for two new workers and the old ones gone.
    kill -HUP "$master"
    n=200
    while [ $n -gt 0 ]; do
        new=$(nginx_workers "$master")
        if [ "$(echo "$new" | wc -w)" = 2 ]; then
            for w in $old; do case " $new " in *" $w "*) new="" ;; esac; done
            [ -n "$new" ] && break
        fi
        sleep 0.05
        n=$((n - 1))
    done
    [ -n "$new" ] || { fail "nginx did not replace its workers after SIGHUP (workers: $(nginx_workers "$master"))" "$D/nginx/error.log"; nginx_stop "$master"; return 1; }
    for w in $new; do
        adjacent_anon_vmas "$w" ||
            { fail "worker $w has no two adjacent anonymous VMAs with the same flags: the case this test is about is gone" ; nginx_stop "$master"; return 1; }
    done
    do_dump "$D/img" || { nginx_stop "$master"; return 1; }
    if do_restore "$D/img"; then
        body=$(nginx_get "$port" 2>"$D/get.err")
        [ "$body" = crust-nginx-ok ] ||
            { fail "restored nginx does not answer: '$body' $(head -c 200 "$D/get.err")" "$D/img/restore.log"; rc=1; }
        [ "$(nginx_workers "$master")" = "$new" ] ||
            { fail "restored workers are '$(nginx_workers "$master")', dumped '$new'" "$D/img/restore.log"; rc=1; }
    else
        rc=1
    fi
    nginx_stop "$master"
    rm -rf "$D/nginx"
    return $rc
}

ALL_TESTS+=(nginx-reloaded)

# --- a terabyte reserved, nothing in it: the dump must not care ---

# A memory cgroup for one test, limited to $1 bytes; prints its path.
# cgroup v2 (memory.max) where the memory controller is there, else v1
# (memory.limit_in_bytes) below this shell's own memory cgroup.
mem_cgroup() {
    local limit=$1 base cg
    if [ -f /sys/fs/cgroup/cgroup.controllers ] && grep -qw memory /sys/fs/cgroup/cgroup.controllers; then
        base=/sys/fs/cgroup$(awk -F: '$1 == "0" {print $3}' /proc/self/cgroup)
        cg=${base%/}/crust-e2e-$$-$RANDOM
        mkdir "$cg" && echo "$limit" >"$cg/memory.max" && echo 0 >"$cg/memory.swap.max" 2>/dev/null
    elif [ -d /sys/fs/cgroup/memory ]; then
        base=/sys/fs/cgroup/memory$(awk -F: '$2 == "memory" {print $3}' /proc/self/cgroup)
        cg=${base%/}/crust-e2e-$$-$RANDOM
        mkdir "$cg" && echo "$limit" >"$cg/memory.limit_in_bytes"
    else
        return 1
    fi || { rmdir "$cg" 2>/dev/null; return 1; }
    echo "$cg"
}

# The peak memory use of cgroup $1, in bytes.
mem_cgroup_peak() {
    cat "$1/memory.peak" 2>/dev/null || cat "$1/memory.max_usage_in_bytes" 2>/dev/null || echo "?"
}

# A 1 TiB PROT_NONE reservation (a few pages made writable inside, a few
# hidden behind PROT_NONE again): the dump runs under a 128 MiB memory
# cgroup and takes less than 2 s (crust read 8 bytes of pagemap for every
# page of it: 2 GiB and 2.6 s and more); the restored process finds its
# pages and its reservation.
t_reserve_tib() {
    need_cr || return $?
    start_prog reserve --gb 1024 || return 1
    local cg t0 t1 peak
    cg=$(mem_cgroup $((128 << 20))) || { fail "cannot make a memory cgroup"; return 1; }
    mkdir -p "$D/img"
    t0=$(date +%s%N)
    (
        cd "$D" && echo "$BASHPID" >"$cg/cgroup.procs" &&
            exec timeout -k 5 "$CR_TIMEOUT" "$CRUST" dump -t "$PID" -D "$D/img" -v4 -o dump.log
    ) >"$D/dump.out" 2>"$D/dump.err"
    RC=$?
    t1=$(date +%s%N)
    peak=$(mem_cgroup_peak "$cg")
    rmdir "$cg" 2>/dev/null || { sleep 0.5; rmdir "$cg"; }
    echo "dump of a 1 TiB reservation: $(((t1 - t0) / 1000000)) ms, cgroup peak $peak bytes" >"$D/figures"
    [ $RC -eq 0 ] || { fail "dump under a 128 MiB limit exited with $RC: $(head -c 300 "$D/dump.err")" "$D/img/dump.log"; return 1; }
    [ $(((t1 - t0) / 1000000)) -lt 2000 ] || { fail "$(cat "$D/figures"): too slow" "$D/img/dump.log"; return 1; }
    wait_gone "$PID" 5 || { fail "pid $PID still exists after dump" "$D/img/dump.log"; return 1; }
    do_restore "$D/img" || return 1
    expect_pass "$D/img/restore.log"
}

ALL_TESTS+=(reserve-tib)
