# The images directory is not trusted (issue 10, part 2): crust never writes
# through a symlink or into a file it did not create, writes its files 0600,
# reads no image another user could have planted (unless
# --allow-unsafe-images-dir),
# and a failed dump leaves no images behind.
# Sourced by run.sh.

# The image files in IMG (everything but the logs and NAMES given), one a line.
trust_images_in() {
    local img=$1 f n keep
    shift
    for f in "$img"/* "$img"/.[!.]*; do
        [ -e "$f" ] || [ -L "$f" ] || continue
        n=${f##*/}
        case $n in *.log) continue ;; esac
        for keep in "$@"; do [ "$n" = "$keep" ] && continue 2; done
        printf '%s\n' "$n"
    done
}

# trust_refused NAME: the dump of PID into $D/img with `-o dump.log` fails
# naming NAME; the victim file keeps its content; the tree runs on untouched
# and no image stays behind (but NAME itself).
trust_refused() {
    local name=$1 left
    shift
    proc_snapshot "$PID" >"$D/before"
    crust_run dump dump -t "$PID" -D "$D/img" -v4 -o dump.log "$@"
    expect_error dump "$D/img/dump.log" || return 1
    grep -q -- "$name" "$D/dump.err" ||
        { fail "the message does not name $name: $(head -c 300 "$D/dump.err")" "$D/img/dump.log"; return 1; }
    [ "$(cat "$D/victim")" = precious ] || { fail "the file behind $name was written: $(head -c 100 "$D/victim")" "$D/img/dump.log"; return 1; }
    expect_same_proc "$PID" "$D/before" "the refused dump" || return 1
    expect_untouched "$PID" || return 1
    left=$(trust_images_in "$D/img" "$name" | tr '\n' ' ')
    [ -z "$left" ] || { fail "the failed dump left files: $left" "$D/img/dump.log"; return 1; }
}

trust_setup() {
    start_prog loop || return 1
    need_crust || return 1
    mkdir -p "$D/img"
    echo precious >"$D/victim"
}

# A symlink planted as the log file: crust does not open the log through it.
t_trust_log_symlink() {
    need_cr || return $?
    trust_setup || return 1
    ln -s "$D/victim" "$D/img/dump.log"
    trust_refused dump.log || return 1
    [ -L "$D/img/dump.log" ] || { fail "the planted link was replaced"; return 1; }
    expect_pass
}
ALL_TESTS+=(trust-log-symlink)

# A symlink planted as pages-1.img (written by the page worker) and as
# inventory.img (written at the end): the dump fails naming it, the target
# is untouched, the tree runs on, the images written so far are removed.
t_trust_image_symlink() {
    need_cr || return $?
    trust_setup || return 1
    local name
    for name in pages-1.img inventory.img; do
        ln -s "$D/victim" "$D/img/$name"
        trust_refused "$name" || return 1
        rm -f "$D/img/$name"
    done
    expect_pass "$D/img/dump.log"
}
ALL_TESTS+=(trust-image-symlink)

# An image name held by a file another user owns (even one crust could write
# as root): refused, the file untouched.
t_trust_foreign_image() {
    need_cr || return $?
    trust_setup || return 1
    cp "$D/victim" "$D/img/pstree.img"
    chmod 0666 "$D/img/pstree.img"
    chown nobody "$D/img/pstree.img" || { skip "cannot chown to nobody"; return 2; }
    trust_refused pstree.img || return 1
    [ "$(cat "$D/img/pstree.img")" = precious ] || { fail "nobody's pstree.img was written"; return 1; }
    expect_pass "$D/img/dump.log"
}
ALL_TESTS+=(trust-foreign-image)

# trust_modes IMG: every file in IMG is a regular file of mode 0600.
trust_modes() {
    local f bad=""
    for f in "$1"/*; do
        [ -f "$f" ] && [ ! -L "$f" ] && [ "$(stat -c %a "$f")" = 600 ] || bad="$bad ${f##*/}($(stat -c %A "$f"))"
    done
    [ -z "$bad" ] || { fail "not 0600 regular files:$bad" "$1/dump.log"; return 1; }
}

# The caller's own earlier files are replaced, not refused: a dump with -R,
# then a retried dump into the same directory, then a restore whose log
# replaces an earlier one; every file is 0600 and the result restores.
t_trust_retry_dump() {
    need_cr || return $?
    start_prog loop || return 1
    need_crust || return 1
    dump_with "$D/img" -R || return 1
    trust_modes "$D/img" || return 1
    do_dump "$D/img" || return 1
    trust_modes "$D/img" || return 1
    echo "an earlier restore's log" >"$D/img/restore.log"
    do_restore "$D/img" || return 1
    grep -q "earlier restore" "$D/img/restore.log" && { fail "the restore appended to the earlier log" "$D/img/restore.log"; return 1; }
    [ "$(stat -c %a "$D/img/restore.log")" = 600 ] || { fail "restore.log is not 0600" "$D/img/restore.log"; return 1; }
    expect_pass "$D/img/restore.log"
}
ALL_TESTS+=(trust-retry-dump)

# An images directory others can write (0777, as CRIU's test suite makes
# them), or another user's: the dump writes there with a warning. What
# another user could plant there is refused by the restore, naming the file
# and the option; --allow-unsafe-images-dir reads it anyway.
t_trust_unsafe_dir() {
    need_cr || return $?
    trust_setup || return 1
    chmod 0777 "$D/img"
    chown nobody "$D/img" || { skip "cannot chown to nobody"; return 2; }
    do_dump "$D/img" || return 1
    grep -q "owned by uid" "$D/img/dump.log" || { fail "no warning about the directory" "$D/img/dump.log"; return 1; }
    trust_modes "$D/img" || return 1
    # Someone else's file in place of pstree.img (the same bytes).
    mv "$D/img/pstree.img" "$D/img/pstree.orig"
    cp "$D/img/pstree.orig" "$D/img/pstree.img"
    chown nobody "$D/img/pstree.img"
    crust_run restore restore -D "$D/img" -d -v4 -o restore.log
    expect_error restore "$D/img/restore.log" || return 1
    grep -q "pstree.img" "$D/restore.err" && grep -q -- "--allow-unsafe-images-dir" "$D/restore.err" ||
        { fail "the message does not name the file and the option: $(head -c 300 "$D/restore.err")" "$D/img/restore.log"; return 1; }
    [ -e "/proc/$PID" ] && { fail "pid $PID exists after the refused restore"; return 1; }
    do_restore "$D/img" "" --allow-unsafe-images-dir || return 1
    expect_pass "$D/img/restore.log"
}
ALL_TESTS+=(trust-unsafe-dir)

# A dump that fails once every image is written (CRUST_FAULT=images-written)
# removes them all: only the log stays, even where a retried dump had left
# images of its own.
t_trust_failed_dump_cleanup() {
    need_cr || return $?
    trust_setup || return 1
    local left
    proc_snapshot "$PID" >"$D/before"
    CRUST_FAULT=images-written crust_run dump dump -t "$PID" -D "$D/img" -v4 -o dump.log
    expect_error dump "$D/img/dump.log" || return 1
    grep -q "images-written" "$D/dump.err" || { fail "the dump did not fail at the fault point: $(head -c 300 "$D/dump.err")" "$D/img/dump.log"; return 1; }
    expect_same_proc "$PID" "$D/before" "the failed dump" || return 1
    expect_untouched "$PID" || return 1
    left=$(trust_images_in "$D/img" | tr '\n' ' ')
    [ -z "$left" ] || { fail "the failed dump left files: $left" "$D/img/dump.log"; return 1; }
    [ -f "$D/img/dump.log" ] || { fail "the log is gone"; return 1; }
    expect_pass "$D/img/dump.log"
}
ALL_TESTS+=(trust-failed-dump-cleanup)
