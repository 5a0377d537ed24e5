# Hugetlb memfds (zdtm's memfd02-hugetlb, issue 12): made with MFD_HUGETLB,
# open as an fd and mapped shared and private, or mapped alone; dumped and
# restored by crust, and across crust and CRIU 4.2 both ways.
# Sourced by run.sh (after shared.sh: criu_bin, cr_from_criu).
#
# The program needs free huge pages of the default size: a test that finds
# too few raises vm.nr_hugepages for itself and puts the old value back
# after, pass or fail (and on exit, if the run is cut short), unless someone
# else changed it meanwhile.

HUGETLB_PAGES=${E2E_HUGETLB_PAGES:-8}  # hugememfd uses at most 6
HUGETLB_SET=""     # "old new" while this file has raised vm.nr_hugepages

hugetlb_free() { awk '/^HugePages_Free:/ {print $2}' /proc/meminfo; }

# Have HUGETLB_PAGES free huge pages, raising vm.nr_hugepages if need be.
hugetlb_need() {
    local free old want
    free=$(hugetlb_free)
    [ "${free:-0}" -ge "$HUGETLB_PAGES" ] && return 0
    old=$(cat /proc/sys/vm/nr_hugepages) || { skip "cannot read vm.nr_hugepages"; return 2; }
    want=$((old + HUGETLB_PAGES - ${free:-0}))
    echo "$want" >/proc/sys/vm/nr_hugepages 2>/dev/null
    HUGETLB_SET="$old $want"
    free=$(hugetlb_free)
    [ "${free:-0}" -ge "$HUGETLB_PAGES" ] ||
        { skip "only ${free:-0} free huge pages with vm.nr_hugepages $want (need $HUGETLB_PAGES)"; return 2; }
}

# Put vm.nr_hugepages back if this file raised it and nobody changed it since.
hugetlb_put_back() {
    [ -n "$HUGETLB_SET" ] || return 0
    local old=${HUGETLB_SET% *} want=${HUGETLB_SET#* }
    [ "$(cat /proc/sys/vm/nr_hugepages 2>/dev/null)" = "$want" ] &&
        echo "$old" >/proc/sys/vm/nr_hugepages 2>/dev/null
    HUGETLB_SET=""
}

# A run cut short puts it back too (before run.sh's own cleanup).
HUGETLB_PREV_EXIT=$(trap -p EXIT | sed "s/^trap -- '\(.*\)' EXIT\$/\1/")
trap 'hugetlb_put_back; eval "$HUGETLB_PREV_EXIT"' EXIT

# hugetlb_run FN PROG [ARGS...]: FN PROG ARGS with the huge pages PROG
# needs; PROG killed and vm.nr_hugepages put back after.
hugetlb_run() {
    local rc
    need_cr || return $?
    hugetlb_need || { rc=$?; hugetlb_put_back; return $rc; }
    "$@"
    rc=$?
    [ -n "${PID:-}" ] && kill_tree "$PID" "$BIN/$2"
    wait_gone "${PID:-0}" 5 >/dev/null 2>&1
    hugetlb_put_back
    return $rc
}

t_hugememfd() { hugetlb_run cr_test hugememfd; }

# Dumped by CRIU 4.2, restored by crust.
t_hugememfd_criu() { hugetlb_run cr_from_criu hugememfd; }

# Dumped by crust, restored by CRIU 4.2: hugetlb_to_criu PROG [ARGS...].
hugetlb_to_criu() {
    local criu
    criu=$(criu_bin) && [ -x "$criu" ] || { skip "no CRIU 4.2 (../shared/criu/build.sh or CRIU_BIN)"; return 2; }
    start_prog "$@" || return 1
    do_dump "$D/img" || return 1
    criu_restore_as_dumped "$criu" || return 1
    expect_pass "$D/img/restore.log"
}
t_hugememfd_to_criu() { hugetlb_run hugetlb_to_criu hugememfd; }

# Anonymous hugetlb memory (memkinds' private and shared huge pages, with
# the huge pages it needs) across CRIU 4.2 both ways: shared, it is a memfd
# named "/anon_hugepage" with a hugetlb_flag in memfd.img, as CRIU writes it.
t_memkinds_criu() { hugetlb_run cr_from_criu memkinds; }
t_memkinds_to_criu() { hugetlb_run hugetlb_to_criu memkinds; }

ALL_TESTS+=(hugememfd hugememfd-criu hugememfd-to-criu memkinds-criu memkinds-to-criu)
