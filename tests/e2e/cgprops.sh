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

ALL_TESTS+=(cgprops-bad-text cgprops-bad-file)
