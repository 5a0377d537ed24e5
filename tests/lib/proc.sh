# Process helpers shared by the test and bench scripts (sourced; bash).

# The executable of PID, without the " (deleted)" of a replaced binary.
exe_of() { readlink "/proc/$1/exe" 2>/dev/null | sed 's/ (deleted)$//'; }

# Every descendant of PID, depth first (parents before their children).
descendants() {
    local c
    for c in $(cat /proc/"$1"/task/*/children 2>/dev/null); do
        echo "$c"
        descendants "$c"
    done
}

# SIGKILL PID and every descendant that still runs EXE (a pid recycled
# by another program is left alone).
kill_tree() {
    local pid=$1 exe=$2 p
    [ -e "/proc/$pid" ] || return 0
    [ "$(exe_of "$pid")" = "$exe" ] || return 0
    for p in $(descendants "$pid") "$pid"; do
        [ "$(exe_of "$p")" = "$exe" ] && kill -KILL "$p" 2>/dev/null
    done
    return 0
}

# Remove the network-lock rules (iptables and ip6tables) a failed dump
# with --tcp-established may have left for PORT.
unlock_port() {
    local p=$1 t r
    [ -n "$p" ] || return 0
    for t in iptables ip6tables; do
        $t -w -S 2>/dev/null | grep -iE 'c114|CRIU' | grep -E -- "--(s|d)port $p( |$)" | sed 's/^-A /-D /' |
            while read -r r; do
                # shellcheck disable=SC2086
                $t -w $r 2>/dev/null
            done
    done
    return 0
}
