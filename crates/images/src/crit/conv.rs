//! crit's value conversions: how each field kind is written as JSON by
//! CRIU 4.2's crit (plain and `--pretty`) and read back by its encode.
//!
//! The `(criu).…` field options of CRIU's .proto files become wrapper kinds
//! here: [`Hex`], [`Flags`], [`Dev`], [`ODev`], [`Dict`], [`Ip`] and
//! [`UnixName`]. They change only the JSON; the wire codec is the wrapped
//! kind's. The rules (facts about crit's output, in crust's own code):
//! - bytes are base64 in lines of 76 characters, each ending in `\n`
//!   (Python's `base64.encodebytes`); enums are their value names;
//! - `--pretty` only: integers of a hex field, and every integer inside a
//!   message held by a hex field, are `"0x…"`; flags fields are names joined
//!   by `" | "` (unknown bits as one `0x…`, nothing set is `""`); device
//!   numbers are `"major:minor"`; dict fields show names; repeated IP
//!   address fields are one address in a list;
//! - unix socket names are quoted-printable text in both modes;
//! - encode takes either form, and any integer as text in any base prefix.

use std::fmt::Write as _;
use std::marker::PhantomData;

use super::value::Json;
use crate::wire::{DecodeError, Kind, Reader, WireType};

/// How to write JSON: crit's plain or `--pretty` form, and whether an
/// enclosing field is marked hex.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cx {
    pub pretty: bool,
    pub hex: bool,
}

/// Why a JSON value cannot be encoded: where (`fown.uid`, `vmas[3].start`)
/// and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonErr {
    pub path: String,
    pub reason: String,
}

impl JsonErr {
    pub fn new(reason: String) -> JsonErr {
        JsonErr {
            path: String::new(),
            reason,
        }
    }

    /// The same error seen from the enclosing field `name` (or `[i]`).
    pub fn within(mut self, name: &str) -> JsonErr {
        self.path = if self.path.is_empty() {
            name.to_string()
        } else if self.path.starts_with('[') {
            format!("{name}{}", self.path)
        } else {
            format!("{name}.{}", self.path)
        };
        self
    }
}

impl std::fmt::Display for JsonErr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.reason)
        } else {
            write!(f, "field {}: {}", self.path, self.reason)
        }
    }
}

// ---------------------------------------------------------------------------
// Scalars

pub fn json_int<T: Into<i128>>(v: T, cx: Cx, out: &mut String) {
    let v: i128 = v.into();
    if cx.pretty && cx.hex {
        if v < 0 {
            let _ = write!(out, "\"-0x{:x}\"", -v);
        } else {
            let _ = write!(out, "\"0x{v:x}\"");
        }
    } else {
        let _ = write!(out, "{v}");
    }
}

pub fn json_bool(v: bool, _cx: Cx, out: &mut String) {
    out.push_str(if v { "true" } else { "false" });
}

pub fn json_float<T: Into<f64>>(v: T, _cx: Cx, out: &mut String) {
    let v: f64 = v.into();
    let _ = write!(out, "{v:?}");
}

/// An integer written as Python's `int(text, 0)` reads it: optional sign,
/// then decimal, `0x`, `0o` or `0b` digits, `_` between digits.
pub fn parse_int_text(s: &str) -> Option<i128> {
    let t = s.trim();
    let (neg, t) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let lower = t.to_ascii_lowercase();
    let (radix, digits) = if let Some(r) = lower.strip_prefix("0x") {
        (16, r)
    } else if let Some(r) = lower.strip_prefix("0o") {
        (8, r)
    } else if let Some(r) = lower.strip_prefix("0b") {
        (2, r)
    } else {
        if lower.len() > 1
            && lower.starts_with('0')
            && lower.bytes().any(|c| c != b'0' && c != b'_')
        {
            return None;
        }
        (10, lower.as_str())
    };
    let digits = digits.strip_prefix('_').unwrap_or(digits);
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
    {
        return None;
    }
    let v = i128::from_str_radix(&digits.replace('_', ""), radix).ok()?;
    Some(if neg { -v } else { v })
}

fn json_i128(j: &Json) -> Result<i128, JsonErr> {
    match j {
        Json::Num(t) => t
            .parse::<i128>()
            .ok()
            .or_else(|| {
                t.parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite())
                    .map(|f| f.trunc() as i128)
            })
            .ok_or_else(|| JsonErr::new(format!("{t} is not an integer"))),
        Json::Str(s) => {
            parse_int_text(s).ok_or_else(|| JsonErr::new(format!("{s:?} is not an integer")))
        }
        Json::Bool(b) => Ok(*b as i128),
        _ => Err(JsonErr::new(format!(
            "an integer was expected, found {}",
            j.what()
        ))),
    }
}

pub fn int_from_json<T: TryFrom<i128>>(j: &Json) -> Result<T, JsonErr> {
    let v = json_i128(j)?;
    T::try_from(v).map_err(|_| JsonErr::new(format!("{v} is out of range for this field")))
}

pub fn bool_from_json<T: From<bool>>(j: &Json) -> Result<T, JsonErr> {
    Ok(T::from(match j {
        Json::Bool(b) => *b,
        Json::Str(s) => !s.is_empty(),
        Json::Null => false,
        _ => json_i128(j)? != 0,
    }))
}

/// Floats from JSON numbers.
pub trait FromF64 {
    fn from_f64(v: f64) -> Self;
}
impl FromF64 for f64 {
    fn from_f64(v: f64) -> f64 {
        v
    }
}
impl FromF64 for f32 {
    fn from_f64(v: f64) -> f32 {
        v as f32
    }
}

pub fn float_from_json<T: FromF64>(j: &Json) -> Result<T, JsonErr> {
    match j {
        Json::Num(t) => t
            .parse::<f64>()
            .map(T::from_f64)
            .map_err(|_| JsonErr::new(format!("{t} is not a number"))),
        _ => Err(JsonErr::new(format!(
            "a number was expected, found {}",
            j.what()
        ))),
    }
}

/// A JSON string as Python's `json.dump` writes it (ASCII only: other
/// characters as `\uXXXX`, surrogate pairs above U+FFFF).
pub fn json_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            c => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{u:04x}");
                }
            }
        }
    }
    out.push('"');
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding, on one line.
pub fn base64_into(data: &[u8], out: &mut String) {
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = ((b[0] as u32) << 16) | ((b[1] as u32) << 8) | b[2] as u32;
        out.push(B64[(n >> 18) as usize & 63] as char);
        out.push(B64[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            B64[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            B64[n as usize & 63] as char
        } else {
            '='
        });
    }
}

/// Base64 as Python's `base64.encodebytes`: 76 characters (57 bytes) a
/// line, every line ending in a newline; nothing at all for no bytes.
pub fn base64_lines(data: &[u8], out: &mut String) {
    for line in data.chunks(57) {
        base64_into(line, out);
        out.push('\n');
    }
}

/// [`base64_lines`] as a JSON string.
pub fn json_base64(data: &[u8], out: &mut String) {
    let mut s = String::with_capacity(data.len() * 4 / 3 + data.len() / 57 + 4);
    base64_lines(data, &mut s);
    json_str(&s, out);
}

/// Base64 as Python's `base64.decodebytes` reads it: characters outside
/// the alphabet (newlines) are skipped, decoding stops at padding.
pub fn base64_decode(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => {
                if bits >= 8 {
                    out.push((acc >> (bits - 8)) as u8);
                }
                acc = 0;
                bits = 0;
                continue;
            }
            _ => continue,
        };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Wrapper kinds for the (criu).… field options

macro_rules! delegate_wire {
    ($k:ident) => {
        type T = <$k as Kind>::T;
        const WIRE: WireType = <$k as Kind>::WIRE;
        const PACKABLE: bool = <$k as Kind>::PACKABLE;
        fn encode_value(v: &Self::T, out: &mut Vec<u8>) {
            $k::encode_value(v, out)
        }
        fn value_len(v: &Self::T) -> usize {
            $k::value_len(v)
        }
        fn decode_value(r: &mut Reader<'_>, depth: u32) -> Result<Self::T, DecodeError> {
            $k::decode_value(r, depth)
        }
    };
}

/// `(criu).hex`: integers as `"0x…"` in `--pretty`, in nested messages too.
pub struct Hex<K>(PhantomData<K>);
impl<K: Kind> Kind for Hex<K> {
    delegate_wire!(K);
    fn json(v: &Self::T, cx: Cx, out: &mut String) {
        K::json(v, Cx { hex: true, ..cx }, out)
    }
    fn json_list(v: &[Self::T], cx: Cx, out: &mut String) {
        K::json_list(v, Cx { hex: true, ..cx }, out)
    }
    fn from_json(j: &Json) -> Result<Self::T, JsonErr> {
        K::from_json(j)
    }
}

/// A flags table: names and bits, in crit's order.
pub trait FlagTable {
    const BITS: &'static [(&'static str, u64)];
}

/// `(criu).flags`: bit names joined by `" | "` in `--pretty`.
pub struct Flags<K, F>(PhantomData<(K, F)>);
impl<K: Kind, F: FlagTable> Kind for Flags<K, F>
where
    K::T: Copy + Into<u64> + TryFrom<u64>,
{
    delegate_wire!(K);
    fn json(v: &Self::T, cx: Cx, out: &mut String) {
        if !cx.pretty || cx.hex {
            return K::json(v, cx, out);
        }
        let mut rest: u64 = (*v).into();
        let mut names: Vec<String> = F::BITS
            .iter()
            .filter(|(_, b)| rest & b != 0)
            .map(|(n, _)| n.to_string())
            .collect();
        for (_, b) in F::BITS {
            rest &= !b;
        }
        if rest != 0 {
            names.push(format!("0x{rest:x}"));
        }
        json_str(&names.join(" | "), out);
    }
    fn from_json(j: &Json) -> Result<Self::T, JsonErr> {
        let Json::Str(s) = j else {
            return K::from_json(j);
        };
        let mut sum: u64 = 0;
        if !s.is_empty() {
            for word in s.split('|').map(str::trim) {
                let v = match F::BITS.iter().find(|(n, _)| *n == word) {
                    Some((_, b)) => *b,
                    None => parse_int_text(word)
                        .and_then(|v| u64::try_from(v).ok())
                        .ok_or_else(|| {
                            JsonErr::new(format!("{word:?} is not a flag name or number"))
                        })?,
                };
                sum = sum.wrapping_add(v);
            }
        }
        Self::T::try_from(sum)
            .map_err(|_| JsonErr::new(format!("flags {s:?} do not fit the field")))
    }
}

/// A dict table: names of values (crit's `(criu).dict` maps, per field).
pub trait DictTable {
    const NAMES: &'static [(u64, &'static str)];
}

/// `(criu).dict`: the value's name in `--pretty` (the number when unnamed).
pub struct Dict<K, D>(PhantomData<(K, D)>);
impl<K: Kind, D: DictTable> Kind for Dict<K, D>
where
    K::T: Copy + Into<u64> + TryFrom<u64>,
{
    delegate_wire!(K);
    fn json(v: &Self::T, cx: Cx, out: &mut String) {
        let n: u64 = (*v).into();
        match D::NAMES.iter().find(|(x, _)| *x == n) {
            Some((_, name)) if cx.pretty && !cx.hex => json_str(name, out),
            _ => K::json(v, cx, out),
        }
    }
    fn from_json(j: &Json) -> Result<Self::T, JsonErr> {
        if let Json::Str(s) = j {
            if let Some((v, _)) = D::NAMES.iter().find(|(_, n)| n == s) {
                return Self::T::try_from(*v)
                    .map_err(|_| JsonErr::new(format!("{s:?} does not fit")));
            }
        }
        K::from_json(j)
    }
}

/// `(criu).dev`: `"major:minor"` in `--pretty`, the kernel's encoding
/// (minor in the low 20 bits); with `ODEV` true the old (glibc
/// `makedev`) encoding.
pub struct DevOf<K, const ODEV: bool>(PhantomData<K>);
/// `(criu).dev`.
pub type Dev<K> = DevOf<K, false>;
/// `(criu).dev` and `(criu).odev`.
pub type ODev<K> = DevOf<K, true>;

impl<K: Kind, const ODEV: bool> Kind for DevOf<K, ODEV>
where
    K::T: Copy + Into<u64> + TryFrom<u64>,
{
    delegate_wire!(K);
    fn json(v: &Self::T, cx: Cx, out: &mut String) {
        if !cx.pretty || cx.hex {
            return K::json(v, cx, out);
        }
        let v: u64 = (*v).into();
        let (ma, mi) = if ODEV {
            (
                ((v >> 8) & 0xfff) | ((v >> 32) & !0xfff),
                (v & 0xff) | ((v >> 12) & !0xff),
            )
        } else {
            (v >> 20, v & 0xfffff)
        };
        json_str(&format!("{ma}:{mi}"), out);
    }
    fn from_json(j: &Json) -> Result<Self::T, JsonErr> {
        let Json::Str(s) = j else {
            return K::from_json(j);
        };
        let bad = || JsonErr::new(format!("{s:?} is not a device number (major:minor)"));
        let (ma, mi) = s.split_once(':').ok_or_else(bad)?;
        let ma: u64 = ma.trim().parse().map_err(|_| bad())?;
        let mi: u64 = mi.trim().parse().map_err(|_| bad())?;
        let v = if ODEV {
            ((ma & 0xfff) << 8) | ((ma & !0xfff) << 32) | (mi & 0xff) | ((mi & !0xff) << 12)
        } else {
            (ma << 20) | mi
        };
        Self::T::try_from(v).map_err(|_| bad())
    }
}

/// `(criu).ipadd`: a repeated u32 field holding an IPv4 (one value) or
/// IPv6 (four) address in network order; `--pretty` shows `["address"]`.
pub struct Ip<K>(PhantomData<K>);
impl<K: Kind<T = u32>> Kind for Ip<K> {
    delegate_wire!(K);
    fn json(v: &u32, cx: Cx, out: &mut String) {
        K::json(v, cx, out)
    }
    fn json_list(v: &[u32], cx: Cx, out: &mut String) {
        if !cx.pretty || v.is_empty() || (v.len() > 1 && v.len() < 4) {
            return K::json_list(v, cx, out);
        }
        out.push('[');
        let text = if v.len() == 1 {
            std::net::Ipv4Addr::from(v[0].to_le_bytes()).to_string()
        } else {
            let mut b = [0u8; 16];
            for (i, w) in v.iter().take(4).enumerate() {
                b[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
            }
            ipv6_compressed(&b)
        };
        json_str(&text, out);
        out.push(']');
    }
    fn from_json(j: &Json) -> Result<u32, JsonErr> {
        K::from_json(j)
    }
    fn from_json_list(j: &Json) -> Result<Vec<u32>, JsonErr> {
        let Json::Arr(items) = j else {
            return K::from_json_list(j);
        };
        let Some(Json::Str(s)) = items.first() else {
            return K::from_json_list(j);
        };
        match s.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(a)) => Ok(vec![u32::from_le_bytes(a.octets())]),
            Ok(std::net::IpAddr::V6(a)) => Ok(a
                .octets()
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()),
            Err(_) => Err(JsonErr::new(format!("{s:?} is not an IP address"))),
        }
    }
}

/// An IPv6 address as Python's `IPv6Address.compressed` (3.11) writes it:
/// lower-case hex groups, the first longest run of two or more zero groups
/// as `::`, no dotted IPv4 tail.
pub fn ipv6_compressed(b: &[u8; 16]) -> String {
    let h: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    let (mut best, mut best_len, mut cur, mut cur_len) = (0usize, 0usize, 0usize, 0usize);
    for (i, &x) in h.iter().enumerate() {
        if x == 0 {
            if cur_len == 0 {
                cur = i;
            }
            cur_len += 1;
            if cur_len > best_len {
                best = cur;
                best_len = cur_len;
            }
        } else {
            cur_len = 0;
        }
    }
    let groups = |r: &[u16]| {
        r.iter()
            .map(|x| format!("{x:x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    if best_len > 1 {
        format!("{}::{}", groups(&h[..best]), groups(&h[best + best_len..]))
    } else {
        groups(&h)
    }
}

/// `(criu).conv = "unix_name"`: bytes as quoted-printable text (both modes).
pub struct UnixName;
impl Kind for UnixName {
    delegate_wire!(BytesKind);
    fn json(v: &Vec<u8>, _cx: Cx, out: &mut String) {
        json_str(&quopri_encode(v), out)
    }
    fn from_json(j: &Json) -> Result<Vec<u8>, JsonErr> {
        match j {
            Json::Str(s) => Ok(quopri_decode(s.as_bytes())),
            _ => Err(JsonErr::new(format!(
                "a string was expected, found {}",
                j.what()
            ))),
        }
    }
}
use crate::wire::Bytes as BytesKind;

const QP_LINE: usize = 76;

fn qp_hex(c: u8, out: &mut Vec<u8>) {
    const H: &[u8; 16] = b"0123456789ABCDEF";
    out.push(b'=');
    out.push(H[(c >> 4) as usize]);
    out.push(H[(c & 15) as usize]);
}

/// Quoted-printable as Python's `quopri.encodestring` (binascii's b2a_qp,
/// text mode, tabs and spaces kept but at the end).
pub fn quopri_encode(d: &[u8]) -> String {
    let crlf = d
        .iter()
        .position(|&c| c == b'\n')
        .is_some_and(|p| p > 0 && d[p - 1] == b'\r');
    let soft = |out: &mut Vec<u8>| {
        out.push(b'=');
        if crlf {
            out.push(b'\r');
        }
        out.push(b'\n');
    };
    let mut out = Vec::with_capacity(d.len() * 3);
    let (mut i, mut linelen) = (0usize, 0usize);
    while i < d.len() {
        let c = d[i];
        let last = i + 1 == d.len();
        let next = d.get(i + 1).copied();
        let encode = c > 126
            || c == b'='
            || (c == b'.' && linelen == 0 && (last || matches!(next, Some(b'\n' | b'\r' | 0))))
            || ((c == b'\t' || c == b' ') && last)
            || (c < 33 && c != b'\r' && c != b'\n' && c != b'\t' && c != b' ');
        if encode {
            if linelen + 3 >= QP_LINE {
                soft(&mut out);
                linelen = 0;
            }
            qp_hex(c, &mut out);
            i += 1;
            linelen += 3;
        } else if c == b'\n' || (c == b'\r' && next == Some(b'\n')) {
            linelen = 0;
            if let Some(&p) = out.last() {
                if p == b' ' || p == b'\t' {
                    out.pop();
                    qp_hex(p, &mut out);
                }
            }
            if crlf {
                out.push(b'\r');
            }
            out.push(b'\n');
            i += if c == b'\r' { 2 } else { 1 };
        } else {
            if !last && next != Some(b'\n') && linelen + 1 >= QP_LINE {
                soft(&mut out);
                linelen = 0;
            }
            linelen += 1;
            out.push(c);
            i += 1;
        }
    }
    // Only ASCII is written.
    out.into_iter().map(char::from).collect()
}

/// Quoted-printable decoding as Python's `quopri.decodestring`.
pub fn quopri_decode(d: &[u8]) -> Vec<u8> {
    let hexv = |c: u8| (c as char).to_digit(16).map(|v| v as u8);
    let mut out = Vec::with_capacity(d.len());
    let mut i = 0;
    while i < d.len() {
        if d[i] != b'=' {
            out.push(d[i]);
            i += 1;
            continue;
        }
        i += 1;
        if i >= d.len() {
            break;
        }
        if d[i] == b'\n' || d[i] == b'\r' {
            while i < d.len() && d[i] != b'\n' {
                i += 1;
            }
            i += 1;
        } else if d[i] == b'=' {
            out.push(b'=');
            i += 1;
        } else if let (Some(a), Some(b)) = (hexv(d[i]), d.get(i + 1).and_then(|&c| hexv(c))) {
            out.push((a << 4) | b);
            i += 2;
        } else {
            out.push(b'=');
        }
    }
    out
}

// ---------------------------------------------------------------------------
// crit's tables (pycriu's flags_maps and dict_maps)

macro_rules! flag_table {
    ($($name:ident { $($n:literal = $v:expr),* $(,)? })*) => {$(
        pub struct $name;
        impl FlagTable for $name {
            const BITS: &'static [(&'static str, u64)] = &[$(($n, $v)),*];
        }
    )*};
}

flag_table! {
    MmapProt { "PROT_READ" = 0x1, "PROT_WRITE" = 0x2, "PROT_EXEC" = 0x4 }
    MmapFlags {
        "MAP_SHARED" = 0x1, "MAP_PRIVATE" = 0x2, "MAP_DROPPABLE" = 0x08, "MAP_ANON" = 0x20,
        "MAP_GROWSDOWN" = 0x100,
    }
    MmapStatus {
        "VMA_AREA_NONE" = 0, "VMA_AREA_REGULAR" = 1, "VMA_AREA_STACK" = 1 << 1,
        "VMA_AREA_VSYSCALL" = 1 << 2, "VMA_AREA_VDSO" = 1 << 3, "VMA_AREA_HEAP" = 1 << 5,
        "VMA_FILE_PRIVATE" = 1 << 6, "VMA_FILE_SHARED" = 1 << 7, "VMA_ANON_SHARED" = 1 << 8,
        "VMA_ANON_PRIVATE" = 1 << 9, "VMA_AREA_SYSVIPC" = 1 << 10, "VMA_AREA_SOCKET" = 1 << 11,
        "VMA_AREA_VVAR" = 1 << 12, "VMA_AREA_AIORING" = 1 << 13, "VMA_AREA_MEMFD" = 1 << 14,
        "VMA_AREA_SHSTK" = 1 << 15, "VMA_AREA_UPROBES" = 1 << 17, "VMA_UNSUPP" = 1 << 31,
    }
    RfileFlags {
        "O_WRONLY" = 0o1, "O_RDWR" = 0o2, "O_CREAT" = 0o100, "O_EXCL" = 0o200,
        "O_NOCTTY" = 0o400, "O_TRUNC" = 0o1000, "O_APPEND" = 0o2000, "O_NONBLOCK" = 0o4000,
        "O_DSYNC" = 0o10000, "FASYNC" = 0o20000, "O_DIRECT" = 0o40000,
        "O_LARGEFILE" = 0o100000, "O_DIRECTORY" = 0o200000, "O_NOFOLLOW" = 0o400000,
        "O_NOATIME" = 0o1000000, "O_CLOEXEC" = 0o2000000,
    }
    PmapFlags { "PE_PARENT" = 1, "PE_LAZY" = 1 << 1, "PE_PRESENT" = 1 << 2 }
    SealsFlags {
        "F_SEAL_SEAL" = 0x1, "F_SEAL_SHRINK" = 0x2, "F_SEAL_GROW" = 0x4, "F_SEAL_WRITE" = 0x8,
        "F_SEAL_FUTURE_WRITE" = 0x10,
    }
}

macro_rules! dict_table {
    ($($name:ident { $($v:literal = $n:literal),* $(,)? })*) => {$(
        pub struct $name;
        impl DictTable for $name {
            const NAMES: &'static [(u64, &'static str)] = &[$(($v, $n)),*];
        }
    )*};
}

dict_table! {
    TaskState { 1 = "Alive", 3 = "Zombie", 6 = "Stopped" }
    SkFamily { 1 = "UNIX", 2 = "INET", 10 = "INET6", 16 = "NETLINK", 17 = "PACKET" }
    SkType { 1 = "STREAM", 2 = "DGRAM", 3 = "RAW", 5 = "SEQPACKET", 10 = "PACKET" }
    SkState {
        1 = "ESTABLISHED", 2 = "SYN_SENT", 3 = "SYN_RECV", 4 = "FIN_WAIT1", 5 = "FIN_WAIT2",
        6 = "TIME_WAIT", 7 = "CLOSE", 8 = "CLOSE_WAIT", 9 = "LAST_ACK", 10 = "LISTEN",
    }
    SkProto { 0 = "IP", 6 = "TCP", 17 = "UDP", 136 = "UDPLITE" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_quopri_as_python() {
        let mut s = String::new();
        base64_lines(&[0u8; 60], &mut s);
        assert_eq!(s, format!("{}\n{}\n", "A".repeat(76), "AAAA"));
        assert_eq!(base64_decode(&s), vec![0u8; 60]);
        assert_eq!(base64_decode("YWI=\n"), b"ab");
        assert_eq!(quopri_encode(b"\0/tmp/x=y "), "=00/tmp/x=3Dy=20");
        assert_eq!(quopri_decode(b"=00/tmp/x=3Dy=20"), b"\0/tmp/x=y ");
        let long = vec![b'a'; 100];
        let q = quopri_encode(&long);
        assert_eq!(q, format!("{}=\n{}", "a".repeat(75), "a".repeat(25)));
        assert_eq!(quopri_decode(q.as_bytes()), long);
    }

    #[test]
    fn ints_and_addresses() {
        assert_eq!(parse_int_text("0x1f"), Some(31));
        assert_eq!(parse_int_text("-12"), Some(-12));
        assert_eq!(parse_int_text("010"), None);
        assert_eq!(parse_int_text("0"), Some(0));
        let mut b = [0u8; 16];
        assert_eq!(ipv6_compressed(&b), "::");
        b[15] = 1;
        assert_eq!(ipv6_compressed(&b), "::1");
        b[10] = 0xff;
        b[11] = 0xff;
        assert_eq!(ipv6_compressed(&b), "::ffff:0:1");
        let mut out = String::new();
        json_str("é\u{1}\u{7f}", &mut out);
        assert_eq!(out, "\"\\u00e9\\u0001\\u007f\"");
    }
}
