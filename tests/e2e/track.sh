# Tracking written pages without soft-dirty (issue 15, mem/track.rs).
# Sourced by run.sh: uses its helpers and adds its tests to ALL_TESTS.

# `check --feature mem_dirty_track`: "yes" (pre-dump exists): this kernel
# (6.7+) tracks written pages with userfaultfd write-protection and
# PAGEMAP_SCAN, where CRIU needs soft-dirty.
t_track_check_feature() {
    need_crust || return 1
    local rc
    "$CRUST" check --no-default-config --feature mem_dirty_track >"$D/feat.out" 2>"$D/feat.err"
    rc=$?
    [ $rc = 0 ] || { fail "check --feature mem_dirty_track exited $rc, not 0: $(head -c 300 "$D/feat.err")"; return 1; }
    grep -qx "mem_dirty_track is supported" "$D/feat.out" ||
        { fail "it printed '$(head -c 200 "$D/feat.out")'"; return 1; }
    return 0
}

ALL_TESTS+=(track-check-feature)
