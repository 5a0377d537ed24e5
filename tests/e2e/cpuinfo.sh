# cpuinfo.img and --cpu-cap (issue 17): `crust cpuinfo dump|check`, a dump
# with --cpu-cap writes cpuinfo.img (without it none, as CRIU), a restore
# with --cpu-cap of a set whose CPU had what this one lacks is refused
# before any task exists, naming what; --cpu-cap=none restores it. With
# CRIU 4.2: each checks the other's cpuinfo.img, and both write the same
# bytes here. Sourced by run.sh: uses its helpers and adds its tests to
# ALL_TESTS.

ALL_TESTS+=(cpuinfo)

# Make the cpuinfo.img at $1 claim AVX-512 instructions of Xeon Phi
# (avx512pf, avx512er, avx512_4vnniw, avx512_4fmaps) and the PKRU xsave
# component, unless this CPU has them (then: exit 3).
cpuinfo_claim_more() {
    "$PY" - "$1" <<'EOF'
import struct, sys
from imgedit import varint, enc

path = sys.argv[1]
b = open(path, "rb").read()
head, n = b[:8], struct.unpack("<I", b[8:12])[0]
outer = b[12:12 + n]

def fields(m):
    o, out = 0, []
    while o < len(m):
        key, o2 = varint(m, o)
        if key & 7 == 0:
            v, o3 = varint(m, o2)
        elif key & 7 == 2:
            ln, o2 = varint(m, o2)
            v, o3 = m[o2:o2 + ln], o2 + ln
        else:
            raise SystemExit("unexpected wire type %d" % (key & 7))
        out.append([key >> 3, key & 7, v])
        o = o3
    return out

def build(fs):
    out = bytearray()
    for num, wire, v in fs:
        out += enc(num << 3 | wire)
        out += enc(v) if wire == 0 else enc(len(v)) + v
    return bytes(out)

top = fields(outer)
x86 = fields(top[0][2])
caps = [f for f in x86 if f[0] == 6]
want = {9: (1 << 26) | (1 << 27), 18: (1 << 2) | (1 << 3)}
for w, bits in want.items():
    if caps[w][2] & bits:
        sys.exit(3)
    caps[w][2] |= bits
for f in x86:
    if f[0] == 8:
        if f[2] & (1 << 9):
            sys.exit(3)
        f[2] |= 1 << 9
top[0][2] = build(x86)
new = build(top)
open(path, "wb").write(head + struct.pack("<I", len(new)) + new + b[12 + n:])
EOF
}

t_cpuinfo() {
    need_cr || return
    local criu w
    mkdir -p "$D/c1" "$D/c2"
    crust_run cd cpuinfo dump -D "$D/c1"
    [ $RC = 0 ] || { fail "cpuinfo dump exited $RC: $(head -c 300 "$D/cd.err")"; return 1; }
    for w in "" --cpu-cap --cpu-cap=ins; do
        crust_run cc cpuinfo check -D "$D/c1" $w
        [ $RC = 0 ] || { fail "cpuinfo check $w of this CPU's image exited $RC: $(head -c 300 "$D/cc.err")"; return 1; }
    done
    if criu=$(criu_bin) && [ -x "$criu" ]; then
        "$criu" cpuinfo check -D "$D/c1" >"$D/criu-cc.out" 2>&1 ||
            { fail "CRIU 4.2 refuses crust's cpuinfo.img: $(tail -c 300 "$D/criu-cc.out")"; return 1; }
        "$criu" cpuinfo dump -D "$D/c2" >"$D/criu-cd.out" 2>&1 ||
            { fail "criu cpuinfo dump failed: $(tail -c 300 "$D/criu-cd.out")"; return 1; }
        crust_run cc2 cpuinfo check -D "$D/c2" --cpu-cap
        [ $RC = 0 ] || { fail "crust refuses CRIU 4.2's cpuinfo.img: $(head -c 300 "$D/cc2.err")"; return 1; }
        cmp -s "$D/c1/cpuinfo.img" "$D/c2/cpuinfo.img" ||
            { fail "crust's and CRIU 4.2's cpuinfo.img of this CPU differ"; return 1; }
    fi

    start_prog loop || return 1
    dump_with "$D/plain" -R || return 1
    [ -e "$D/plain/cpuinfo.img" ] && { fail "a dump without --cpu-cap wrote cpuinfo.img (CRIU writes none)"; return 1; }
    do_dump "$D/img" --cpu-cap || return 1
    [ -f "$D/img/cpuinfo.img" ] || { fail "dump --cpu-cap wrote no cpuinfo.img" "$D/img/dump.log"; return 1; }
    cpuinfo_claim_more "$D/img/cpuinfo.img"
    case $? in
        0) ;;
        3) skip "this CPU has the features the test would claim (Xeon Phi AVX-512, PKRU)"; return ;;
        *) fail "cannot edit cpuinfo.img"; return 1 ;;
    esac
    crust_run cc3 cpuinfo check -D "$D/img"
    [ $RC = 1 ] || { fail "cpuinfo check of the edited image exited $RC, not 1"; return 1; }
    crust_run rst restore -D "$D/img" -d --cpu-cap -v4 -o restore-refused.log
    [ $RC != 0 ] || { fail "restore --cpu-cap of a set claiming AVX-512 this CPU lacks succeeded"; return 1; }
    for w in avx512pf avx512er avx512_4vnniw avx512_4fmaps PKRU; do
        grep -q "$w" "$D/rst.err" || { fail "the refusal does not name $w: $(head -c 400 "$D/rst.err")"; return 1; }
    done
    [ -e "/proc/$PID" ] && { fail "pid $PID exists after the refused restore"; return 1; }
    do_restore "$D/img" "" --cpu-cap=none || return 1
    expect_pass "$D/img/restore.log"
}
