//! Parsers run on fixture directories laid out like /proc, and on /proc/self.

use std::path::PathBuf;

use crust_proc::*;

fn fixture(name: &str) -> ProcRoot {
    ProcRoot::new(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
}

fn real() -> ProcRoot {
    fixture("real")
}

fn edge() -> ProcRoot {
    fixture("edge")
}

#[test]
fn real_maps_and_smaps() {
    let m = maps(&real(), 4242).unwrap();
    assert!(m.len() > 10);
    assert!(m.iter().any(|e| e.kind() == MapKind::Stack));
    assert!(m.iter().any(|e| e.kind() == MapKind::Vdso));
    assert!(m
        .iter()
        .any(|e| e.path.as_deref() == Some("/usr/bin/sleep") && e.exec));
    assert!(m.windows(2).all(|w| w[0].end <= w[1].start));
    let s = smaps(&real(), 4242).unwrap();
    assert_eq!(s.len(), m.len());
    for (a, b) in s.iter().zip(&m) {
        assert_eq!(&a.map, b);
        assert_eq!(a.size_kb * 1024, b.len());
        assert!(!a.vm_flags.is_empty());
    }
    // Read as it is parsed: the same entries, without the fields
    // SmapsEntry does not name unless asked.
    let lean = |v: &[SmapsEntry]| -> Vec<SmapsEntry> {
        let mut v = v.to_vec();
        v.iter_mut().for_each(|e| e.fields.clear());
        v
    };
    let it: Vec<_> = smaps_iter(&real(), 4242)
        .unwrap()
        .collect::<Result<_>>()
        .unwrap();
    assert_eq!(it, lean(&s));
    let it: Vec<_> = smaps_iter(&real(), 4242)
        .unwrap()
        .with_fields()
        .collect::<Result<_>>()
        .unwrap();
    assert_eq!(it, s);
    let edge_all = smaps(&edge(), 77).unwrap();
    let edge_it: Vec<_> = smaps_iter(&edge(), 77)
        .unwrap()
        .collect::<Result<_>>()
        .unwrap();
    assert_eq!(edge_it, lean(&edge_all));
    let stack = s.iter().find(|e| e.map.kind() == MapKind::Stack).unwrap();
    assert!(stack.has_flag("gd"));
    assert!(stack.field("KernelPageSize") == Some(4));
    assert_eq!(stack.kernel_page_kb, 4);
}

#[test]
fn edge_maps_and_smaps() {
    let m = maps(&edge(), 77).unwrap();
    assert_eq!(m.len(), 10);
    assert_eq!(m[0].path.as_deref(), Some("/tmp/dir with space/prog"));
    assert!(m[0].is_deleted() && m[0].exec && !m[0].shared);
    assert_eq!(
        (m[0].dev_major, m[0].dev_minor, m[0].inode),
        (0xfe, 0, 1234)
    );
    assert!(m[1].shared && m[1].deleted && m[1].path.as_deref() == Some("/memfd:shm"));
    assert_eq!(m[1].offset, 0x2000);
    assert_eq!(m[2].kind(), MapKind::Heap);
    assert_eq!(m[3].kind(), MapKind::Anon);
    assert!(!m[3].read && !m[3].write && !m[3].exec);
    assert_eq!(m[4].kind(), MapKind::AnonNamed("crust test".into()));
    assert_eq!(m[6].kind(), MapKind::VvarVclock);
    assert_eq!(m[9].kind(), MapKind::Vsyscall);
    let s = smaps(&edge(), 77).unwrap();
    assert_eq!(s.len(), 2);
    assert!(s[0].has_flag("sh") && s[0].map.deleted);
    assert_eq!(
        s[1].vm_flags,
        VmFlags::from_codes(["rd", "wr", "mr", "mw", "me", "gd", "ac", "dd", "ht"])
    );
    assert_eq!(
        (s[1].size_kb, s[1].rss_kb, s[1].anonymous_kb, s[1].swap_kb),
        (132, 16, 12, 8)
    );
}

#[test]
fn stat_files() {
    let st = stat(&real(), 4242).unwrap();
    assert_eq!(st.pid, 4242);
    assert_eq!(st.comm, "sleep");
    assert_eq!(st.state, 'S');
    assert_eq!(st.ppid, 4000);
    assert_eq!(st.num_threads, 1);
    assert!(st.start_code > 0 && st.end_code > st.start_code);
    assert!(st.env_end > st.env_start && st.arg_end > st.arg_start);
    assert_eq!(st.exit_code, 0);

    let st = stat(&edge(), 77).unwrap();
    assert_eq!(st.comm, "a) (b)");
    assert_eq!(st.state, 'R');
    assert_eq!(
        (st.pgrp, st.session, st.tty_nr, st.tpgid),
        (77, 77, 34816, 77)
    );
    assert_eq!((st.cutime, st.cstime, st.nice), (-7, -8, -5));
    assert_eq!(st.num_threads, 2);
    assert_eq!(st.start_time, 123456);
    assert_eq!(st.start_code, 4194304);
    assert_eq!(st.start_data, 6299648);
    assert_eq!(st.start_brk, 6303744);
    assert_eq!(st.exit_code, 256);
    let t = task_stat(&edge(), 77, 78).unwrap();
    assert_eq!(
        (t.pid, t.comm.as_str(), t.exit_signal),
        (78, "worker 1", -1)
    );
}

#[test]
fn status_files() {
    let s = status(&real(), 4242).unwrap();
    assert_eq!(s.name, "sleep");
    assert_eq!(s.umask, Some(0o22));
    assert_eq!((s.tgid, s.pid, s.ppid), (4242, 4242, 4000));
    assert_eq!(s.ns_pid, [4242]);
    assert_eq!(s.sig_ign, 6);
    assert_eq!(s.cap_eff, 0x1fffeffffff);
    assert_eq!(s.threads, 1);

    let s = status(&edge(), 77).unwrap();
    assert_eq!(s.name, "a) (b)");
    assert_eq!(s.umask, Some(0o77));
    assert_eq!(s.state, 'R');
    assert_eq!(s.uid, [1000, 1001, 1002, 1003]);
    assert_eq!(s.gid, [100, 101, 102, 103]);
    assert_eq!(s.groups, [4, 24, 27]);
    assert_eq!(s.ns_tgid, [77, 5, 1]);
    assert_eq!(s.ns_sid, [77, 5, 1]);
    assert_eq!(s.sig_q, (2, 63412));
    assert_eq!(s.shd_pnd, 0x200000800);
    assert_eq!(s.sig_blk, 0x200000800);
    assert_eq!(s.sig_ign, 0x1000);
    assert_eq!(s.sig_cgt, 0x200);
    assert_eq!(s.cap_bnd, 0x1ffffffffff);
    assert_eq!(s.cap_amb, 4);
    assert_eq!((s.no_new_privs, s.seccomp, s.threads), (1, 2, 2));
    assert_eq!(
        s.field("Speculation_Store_Bypass"),
        Some("thread vulnerable")
    );
    let t = task_status(&edge(), 77, 78).unwrap();
    assert_eq!(
        (t.pid, t.state, t.ns_pid.clone()),
        (78, 'S', vec![78, 6, 2])
    );
}

#[test]
fn fd_files() {
    let f = fds(&real(), 4242).unwrap();
    let nums: Vec<i32> = f.iter().map(|(n, _)| *n).collect();
    assert_eq!(nums, [0, 1, 2, 3, 4, 251]);
    assert_eq!(f[3].1, "/etc/hostname");
    assert_eq!(f[5].1, "pipe:[7144]");
    let i = fdinfo(&real(), 4242, 4).unwrap();
    assert_eq!(i.flags, 0o102001);
    assert_eq!(i.pos, 0);
    assert_eq!(i.ino, 10011148);

    let e = edge();
    let f = fds(&e, 77).unwrap();
    assert_eq!(f[1], (3, "anon_inode:[eventfd]".to_string()));
    let ev = fdinfo(&e, 77, 3).unwrap();
    assert_eq!((ev.flags, ev.mnt_id, ev.ino), (0o2004002, 16, 1057));
    assert_eq!(ev.get("eventfd-count"), Some("5"));
    let ep = fdinfo(&e, 77, 4).unwrap();
    assert_eq!(ep.get_all("tfd").count(), 2);
    assert!(ep.get("tfd").unwrap().starts_with("3 events:"));
    let ino = fdinfo(&e, 77, 5).unwrap();
    assert!(ino.get("inotify").unwrap().starts_with("wd:1 ino:2"));
    let tfd = fdinfo(&e, 77, 6).unwrap();
    assert_eq!(tfd.get("it_value"), Some("(0, 999)"));
    assert_eq!(tfd.get("settime flags"), Some("01"));
    let sfd = fdinfo(&e, 77, 7).unwrap();
    assert_eq!(sfd.get("sigmask"), Some("0000000000000200"));
    assert!(fdinfo(&e, 77, 99).unwrap_err().is_not_found());
}

#[test]
fn limits_files() {
    let l = limits(&real(), 4242).unwrap();
    assert_eq!(l[0], (RLIM_INFINITY, RLIM_INFINITY));
    let l = limits(&edge(), 77).unwrap();
    assert_eq!(l[0], (10, RLIM_INFINITY));
    assert_eq!(l[3], (8388608, RLIM_INFINITY));
    assert_eq!(l[7], (1024, 524288));
    assert_eq!(l[12], (819200, 819200));
    assert_eq!(l[13], (0, 0));
    assert_eq!(l[15], (RLIM_INFINITY, RLIM_INFINITY));
}

#[test]
fn small_files() {
    let e = edge();
    assert_eq!(auxv(&e, 77).unwrap(), [6, 4096, 33, 0x7ffff7fc5000, 0, 0]);
    assert_eq!(personality(&e, 77).unwrap(), 8);
    assert_eq!(tasks(&e, 77).unwrap(), [77, 78]);
    assert_eq!(children(&e, 77, 77).unwrap(), [78]);
    assert!(children(&e, 77, 78).unwrap().is_empty());
    assert_eq!(loginuid(&e, 77).unwrap(), u32::MAX);
    assert_eq!(oom_score_adj(&e, 77).unwrap(), -500);
    assert_eq!(timerslack_ns(&e, 77).unwrap(), 50000);
    assert_eq!(comm(&e, 77).unwrap(), "a) (b)");
    assert_eq!(
        split_nul(&cmdline(&e, 77).unwrap()),
        [b"prog".to_vec(), b"--arg".to_vec(), b"with space".to_vec()]
    );
    assert_eq!(split_nul(&environ(&e, 77).unwrap()).len(), 2);
    let r = real();
    assert_eq!(exe(&r, 4242).unwrap(), PathBuf::from("/usr/bin/sleep"));
    assert_eq!(cwd(&r, 4242).unwrap(), PathBuf::from("/"));
    assert_eq!(root_link(&r, 4242).unwrap(), PathBuf::from("/"));
    assert_eq!(comm(&r, 4242).unwrap(), "sleep");
    let a = auxv(&r, 4242).unwrap();
    assert_eq!(&a[a.len() - 2..], [0, 0]);
    assert!(timers(&r, 4242).unwrap().is_empty());
}

#[test]
fn mountinfo_files() {
    let m = mountinfo(&edge(), 77).unwrap();
    assert_eq!(m[0].shared(), Some(1));
    assert_eq!((m[0].major, m[0].minor), (254, 0));
    assert_eq!(m[1].root, "/a b");
    assert_eq!(m[1].mount_point, "/mnt/x\ty");
    assert_eq!(m[1].source, "my tmpfs");
    assert_eq!(m[1].optional, ["master:3", "propagate_from:2"]);
    assert_eq!(m[1].fstype, "tmpfs");
    assert_eq!(m[1].options, "rw,nosuid");
    assert_eq!(m[1].super_options, "rw,size=1024k");
    let r = mountinfo(&real(), 4242).unwrap();
    assert!(r
        .iter()
        .any(|x| x.mount_point == "/proc" && x.fstype == "proc"));
}

#[test]
fn timers_file() {
    let t = timers(&edge(), 77).unwrap();
    assert_eq!(t.len(), 2);
    assert_eq!(
        (t[0].id, t[0].signo, t[0].notify_pid, t[0].clock_id),
        (0, 14, 77, 1)
    );
    assert_eq!(
        (t[1].sigval, t[1].notify.as_str(), t[1].notify_thread),
        (0xdeadbeef, "thread", true)
    );
}

#[test]
fn pagemap_fixture() {
    let r = PagemapReader::open(&edge(), 77).unwrap();
    let v = r.read(0x0, 4).unwrap();
    assert_eq!(v.len(), 4);
    let p: Vec<Pme> = v.into_iter().map(Pme).collect();
    assert!(p[0].present() && p[0].exclusive() && !p[0].swapped());
    assert_eq!(p[0].pfn(), 0x1234);
    assert!(p[1].swapped() && !p[1].present());
    assert!(p[2].present() && p[2].file_or_shared_anon() && p[2].soft_dirty());
    assert_eq!(p[3].0, 0);
    // Starting at page 2 (an unaligned address inside it) and past the end.
    let v = r.read(0x2fff, 5).unwrap();
    assert_eq!(v.len(), 2);
}

#[test]
fn missing_pid() {
    let e = maps(&edge(), 12345).unwrap_err();
    assert!(e.is_not_found());
    assert!(e.to_string().contains("12345/maps"));
}

#[test]
fn proc_self() {
    let root = ProcRoot::default();
    let me = std::process::id() as i32;
    let m = maps(&root, me).unwrap();
    let here = proc_self as *const () as usize as u64;
    let text = m.iter().find(|e| e.contains(here)).unwrap();
    assert!(text.exec && text.read && text.is_file());
    let stack_var = 5u64;
    let sp = &stack_var as *const u64 as u64;
    // The test thread's stack is an anonymous mapping; it must be present in pagemap.
    let pm = PagemapReader::open(&root, me).unwrap();
    let e = pm.read(sp, 1).unwrap();
    assert!(Pme(e[0]).present());
    assert!(!smaps(&root, me).unwrap().is_empty());
    let st = stat(&root, me).unwrap();
    assert_eq!(st.pid, me);
    assert!(st.num_threads >= 1);
    let s = status(&root, me).unwrap();
    assert_eq!(s.tgid, me);
    assert!(s.threads >= 1);
    let t = tasks(&root, me).unwrap();
    assert!(t.contains(&me));
    assert_eq!(task_status(&root, me, me).unwrap().pid, me);
    assert_eq!(task_stat(&root, me, me).unwrap().pid, me);
    let f = fds(&root, me).unwrap();
    assert!(!f.is_empty());
    let i = fdinfo(&root, me, f[0].0).unwrap();
    assert!(i.mnt_id > 0);
    limits(&root, me).unwrap();
    assert!(auxv(&root, me).unwrap().len() >= 2);
    personality(&root, me).unwrap();
    children(&root, me, me).unwrap();
    loginuid(&root, me).unwrap();
    oom_score_adj(&root, me).unwrap();
    timerslack_ns(&root, me).unwrap();
    assert!(!cmdline(&root, me).unwrap().is_empty());
    environ(&root, me).unwrap();
    assert_eq!(exe(&root, me).unwrap(), std::env::current_exe().unwrap());
    cwd(&root, me).unwrap();
    root_link(&root, me).unwrap();
    comm(&root, me).unwrap();
    assert!(!mountinfo(&root, me).unwrap().is_empty());
    timers(&root, me).unwrap();
}
