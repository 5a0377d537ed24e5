# Files and memory of a tree in pid and mount namespaces of its own, as
# zdtm's ns flavor runs them (issue 13): what the restore gives the tasks
# (their /proc is their pid namespace's, without crust), ghosts and link
# remaps made in the tree's mounts, inotify watches on paths of them.
# Sourced by run.sh: uses its helpers (and ns-mnt.sh's) and adds its tests
# to ALL_TESTS.

# Start nsfiles as the init of a pid namespace of its own; sets PID to it.
nsfiles_start() {
    mkdir -p "$D/dir"
    rm -f "$D/ready" "$D/result"
    local outer inner c
    outer=$(setsid unshare -p -f "$BIN/nsfiles" --dir "$D/dir" --ready "$D/ready" --result "$D/result" \
        </dev/null >/dev/null 2>&1 & echo $!)
    track "$outer" "$(readlink -f "$(command -v unshare)")"
    wait_file "$D/ready" "$READY_TIMEOUT" || { fail "nsfiles did not become ready"; return 1; }
    rm -f "$D/ready"
    inner=$(cat /proc/"$outer"/task/*/children 2>/dev/null | awk '{print $1; exit}')
    [ -n "$inner" ] || { fail "no init under unshare $outer"; return 1; }
    track "$inner" "$BIN/nsfiles"
    for c in $(cat /proc/"$inner"/task/*/children 2>/dev/null); do track "$c" "$BIN/nsfiles"; done
    PID=$inner
}

# nsfiles: a mapped deleted file, a link remap in a deleted directory, two
# inotify watches, a mapped memfd and anonymous shared memory with its
# child, all in its tmpfs and namespaces: dump (--link-remap), kill,
# restore into new namespaces; the program checks each still works.
t_nsfiles_cr() {
    need_cr || return $?
    nsfiles_start || return 1
    do_dump "$D/img" --external 'mnt[/dev]:dev' --link-remap || return 1
    grep -q "linked back as $D/dir/t/link_remap" "$D/img/dump.log" ||
        { fail "the deleted t/sub/f was not linked back in t (its directory is gone)" "$D/img/dump.log"; return 1; }
    rm -f "$D/pidfile"
    crust_run restore restore -D "$D/img" -d --pidfile "$D/pidfile" -v4 -o restore.log --external 'mnt[dev]:/dev'
    [ $RC -eq 0 ] || { fail "restore exited with $RC: $(head -c 300 "$D/restore.err")" "$D/img/restore.log"; return 1; }
    PID=$(cat "$D/pidfile")
    track "$PID" "$BIN/nsfiles"
    local c
    for c in $(cat /proc/"$PID"/task/*/children 2>/dev/null); do track "$c" "$BIN/nsfiles"; done
    grep -q "^NSpid:.*[[:space:]]1$" /proc/"$PID"/status 2>/dev/null ||
        { fail "restored $PID is not pid 1 of a new namespace" "$D/img/restore.log"; return 1; }
    ls "$D/dir/t"/link_remap.* >/dev/null 2>&1 && { fail "a link remap file is in crust's namespace"; return 1; }
    mnt_no_yard "$D/img/restore.log" || return 1
    expect_pass "$D/img/restore.log"
}

ALL_TESTS+=(nsfiles-cr)

# sysvshm --huge 1: a System V segment made with SHM_HUGETLB (zdtm's
# shm-hugetlb), attached and filled: its contents and hugetlb_flag are
# dumped, and it is made again with huge pages and attached at its place.
# Needs free huge pages (hugetlb.sh's hugetlb_need raises vm.nr_hugepages
# for the test and puts it back).
sysvshm_huge_cr() {
    start_prog sysvshm --huge 1 || return 1
    do_dump "$D/img" || return 1
    "$CRUST" image decode -i "$(ls "$D/img"/ipcns-shm-*.img | head -1)" 2>&1 | grep -q '"hugetlb_flag"' ||
        { fail "no hugetlb_flag in ipcns-shm-*.img" "$D/img/dump.log"; return 1; }
    do_restore "$D/img" || return 1
    expect_pass "$D/img/restore.log"
}
t_sysvshm_hugetlb() { hugetlb_run sysvshm_huge_cr sysvshm; }

ALL_TESTS+=(sysvshm-hugetlb)
