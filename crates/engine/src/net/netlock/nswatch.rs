//! The watchdog of a locked network namespace: a dump that is killed
//! (SIGKILL, or its process group killed) while the tree's own network
//! namespace is locked would leave the tree running but cut off. So before
//! locking, crust starts a small shell in that namespace (started from the
//! thread that joined it), in a process group of its own and deaf to the
//! usual signals, that waits on a pipe: crust writes `done` to it once the
//! lock is lifted or the tree is dead ([`dismiss`]); if the pipe closes
//! without it (crust died), the shell lifts the lock itself with the same
//! tools (the iptables chain `CRIU` and its jumps, or the nftables table)
//! and exits. Being in the namespace it keeps it alive while it works, so
//! it never touches another namespace.

use super::{find_tool, Method, NetLockError};
use log::{debug, warn};
use std::io::Write;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;

/// The running watchdog, if any (one tree namespace per dump).
static WATCH: Mutex<Option<(Child, ChildStdin)>> = Mutex::new(None);

/// The shell's script. Arguments: method, iptables-restore,
/// ip6tables-restore (or empty), nft, the jumps-removing script, the
/// chain-removing script, the nftables table.
const SCRIPT: &str = r#"trap '' INT TERM HUP QUIT PIPE
read -r word
[ "$word" = done ] && exit 0
if [ "$1" = iptables ]; then
    for r in "$2" "$3"; do
        [ -n "$r" ] || continue
        printf '%s' "$5" | "$r" -w --noflush
        printf '%s' "$5" | "$r" -w --noflush
        printf '%s' "$6" | "$r" -w --noflush
    done
else
    "$4" delete table $7
fi
exit 0
"#;

/// Start the watchdog for the lock of `method` in the calling thread's
/// network namespace. `jumps`, `chain`, `table`: what lifts the lock.
pub(super) fn start(
    method: Method,
    jumps: &str,
    chain: &str,
    table: &str,
) -> Result<(), NetLockError> {
    let path = |t: &str| {
        find_tool(t)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let (name, r4, r6, nft) = match method {
        Method::Skip => return Ok(()),
        Method::Iptables => (
            "iptables",
            path("iptables-restore"),
            path("ip6tables-restore"),
            String::new(),
        ),
        Method::Nftables => ("nftables", String::new(), String::new(), path("nft")),
    };
    dismiss();
    let spawn_err = |source| NetLockError::Spawn {
        method,
        tool: "sh",
        source,
    };
    let mut child = std::os::unix::process::CommandExt::process_group(
        Command::new("/bin/sh")
            .arg("-c")
            .arg(SCRIPT)
            .args([
                "crust-netns-watchdog",
                name,
                &r4,
                &r6,
                &nft,
                jumps,
                chain,
                table,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        0,
    )
    .spawn()
    .map_err(spawn_err)?;
    let Some(stdin) = child.stdin.take() else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(spawn_err(std::io::Error::other("no pipe to the watchdog")));
    };
    debug!("network namespace lock watchdog: pid {}", child.id());
    if let Ok(mut w) = WATCH.lock() {
        *w = Some((child, stdin));
    }
    Ok(())
}

/// Tell the watchdog the lock is lifted (or the tree dead): it exits
/// without touching anything. Nothing if none runs.
pub fn dismiss() {
    let taken = match WATCH.lock() {
        Ok(mut w) => w.take(),
        Err(_) => None,
    };
    let Some((mut child, mut stdin)) = taken else {
        return;
    };
    if let Err(e) = stdin.write_all(b"done\n") {
        warn!(
            "cannot dismiss the network lock's watchdog (pid {}): {e}",
            child.id()
        );
    }
    drop(stdin);
    if let Err(e) = child.wait() {
        warn!("cannot wait for the network lock's watchdog: {e}");
    }
}
