//! Sockets and the network: unix, inet (TCP through crust-soccr, UDP, raw),
//! packet and netlink sockets, accept-queue hand-over, network locking.

pub(crate) mod accept;
pub(crate) mod inet;
pub(crate) mod netlink;
pub mod netlock;
pub(crate) mod packet;
pub(crate) mod sock;
pub(crate) mod udpcork;
pub(crate) mod unix;
