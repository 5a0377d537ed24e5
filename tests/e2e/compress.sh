# Compressed image sets (issue 16, `--compress`, mem/zpages.rs).
# Sourced by run.sh: uses its helpers (and predump.sh's) and adds its tests
# to ALL_TESTS.

# zdump NAME IMG ARGS...: crust dump or pre-dump (ARGS) into IMG; checks rc,
# that the pages went to crust-zpages-*.img (no pages-*.img) and crit on
# the CRIU images.
zdump() {
    local name=$1 img=$2
    shift 2
    mkdir -p "$img"
    crust_run "$name" "$@" -t "$PID" -D "$img" -v4 -o "$name.log"
    [ $RC = 0 ] || { fail "$name exited $RC: $(head -c 300 "$D/$name.err")" "$img/$name.log"; return 1; }
    ls "$img"/crust-zpages-*.img >/dev/null 2>&1 || { fail "$name wrote no crust-zpages-*.img" "$img/$name.log"; return 1; }
    ls "$img"/pages-*.img >/dev/null 2>&1 && { fail "$name wrote a plain pages-*.img" "$img/$name.log"; return 1; }
    crit_fast "$img"
}

# 64 MiB of compressible memory (one random byte a word) dumped with
# --compress (lz4): the pages file is under half the memory; crust
# restores it and the checksum holds.
t_compress_bigmem() {
    need_crust || return 1
    start_prog bigmem --mb 64 --mask 255 || return 1
    zdump dump "$D/img" dump --compress || return 1
    wait_gone "$PID" 5 || { fail "the task lives on after the dump"; return 1; }
    local z
    z=$(cat "$D/img"/crust-zpages-*.img | wc -c)
    echo "    64 MiB (+ sparse 4 MiB) stored in $((z >> 10)) KiB" >&2
    [ "$z" -lt $((32 << 20)) ] || { fail "the compressed pages take $z bytes" "$D/img/dump.log"; return 1; }
    do_restore "$D/img" || return 1
    expect_pass "$D/img/restore.log"
}

# dump -R --compress: the pre-copy moves plain pages files, so a
# compressed snapshot takes the fallback (protected while frozen, copied
# after the thaw); the task runs on, and the set restores.
t_compress_snapshot() {
    need_crust || return 1
    start_prog bigmem --mb 64 --mask 255 || return 1
    zdump dump "$D/img" dump -R --compress || return 1
    kill -0 "$PID" 2>/dev/null || { fail "the task died with dump -R"; return 1; }
    grep -q 'pre-copied pages' "$D/img/dump.log" && { fail "a compressed set took the pre-copy" "$D/img/dump.log"; return 1; }
    kill_tree "$PID" "$BIN/bigmem"
    wait_gone "$PID" 5 || { fail "the task lives on after SIGKILL"; return 1; }
    do_restore "$D/img" || return 1
    expect_pass "$D/img/restore.log"
}

# pre-dump --compress -> pre-dump (plain) -> dump --compress=zstd of
# dirtymem: a chain mixing both kinds of set; `crust dedup` punches the
# plain set and leaves the compressed ones whole; crust restores it.
t_compress_chain() {
    need_crust || return 1
    start_prog dirtymem --mb 64 --dirty-mb 4 --step "$D/step" || return 1
    zdump pd1 "$D/i1" pre-dump --compress || return 1
    predump_step 1 || return 1
    mkdir -p "$D/i2"
    crust_run pd2 pre-dump -t "$PID" -D "$D/i2" --prev-images-dir ../i1 -v4 -o pd2.log
    [ $RC = 0 ] || { fail "pre-dump 2 exited $RC: $(head -c 300 "$D/pd2.err")" "$D/i2/pd2.log"; return 1; }
    predump_step 2 || return 1
    zdump d3 "$D/i3" dump --prev-images-dir ../i2 --compress=zstd:3 || return 1
    wait_gone "$PID" 5 || { fail "the task lives on after the dump"; return 1; }
    sleep 0.3
    [ -z "$(keepers)" ] || { fail "a keeper is left after the final dump: $(keepers)"; return 1; }
    crust_run dedup dedup -D "$D/i3"
    [ $RC = 0 ] || { fail "dedup exited $RC: $(head -c 300 "$D/dedup.err")"; return 1; }
    do_restore "$D/i3" || return 1
    expect_pass "$D/i3/restore.log"
}

# CRIU 4.2 refuses a compressed set (no pages-N.img) and restores nothing;
# crust then restores it. --compress is refused where it cannot apply.
t_compress_criu_refuses() {
    need_crust || return 1
    local criu
    criu=$(criu_bin) && [ -x "$criu" ] || { skip "no CRIU 4.2 (../shared/criu/build.sh or CRIU_BIN)"; return 2; }
    start_prog bigmem --mb 16 --mask 255 || return 1
    crust_run bad1 restore -D "$D/img" --compress
    [ $RC != 0 ] && grep -q 'dump and pre-dump option' "$D/bad1.err" ||
        { fail "restore --compress was not refused: $(head -c 300 "$D/bad1.err")"; return 1; }
    crust_run bad2 dump -t "$PID" -D "$D" --compress --page-server --port 1
    [ $RC != 0 ] && grep -q 'not supported' "$D/bad2.err" ||
        { fail "dump --compress --page-server was not refused: $(head -c 300 "$D/bad2.err")"; return 1; }
    crust_run bad3 dump -t "$PID" -D "$D" --compress=gzip
    [ $RC != 0 ] && grep -q 'give lz4, zstd' "$D/bad3.err" ||
        { fail "--compress=gzip was not refused: $(head -c 300 "$D/bad3.err")"; return 1; }
    zdump dump "$D/img" dump --compress=zstd || return 1
    wait_gone "$PID" 5 || { fail "the task lives on after the dump"; return 1; }
    (cd "$D" && timeout 60 "$criu" restore -D "$D/img" -d -v4 -o criu.log --pidfile "$D/criu.pid") \
        >"$D/criu.out" 2>&1 && { fail "CRIU 4.2 restored a compressed set" "$D/img/criu.log"; return 1; }
    grep -q 'No pages-[0-9]*.img' "$D/img/criu.log" || { fail "CRIU's log does not name the missing pages file" "$D/img/criu.log"; return 1; }
    wait_gone "$PID" 5 || { fail "pid $PID lives on after CRIU's failed restore" "$D/img/criu.log"; return 1; }
    do_restore "$D/img" || return 1
    expect_pass "$D/img/restore.log"
}

# A compressed set restored with --lazy-pages: the daemon serves the
# pages decompressed (lazy.sh's helpers).
t_compress_lazy() {
    need_cr || return $?
    start_prog bigmem --mb 64 --mask 255 || return 1
    zdump dump "$D/img" dump --compress=zstd || return 1
    wait_gone "$PID" 5 || { fail "the task lives on after the dump"; return 1; }
    lazy_daemon "$D/img" || return 1
    do_restore "$D/img" "" --lazy-pages || return 1
    lazy_wait_done "$D/img" 20 || return 1
    expect_pass "$D/img/restore.log"
}

ALL_TESTS+=(compress-bigmem compress-snapshot compress-chain compress-criu-refuses compress-lazy)
