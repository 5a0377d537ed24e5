# Image tools of issue 17: `crust image x` (crit x), `crust image verify`,
# `crust image diff`. Sourced by run.sh: uses its helpers and adds its
# tests to ALL_TESTS.

# CRIU 4.2's crit (its source snapshot's crit and lib/pycriu, with
# Debian's python3-protobuf): prints the command prefix, or fails.
crit42() {
    local bin src
    bin=${CRIU_BIN:-$(criu_bin)} || return 1
    src=$(dirname "$(dirname "$bin")")
    [ -d "$src/crit/crit" ] && [ -d "$src/lib/pycriu" ] || return 1
    echo "$src"
}

# x_compare DIR NAME: crust image x and CRIU 4.2's crit x agree on DIR for
# ps, fds, mems and rss. Where crit fails (a zombie: it has no ids- or mm-
# image), what crit printed before failing is how crust's output starts,
# and crust prints the zombie as "(zombie)". Sets XBAD.
x_compare() {
    local dir=$1 name=$2 w rc
    for w in ps fds mems rss; do
        (cd "$D" && PYTHONPATH=$CRIT42/lib:$CRIT42/crit timeout 60 "$PY" -m crit x "$dir" $w) \
            >"$D/crit-$name-$w.out" 2>"$D/crit-$name-$w.err"
        rc=$?
        "$CRUST" image x "$dir" $w >"$D/crust-$name-$w.out" 2>"$D/crust-$name-$w.err" ||
            { XBAD+=" $name/$w(crust failed: $(head -c 200 "$D/crust-$name-$w.err"))"; continue; }
        if [ $rc = 0 ]; then
            cmp -s "$D/crit-$name-$w.out" "$D/crust-$name-$w.out" || XBAD+=" $name/$w"
        else
            grep -q "No such file or directory: .*/\(ids\|mm\)-[0-9]*\.img" "$D/crit-$name-$w.err" ||
                { XBAD+=" $name/$w(crit failed: $(tail -n 1 "$D/crit-$name-$w.err"))"; continue; }
            local n
            n=$(wc -c <"$D/crit-$name-$w.out")
            [ "$(head -c "$n" "$D/crust-$name-$w.out")" = "$(cat "$D/crit-$name-$w.out")" ] ||
                XBAD+=" $name/$w(prefix)"
            grep -qx $'\t(zombie)' "$D/crust-$name-$w.out" || XBAD+=" $name/$w(no zombie line)"
        fi
    done
}

# crust image x prints what CRIU 4.2's crit x prints, on every golden set
# and on crust's dumps of loop, threads and unixsk.
t_crit_x() {
    need_cr || return $?
    CRIT42=$(crit42) || { skip "no CRIU 4.2 source snapshot with crit (../shared/criu/build.sh or CRIU_BIN)"; return 2; }
    "$PY" -c "import google.protobuf" 2>/dev/null || { skip "no python3-protobuf"; return 2; }
    XBAD=""
    local g
    for g in "$GOLDEN_SRC"/*/; do
        [ -f "$g/pstree.img" ] || continue
        g=${g%/}
        x_compare "$g" "golden-${g##*/}"
    done
    # The golden tree has a zombie (1169): crust says so, and goes on.
    grep -A1 -x 1169 "$D/crust-golden-tree-fds.out" | grep -qx $'\t(zombie)' ||
        XBAD+=" golden-tree(1169 not a zombie)"
    [ "$(grep -c '^[0-9]' "$D/crust-golden-tree-mems.out")" = 5 ] || XBAD+=" golden-tree(not 5 processes)"
    start_prog loop || return 1
    do_dump "$D/loop" || return 1
    x_compare "$D/loop" loop
    start_prog threads || return 1
    do_dump "$D/threads" || return 1
    x_compare "$D/threads" threads
    mkdir -p "$D/usk"
    start_prog unixsk --mode all --dir "$D/usk" || return 1
    do_dump "$D/unixsk" || return 1
    x_compare "$D/unixsk" unixsk
    grep -q 'unix\[.* .*sock' "$D/crust-unixsk-fds.out" || XBAD+=" unixsk(no socket name)"
    [ -z "$XBAD" ] || { fail "crust image x differs from crit x on:$XBAD (see $D)"; return 1; }
}

# crust image verify passes a set that restores, fails (naming the reason)
# on a set with a missing pages file, a short pages file, and while the tree's pid is taken; the good set then restores.
t_image_verify() {
    need_cr || return $?
    start_prog loop || return 1
    do_dump "$D/img" || return 1
    crust_run v0 image verify "$D/img"
    [ $RC = 0 ] || { fail "verify of a good set exited $RC: $(head -c 300 "$D/v0.out")"; return 1; }
    grep -q "^checked memory: .* VMA" "$D/v0.out" && grep -q "would restore" "$D/v0.out" ||
        { fail "verify did not say what it checked: $(head -c 300 "$D/v0.out")"; return 1; }
    local p
    p=$(ls "$D/img"/pages-*.img | head -n 1)
    mkdir -p "$D/bad"
    mv "$p" "$D/bad/"
    crust_run v1 image verify "$D/img"
    [ $RC = 1 ] && grep -q "would NOT restore.*${p##*/}" "$D/v1.out" ||
        { fail "verify without ${p##*/} exited $RC: $(head -c 300 "$D/v1.out")"; return 1; }
    head -c 4096 "$D/bad/${p##*/}" >"$p"
    crust_run v2 image verify "$D/img"
    [ $RC = 1 ] && grep -q "would NOT restore" "$D/v2.out" ||
        { fail "verify of a short ${p##*/} exited $RC: $(head -c 300 "$D/v2.out")"; return 1; }
    mv "$D/bad/${p##*/}" "$p"
    do_restore "$D/img" || return 1
    crust_run v4 image verify "$D/img"
    [ $RC = 1 ] && grep -q "would NOT restore.*$PID" "$D/v4.out" ||
        { fail "verify while pid $PID runs exited $RC: $(head -c 300 "$D/v4.out")"; return 1; }
    expect_pass "$D/img/restore.log"
}

# crust image diff of two pre-dumps of dirtymem: inside its memory, the
# pages reported changed are exactly those it rewrote between them. Then
# image verify of the chain's final dump, with and without its first set.
t_image_diff() {
    need_cr || return $?
    start_prog dirtymem --mb 16 --dirty-mb 1 --step "$D/step" --written "$D/written" || return 1
    predump_pair || return 1
    crust_run same image diff "$D/i1" "$D/i1"
    [ $RC = 0 ] && grep -q "no differences" "$D/same.out" ||
        { fail "diff of a set with itself exited $RC: $(head -c 300 "$D/same.out")"; return 1; }
    crust_run diff image diff "$D/i1" "$D/i2" --json
    [ $RC = 1 ] || { fail "diff of the chain exited $RC: $(head -c 300 "$D/diff.err")"; return 1; }
    crust_run difft image diff "$D/i1" "$D/i2"
    grep -q "pages changed: " "$D/difft.out" || { fail "the text diff names no changed pages: $(head -c 300 "$D/difft.out")"; return 1; }
    local got
    got=$("$PY" - "$D/diff.out" "$D/written" "$PID" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
base, n = open(sys.argv[2]).readline().split()
base, n = int(base, 16), int(n)
want = {int(p) for p in open(sys.argv[2]).read().split("\n")[1].split()}
procs = [p for p in d["processes"] if p["pid"] == int(sys.argv[3])]
if not procs:
    print("no process %s in the diff" % sys.argv[3]); sys.exit()
got = set()
for s, e in procs[0]["pages"]["changed"]["ranges"]:
    for va in range(int(s, 16), int(e, 16), 4096):
        if base <= va < base + n * 4096:
            got.add((va - base) // 4096)
if got != want:
    print("changed %d pages, wrote %d; missing %s, extra %s" % (
        len(got), len(want), sorted(want - got)[:5], sorted(got - want)[:5]))
else:
    print("ok %d" % len(got))
EOF
)
    case $got in
    ok*) echo "    image diff: $got pages changed, as written" >&2 ;;
    *) fail "image diff: $got"; return 1 ;;
    esac
    # The chain's final dump: verify follows its parents, and refuses it
    # when a parent set is gone; then it restores.
    crust_run d3 dump -t "$PID" -D "$D/i3" --prev-images-dir ../i2 -v4 -o dump.log
    [ $RC = 0 ] || { fail "dump exited $RC: $(head -c 300 "$D/d3.err")" "$D/i3/dump.log"; return 1; }
    wait_gone "$PID" 5 || { fail "dirtymem lives on after the dump"; return 1; }
    crust_run v3 image verify "$D/i3"
    [ $RC = 0 ] && grep -q "^checked parent image set" "$D/v3.out" ||
        { fail "verify of the chain exited $RC: $(head -c 300 "$D/v3.out")"; return 1; }
    mv "$D/i1" "$D/i1.away"
    crust_run v4 image verify "$D/i3"
    mv "$D/i1.away" "$D/i1"
    [ $RC = 1 ] && grep -q "would NOT restore" "$D/v4.out" ||
        { fail "verify of the chain without i1 exited $RC: $(head -c 300 "$D/v4.out")"; return 1; }
    do_restore "$D/i3" || return 1
    expect_pass "$D/i3/restore.log"
}

# crust image diff of a golden set and a copy with one byte changed in a
# process's pages and one in a shared memory object's: exactly those pages.
t_image_diff_golden() {
    need_crust || return 1
    cp -r "$GOLDEN_SRC/files" "$D/a" && cp -r "$GOLDEN_SRC/files" "$D/b" || { fail "cannot copy the set"; return 1; }
    # pagemap-1514 (pages-3.img): 0x401000 first; shmem 11665 (pages-1.img): page 1.
    printf 'Y' | dd of="$D/b/pages-3.img" bs=1 seek=0 conv=notrunc 2>/dev/null
    printf 'Z' | dd of="$D/b/pages-1.img" bs=1 seek=4100 conv=notrunc 2>/dev/null
    crust_run gd image diff "$D/a" "$D/b" --json
    [ $RC = 1 ] || { fail "diff exited $RC: $(head -c 300 "$D/gd.err")"; return 1; }
    local got
    got=$("$PY" -c '
import json, sys
d = json.load(open(sys.argv[1]))
p = {x["pid"]: x["pages"]["changed"]["ranges"] for x in d["processes"]}
s = {x["id"]: x["pages"]["changed"]["ranges"] for x in d["shmem"]}
print(p.get(1514), p.get(1517), s)' "$D/gd.out")
    [ "$got" = "[['0x401000', '0x402000']] [] {11665: [['0x1000', '0x2000']]}" ] ||
        { fail "image diff reports $got"; return 1; }
}

ALL_TESTS+=(crit-x image-verify image-diff image-diff-golden)
