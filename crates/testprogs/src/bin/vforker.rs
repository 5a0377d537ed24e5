//! `vforker`: a parent that started a child the vfork way (posix_spawn, which
//! glibc does with clone(CLONE_VM|CLONE_VFORK)); the child exec'd `sleep`.
//! After restore the parent still has that child, running `sleep`, and
//! reaps it when it is killed.

use crust_testprogs::{ensure, finish, ready, sleep_ms, start, term_requested};
use std::ffi::CString;

fn main() {
    let args = start();
    crust_testprogs::install_term_handler();
    let sleep = CString::new("/bin/sleep").unwrap();
    let arg0 = CString::new("sleep").unwrap();
    let arg1 = CString::new("1000").unwrap();
    let argv = [
        arg0.as_ptr() as *mut libc::c_char,
        arg1.as_ptr() as *mut libc::c_char,
        std::ptr::null_mut(),
    ];
    let envp: [*mut libc::c_char; 1] = [std::ptr::null_mut()];
    let mut child: libc::pid_t = 0;
    // SAFETY: every pointer is valid for the call: argv and envp are
    // NULL-terminated arrays of NUL-terminated strings that outlive it.
    let rc = unsafe {
        libc::posix_spawn(
            &mut child,
            sleep.as_ptr(),
            std::ptr::null(),
            std::ptr::null(),
            argv.as_ptr(),
            envp.as_ptr(),
        )
    };
    if rc != 0 {
        eprintln!("posix_spawn: {}", std::io::Error::from_raw_os_error(rc));
        std::process::exit(3);
    }
    if child < 0 {
        eprintln!("vfork: {}", std::io::Error::last_os_error());
        std::process::exit(3);
    }
    sleep_ms(100);
    ready(&args);
    while !term_requested() {
        sleep_ms(20);
    }
    let verdict = (|| -> Result<(), String> {
        let exe = std::fs::read_link(format!("/proc/{child}/exe"))
            .map_err(|e| format!("child {child} is gone: {e}"))?;
        ensure!(
            exe.to_string_lossy().ends_with("sleep"),
            "child {child} runs {}, not sleep",
            exe.display()
        );
        // SAFETY: kill and waitpid with a valid out-pointer.
        let st = unsafe {
            libc::kill(child, libc::SIGTERM);
            let mut st = 0;
            libc::waitpid(child, &mut st, 0);
            st
        };
        ensure!(
            libc::WIFSIGNALED(st) && libc::WTERMSIG(st) == libc::SIGTERM,
            "child ended with status {st:#x}, expected death by SIGTERM"
        );
        Ok(())
    })();
    finish(&args, verdict)
}
