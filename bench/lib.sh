# Helpers shared by the bench scripts (sourced, after ROOT is set).

# The pids whose whole trees kill_all kills.
ROOTS=()

# descendants, exe_of, kill_tree.
# shellcheck source=../tests/lib/proc.sh
. "$ROOT/tests/lib/proc.sh"

# SIGKILL every tree of ROOTS (descendants first), then forget them.
kill_all() {
    local r p
    for r in "${ROOTS[@]}"; do
        for p in $(descendants "$r") "$r"; do kill -KILL "$p" 2>/dev/null || true; done
    done
    ROOTS=()
}
