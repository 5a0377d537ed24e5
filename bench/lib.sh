# Helpers shared by the bench scripts (sourced, after ROOT is set).

# The pids whose whole trees kill_all kills.
ROOTS=()

# Every descendant of $1, deepest last.
descendants() {
    local c
    for c in $(cat /proc/"$1"/task/*/children 2>/dev/null); do
        echo "$c"
        descendants "$c"
    done
}

# SIGKILL every tree of ROOTS (descendants first), then forget them.
kill_all() {
    local r p
    for r in "${ROOTS[@]}"; do
        for p in $(descendants "$r") "$r"; do kill -KILL "$p" 2>/dev/null || true; done
    done
    ROOTS=()
}
