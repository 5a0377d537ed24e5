//! `getpid`: pid and tid (through libc and raw syscalls) are the same after
//! restore; CLOCK_MONOTONIC through the vDSO still works and moved forward and
//! agrees with the raw syscall; gettimeofday agrees with CLOCK_REALTIME; the
//! [vdso] and [vvar] mappings are present and [vdso] is where AT_SYSINFO_EHDR says.

use crust_testprogs::{ensure, finish, ready, self_maps, start, wait_for_term};

fn ids() -> [i64; 4] {
    // SAFETY: getpid/gettid and the raw syscalls take no arguments.
    unsafe {
        [
            libc::getpid() as i64,
            libc::gettid() as i64,
            libc::syscall(libc::SYS_getpid),
            libc::syscall(libc::SYS_gettid),
        ]
    }
}

fn ns(ts: &libc::timespec) -> i128 {
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// (through libc, which uses the vDSO; through the raw syscall), in ns.
fn clock(id: libc::clockid_t) -> Result<(i128, i128), String> {
    let mut a = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let mut b = a;
    // SAFETY: both point to valid timespec structs.
    let (ra, rb) = unsafe {
        (
            libc::clock_gettime(id, &mut a),
            libc::syscall(libc::SYS_clock_gettime, id, &mut b as *mut libc::timespec),
        )
    };
    ensure!(
        ra == 0,
        "clock_gettime({id}) failed: {}",
        std::io::Error::last_os_error()
    );
    ensure!(
        rb == 0,
        "raw clock_gettime({id}) failed: {}",
        std::io::Error::last_os_error()
    );
    Ok((ns(&a), ns(&b)))
}

fn main() {
    let args = start();
    let before = ids();
    let (mono0, _) = clock(libc::CLOCK_MONOTONIC).unwrap_or((0, 0));
    // SAFETY: getauxval only reads the saved auxiliary vector.
    let vdso_base = unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) };
    ready(&args);
    let mut last = mono0;
    let mut backwards = false;
    wait_for_term(10, || {
        if let Ok((m, _)) = clock(libc::CLOCK_MONOTONIC) {
            backwards |= m < last;
            last = m;
        }
    });

    let verdict = (|| {
        let after = ids();
        ensure!(
            after == before,
            "getpid/gettid/raw getpid/raw gettid {after:?}, expected {before:?}"
        );
        ensure!(
            before[0] == before[1],
            "pid {} != tid {}",
            before[0],
            before[1]
        );
        ensure!(!backwards, "CLOCK_MONOTONIC went backwards while running");
        let (m_vdso, m_sys) = clock(libc::CLOCK_MONOTONIC)?;
        ensure!(m_vdso > mono0, "CLOCK_MONOTONIC {m_vdso} not after {mono0}");
        ensure!(
            (m_vdso - m_sys).abs() < 500_000_000,
            "vDSO CLOCK_MONOTONIC {m_vdso} and syscall {m_sys} disagree"
        );
        let (r_vdso, r_sys) = clock(libc::CLOCK_REALTIME)?;
        ensure!(
            (r_vdso - r_sys).abs() < 500_000_000,
            "vDSO CLOCK_REALTIME {r_vdso} and syscall {r_sys} disagree"
        );
        let mut tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        };
        // SAFETY: tv is a valid timeval; a null timezone is allowed.
        let r = unsafe { libc::gettimeofday(&mut tv, std::ptr::null_mut()) };
        ensure!(r == 0, "gettimeofday failed");
        let tod = tv.tv_sec as i128 * 1_000_000_000 + tv.tv_usec as i128 * 1000;
        ensure!(
            (tod - r_sys).abs() < 1_000_000_000,
            "gettimeofday {tod} and CLOCK_REALTIME {r_sys} disagree"
        );
        let maps = self_maps()?;
        let vdso = maps.iter().find(|m| m.3 == "[vdso]");
        ensure!(vdso.is_some(), "no [vdso] mapping");
        ensure!(
            maps.iter()
                .any(|m| m.3 == "[vvar]" || m.3 == "[vvar_vclock]"),
            "no [vvar] mapping"
        );
        let vdso_start = vdso.map(|m| m.0).unwrap_or(0);
        ensure!(
            vdso_start == vdso_base,
            "[vdso] at {vdso_start:#x}, AT_SYSINFO_EHDR says {vdso_base:#x}"
        );
        Ok(())
    })();
    finish(&args, verdict)
}
