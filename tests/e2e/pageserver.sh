# The page server (issue 15, crates/engine/src/pageserver): CRIU 4.2's
# protocol both ways, TLS, and a server lost or full mid-transfer.
# Sourced by run.sh: uses its helpers and adds its tests to ALL_TESTS.

ps_port() { echo $((20000 + (RANDOM % 20000))); }

# ps_server TOOL DIR PORT [ARGS...]: start `TOOL page-server` on
# 127.0.0.1:PORT (PS_ADDR:PORT) into DIR in the background; sets SPID.
ps_server() {
    local tool=$1 dir=$2 port=$3 n=50
    shift 3
    mkdir -p "$dir"
    # Logs beside the directory (it may be a full disk).
    local log=$D/ps-${dir##*/}
    (cd "$D" && exec timeout -k 5 "$CR_TIMEOUT" "$tool" page-server -D "$dir" --address "${PS_ADDR:-127.0.0.1}" \
        --port "$port" -v4 -o "$log.log" "$@") </dev/null >"$log.out" 2>"$log.err" &
    SPID=$!
    track "$SPID" "$TIMEOUT_EXE"
    # Listening?
    while [ $n -gt 0 ]; do
        if ss -ltnH "sport = :$port" 2>/dev/null | grep -q .; then
            # The server itself too: the harness kills a tracked pid's
            # children only when they run its binary (timeout's), and a
            # server left behind would hold the e2e lock's fd.
            local c
            for c in $(cat /proc/"$SPID"/task/*/children 2>/dev/null); do
                track "$c" "$(exe_of "$c")"
            done
            return 0
        fi
        case $(pstate "$SPID") in "" | Z) break ;; esac
        sleep 0.1
        n=$((n - 1))
    done
    fail "the page server did not listen on $port: $(head -c 300 "$log.err")" "$log.log"
}

# Gather the server's pagemaps/pages with the rest of the images.
ps_merge() { cp -n "$1"/pagemap-*.img "$1"/pages-*.img "$2"/ 2>/dev/null; }

# ps_cr SERVER CLIENT RESTORER PROG [ARGS...]: PROG dumped by CLIENT
# (crust or criu) to SERVER's page server, restored by RESTORER; PASS.
ps_cr() {
    local srv=$1 cli=$2 rst=$3 criu="" port s c r
    shift 3
    need_cr || return
    case "$srv$cli$rst" in *criu*)
        criu=$(criu_bin) && [ -x "$criu" ] || { skip "no CRIU 4.2 (../shared/criu/build.sh or CRIU_BIN)"; return 2; } ;;
    esac
    s=$CRUST; c=$CRUST; r=$CRUST
    [ "$srv" = criu ] && s=$criu
    [ "$cli" = criu ] && c=$criu
    [ "$rst" = criu ] && r=$criu
    port=$(ps_port)
    ps_server "$s" "$D/srv" "$port" ${PS_TLS:-} || return 1
    start_prog "$@" || return 1
    mkdir -p "$D/img"
    (cd "$D" && timeout -k 5 "$CR_TIMEOUT" "$c" dump -t "$PID" -D "$D/img" -v4 -o dump.log \
        --page-server --address "${PS_ADDR:-127.0.0.1}" --port "$port" ${PS_TLS:-}) >"$D/dump.out" 2>"$D/dump.err" ||
        { fail "$cli's dump to $srv's page server failed: $(head -c 300 "$D/dump.err")" "$D/img/dump.log"; return 1; }
    wait_rc "$SPID" 10
    [ "$RC" = 0 ] || { fail "$srv's page server exited $RC: $(head -c 300 "$D/ps-srv.err")" "$D/ps-srv.log"; return 1; }
    ls "$D/srv"/pagemap-*.img >/dev/null 2>&1 || { fail "no pagemap on the page server" "$D/ps-srv.log"; return 1; }
    ls "$D/img"/pagemap-*.img >/dev/null 2>&1 && [ "$cli" = crust ] &&
        { fail "crust's dump wrote a pagemap locally with --page-server" "$D/img/dump.log"; return 1; }
    wait_gone "$PID" 5 || { fail "pid $PID still exists after the dump" "$D/img/dump.log"; return 1; }
    ps_merge "$D/srv" "$D/img"
    rm -f "$D/pidfile"
    (cd "$D" && timeout -k 5 "$CR_TIMEOUT" "$r" restore -D "$D/img" -d --pidfile "$D/pidfile" -v4 -o restore.log) \
        >"$D/restore.out" 2>"$D/restore.err" ||
        { fail "$rst's restore failed: $(head -c 300 "$D/restore.err")" "$D/img/restore.log"; return 1; }
    [ "$(cat "$D/pidfile" 2>/dev/null)" = "$PID" ] || { fail "restored pid '$(cat "$D/pidfile" 2>/dev/null)', not $PID" "$D/img/restore.log"; return 1; }
    expect_pass "$D/img/restore.log"
}

# crust to crust: private memory and a shared anonymous object.
t_ps_crust() { ps_cr crust crust crust bigmem --mb 64; }
t_ps_crust_shmem() { ps_cr crust crust crust shmanon --mb 8; }
# crust's dump feeds CRIU 4.2's page server; crust restores.
t_ps_to_criu() { ps_cr criu crust crust bigmem --mb 64; }
# CRIU 4.2's dump feeds crust's page server; crust and CRIU restore.
t_ps_from_criu() { ps_cr crust criu crust bigmem --mb 64; }
t_ps_from_criu_criu() { ps_cr crust criu criu bigmem --mb 64; }
# A memfd held by an fd and a System V segment: their pages go to the
# server as CRIU sends them (shmem pagemaps), nothing of them stays in -D
# (ps_cr refuses a local pagemap); the server's files restore them.
t_ps_crust_memfd() { ps_cr crust crust crust files2 --mode memfd; }
t_ps_crust_sysv() { ps_cr crust crust crust sysvshm; }
# 10,000 VMAs: pieces by the hundred in each fill of the task's pipes.
t_ps_crust_vmas() {
    ps_cr crust crust crust manyvmas --n 10000 || return 1
    grep -q "2 pipes planted.*filled in one resume" "$D/img/dump.log" ||
        { fail "the dump did not fill two pipes in one resume" "$D/img/dump.log"; return 1; }
}
# A task that may not map writable and executable memory: the pipes are
# filled one vmsplice at a time.
t_ps_crust_one_by_one() {
    CRUST_FAULT=no-exec-scratch ps_cr crust crust crust bigmem --mb 64 || return 1
    grep -q "pipes planted.*filled one by one" "$D/img/dump.log" ||
        { fail "the pipes were not filled one by one" "$D/img/dump.log"; return 1; }
}
ALL_TESTS+=(ps-crust ps-crust-shmem ps-crust-memfd ps-crust-sysv ps-to-criu ps-from-criu ps-from-criu-criu)
ALL_TESTS+=(ps-crust-vmas ps-crust-one-by-one)

# ps_certs DIR: a CA (DIR/ca.pem) and, signed by it for DIR/key.pem, a
# certificate for 127.0.0.1 (cert.pem), one for another name
# (name-cert.pem), and without subjectAltName: CN=localhost (cn-cert.pem),
# CN=elsewhere.example (cn2-cert.pem), CN=127.0.0.1 (ipcn-cert.pem); a
# second CA's certificate as DIR/other-cert.pem.
ps_certs() {
    local d=$1
    mkdir -p "$d" && cd "$d" || return 1
    {
        openssl req -x509 -newkey rsa:2048 -nodes -keyout ca-key.pem -out ca.pem -days 2 -subj /CN=crust-test-ca &&
            openssl req -newkey rsa:2048 -nodes -keyout key.pem -out req.pem -subj /CN=127.0.0.1 &&
            printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >ext.cnf &&
            openssl x509 -req -in req.pem -CA ca.pem -CAkey ca-key.pem -CAcreateserial -out cert.pem -days 2 -extfile ext.cnf &&
            printf 'subjectAltName=DNS:elsewhere.example\nbasicConstraints=CA:FALSE\n' >ext2.cnf &&
            openssl x509 -req -in req.pem -CA ca.pem -CAkey ca-key.pem -CAcreateserial -out name-cert.pem -days 2 -extfile ext2.cnf &&
            openssl req -x509 -newkey rsa:2048 -nodes -keyout other-key.pem -out other-cert.pem -days 2 -subj /CN=127.0.0.1 \
                -addext subjectAltName=IP:127.0.0.1 &&
            printf 'basicConstraints=CA:FALSE\n' >ext3.cnf &&
            openssl x509 -req -in req.pem -CA ca.pem -CAkey ca-key.pem -CAcreateserial -out ipcn-cert.pem -days 2 -extfile ext3.cnf &&
            openssl req -new -key key.pem -out req2.pem -subj /CN=localhost &&
            openssl x509 -req -in req2.pem -CA ca.pem -CAkey ca-key.pem -CAcreateserial -out cn-cert.pem -days 2 -extfile ext3.cnf &&
            openssl req -new -key key.pem -out req3.pem -subj /CN=elsewhere.example &&
            openssl x509 -req -in req3.pem -CA ca.pem -CAkey ca-key.pem -CAcreateserial -out cn2-cert.pem -days 2 -extfile ext3.cnf
    } >"$d/openssl.log" 2>&1
    local rc=$?
    cd - >/dev/null || return 1
    [ $rc = 0 ] || fail "openssl could not make test certificates" "$d/openssl.log"
}

ps_tls_opts() { echo "--tls --tls-cacert $1/ca.pem --tls-cert $1/$2 --tls-key $1/${3:-key.pem}"; }

# --tls, crust both sides, and each side against CRIU 4.2 (GnuTLS).
t_ps_tls() {
    command -v openssl >/dev/null || { skip "no openssl"; return 2; }
    ps_certs "$D/pki" || return 1
    PS_TLS=$(ps_tls_opts "$D/pki" cert.pem) ps_cr crust crust crust bigmem --mb 16
}
t_ps_tls_to_criu() {
    command -v openssl >/dev/null || { skip "no openssl"; return 2; }
    ps_certs "$D/pki" || return 1
    PS_TLS=$(ps_tls_opts "$D/pki" cert.pem) ps_cr criu crust crust bigmem --mb 16
}
t_ps_tls_from_criu() {
    command -v openssl >/dev/null || { skip "no openssl"; return 2; }
    ps_certs "$D/pki" || return 1
    PS_TLS=$(ps_tls_opts "$D/pki" cert.pem) ps_cr crust criu crust bigmem --mb 16
}
ALL_TESTS+=(ps-tls ps-tls-to-criu ps-tls-from-criu)

# Certificates with the server's host name in their common name only (no
# subjectAltName): valid for it, as GnuTLS (CRIU) judges, on both sides;
# crust to crust, and CRIU's dump to crust's page server. A CN naming
# another host is refused, and so is a CN holding the address itself
# (GnuTLS matches addresses against IP subjectAltNames only).
t_ps_tls_cn() {
    command -v openssl >/dev/null || { skip "no openssl"; return 2; }
    ps_certs "$D/pki" || return 1
    PS_ADDR=localhost PS_TLS=$(ps_tls_opts "$D/pki" cn-cert.pem) ps_cr crust crust crust bigmem --mb 16 || return 1
    local port
    port=$(ps_port)
    # shellcheck disable=SC2046
    PS_ADDR=localhost ps_server "$CRUST" "$D/srv2" "$port" $(ps_tls_opts "$D/pki" cn2-cert.pem) --tls-no-cn-verify || return 1
    # shellcheck disable=SC2046
    PS_ADDR=localhost ps_dump_refused "not valid for|certificate" "$port" $(ps_tls_opts "$D/pki" cn-cert.pem) || return 1
    kill "$SPID" 2>/dev/null
    port=$(ps_port)
    # shellcheck disable=SC2046
    ps_server "$CRUST" "$D/srv3" "$port" $(ps_tls_opts "$D/pki" ipcn-cert.pem) --tls-no-cn-verify || return 1
    # shellcheck disable=SC2046
    ps_dump_refused "not valid for|certificate" "$port" $(ps_tls_opts "$D/pki" cert.pem) || return 1
    kill "$SPID" 2>/dev/null
    return 0
}
# CRIU's dump (GnuTLS) to crust's page server, both at "localhost" (CRIU's
# own page server takes addresses only, never a name a CN could match).
t_ps_tls_cn_from_criu() {
    command -v openssl >/dev/null || { skip "no openssl"; return 2; }
    ps_certs "$D/pki" || return 1
    PS_ADDR=localhost PS_TLS=$(ps_tls_opts "$D/pki" cn-cert.pem) ps_cr crust criu crust bigmem --mb 16
}
ALL_TESTS+=(ps-tls-cn ps-tls-cn-from-criu)

# ps_dump_refused WHAT PORT [CRUST ARGS...]: a dump of a fresh loop to the
# page server at PORT fails with a message matching WHAT; loop runs on
# untouched and passes.
ps_dump_refused() {
    local what=$1 port=$2
    shift 2
    start_prog loop || return 1
    mkdir -p "$D/img"
    proc_snapshot "$PID" >"$D/before"
    crust_run dump dump -t "$PID" -D "$D/img" -v4 -o dump.log --page-server --address "${PS_ADDR:-127.0.0.1}" --port "$port" "$@"
    expect_error dump "$D/img/dump.log" || return 1
    grep -qiE "$what" "$D/dump.err" || { fail "the message does not say '$what': $(head -c 300 "$D/dump.err")" "$D/img/dump.log"; return 1; }
    expect_same_proc "$PID" "$D/before" "the failed dump" || return 1
    expect_untouched "$PID" || return 1
    expect_pass "$D/img/dump.log"
}

# A certificate of another CA, or one for another name, is refused by the
# server / the client; the tree runs on.
t_ps_tls_wrong_cert() {
    need_cr || return
    command -v openssl >/dev/null || { skip "no openssl"; return 2; }
    ps_certs "$D/pki" || return 1
    local port
    port=$(ps_port)
    # shellcheck disable=SC2046
    ps_server "$CRUST" "$D/srv" "$port" $(ps_tls_opts "$D/pki" cert.pem) || return 1
    # shellcheck disable=SC2046
    ps_dump_refused "page server.*TLS|certificate" "$port" $(ps_tls_opts "$D/pki" other-cert.pem other-key.pem) || return 1
    wait_rc "$SPID" 10
    [ "$RC" != 0 ] || { fail "the page server accepted a certificate of another CA" "$D/ps-srv.log"; return 1; }
    grep -qi "certificate\|TLS" "$D/ps-srv.err" || { fail "the server does not say why: $(head -c 300 "$D/ps-srv.err")"; return 1; }
    # A server whose certificate names another host: the client refuses it
    # (and with --tls-no-cn-verify accepts it).
    port=$(ps_port)
    # shellcheck disable=SC2046
    ps_server "$CRUST" "$D/srv2" "$port" $(ps_tls_opts "$D/pki" name-cert.pem) --tls-no-cn-verify || return 1
    # shellcheck disable=SC2046
    ps_dump_refused "not valid for|certificate" "$port" $(ps_tls_opts "$D/pki" cert.pem) || return 1
    kill "$SPID" 2>/dev/null
    return 0
}
ALL_TESTS+=(ps-tls-wrong-cert)

# No server listening: the dump is refused at once, nothing touched.
t_ps_no_server() {
    need_cr || return
    ps_dump_refused "cannot connect to the page server" "$(ps_port)"
}

# A server that dies in the middle of the pages (a fake one that reads
# 1 MiB and exits): the dump fails within its timeout, the tree runs on.
t_ps_server_killed() {
    need_cr || return
    local port
    port=$(ps_port)
    "$PY" - "$port" >"$D/fake.out" 2>&1 <<'PYEOF' &
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(1)
c, _ = s.accept()
c.recv(32, socket.MSG_WAITALL)       # PS_IOV_OPEN2
c.sendall(b"\0")                     # no parent
got = 0
while got < (1 << 20):
    b = c.recv(65536)
    if not b:
        break
    got += len(b)
c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
c.close()                            # gone, with a reset
PYEOF
    track $! "$PY"
    sleep 0.5
    start_prog bigmem --mb 64 || return 1
    mkdir -p "$D/img"
    proc_snapshot "$PID" >"$D/before"
    SECONDS=0
    crust_run dump dump -t "$PID" -D "$D/img" -v4 -o dump.log --page-server --address 127.0.0.1 --port "$port"
    expect_error dump "$D/img/dump.log" || return 1
    [ $SECONDS -le 40 ] || { fail "the dump took ${SECONDS}s to notice the server gone" "$D/img/dump.log"; return 1; }
    grep -qi "page server" "$D/dump.err" || { fail "the message does not name the page server: $(head -c 300 "$D/dump.err")" "$D/img/dump.log"; return 1; }
    expect_same_proc "$PID" "$D/before" "the failed dump" || return 1
    expect_untouched "$PID" || return 1
    expect_pass "$D/img/dump.log"
}

# A server whose disk is full (a 4 MiB tmpfs; 64 MiB sent): the server
# fails, so does the dump; the tree runs on, the server leaves no pages file.
t_ps_disk_full() {
    need_cr || return
    local port
    port=$(ps_port)
    mkdir -p "$D/full"
    mount -t tmpfs -o size=4m crust-ps-full "$D/full" || { skip "cannot mount a tmpfs"; return 2; }
    ps_server "$CRUST" "$D/full" "$port" || { umount "$D/full"; return 1; }
    start_prog bigmem --mb 64 || { umount "$D/full"; return 1; }
    mkdir -p "$D/img"
    proc_snapshot "$PID" >"$D/before"
    crust_run dump dump -t "$PID" -D "$D/img" -v4 -o dump.log --page-server --address 127.0.0.1 --port "$port"
    local ok=0
    expect_error dump "$D/img/dump.log" && grep -qi "page server" "$D/dump.err" &&
        expect_same_proc "$PID" "$D/before" "the failed dump" && expect_untouched "$PID" && ok=1
    wait_rc "$SPID" 10
    local src=$RC
    grep -qi "no space\|os error 28" "$D/ps-full.err" || { [ $ok = 1 ] && fail "the server does not say the disk is full: $(head -c 300 "$D/ps-full.err")"; ok=0; }
    ls "$D/full"/pages-*.img >/dev/null 2>&1 && { [ $ok = 1 ] && fail "a pages file was left on the full disk"; ok=0; }
    umount "$D/full"
    [ $ok = 1 ] || return 1
    [ "$src" != 0 ] || { fail "the page server exited 0 on a full disk"; return 1; }
    expect_pass "$D/img/dump.log"
}
ALL_TESTS+=(ps-no-server ps-server-killed ps-disk-full)
