# Tracking written pages without soft-dirty (issue 15, mem/track.rs).
# Sourced by run.sh: uses its helpers and adds its tests to ALL_TESTS.

# `check --feature mem_dirty_track`: "no" (crust has no pre-dump yet, as
# callers such as runc must be told), with the reason naming what the
# kernel's probe found: this kernel (6.7+) tracks written pages with
# userfaultfd write-protection and PAGEMAP_SCAN.
t_track_check_feature() {
    need_crust || return 1
    local rc
    "$CRUST" check --no-default-config --feature mem_dirty_track >"$D/feat.out" 2>"$D/feat.err"
    rc=$?
    [ $rc = 1 ] || { fail "check --feature mem_dirty_track exited $rc, not 1"; return 1; }
    [ -s "$D/feat.out" ] && { fail "a 'no' printed '$(head -c 200 "$D/feat.out")' on stdout"; return 1; }
    grep -q "no incremental dumps.*(this kernel has what it needs)" "$D/feat.err" ||
        { fail "the reason does not say the kernel can track: $(head -c 300 "$D/feat.err")"; return 1; }
    return 0
}

ALL_TESTS+=(track-check-feature)
