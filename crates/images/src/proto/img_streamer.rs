//! Messages of CRIU's `img-streamer.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::wire::*;

crate::message! {
    /// message `img_streamer_request_entry`
    ImgStreamerRequestEntry = "img_streamer_request_entry" {
        1 filename: required Str,
    }
    /// message `img_streamer_reply_entry`
    ImgStreamerReplyEntry = "img_streamer_reply_entry" {
        1 exists: required Bool,
    }
}
