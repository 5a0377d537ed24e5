//! crust-netlink: the netlink message codec crust talks to the kernel with.
//!
//! - [`msg`]: the nlmsghdr and attribute layout (linux/netlink.h): building
//!   requests, splitting a datagram into messages, reading attributes and
//!   acks. Pure functions over byte slices, in the host's byte order.
//! - [`diag`]: sock_diag (NETLINK_SOCK_DIAG) dump requests and multi-part
//!   answers: [`diag_dump`] sends one SOCK_DIAG_BY_FAMILY request and hands
//!   every answer message to a callback until NLMSG_DONE.
//! - [`rtnl`]: rtnetlink links: RTM_GETLINK dumps parsed into
//!   [`rtnl::Link`]s and the requests that make, change or remove links.
//! - [`transport`]: where messages go: the [`Transport`] trait, a real
//!   netlink [`Socket`] of any protocol (NETLINK_SOCK_DIAG,
//!   NETLINK_NETFILTER, ...) and a [`Fake`] that records requests and
//!   replays canned datagrams, so the codec is tested without a kernel.
//!
//! The crate has no unsafe code: sockets are crust-sys's.

#![forbid(unsafe_code)]

pub mod diag;
pub mod msg;
pub mod rtnl;
pub mod transport;

pub use diag::{diag_dump, diag_of, diag_request, split_msgs, DumpError, SOCK_DIAG_BY_FAMILY};
pub use msg::{
    ack_of, attr_iter, attrs, messages, push_attr, request, u16_at, u32_at, Msg, NLA_HDRLEN,
    NLA_TYPE_MASK, NLMSG_DONE, NLMSG_ERROR, NLMSG_HDRLEN, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
pub use transport::{Fake, Socket, Transport};
