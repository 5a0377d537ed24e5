# Transparent huge pages (issue 16): memory huge pages backed at dump comes
# back backed by huge pages, memory that was not stays in 4 KiB pages.
# Sourced by run.sh (after shared.sh: criu_bin).

# SKIP unless the kernel gives huge pages to MADV_HUGEPAGE memory.
thp_usable() {
    local mode
    mode=$(cat /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null) ||
        { skip "no transparent huge pages in this kernel"; return 2; }
    case $mode in *"[never]"*) skip "transparent huge pages are off (enabled=never)"; return 2 ;; esac
    return 0
}

# The program's two readings of smaps (before the dump, after the restore),
# to the test's output.
thp_report() {
    [ -f "$D/report" ] && sed 's/^/    /' "$D/report" >&2
    return 0
}

# thpmem (64 MiB with MADV_HUGEPAGE, 4 MiB of it partly present; 16 MiB
# without advice): crust-thp-PID.img lists where huge pages were; after
# crust's restore at least 7/8 of the huge pages are back, the plain
# region has none, the region's Rss did not grow, every word checks out.
t_thp() {
    need_cr || return $?
    thp_usable || return $?
    thp_cr "advised MADV_HUGEPAGE for the fill" "the restore did not advise the huge ranges"
}

# thpmem ARGS... dumped and restored by crust: crust-thp-PID.img written,
# the restore log has LINE (else: fail with WHY), the program passes.
thp_cr() {
    local line=$1 why=$2
    shift 2
    start_prog thpmem "$@" --report "$D/report" || return 1
    do_dump "$D/img" || return 1
    [ -s "$D/img/crust-thp-$PID.img" ] ||
        { fail "no crust-thp-$PID.img in the images" "$D/img/dump.log"; return 1; }
    do_restore "$D/img" || return 1
    grep -q "$line" "$D/img/restore.log" || { fail "$why" "$D/img/restore.log"; return 1; }
    expect_pass "$D/img/restore.log"
    local rc=$?
    thp_report
    return $rc
}

# The same dumped by crust, restored by CRIU 4.2: CRIU never opens
# crust-thp-N.img and fills 4 KiB pages (the program checks only the
# contents, that the plain region has no huge pages and that nothing grew).
t_thp_to_criu() {
    local criu
    need_cr || return $?
    thp_usable || return $?
    criu=$(criu_bin) && [ -x "$criu" ] || { skip "no CRIU 4.2 (../shared/criu/build.sh or CRIU_BIN)"; return 2; }
    start_prog thpmem --expect-huge 0 --report "$D/report" || return 1
    do_dump "$D/img" || return 1
    criu_restore_as_dumped "$criu" || return 1
    expect_pass "$D/img/restore.log"
    local rc=$?
    thp_report
    return $rc
}

# pre-dump, then dump --prev-images-dir: the pages come from both sets,
# the huge ranges from the final one; crust's restore brings them back.
t_thp_chain() {
    need_cr || return $?
    thp_usable || return $?
    start_prog thpmem --report "$D/report" || return 1
    mkdir -p "$D/i1" "$D/i2"
    crust_run pd1 pre-dump -t "$PID" -D "$D/i1" -v4 -o pd.log
    [ $RC = 0 ] || { fail "pre-dump exited $RC: $(head -c 300 "$D/pd1.err")" "$D/i1/pd.log"; return 1; }
    do_dump "$D/i2" --prev-images-dir ../i1 || return 1
    [ -s "$D/i2/crust-thp-$PID.img" ] ||
        { fail "no crust-thp-$PID.img in the final set" "$D/i2/dump.log"; return 1; }
    do_restore "$D/i2" || return 1
    expect_pass "$D/i2/restore.log"
    local rc=$?
    thp_report
    return $rc
}

# The system's mode `always` (set for the test, set back after, pass or
# fail): every region may get huge pages without advice, and any first
# write into a fresh 2 MiB piece makes one. What was huge at dump (the
# advised region and the plain one) comes back huge; the partly present
# range (written while the program had THP disabled) stays in 4 KiB pages.
t_thp_always() {
    local knob=/sys/kernel/mm/transparent_hugepage/enabled old rc
    need_cr || return $?
    thp_usable || return $?
    old=$(sed -n 's/.*\[\(.*\)\].*/\1/p' "$knob")
    echo always >"$knob" || { fail "cannot set $knob to always"; return 1; }
    thp_always_body
    rc=$?
    echo "$old" >"$knob"
    return $rc
}

thp_always_body() {
    thp_cr "filled first, with huge pages allowed" "the restore did not fill the huge ranges first" --always 1
}

ALL_TESTS+=(thp thp-to-criu thp-chain thp-always)
