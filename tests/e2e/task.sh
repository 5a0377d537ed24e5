# Per-task state (issue 12, zdtm's task group): seccomp filters (TSYNC,
# two threads), membarrier registrations, SCHED_RESET_ON_FORK, dumpable
# and the parent-death signal of a task whose credentials change at
# restore, a child stopped by SIGTSTP, zombies (a SIGKILL death, one whose
# group leader is gone); and what a dump refuses as CRIU does: a pending
# SIGTRAP, a time namespace for children. Sourced by run.sh.

t_taskstate() { cr_test taskstate --mode state; }
t_taskstate_stopped() { cr_test taskstate --mode stopped; }
t_taskstate_zombies() { cr_test taskstate --mode zombies; }
t_err_dump_sigtrap() { dump_must_fail "SIGTRAP pending" taskstate --mode sigtrap; }
t_err_dump_timens() { dump_must_fail "time namespace for its children" taskstate --mode timens; }
ALL_TESTS+=(taskstate taskstate-stopped taskstate-zombies err-dump-sigtrap err-dump-timens)
