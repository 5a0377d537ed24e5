# Kinds of fd state CRIU's zdtm checks (issue 12, the fds group): one mode
# of the fdkinds program each, dumped and restored, checked by the program.
# Sourced by run.sh: uses its helpers and adds its tests to ALL_TESTS.

fds_cr() {
    local mode=$1
    shift
    need_cr || return $?
    mkdir -p "$D/files"
    start_prog fdkinds --mode "$mode" --dir "$D/files" || return 1
    do_dump "$D/img" "$@" || return 1
    do_restore "$D/img" "" "$@" || return 1
    expect_pass "$D/img/restore.log"
}

# Two children sharing their parent's fd table (CLONE_FILES), not its fs.
t_fds_siblings() { fds_cr siblings; }
# fds on /proc/self/ns/net and .../uts (NS entries of files.img).
t_fds_nsfd() { fds_cr nsfd; }
# fds on /proc/CHILD/stat and the process's own /proc/PID/status.
t_fds_procfd() { fds_cr procfd; }
# 13 inotify watches (hex numbers in fdinfo), one on a file deleted while open.
t_fds_inotify() { fds_cr inotify; }
# A periodic timerfd that expired unread keeps its interval and ticks on.
t_fds_timer() { fds_cr timer; }
# epoll targets registered through a closed fd, and closed by a child holding the epoll.
t_fds_epoll() { fds_cr epoll; }
# A read lease being broken: still breaking after restore, no second signal.
t_fds_lease() { fds_cr lease --file-locks; }
# A fanotify group made without FAN_CLOEXEC keeps its init flags.
t_fds_fanotify() { fds_cr fanotify; }

ALL_TESTS+=(fds-siblings fds-nsfd fds-procfd fds-inotify fds-timer fds-epoll fds-lease fds-fanotify)
