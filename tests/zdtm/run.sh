#!/usr/bin/env bash
# CRIU 4.2's own test suite, zdtm, with crust as the criu binary (issue 12).
#
#   tests/zdtm/run.sh              the CI subset: every test in tests/zdtm/ci.list
#                                  must pass (h flavor: host namespaces)
#   tests/zdtm/run.sh --all        the whole h flavor (~480 tests, ~40 min): every
#                                  test must pass or skip, except those in
#                                  tests/zdtm/exempt.list
#   tests/zdtm/run.sh -t zdtm/static/env00 ...   any zdtm.py run options
#   tests/zdtm/run.sh --flavor ns|uns [--all|...]  another flavor (the test in
#                                  new namespaces with a root of its own; uns:
#                                  a user namespace too); its lists are
#                                  ci-ns.list and exempt-ns.list
#
# Environment: CRUST_BIN (default target/release/crust), ZDTM_SRC (the built
# CRIU tree to run zdtm from; default /var/cache/criu-4.2, built and cached by
# ../shared/criu/build.sh --zdtm on first use), ZDTM_LOG (the full zdtm output,
# default target/zdtm.log).
#
# Prints one line per test ("PASS name", "FAIL name: at STAGE", "SKIP name:
# why"), then "zdtm: N passed, N failed, N skipped in S s". Exits non-zero iff a
# test that is not exempt failed. zdtm itself kills its test programs and
# removes its images (-k failed keeps them for failed tests, under the tree's
# test/dump/).
set -uo pipefail
cd "$(dirname "$0")/../.."
here=tests/zdtm
crust=$(readlink -f "${CRUST_BIN:-target/release/crust}")
# ../shared beside the main checkout (a worktree's is one more level up).
zdtm_sh=
for z in ../shared/criu/zdtm.sh ../../shared/criu/zdtm.sh; do
    [[ -z $zdtm_sh && -f $z ]] && zdtm_sh=$(readlink -f "$z")
done
[[ -x $crust ]] || { echo "zdtm: $crust is missing: cargo build --release -p crust" >&2; exit 1; }
[[ -n $zdtm_sh && -f $zdtm_sh ]] || { echo "zdtm: ../shared/criu/zdtm.sh is missing (CRIU 4.2's source snapshot and scripts)" >&2; exit 1; }
log=${ZDTM_LOG:-target/zdtm.log}
mkdir -p "$(dirname "$log")"

flavor=h
if [[ ${1:-} == --flavor ]]; then
    flavor=${2:?--flavor needs h, ns or uns}
    shift 2
fi
case $flavor in
h) lists="" ;;
ns | uns) lists="-ns" ;;
*) echo "zdtm: unknown flavor $flavor (h, ns or uns)" >&2; exit 2 ;;
esac
args=(-f "$flavor" --keep-going -k failed)
exempt=()
if [[ ${1:-} == --all ]]; then
    shift
    args+=(-a)
    if [[ -f $here/exempt$lists.list ]]; then
        mapfile -t exempt < <(grep -v '^#' "$here/exempt$lists.list" | awk 'NF {print $1}')
    fi
elif (($# == 0)); then
    [[ -f $here/ci$lists.list ]] || { echo "zdtm: no $here/ci$lists.list" >&2; exit 2; }
    # Several -t, not -F: zdtm.py stops at the first failure with -F.
    while read -r t _; do
        args+=(-t "zdtm/$t")
    done < <(grep -v '^#' "$here/ci$lists.list" | awk 'NF')
fi
args+=("$@")

t0=$SECONDS
# zdtm.py runs the tests as root from the CRIU tree; its own process group,
# so that a stuck test can be killed with the whole run.
(cd /tmp && bash "$zdtm_sh" "$crust" "${args[@]}") >"$log" 2>&1
wall=$((SECONDS - t0))

python3 - "$log" "$wall" "${exempt[@]}" <<'PY'
import re, sys
log, wall, exempt = sys.argv[1], int(sys.argv[2]), set(sys.argv[3:])
res = {}
for line in open(log, errors="replace"):
    m = re.search(r"Test (zdtm/\S+) FAIL at (.*?) #", line)
    if m:
        res[m.group(1)] = ("FAIL", "at " + m.group(2).strip())
        continue
    m = re.search(r"Test (zdtm/\S+) PASS", line)
    if m:
        res[m.group(1)] = ("PASS", "")
        continue
    m = re.match(r"Skipping (zdtm/\S+) \((.*)\)", line)
    if m and m.group(1) not in res:
        res[m.group(1)] = ("SKIP", m.group(2))
n = {"PASS": 0, "FAIL": 0, "SKIP": 0}
bad = 0
for name in sorted(res):
    st, why = res[name]
    n[st] += 1
    short = name.split("/", 1)[1]
    if st == "FAIL" and short in exempt:
        print(f"FAIL {short}: {why} (exempt: tests/zdtm/exempt.list)")
    elif st == "PASS":
        print(f"PASS {short}")
    else:
        print(f"{st} {short}: {why}")
        bad += st == "FAIL"
if not res:
    print(f"zdtm ran no test: see {log}")
    bad = 1
print(f"zdtm: {n['PASS']} passed, {n['FAIL']} failed, {n['SKIP']} skipped in {wall} s (log: {log})")
sys.exit(1 if bad else 0)
PY
