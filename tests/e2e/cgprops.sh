# cgroup properties (issue 14): what crust does with --cgroup-props and
# --cgroup-props-file. Sourced by run.sh after refuse.sh: uses its helpers
# (start_prog, refused_dump, expect_untouched, expect_pass, fail...) and
# adds its tests to ALL_TESTS.

# No image was written to $D/img.
cgprops_no_images() {
    local left
    left=$(find "$D/img" -name '*.img' 2>/dev/null | head -3)
    [ -z "$left" ] || { fail "the refused dump left images: $left" "$D/img/dump.log"; return 1; }
}

# A malformed --cgroup-props text (an unknown strategy on line 2): the dump
# is refused before the tree is touched, naming the option and the line;
# the program runs on and passes.
t_cgprops_bad_text() {
    need_cr || return $?
    start_prog loop || return 1
    local text
    text=$(printf '"pids":\n - "strategy": "keep"\n - "properties": ["pids.max"]\n')
    refused_dump dump "cgroup properties of --cgroup-props, line 2: expected .merge. or .replace." \
        -t "$PID" --cgroup-props "$text" || return 1
    cgprops_no_images || return 1
    expect_untouched "$PID" || return 1
    expect_pass "$D/img/dump.log"
}

# A --cgroup-props-file that cannot be read: refused, naming the file.
t_cgprops_bad_file() {
    need_cr || return $?
    start_prog loop || return 1
    refused_dump dump "cgroup properties file $D/nothing-here" \
        -t "$PID" --cgroup-props-file "$D/nothing-here" || return 1
    cgprops_no_images || return 1
    expect_untouched "$PID" || return 1
    expect_pass "$D/img/dump.log"
}

# Move the test's program into cgroup $CGP/a of each v1 hierarchy given
# (CGP_CTLS), made by the test with properties of its own.
cgprops_setup() {
    local c
    CGP=crust-cgprops-$$-$RANDOM
    for c in $CGP_CTLS; do
        [ -f "/sys/fs/cgroup/$c/tasks" ] || { skip "no v1 $c hierarchy at /sys/fs/cgroup/$c"; return 2; }
    done
    for c in $CGP_CTLS; do
        mkdir -p "/sys/fs/cgroup/$c/$CGP/a" || { fail "cannot make cgroup $CGP/a of $c"; return 1; }
    done
}

# Kill the program, remove every cgroup the test made.
cgprops_teardown() {
    local c n
    [ -n "${PID:-}" ] && kill -KILL "$PID" 2>/dev/null && wait_gone "$PID" 5
    for c in $CGP_CTLS; do
        for n in 1 2 3 4 5 6 7 8 9 10; do
            rmdir "/sys/fs/cgroup/$c/$CGP/a" "/sys/fs/cgroup/$c/$CGP" 2>/dev/null
            [ -d "/sys/fs/cgroup/$c/$CGP" ] || break
            sleep 0.2
        done
    done
    return 0
}

# Properties of pids, devices, cpu, memory and cpuset, and the perms of a
# dir and of a file, set on the program's cgroups; dump; the cgroups are
# removed; restore --manage-cgroups=full makes them again with every
# property and perm; the program passes.
cgprops_cr() {
    local c a
    cgprops_setup || return $?
    a() { echo "/sys/fs/cgroup/$1/$CGP/a"; }
    cat /sys/fs/cgroup/cpuset/cpuset.cpus >"/sys/fs/cgroup/cpuset/$CGP/cpuset.cpus" &&
        cat /sys/fs/cgroup/cpuset/cpuset.mems >"/sys/fs/cgroup/cpuset/$CGP/cpuset.mems" &&
        echo 0 >"$(a cpuset)/cpuset.cpus" && echo 0 >"$(a cpuset)/cpuset.mems" &&
        echo 1 >"$(a cpuset)/cpuset.memory_migrate" &&
        echo 42 >"$(a pids)/pids.max" && echo 1 >"$(a pids)/notify_on_release" &&
        chown 1000:1000 "$(a pids)" "$(a pids)/notify_on_release" && chmod 0666 "$(a pids)/notify_on_release" &&
        echo a >"$(a devices)/devices.deny" && echo "c 1:3 rwm" >"$(a devices)/devices.allow" &&
        echo "c 1:5 r" >"$(a devices)/devices.allow" &&
        echo 50000 >"$(a cpu)/cpu.cfs_period_us" && echo 20000 >"$(a cpu)/cpu.cfs_quota_us" &&
        echo 512 >"$(a cpu)/cpu.shares" && echo 268435456 >"$(a memory)/memory.limit_in_bytes" ||
        { fail "cannot set the test's cgroup properties"; return 1; }
    start_prog loop || return 1
    for c in $CGP_CTLS; do
        echo "$PID" >"$(a "$c")/cgroup.procs" || { fail "cannot move $PID into $(a "$c")"; return 1; }
    done
    do_dump "$D/img" --manage-cgroups=full || return 1
    [ -f "$D/img/cgroup.img" ] || { fail "no cgroup.img written" "$D/img/dump.log"; return 1; }
    for c in $CGP_CTLS; do
        rmdir "$(a "$c")" || { fail "cannot remove $(a "$c") after the dump"; return 1; }
    done
    do_restore "$D/img" "" --manage-cgroups=full || return 1
    local want got
    for want in "pids pids.max 42" "pids notify_on_release 1" "cpuset cpuset.cpus 0" "cpuset cpuset.mems 0" \
        "cpuset cpuset.memory_migrate 1" "cpu cpu.cfs_period_us 50000" "cpu cpu.cfs_quota_us 20000" \
        "cpu cpu.shares 512" "memory memory.limit_in_bytes 268435456"; do
        set -- $want
        got=$(cat "$(a "$1")/$2" 2>&1)
        [ "$got" = "$3" ] || { fail "$1 $2 is '$got' after the restore, not '$3'" "$D/img/restore.log"; return 1; }
    done
    got=$(tr '\n' ';' <"$(a devices)/devices.list")
    [ "$got" = "c 1:3 rwm;c 1:5 r;" ] || { fail "devices.list is '$got' after the restore" "$D/img/restore.log"; return 1; }
    got=$(stat -c '%u:%g %a' "$(a pids)" "$(a pids)/notify_on_release" | tr '\n' ';')
    [ "$got" = "1000:1000 755;1000:1000 666;" ] || { fail "the perms are '$got' after the restore" "$D/img/restore.log"; return 1; }
    grep -q "^$(a pids | sed 's|/sys/fs/cgroup/pids||')\$" <(sed -n 's/^[0-9]*:pids://p' "/proc/$PID/cgroup") ||
        { fail "the restored task is not in $(a pids): $(grep pids "/proc/$PID/cgroup")" "$D/img/restore.log"; return 1; }
    expect_pass "$D/img/restore.log"
}
t_cgprops_cr() {
    local rc
    need_cr || return $?
    CGP_CTLS="pids devices cpu memory cpuset"
    cgprops_cr
    rc=$?
    cgprops_teardown
    return $rc
}

# A property value the kernel refuses at restore (pids.max edited to
# "xx" in the image): the restore fails naming the cgroup and the
# property, and removes the cgroup it made.
t_cgprops_refused() {
    local rc
    need_cr || return $?
    CGP_CTLS="pids"
    cgprops_refused
    rc=$?
    cgprops_teardown
    return $rc
}
cgprops_refused() {
    local a
    cgprops_setup || return $?
    a=/sys/fs/cgroup/pids/$CGP/a
    echo 42 >"$a/pids.max" || { fail "cannot set pids.max"; return 1; }
    start_prog loop || return 1
    echo "$PID" >"$a/cgroup.procs" || { fail "cannot move $PID into $a"; return 1; }
    do_dump "$D/img" --manage-cgroups=full || return 1
    rmdir "$a" || { fail "cannot remove $a after the dump"; return 1; }
    # pids.max "42" becomes "xx" (same length: the framing stays right).
    "$PY" -c '
import sys
p = sys.argv[1]
b = open(p, "rb").read()
old = b"\x0a\x08pids.max\x12\x0242"
assert b.count(old) == 1, "pids.max 42 not found once"
open(p, "wb").write(b.replace(old, b"\x0a\x08pids.max\x12\x02xx"))
' "$D/img/cgroup.img" 2>"$D/edit.err" || { fail "cannot edit cgroup.img: $(tail -c 200 "$D/edit.err")"; return 1; }
    crust_run restore restore -D "$D/img" -d -v4 -o restore.log --manage-cgroups=full
    [ "$RC" -ne 0 ] || { fail "the restore of a refused pids.max succeeded" "$D/img/restore.log"; return 1; }
    grep -q "pids.max" "$D/restore.err" && grep -q "$CGP/a" "$D/restore.err" ||
        { fail "the error does not name the cgroup and pids.max: $(head -c 300 "$D/restore.err")" "$D/img/restore.log"; return 1; }
    [ -d "$a" ] && { fail "the failed restore left $a behind" "$D/img/restore.log"; return 1; }
    return 0
}

ALL_TESTS+=(cgprops-bad-text cgprops-bad-file cgprops-cr cgprops-refused)
