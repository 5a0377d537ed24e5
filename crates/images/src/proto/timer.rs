//! Messages of CRIU's `timer.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::wire::*;

crate::message! {
    /// message `itimer_entry`
    ItimerEntry = "itimer_entry" {
        1 isec: required Uint64,
        2 iusec: required Uint64,
        3 vsec: required Uint64,
        4 vusec: required Uint64,
    }
    /// message `posix_timer_entry`
    PosixTimerEntry = "posix_timer_entry" {
        1 it_id: required Uint32,
        2 clock_id: required Uint32,
        3 si_signo: required Uint32,
        4 it_sigev_notify: required Uint32,
        5 sival_ptr: required Uint64,
        6 overrun: required Uint32,
        7 isec: required Uint64,
        8 insec: required Uint64,
        9 vsec: required Uint64,
        10 vnsec: required Uint64,
        11 notify_thread_id: optional Int32,
    }
    /// message `task_timers_entry`
    TaskTimersEntry = "task_timers_entry" {
        1 real: required Msg<ItimerEntry>,
        2 virt: required Msg<ItimerEntry>,
        3 prof: required Msg<ItimerEntry>,
        4 posix: repeated Msg<PosixTimerEntry>,
    }
}
