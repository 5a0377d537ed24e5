//! CRIU's notify callbacks over the RPC socket: at each action moment of
//! a dump or a restore (see [`crust_engine::Action`]) crust sends
//! `criu_resp{type NOTIFY, success, notify{script, pid}}` and waits for
//! the client's `criu_req{type NOTIFY, notify_success}`; anything else
//! fails the action. Without `notify_scripts` nothing is sent, but a
//! client gone by post-dump or post-restore fails those: nobody would
//! learn what became of the tree, so the dump lets it run on and the
//! restore kills what it made.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crust_engine::{Action, ActionHook};
use crust_images::proto::{criu_req_type, CriuNotify, CriuReq, CriuResp};

use super::wire::{self, Incoming};

/// The RPC side of the engine's action hooks.
pub struct Notifier {
    /// The connection to the client (a copy of crust's fd).
    pub sk: OwnedFd,
    /// The request's `notify_scripts`.
    pub notify: bool,
}

/// The notify message CRIU sends for `action` (the root's pid only with
/// setup-namespaces and post-restore, as CRIU gives it).
pub fn notify_resp(action: Action, root_pid: Option<i32>) -> CriuResp {
    let pid = match action {
        Action::SetupNamespaces | Action::PostRestore => root_pid,
        _ => None,
    };
    CriuResp {
        r#type: criu_req_type::NOTIFY,
        success: true,
        notify: Some(CriuNotify {
            script: Some(action.name().to_string()),
            pid,
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl Notifier {
    /// Send the notify of `action` and read the client's answer: its
    /// request when it says success.
    fn exchange(&self, action: Action, root_pid: Option<i32>) -> Result<Box<CriuReq>, String> {
        self.exchange_fd(action, root_pid, None)
    }

    /// [`Self::exchange`], with `fd` passed on the notify message
    /// (SCM_RIGHTS), as CRIU passes the orphan pty master.
    fn exchange_fd(
        &self,
        action: Action,
        root_pid: Option<i32>,
        fd: Option<BorrowedFd<'_>>,
    ) -> Result<Box<CriuReq>, String> {
        let sk = self.sk.as_fd();
        log::debug!("RPC notify {}", action.name());
        wire::send_resp(sk, &notify_resp(action, root_pid), fd)
            .map_err(|e| format!("cannot send the notify message to the RPC client: {e}"))?;
        match wire::recv_req(sk) {
            Ok(Incoming::Req(r))
                if r.r#type == criu_req_type::NOTIFY && r.notify_success == Some(true) =>
            {
                Ok(r)
            }
            Ok(Incoming::Req(r)) if r.r#type == criu_req_type::NOTIFY => {
                Err("the RPC client reported a script error".into())
            }
            Ok(Incoming::Req(r)) => Err(format!(
                "the RPC client answered the notify with a request of type {}",
                r.r#type
            )),
            Ok(Incoming::Closed) => Err("the RPC client has gone away".into()),
            Ok(other) => Err(format!("bad answer to the notify: {other:?}")),
            Err(e) => Err(format!("cannot read the RPC client's answer: {e}")),
        }
    }
}

impl ActionHook for Notifier {
    fn run(&self, action: Action, root_pid: Option<i32>) -> Result<(), String> {
        if !self.notify {
            let sk = self.sk.as_fd();
            if matches!(action, Action::PostDump | Action::PostRestore) && wire::peer_gone(sk) {
                return Err("the RPC client has gone away".into());
            }
            return Ok(());
        }
        self.exchange(action, root_pid).map(drop)
    }

    /// CRIU's orphan-pts-master: the master goes with the notify; without
    /// notify_scripts CRIU has no client to give it to and fails.
    fn send_pts_master(&self, master: BorrowedFd<'_>) -> Result<(), String> {
        if !self.notify {
            return Err(
                "the RPC client did not ask for notifications (notify_scripts), so it cannot take the master of the pty".into(),
            );
        }
        self.exchange_fd(Action::OrphanPtsMaster, None, Some(master))
            .map(drop)
    }

    /// CRIU's query-ext-files: the answer's `opts.external` keys, each
    /// checked as `--external` checks it.
    fn query_external(&self) -> Result<Vec<String>, String> {
        if !self.notify {
            return Ok(Vec::new());
        }
        let r = self.exchange(Action::QueryExtFiles, None)?;
        let keys = r.opts.map(|o| o.external).unwrap_or_default();
        if keys.is_empty() {
            log::info!("RPC NOTIFY query-ext-files: no external object returned");
        }
        for key in &keys {
            let mut check = crate::cli::Opts::default();
            check
                .apply_named("external", Some(key.clone()), false)
                .map_err(|e| format!("Failed to add external object {key}: {e:#}"))?;
        }
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crust_images::wire::Message;

    fn answer(peer: &OwnedFd, ok: bool) -> CriuResp {
        let mut buf = [0u8; 256];
        let got = crust_sys::unix::recvmsg(peer.as_fd(), &mut buf, 0).unwrap();
        let resp = CriuResp::decode(&buf[..got.len]).unwrap();
        let req = CriuReq {
            r#type: criu_req_type::NOTIFY,
            notify_success: Some(ok),
            ..Default::default()
        };
        crust_sys::unix::send(peer.as_fd(), &req.encode_to_vec(), None, 0).unwrap();
        resp
    }

    #[test]
    fn notify_round_trip() {
        let (a, b) = crust_sys::unix::socketpair(libc::SOCK_SEQPACKET).unwrap();
        let n = Notifier {
            sk: a,
            notify: true,
        };
        let client = std::thread::spawn(move || {
            let r1 = answer(&b, true);
            let r2 = answer(&b, false);
            (r1, r2)
        });
        assert_eq!(n.run(Action::PostRestore, Some(77)), Ok(()));
        assert!(n.run(Action::PreDump, Some(77)).is_err());
        let (r1, r2) = client.join().unwrap();
        assert_eq!(r1.r#type, criu_req_type::NOTIFY);
        let n1 = r1.notify.unwrap();
        assert_eq!(n1.script.as_deref(), Some("post-restore"));
        assert_eq!(n1.pid, Some(77));
        let n2 = r2.notify.unwrap();
        assert_eq!(n2.script.as_deref(), Some("pre-dump"));
        assert_eq!(n2.pid, None);
    }

    /// orphan-pts-master: the master goes with the notify (SCM_RIGHTS)
    /// and the client's answer counts; nothing without notify_scripts.
    #[test]
    fn pts_master_goes_with_the_notify() {
        let (a, b) = crust_sys::unix::socketpair(libc::SOCK_SEQPACKET).unwrap();
        let n = Notifier {
            sk: a,
            notify: true,
        };
        let (pipe_r, pipe_w) = crust_sys::pipe::pipe2(libc::O_CLOEXEC).unwrap();
        let client = std::thread::spawn(move || {
            let mut buf = [0u8; 256];
            let got = crust_sys::unix::recvmsg(b.as_fd(), &mut buf, 0).unwrap();
            let resp = CriuResp::decode(&buf[..got.len]).unwrap();
            let req = CriuReq {
                r#type: criu_req_type::NOTIFY,
                notify_success: Some(true),
                ..Default::default()
            };
            crust_sys::unix::send(b.as_fd(), &req.encode_to_vec(), None, 0).unwrap();
            (resp, got.rights)
        });
        assert_eq!(n.send_pts_master(pipe_w.as_fd()), Ok(()));
        let (resp, rights) = client.join().unwrap();
        assert_eq!(
            resp.notify.unwrap().script.as_deref(),
            Some("orphan-pts-master")
        );
        assert_eq!(rights.len(), 1);
        // The fd the client got is the one sent: bytes written on it come
        // out of the pipe.
        use std::io::{Read, Write};
        let mut w = std::fs::File::from(rights.into_iter().next().unwrap());
        w.write_all(b"hi").unwrap();
        drop((w, pipe_w));
        let mut got = Vec::new();
        let mut r = std::fs::File::from(pipe_r.try_clone().unwrap());
        r.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"hi");
        let (a, _b) = crust_sys::unix::socketpair(libc::SOCK_SEQPACKET).unwrap();
        let silent = Notifier {
            sk: a,
            notify: false,
        };
        assert!(silent.send_pts_master(pipe_r.as_fd()).is_err());
    }

    #[test]
    fn silent_hooks_notice_a_client_gone() {
        let (a, b) = crust_sys::unix::socketpair(libc::SOCK_SEQPACKET).unwrap();
        let n = Notifier {
            sk: a,
            notify: false,
        };
        assert_eq!(n.run(Action::PostDump, Some(1)), Ok(()));
        drop(b);
        assert!(n.run(Action::PreDump, Some(1)).is_ok());
        assert!(n.run(Action::PostDump, Some(1)).is_err());
    }

    /// query-ext-files: the client's `opts.external` keys come back,
    /// checked as `--external` checks them; nothing is asked without
    /// notify_scripts.
    #[test]
    fn query_ext_files_takes_the_clients_keys() {
        let (a, b) = crust_sys::unix::socketpair(libc::SOCK_SEQPACKET).unwrap();
        let n = Notifier {
            sk: a,
            notify: true,
        };
        let client = std::thread::spawn(move || {
            let mut scripts = Vec::new();
            for keys in [vec!["mnt[/x]:y".to_string()], vec!["tty[1:2]".to_string()]] {
                let mut buf = [0u8; 256];
                let got = crust_sys::unix::recvmsg(b.as_fd(), &mut buf, 0).unwrap();
                let resp = CriuResp::decode(&buf[..got.len]).unwrap();
                scripts.push(resp.notify.unwrap().script.unwrap());
                let req = CriuReq {
                    r#type: criu_req_type::NOTIFY,
                    notify_success: Some(true),
                    opts: Some(crust_images::proto::CriuOpts {
                        images_dir_fd: -1,
                        external: keys,
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                crust_sys::unix::send(b.as_fd(), &req.encode_to_vec(), None, 0).unwrap();
            }
            scripts
        });
        assert_eq!(n.query_external(), Ok(vec!["mnt[/x]:y".to_string()]));
        assert!(n.query_external().is_err());
        assert_eq!(
            client.join().unwrap(),
            ["query-ext-files", "query-ext-files"]
        );
        let (a, _b) = crust_sys::unix::socketpair(libc::SOCK_SEQPACKET).unwrap();
        let silent = Notifier {
            sk: a,
            notify: false,
        };
        assert_eq!(silent.query_external(), Ok(Vec::new()));
    }
}
