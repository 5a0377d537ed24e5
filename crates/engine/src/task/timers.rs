//! Timers of a task: POSIX timers (timer_create), read at dump from
//! /proc and the task itself, made again at restore; the interval timers
//! (setitimer).

use super::*;

/// sigev_notify values.
const SIGEV_THREAD_ID: u32 = 4;

/// POSIX timers (timer_create): what /proc/PID/timers says, plus the time
/// left and the overrun asked of the task itself.
pub(super) fn collect_posix_timers(r: &mut Remote<'_>) -> Result<Vec<PosixTimerEntry>, Error> {
    let pid = r.pid();
    let timers = crust_proc::timers(&ProcRoot::default(), pid).map_err(proc_err(pid))?;
    let mut out = Vec::with_capacity(timers.len());
    for t in timers {
        // struct itimerspec: interval {sec, nsec}, value {sec, nsec}.
        r.call(
            &format!("timer_gettime({})", t.id),
            libc::SYS_timer_gettime,
            [t.id as u64, r.at(0).get(), 0, 0, 0, 0],
        )?;
        let b = r.get(0, 32)?;
        let w = |i: usize| xsave::u64_at(&b, i * 8);
        let overrun = r.call(
            &format!("timer_getoverrun({})", t.id),
            libc::SYS_timer_getoverrun,
            [t.id as u64, 0, 0, 0, 0, 0],
        )?;
        let base = match t.notify.as_str() {
            "none" => libc::SIGEV_NONE,
            "thread" => libc::SIGEV_THREAD,
            _ => libc::SIGEV_SIGNAL,
        } as u32;
        let notify = base | if t.notify_thread { SIGEV_THREAD_ID } else { 0 };
        out.push(PosixTimerEntry {
            it_id: t.id as u32,
            clock_id: t.clock_id as u32,
            si_signo: t.signo as u32,
            it_sigev_notify: notify,
            sival_ptr: t.sigval,
            overrun: overrun as u32,
            isec: w(0),
            insec: w(1),
            vsec: w(2),
            vnsec: w(3),
            notify_thread_id: match t.notify_thread {
                true => Some(ns_tid(t.notify_pid)?),
                false => None,
            },
            ..Default::default()
        });
    }
    Ok(out)
}

/// The id that thread `tid` (crust's view, as /proc/PID/timers shows it)
/// has in its own pid namespace: the image keeps the id the task sees, so
/// the timer is made again for the same thread of a tree in a pid namespace.
fn ns_tid(tid: i32) -> Result<i32, Error> {
    let st = crust_proc::status(&ProcRoot::default(), tid).map_err(proc_err(tid))?;
    Ok(st.ns_pid.last().copied().unwrap_or(tid))
}

/// Create the POSIX timers again with their ids (PR_TIMER_CREATE_RESTORE_IDS
/// lets timer_create take the id asked for) and arm them with the time
/// they had left.
pub(super) fn restore_posix_timers(
    r: &mut Remote<'_>,
    timers: &[PosixTimerEntry],
) -> Result<(), Error> {
    if timers.is_empty() {
        return Ok(());
    }
    const PR_TIMER_CREATE_RESTORE_IDS: u64 = 77;
    r.call(
        "prctl(PR_TIMER_CREATE_RESTORE_IDS, ON)",
        libc::SYS_prctl,
        [PR_TIMER_CREATE_RESTORE_IDS, 1, 0, 0, 0, 0],
    )?;
    for t in timers {
        // struct sigevent: value (8), signo (4), notify (4), tid (4), pad.
        let mut sev = vec![0u8; 64];
        xsave::put_u64(&mut sev, 0, t.sival_ptr);
        xsave::put_u32(&mut sev, 8, t.si_signo);
        xsave::put_u32(&mut sev, 12, t.it_sigev_notify);
        if let Some(tid) = t.notify_thread_id {
            xsave::put_u32(&mut sev, 16, tid as u32);
        }
        let sev_at = r.put(0, &sev)?;
        let id_at = r.put(128, &(t.it_id as i32).to_le_bytes())?;
        r.call(
            &format!("timer_create (id {})", t.it_id),
            libc::SYS_timer_create,
            [t.clock_id as u64, sev_at.get(), id_at.get(), 0, 0, 0],
        )?;
        let got = r.get(128, 4)?;
        let got = i32::from_le_bytes(got.try_into().unwrap_or([0; 4]));
        if got != t.it_id as i32 {
            return Err(Error::Restore {
                pid: r.pid(),
                what: format!("POSIX timer {} came back with id {got}", t.it_id),
            });
        }
        if t.vsec != 0 || t.vnsec != 0 {
            let mut spec = Vec::with_capacity(32);
            for v in [t.isec, t.insec, t.vsec, t.vnsec] {
                spec.extend_from_slice(&v.to_le_bytes());
            }
            let a = r.put(256, &spec)?;
            r.call(
                &format!("timer_settime({})", t.it_id),
                libc::SYS_timer_settime,
                [t.it_id as u64, 0, a.get(), 0, 0, 0],
            )?;
        }
    }
    r.call(
        "prctl(PR_TIMER_CREATE_RESTORE_IDS, OFF)",
        libc::SYS_prctl,
        [PR_TIMER_CREATE_RESTORE_IDS, 0, 0, 0, 0, 0],
    )?;
    Ok(())
}

/// The three interval timers (ITIMER_REAL, _VIRTUAL, _PROF) that run.
pub(super) fn apply_itimers(r: &mut Remote<'_>, t: &TaskTimersEntry) -> Result<(), Error> {
    for (which, it) in [
        (libc::ITIMER_REAL, &t.real),
        (libc::ITIMER_VIRTUAL, &t.virt),
        (libc::ITIMER_PROF, &t.prof),
    ] {
        if it.vsec == 0 && it.vusec == 0 {
            continue;
        }
        let mut b = Vec::with_capacity(32);
        for v in [it.isec, it.iusec, it.vsec, it.vusec] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        let a = r.put(0, &b)?;
        r.call(
            "setitimer",
            libc::SYS_setitimer,
            [which as u64, a.get(), 0, 0, 0, 0],
        )?;
    }
    Ok(())
}
