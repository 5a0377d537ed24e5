//! Kernel tests of network locking: real loopback TCP connections are
//! locked (data sent is not delivered), then unlocked (it is), with
//! iptables and with nftables. They need root and the tools; without them
//! they say why and pass, or fail when CRUST_REQUIRE_PRIVILEGED=1 (as in CI). Every rule they add is removed, pass or fail.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use crust_engine::netlock::{self, Conn, Method, NetLockError};
use crust_sys::testing;

/// The firewall is one for the whole machine: one test at a time.
static FIREWALL: Mutex<()> = Mutex::new(());

/// Root, or skip (a failure under CRUST_REQUIRE_PRIVILEGED=1, as in CI).
fn is_root() -> bool {
    testing::require_root(&testing::current_test())
}

/// Skip the running test because of `why` (a failure under
/// CRUST_REQUIRE_PRIVILEGED=1).
fn skip(why: &str) {
    testing::skip(&testing::current_test(), why);
}

/// The output of a listing command, or "" if it can't run.
fn listing(tool: &str, args: &[&str]) -> String {
    Command::new(tool)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// The lines of the current ruleset that mention one of `ports` or crust's
/// nftables table.
fn our_rules(ports: &[u16]) -> Vec<String> {
    let mut all = listing("iptables", &["-w", "-S"]);
    all += &listing("ip6tables", &["-w", "-S"]);
    all += &listing("nft", &["list", "ruleset"]);
    all.lines()
        .filter(|l| {
            l.contains(netlock::NFT_TABLE)
                || ports
                    .iter()
                    .any(|p| l.contains(&format!(" {p} ")) || l.ends_with(&format!(" {p}")))
        })
        .map(str::to_string)
        .collect()
}

/// A connected pair over loopback: the client side and the server side.
struct Pair {
    client: TcpStream,
    server: TcpStream,
}

impl Pair {
    fn new(listen: &str, connect_host: &str) -> Option<Pair> {
        let l = match TcpListener::bind(listen) {
            Ok(l) => l,
            Err(e) => {
                skip(&format!("cannot listen on {listen}: {e}"));
                return None;
            }
        };
        let port = l.local_addr().unwrap().port();
        let to: SocketAddr = format!("{connect_host}:{port}").parse().unwrap();
        let client = TcpStream::connect(to).unwrap();
        let (server, _) = l.accept().unwrap();
        for s in [&client, &server] {
            s.set_nodelay(true).unwrap();
        }
        Some(Pair { client, server })
    }

    /// The connection as the (dumped) client sees it.
    fn conn(&self) -> Conn {
        Conn {
            local: self.client.local_addr().unwrap(),
            remote: self.client.peer_addr().unwrap(),
        }
    }

    fn ports(&self) -> Vec<u16> {
        let c = self.conn();
        vec![c.local.port(), c.remote.port()]
    }
}

/// Nothing arrives on `s` within `wait`.
fn nothing_within(s: &mut TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut b = [0u8; 64];
    match s.read(&mut b) {
        Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => true,
        Ok(n) => {
            println!("got {n} bytes while locked");
            false
        }
        Err(e) => panic!("read: {e}"),
    }
}

/// `want` arrives on `s` (retransmissions after an unlock take a while).
fn receive(s: &mut TcpStream, want: &[u8]) {
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut got = vec![0u8; want.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, want);
}

/// Unlocks on drop: the rules go even if an assertion fails.
struct Locked<'a> {
    method: Method,
    conns: &'a [Conn],
    done: bool,
}

impl Locked<'_> {
    fn unlock(mut self) {
        self.done = true;
        netlock::unlock(self.method, self.conns).unwrap();
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = netlock::unlock(self.method, self.conns);
        }
    }
}

/// Lock `conns`, or say why the test can't run (`None`).
fn try_lock<'a>(method: Method, conns: &'a [Conn]) -> Option<Locked<'a>> {
    match netlock::lock(method, conns) {
        Ok(()) => Some(Locked {
            method,
            conns,
            done: false,
        }),
        Err(crust_engine::Error::NetLock(e @ NetLockError::ToolMissing { .. })) => {
            skip(&e.to_string());
            None
        }
        Err(e) => panic!("lock with {method}: {e}"),
    }
}

/// Data both ways is held while locked, delivered after the unlock.
fn lock_blocks_then_unlock_delivers(method: Method) {
    if !is_root() {
        return;
    }
    let _g = FIREWALL.lock().unwrap_or_else(|e| e.into_inner());
    let mut pairs: Vec<Pair> = [
        ("127.0.0.1:0", "127.0.0.1"),
        ("[::1]:0", "[::1]"),
        // An IPv6 socket talking to an IPv4 peer: IPv4 packets.
        ("[::]:0", "[::ffff:127.0.0.1]"),
    ]
    .iter()
    .filter_map(|(l, c)| Pair::new(l, c))
    .collect();
    assert!(!pairs.is_empty());
    let conns: Vec<Conn> = pairs.iter().map(Pair::conn).collect();
    let ports: Vec<u16> = pairs.iter().flat_map(Pair::ports).collect();
    let before = our_rules(&ports);
    assert!(before.is_empty(), "rules left over: {before:?}");

    let Some(locked) = try_lock(method, &conns) else {
        return;
    };
    assert!(!our_rules(&ports).is_empty(), "no rule seen after lock");
    for p in pairs.iter_mut() {
        p.client.write_all(b"ping").unwrap();
        p.server.write_all(b"pong").unwrap();
    }
    for p in pairs.iter_mut() {
        let c = p.conn();
        assert!(
            nothing_within(&mut p.server, Duration::from_millis(400)),
            "{method}: {c}: client data got through the lock"
        );
        assert!(
            nothing_within(&mut p.client, Duration::from_millis(100)),
            "{method}: {c}: server data got through the lock"
        );
    }
    locked.unlock();
    assert_eq!(
        our_rules(&ports),
        before,
        "{method}: rules left after unlock"
    );
    for p in pairs.iter_mut() {
        receive(&mut p.server, b"ping");
        receive(&mut p.client, b"pong");
    }
    // Unlocking what is not locked any more is only warned about.
    netlock::unlock(method, &conns).unwrap();
    assert_eq!(our_rules(&ports), before);
}

/// Packets marked SOCCR_MARK pass a lock.
fn marked_packets_pass(method: Method) {
    if !is_root() {
        return;
    }
    let _g = FIREWALL.lock().unwrap_or_else(|e| e.into_inner());
    let mut p = Pair::new("127.0.0.1:0", "127.0.0.1").unwrap();
    let conns = [p.conn()];
    let ports = p.ports();
    let Some(locked) = try_lock(method, &conns) else {
        return;
    };
    let mark = netlock::SOCCR_MARK.to_ne_bytes();
    for s in [&p.client, &p.server] {
        crust_sys::net::setsockopt(s.as_fd(), libc::SOL_SOCKET, libc::SO_MARK, &mark).unwrap();
    }
    p.client.write_all(b"marked").unwrap();
    receive(&mut p.server, b"marked");
    locked.unlock();
    assert!(our_rules(&ports).is_empty());
}

#[test]
fn iptables_lock_and_unlock() {
    lock_blocks_then_unlock_delivers(Method::Iptables);
}

#[test]
fn nftables_lock_and_unlock() {
    lock_blocks_then_unlock_delivers(Method::Nftables);
}

#[test]
fn iptables_marked_packets_pass() {
    marked_packets_pass(Method::Iptables);
}

#[test]
fn nftables_marked_packets_pass() {
    marked_packets_pass(Method::Nftables);
}

/// nftables: connections locked by separate calls share the table; it
/// goes with the last unlock.
#[test]
fn nftables_table_shared_between_locks() {
    if !is_root() {
        return;
    }
    let _g = FIREWALL.lock().unwrap_or_else(|e| e.into_inner());
    let mut a = Pair::new("127.0.0.1:0", "127.0.0.1").unwrap();
    let mut b = Pair::new("127.0.0.1:0", "127.0.0.1").unwrap();
    let (ca, cb) = ([a.conn()], [b.conn()]);
    let Some(la) = try_lock(Method::Nftables, &ca) else {
        return;
    };
    let lb = try_lock(Method::Nftables, &cb).unwrap();
    la.unlock();
    b.client.write_all(b"x").unwrap();
    assert!(
        nothing_within(&mut b.server, Duration::from_millis(300)),
        "the unlock of a unlocked b too"
    );
    a.client.write_all(b"y").unwrap();
    receive(&mut a.server, b"y");
    lb.unlock();
    receive(&mut b.server, b"x");
    assert!(!listing("nft", &["list", "tables"]).contains(netlock::NFT_TABLE));
}

/// The table-less methods: skip locks nothing.
#[test]
fn skip_locks_nothing() {
    let mut p = Pair::new("127.0.0.1:0", "127.0.0.1").unwrap();
    let conns = [p.conn()];
    netlock::lock(Method::Skip, &conns).unwrap();
    p.client.write_all(b"free").unwrap();
    receive(&mut p.server, b"free");
    netlock::unlock(Method::Skip, &conns).unwrap();
}

/// The rules CRIU 4.2's dump inserted (golden image set) are the ones
/// crust's unlock removes, from the connections alone.
#[test]
fn unlock_removes_criu_rules() {
    let script = std::path::Path::new(
        "/work/shared/golden/criu-4.2/tcp/restore-check/network-lock-rules.sh",
    );
    if !is_root() {
        return;
    }
    if !script.exists() {
        skip(&format!("{} is missing", script.display()));
        return;
    }
    let _g = FIREWALL.lock().unwrap_or_else(|e| e.into_inner());
    let ports = [47011, 47013];
    assert!(
        our_rules(&ports).is_empty(),
        "rules on ports 47011/47013 already"
    );
    let conns = [
        Conn {
            local: "127.0.0.1:47013".parse().unwrap(),
            remote: "127.0.0.1:47011".parse().unwrap(),
        },
        Conn {
            local: "127.0.0.1:47011".parse().unwrap(),
            remote: "127.0.0.1:47013".parse().unwrap(),
        },
    ];
    // Whatever happens below, the rules go.
    let guard = Locked {
        method: Method::Iptables,
        conns: &conns,
        done: false,
    };
    let ok = Command::new("sh").arg(script).status().unwrap().success();
    assert!(ok, "{} failed", script.display());
    // (nft lists the iptables-nft rules too: count iptables' own lines.)
    let n = our_rules(&ports)
        .iter()
        .filter(|l| l.starts_with("-A "))
        .count();
    assert_eq!(n, 4);
    guard.unlock();
    assert!(our_rules(&ports).is_empty());
}

/// Connections CRIU locked with nftables (its table `inet CRIU-<run id>`,
/// as a CRIU dump leaves it) are unlocked by crust's unlock; CRIU's table
/// goes with its last connection.
#[test]
fn nftables_unlock_in_criu_table() {
    if !is_root() {
        return;
    }
    let _g = FIREWALL.lock().unwrap_or_else(|e| e.into_inner());
    let table = "inet CRIU-e2a95659-2e55-4759-a2";
    let elems = |p: &Pair| {
        let c = p.conn();
        format!(
            "{} . {} . {} . {}, {} . {} . {} . {}",
            c.local.ip(),
            c.local.port(),
            c.remote.ip(),
            c.remote.port(),
            c.remote.ip(),
            c.remote.port(),
            c.local.ip(),
            c.local.port()
        )
    };
    let mut a = Pair::new("127.0.0.1:0", "127.0.0.1").unwrap();
    let mut b = Pair::new("127.0.0.1:0", "127.0.0.1").unwrap();
    let mut script = format!(
        "add table {table}\n\
         add chain {table} output {{ type filter hook output priority 0; }}\n\
         add rule {table} output meta mark 0xC114 accept\n\
         add chain {table} input {{ type filter hook input priority 0; }}\n\
         add rule {table} input meta mark 0xC114 accept\n\
         add set {table} conns4 {{ type ipv4_addr . inet_service . ipv4_addr . inet_service; }}\n\
         add rule {table} output ip saddr . tcp sport . ip daddr . tcp dport @conns4 drop\n\
         add rule {table} input ip saddr . tcp sport . ip daddr . tcp dport @conns4 drop\n"
    );
    script += &format!(
        "add element {table} conns4 {{ {}, {} }}\n",
        elems(&a),
        elems(&b)
    );
    let path = std::env::temp_dir().join(format!("crust-netlock-test-{}.nft", std::process::id()));
    std::fs::write(&path, script).unwrap();
    let ok = Command::new("nft").arg("-f").arg(&path).status();
    let _ = std::fs::remove_file(&path);
    match ok {
        Ok(s) if s.success() => {}
        other => {
            skip(&format!("nft cannot make CRIU's table: {other:?}"));
            let _ = Command::new("nft")
                .args(["delete", "table", "inet", &table[5..]])
                .status();
            return;
        }
    }
    let (ca, cb) = ([a.conn()], [b.conn()]);
    // Whatever happens below, CRIU's table goes.
    struct DropTable(&'static str);
    impl Drop for DropTable {
        fn drop(&mut self) {
            let _ = Command::new("nft")
                .args(["delete", "table", "inet", self.0])
                .status();
        }
    }
    let _t = DropTable(&table[5..]);
    a.client.write_all(b"a").unwrap();
    b.client.write_all(b"b").unwrap();
    assert!(nothing_within(&mut a.server, Duration::from_millis(300)));
    netlock::unlock(Method::Nftables, &ca).unwrap();
    receive(&mut a.server, b"a");
    assert!(
        nothing_within(&mut b.server, Duration::from_millis(200)),
        "the unlock of a unlocked b too"
    );
    assert!(listing("nft", &["list", "tables"]).contains(&table[5..]));
    netlock::unlock(Method::Nftables, &cb).unwrap();
    receive(&mut b.server, b"b");
    assert!(
        !listing("nft", &["list", "tables"]).contains(&table[5..]),
        "CRIU's table is still there"
    );
}

/// 1000 connections (made up, IPv4 and IPv6) are locked and unlocked in one
/// go each, quickly (also when the unlock lists them in another order, as a
/// restore does), and leave nothing behind.
#[test]
fn thousand_connections() {
    if !is_root() {
        return;
    }
    let _g = FIREWALL.lock().unwrap_or_else(|e| e.into_inner());
    let conns: Vec<Conn> = (0..1000u16)
        .map(|i| {
            let host = if i % 2 == 0 { "127.0.0.1" } else { "[::1]" };
            Conn {
                local: format!("{host}:9").parse().unwrap(),
                remote: format!("{host}:{}", 50000 + i).parse().unwrap(),
            }
        })
        .collect();
    for method in [Method::Iptables, Method::Nftables] {
        let t = std::time::Instant::now();
        let Some(mut locked) = try_lock(method, &conns) else {
            continue;
        };
        let locking = t.elapsed();
        let t = std::time::Instant::now();
        let shuffled: Vec<Conn> = conns
            .iter()
            .rev()
            .step_by(2)
            .chain(conns.iter().step_by(2))
            .copied()
            .collect();
        assert_eq!(shuffled.len(), conns.len());
        netlock::unlock(method, &shuffled).unwrap();
        locked.done = true;
        let unlocking = t.elapsed();
        println!("{method}: 1000 connections locked in {locking:?}, unlocked in {unlocking:?}");
        assert!(our_rules(&[9]).is_empty(), "{method}: rules left");
        assert!(
            locking + unlocking < Duration::from_secs(1),
            "{method}: too slow"
        );
    }
}
