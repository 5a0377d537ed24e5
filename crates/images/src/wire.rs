//! A small hand-written protobuf (proto2) runtime.
//!
//! Messages are declared with [`crate::message!`], which generates a plain
//! struct plus an implementation of [`Message`] built on the helpers here.
//! Field codecs are zero-sized "kind" types implementing [`Kind`]; a field's
//! Rust type is `<K as Kind>::T`, wrapped in `Option` (optional) or `Vec`
//! (repeated).

use std::fmt::Write as _;
use std::marker::PhantomData;

pub use crate::crit::conv::{
    base64_decode, bool_from_json, float_from_json, int_from_json, json_base64, json_bool,
    json_float, json_int, json_str, Cx, JsonErr,
};
pub use crate::crit::value::Json;

/// Nesting depth beyond which decoding gives up.
pub const MAX_DEPTH: u32 = 64;

/// Protobuf wire types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireType {
    Varint = 0,
    Fixed64 = 1,
    Len = 2,
    Fixed32 = 5,
}

impl WireType {
    pub fn from_u8(v: u8) -> Option<WireType> {
        match v {
            0 => Some(WireType::Varint),
            1 => Some(WireType::Fixed64),
            2 => Some(WireType::Len),
            5 => Some(WireType::Fixed32),
            _ => None,
        }
    }
}

/// Why a buffer could not be decoded as a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{message}: truncated input at offset {offset} while reading {what}")]
    Truncated {
        message: &'static str,
        offset: usize,
        what: &'static str,
    },
    #[error("{message}: varint longer than 10 bytes at offset {offset}")]
    VarintTooLong {
        message: &'static str,
        offset: usize,
    },
    #[error("{message}: length {len} at offset {offset} runs past the end of the buffer ({remaining} bytes left)")]
    LengthOutOfBounds {
        message: &'static str,
        offset: usize,
        len: u64,
        remaining: usize,
    },
    #[error("{message}: invalid wire type {wire_type} at offset {offset}")]
    InvalidWireType {
        message: &'static str,
        offset: usize,
        wire_type: u8,
    },
    #[error("{message}: field number 0 at offset {offset}")]
    FieldNumberZero {
        message: &'static str,
        offset: usize,
    },
    #[error("{message}.{field}: wire type {found} where {expected:?} was expected")]
    WrongWireType {
        message: &'static str,
        field: &'static str,
        expected: WireType,
        found: u8,
    },
    #[error("{message}.{field}: required field is missing")]
    MissingRequired {
        message: &'static str,
        field: &'static str,
    },
    #[error("{message}.{field}: string is not valid UTF-8")]
    InvalidUtf8 {
        message: &'static str,
        field: &'static str,
    },
    #[error("{message}: nesting deeper than {MAX_DEPTH} levels")]
    TooDeep { message: &'static str },
}

impl DecodeError {
    /// Attach the field name to errors raised while decoding a field value.
    fn in_field(self, field: &'static str) -> DecodeError {
        match self {
            DecodeError::InvalidUtf8 { message, .. } => DecodeError::InvalidUtf8 { message, field },
            e => e,
        }
    }
}

/// A field that the schema does not know, kept to be re-emitted verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownField {
    pub number: u32,
    pub wire_type: u8,
    /// The value bytes as they appeared after the tag (for length-delimited
    /// fields this includes the length prefix).
    pub raw: Vec<u8>,
}

/// The unknown fields of one message, in the order they were seen.
pub type UnknownFields = Vec<UnknownField>;

/// A protobuf message.
pub trait Message: Sized + Default {
    /// The message name as in CRIU's .proto (e.g. `core_entry`).
    const NAME: &'static str;

    /// Append the encoding of `self` to `out`.
    fn encode(&self, out: &mut Vec<u8>);

    /// Exact number of bytes `encode` appends.
    fn encoded_len(&self) -> usize;

    /// Decode a whole buffer as one message.
    fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        Self::decode_depth(buf, 0)
    }

    /// Decode at a given nesting depth (used for nested messages).
    fn decode_depth(buf: &[u8], depth: u32) -> Result<Self, DecodeError>;

    /// Append crit's JSON object of `self` (present fields only, in field
    /// number order; `cx` selects plain or `--pretty`).
    fn to_json(&self, cx: Cx, out: &mut String);

    /// Build the message from crit's JSON object (either mode), as crit's
    /// encode does: fields absent from the object stay unset.
    fn from_json(j: &Json) -> Result<Self, JsonErr>;

    /// Convenience: encode into a fresh vector.
    fn encode_to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.encoded_len());
        self.encode(&mut v);
        v
    }

    /// Convenience: crit's plain JSON text of `self`.
    fn to_json_string(&self) -> String {
        let mut s = String::new();
        self.to_json(Cx::default(), &mut s);
        s
    }
}

// ---------------------------------------------------------------------------
// Low level encoding

pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn varint_len(v: u64) -> usize {
    // 1 byte per started group of 7 bits, at least one.
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

pub fn zigzag32(v: i32) -> u32 {
    ((v << 1) ^ (v >> 31)) as u32
}

pub fn unzigzag32(v: u32) -> i32 {
    ((v >> 1) as i32) ^ -((v & 1) as i32)
}

pub fn zigzag64(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub fn unzigzag64(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

pub fn put_tag(out: &mut Vec<u8>, number: u32, wt: WireType) {
    put_varint(out, ((number as u64) << 3) | wt as u64);
}

pub fn tag_len(number: u32) -> usize {
    varint_len((number as u64) << 3)
}

// ---------------------------------------------------------------------------
// Reader

/// A cursor over a message buffer.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Message name for error reports.
    pub message: &'static str,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], message: &'static str) -> Self {
        Reader {
            buf,
            pos: 0,
            message,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub fn pos(&self) -> usize {
        self.pos
    }

    pub fn varint(&mut self) -> Result<u64, DecodeError> {
        let start = self.pos;
        let mut v: u64 = 0;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(DecodeError::Truncated {
                    message: self.message,
                    offset: start,
                    what: "varint",
                });
            };
            self.pos += 1;
            v |= ((b & 0x7f) as u64) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::VarintTooLong {
            message: self.message,
            offset: start,
        })
    }

    pub fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() - self.pos < n {
            return Err(DecodeError::Truncated {
                message: self.message,
                offset: self.pos,
                what,
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub fn fixed32(&mut self) -> Result<u32, DecodeError> {
        let b = self.bytes(4, "fixed32")?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn fixed64(&mut self) -> Result<u64, DecodeError> {
        let b = self.bytes(8, "fixed64")?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// A length prefix followed by that many bytes.
    pub fn len_delimited(&mut self) -> Result<&'a [u8], DecodeError> {
        let off = self.pos;
        let len = self.varint()?;
        let remaining = self.buf.len() - self.pos;
        if len > remaining as u64 {
            return Err(DecodeError::LengthOutOfBounds {
                message: self.message,
                offset: off,
                len,
                remaining,
            });
        }
        self.bytes(len as usize, "length-delimited value")
    }

    /// Read a tag; returns (field number, raw wire type).
    pub fn tag(&mut self) -> Result<(u32, u8), DecodeError> {
        let off = self.pos;
        let t = self.varint()?;
        let wt = (t & 7) as u8;
        let num = t >> 3;
        if num == 0 || num > u32::MAX as u64 {
            return Err(DecodeError::FieldNumberZero {
                message: self.message,
                offset: off,
            });
        }
        Ok((num as u32, wt))
    }

    /// Skip a value of the given wire type, returning the raw bytes.
    pub fn skip(&mut self, wt: u8) -> Result<&'a [u8], DecodeError> {
        let start = self.pos;
        match WireType::from_u8(wt) {
            Some(WireType::Varint) => {
                self.varint()?;
            }
            Some(WireType::Fixed64) => {
                self.bytes(8, "fixed64")?;
            }
            Some(WireType::Fixed32) => {
                self.bytes(4, "fixed32")?;
            }
            Some(WireType::Len) => {
                self.len_delimited()?;
            }
            None => {
                return Err(DecodeError::InvalidWireType {
                    message: self.message,
                    offset: start,
                    wire_type: wt,
                })
            }
        }
        Ok(&self.buf[start..self.pos])
    }

    /// Keep an unknown field.
    pub fn unknown(
        &mut self,
        number: u32,
        wt: u8,
        into: &mut UnknownFields,
    ) -> Result<(), DecodeError> {
        let raw = self.skip(wt)?.to_vec();
        into.push(UnknownField {
            number,
            wire_type: wt,
            raw,
        });
        Ok(())
    }
}

pub fn encode_unknown(fields: &UnknownFields, out: &mut Vec<u8>) {
    for f in fields {
        put_varint(out, ((f.number as u64) << 3) | f.wire_type as u64);
        out.extend_from_slice(&f.raw);
    }
}

pub fn unknown_len(fields: &UnknownFields) -> usize {
    fields
        .iter()
        .map(|f| varint_len(((f.number as u64) << 3) | f.wire_type as u64) + f.raw.len())
        .sum()
}

// ---------------------------------------------------------------------------
// Field kinds

/// The codec of one protobuf field type.
pub trait Kind {
    type T: Clone + std::fmt::Debug + PartialEq + Default;
    const WIRE: WireType;
    /// Scalars that may appear packed in a repeated field.
    const PACKABLE: bool;
    fn encode_value(v: &Self::T, out: &mut Vec<u8>);
    fn value_len(v: &Self::T) -> usize;
    fn decode_value(r: &mut Reader<'_>, depth: u32) -> Result<Self::T, DecodeError>;
    /// crit's JSON of one value (`cx` says plain or `--pretty`, and whether
    /// an enclosing field is marked hex).
    fn json(v: &Self::T, cx: Cx, out: &mut String);
    /// crit's JSON of a repeated field's values (a list).
    fn json_list(v: &[Self::T], cx: Cx, out: &mut String) {
        out.push('[');
        for (i, x) in v.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            Self::json(x, cx, out);
        }
        out.push(']');
    }
    /// The value from crit's JSON (either mode), as crit's encode reads it.
    fn from_json(j: &Json) -> Result<Self::T, JsonErr>;
    /// A repeated field's values from crit's JSON.
    fn from_json_list(j: &Json) -> Result<Vec<Self::T>, JsonErr> {
        let Json::Arr(items) = j else {
            return Err(JsonErr::new(format!(
                "a list was expected, found {}",
                j.what()
            )));
        };
        items
            .iter()
            .enumerate()
            .map(|(i, x)| Self::from_json(x).map_err(|e| e.within(&format!("[{i}]"))))
            .collect()
    }
}

macro_rules! varint_kind {
    ($name:ident, $t:ty, |$e:ident| $enc:expr, |$d:ident| $dec:expr) => {
        varint_kind!($name, $t, |$e| $enc, |$d| $dec, json_int, int_from_json);
    };
    ($name:ident, $t:ty, |$e:ident| $enc:expr, |$d:ident| $dec:expr, $json:ident, $from:ident) => {
        pub struct $name;
        impl Kind for $name {
            type T = $t;
            const WIRE: WireType = WireType::Varint;
            const PACKABLE: bool = true;
            fn encode_value(v: &$t, out: &mut Vec<u8>) {
                let $e = *v;
                put_varint(out, $enc);
            }
            fn value_len(v: &$t) -> usize {
                let $e = *v;
                varint_len($enc)
            }
            fn decode_value(r: &mut Reader<'_>, _depth: u32) -> Result<$t, DecodeError> {
                let $d = r.varint()?;
                Ok($dec)
            }
            fn json(v: &$t, cx: Cx, out: &mut String) {
                $json(*v, cx, out)
            }
            fn from_json(j: &Json) -> Result<$t, JsonErr> {
                $from::<$t>(j)
            }
        }
    };
}

varint_kind!(Uint32, u32, |v| v as u64, |x| x as u32);
varint_kind!(Uint64, u64, |v| v, |x| x);
// Negative int32 values are sign-extended to 64 bits: a 10-byte varint.
varint_kind!(Int32, i32, |v| v as i64 as u64, |x| x as i32);
varint_kind!(Int64, i64, |v| v as u64, |x| x as i64);
varint_kind!(Sint32, i32, |v| zigzag32(v) as u64, |x| unzigzag32(
    x as u32
));
varint_kind!(Sint64, i64, |v| zigzag64(v), |x| unzigzag64(x));
varint_kind!(
    Bool,
    bool,
    |v| v as u64,
    |x| x != 0,
    json_bool,
    bool_from_json
);
// Enums are carried as i32 (encoded like int32).
varint_kind!(Enum, i32, |v| v as i64 as u64, |x| x as i32);

/// Symbolic names of an enum's values (implemented by [`crate::enumeration!`]).
pub trait EnumNames {
    fn name(v: i32) -> Option<&'static str>;
    /// The value of a symbolic name.
    fn value(name: &str) -> Option<i32>;
}

/// An enum field whose JSON shows the value's name, like crit does.
pub struct EnumOf<E>(PhantomData<E>);
impl<E: EnumNames> Kind for EnumOf<E> {
    type T = i32;
    const WIRE: WireType = WireType::Varint;
    const PACKABLE: bool = true;
    fn encode_value(v: &i32, out: &mut Vec<u8>) {
        Enum::encode_value(v, out)
    }
    fn value_len(v: &i32) -> usize {
        Enum::value_len(v)
    }
    fn decode_value(r: &mut Reader<'_>, depth: u32) -> Result<i32, DecodeError> {
        Enum::decode_value(r, depth)
    }
    fn json(v: &i32, cx: Cx, out: &mut String) {
        match E::name(*v) {
            Some(n) => json_str(n, out),
            None => Enum::json(v, cx, out),
        }
    }
    fn from_json(j: &Json) -> Result<i32, JsonErr> {
        match j {
            Json::Str(s) => match E::value(s) {
                Some(v) => Ok(v),
                None => int_from_json::<i32>(j)
                    .map_err(|_| JsonErr::new(format!("{s:?} is not a name of this enum"))),
            },
            _ => int_from_json::<i32>(j),
        }
    }
}

macro_rules! fixed_kind {
    ($name:ident, $t:ty, $wire:ident, $size:expr, $rd:ident, |$e:ident| $enc:expr, |$d:ident| $dec:expr) => {
        fixed_kind!($name, $t, $wire, $size, $rd, |$e| $enc, |$d| $dec, json_int, int_from_json);
    };
    ($name:ident, $t:ty, $wire:ident, $size:expr, $rd:ident, |$e:ident| $enc:expr, |$d:ident| $dec:expr, $json:ident, $from:ident) => {
        pub struct $name;
        impl Kind for $name {
            type T = $t;
            const WIRE: WireType = WireType::$wire;
            const PACKABLE: bool = true;
            fn encode_value(v: &$t, out: &mut Vec<u8>) {
                let $e = *v;
                out.extend_from_slice(&$enc.to_le_bytes());
            }
            fn value_len(_v: &$t) -> usize {
                $size
            }
            fn decode_value(r: &mut Reader<'_>, _depth: u32) -> Result<$t, DecodeError> {
                let $d = r.$rd()?;
                Ok($dec)
            }
            fn json(v: &$t, cx: Cx, out: &mut String) {
                $json(*v, cx, out)
            }
            fn from_json(j: &Json) -> Result<$t, JsonErr> {
                $from::<$t>(j)
            }
        }
    };
}

fixed_kind!(Fixed32, u32, Fixed32, 4, fixed32, |v| v, |x| x);
fixed_kind!(Fixed64, u64, Fixed64, 8, fixed64, |v| v, |x| x);
fixed_kind!(Sfixed32, i32, Fixed32, 4, fixed32, |v| v as u32, |x| x
    as i32);
fixed_kind!(Sfixed64, i64, Fixed64, 8, fixed64, |v| v as u64, |x| x
    as i64);
fixed_kind!(
    Float,
    f32,
    Fixed32,
    4,
    fixed32,
    |v| v.to_bits(),
    |x| f32::from_bits(x),
    json_float,
    float_from_json
);
fixed_kind!(
    Double,
    f64,
    Fixed64,
    8,
    fixed64,
    |v| v.to_bits(),
    |x| f64::from_bits(x),
    json_float,
    float_from_json
);

pub struct Bytes;
impl Kind for Bytes {
    type T = Vec<u8>;
    const WIRE: WireType = WireType::Len;
    const PACKABLE: bool = false;
    fn encode_value(v: &Vec<u8>, out: &mut Vec<u8>) {
        put_varint(out, v.len() as u64);
        out.extend_from_slice(v);
    }
    fn value_len(v: &Vec<u8>) -> usize {
        varint_len(v.len() as u64) + v.len()
    }
    fn decode_value(r: &mut Reader<'_>, _depth: u32) -> Result<Vec<u8>, DecodeError> {
        Ok(r.len_delimited()?.to_vec())
    }
    fn json(v: &Vec<u8>, _cx: Cx, out: &mut String) {
        json_base64(v, out);
    }
    fn from_json(j: &Json) -> Result<Vec<u8>, JsonErr> {
        match j {
            Json::Str(s) => Ok(base64_decode(s)),
            _ => Err(JsonErr::new(format!(
                "base64 text was expected, found {}",
                j.what()
            ))),
        }
    }
}

pub struct Str;
impl Kind for Str {
    type T = String;
    const WIRE: WireType = WireType::Len;
    const PACKABLE: bool = false;
    fn encode_value(v: &String, out: &mut Vec<u8>) {
        put_varint(out, v.len() as u64);
        out.extend_from_slice(v.as_bytes());
    }
    fn value_len(v: &String) -> usize {
        varint_len(v.len() as u64) + v.len()
    }
    fn decode_value(r: &mut Reader<'_>, _depth: u32) -> Result<String, DecodeError> {
        let b = r.len_delimited()?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError::InvalidUtf8 {
            message: r.message,
            field: "?",
        })
    }
    fn json(v: &String, _cx: Cx, out: &mut String) {
        json_str(v, out);
    }
    fn from_json(j: &Json) -> Result<String, JsonErr> {
        match j {
            Json::Str(s) => Ok(s.clone()),
            _ => Err(JsonErr::new(format!(
                "a string was expected, found {}",
                j.what()
            ))),
        }
    }
}

/// A nested message field.
pub struct Msg<M>(PhantomData<M>);
impl<M: Message + Clone + std::fmt::Debug + PartialEq> Kind for Msg<M> {
    type T = M;
    const WIRE: WireType = WireType::Len;
    const PACKABLE: bool = false;
    fn encode_value(v: &M, out: &mut Vec<u8>) {
        put_varint(out, v.encoded_len() as u64);
        v.encode(out);
    }
    fn value_len(v: &M) -> usize {
        let l = v.encoded_len();
        varint_len(l as u64) + l
    }
    fn decode_value(r: &mut Reader<'_>, depth: u32) -> Result<M, DecodeError> {
        let b = r.len_delimited()?;
        if depth + 1 > MAX_DEPTH {
            return Err(DecodeError::TooDeep { message: M::NAME });
        }
        M::decode_depth(b, depth + 1)
    }
    fn json(v: &M, cx: Cx, out: &mut String) {
        v.to_json(cx, out);
    }
    fn from_json(j: &Json) -> Result<M, JsonErr> {
        M::from_json(j)
    }
}

/// A nested message field held in a box: the same encoding as [`Msg`], but an
/// absent `optional` one costs a pointer, not the message's whole size
/// inline. Used where a message has several large optional parts of which
/// one or a few are present (FileEntry's per-kind parts, CoreEntry's
/// per-architecture ones): big trees hold thousands of those.
pub struct BoxMsg<M>(PhantomData<M>);
impl<M: Message + Clone + std::fmt::Debug + PartialEq + Default> Kind for BoxMsg<M> {
    type T = Box<M>;
    const WIRE: WireType = WireType::Len;
    const PACKABLE: bool = false;
    fn encode_value(v: &Box<M>, out: &mut Vec<u8>) {
        Msg::<M>::encode_value(v, out);
    }
    fn value_len(v: &Box<M>) -> usize {
        Msg::<M>::value_len(v)
    }
    fn decode_value(r: &mut Reader<'_>, depth: u32) -> Result<Box<M>, DecodeError> {
        Msg::<M>::decode_value(r, depth).map(Box::new)
    }
    fn json(v: &Box<M>, cx: Cx, out: &mut String) {
        Msg::<M>::json(v, cx, out);
    }
    fn from_json(j: &Json) -> Result<Box<M>, JsonErr> {
        Msg::<M>::from_json(j).map(Box::new)
    }
}

// ---------------------------------------------------------------------------
// Per-label helpers used by the message! macro

pub fn enc_required<K: Kind>(num: u32, v: &K::T, out: &mut Vec<u8>) {
    put_tag(out, num, K::WIRE);
    K::encode_value(v, out);
}

pub fn len_required<K: Kind>(num: u32, v: &K::T) -> usize {
    tag_len(num) + K::value_len(v)
}

pub fn enc_optional<K: Kind>(num: u32, v: &Option<K::T>, out: &mut Vec<u8>) {
    if let Some(v) = v {
        enc_required::<K>(num, v, out);
    }
}

pub fn len_optional<K: Kind>(num: u32, v: &Option<K::T>) -> usize {
    v.as_ref().map_or(0, |v| len_required::<K>(num, v))
}

pub fn enc_repeated<K: Kind>(num: u32, v: &[K::T], out: &mut Vec<u8>) {
    for x in v {
        enc_required::<K>(num, x, out);
    }
}

pub fn len_repeated<K: Kind>(num: u32, v: &[K::T]) -> usize {
    v.iter().map(|x| len_required::<K>(num, x)).sum()
}

pub fn enc_packed<K: Kind>(num: u32, v: &[K::T], out: &mut Vec<u8>) {
    if v.is_empty() {
        return;
    }
    put_tag(out, num, WireType::Len);
    let body: usize = v.iter().map(K::value_len).sum();
    put_varint(out, body as u64);
    for x in v {
        K::encode_value(x, out);
    }
}

pub fn len_packed<K: Kind>(num: u32, v: &[K::T]) -> usize {
    if v.is_empty() {
        return 0;
    }
    let body: usize = v.iter().map(K::value_len).sum();
    tag_len(num) + varint_len(body as u64) + body
}

fn check_wire<K: Kind>(r: &Reader<'_>, field: &'static str, wt: u8) -> Result<(), DecodeError> {
    if wt != K::WIRE as u8 {
        return Err(DecodeError::WrongWireType {
            message: r.message,
            field,
            expected: K::WIRE,
            found: wt,
        });
    }
    Ok(())
}

/// Decode one value of a singular (required or optional) field; a later
/// occurrence replaces an earlier one, and nested messages are replaced too
/// (CRIU never writes a singular field twice).
pub fn dec_single<K: Kind>(
    r: &mut Reader<'_>,
    field: &'static str,
    wt: u8,
    depth: u32,
    slot: &mut Option<K::T>,
) -> Result<(), DecodeError> {
    check_wire::<K>(r, field, wt)?;
    *slot = Some(K::decode_value(r, depth).map_err(|e| e.in_field(field))?);
    Ok(())
}

/// Decode one occurrence of a repeated field, accepting packed and unpacked.
pub fn dec_repeated<K: Kind>(
    r: &mut Reader<'_>,
    field: &'static str,
    wt: u8,
    depth: u32,
    slot: &mut Vec<K::T>,
) -> Result<(), DecodeError> {
    if K::PACKABLE && wt == WireType::Len as u8 {
        let body = r.len_delimited()?;
        let mut sub = Reader::new(body, r.message);
        while !sub.is_empty() {
            slot.push(K::decode_value(&mut sub, depth)?);
        }
        return Ok(());
    }
    check_wire::<K>(r, field, wt)?;
    slot.push(K::decode_value(r, depth).map_err(|e| e.in_field(field))?);
    Ok(())
}

// ---------------------------------------------------------------------------
// JSON helpers used by the message! macro

/// Field name without a raw-identifier prefix (`r#type` -> `type`).
pub fn field_name(s: &'static str) -> &'static str {
    s.strip_prefix("r#").unwrap_or(s)
}

#[doc(hidden)]
pub fn json_field_sep(first: &mut bool, name: &str, out: &mut String) {
    if !*first {
        out.push_str(", ");
    }
    *first = false;
    json_str(name, out);
    out.push_str(": ");
}

pub fn json_required<K: Kind>(
    first: &mut bool,
    name: &'static str,
    v: &K::T,
    cx: Cx,
    out: &mut String,
) {
    json_field_sep(first, field_name(name), out);
    K::json(v, cx, out);
}

pub fn json_optional<K: Kind>(
    first: &mut bool,
    name: &'static str,
    v: &Option<K::T>,
    cx: Cx,
    out: &mut String,
) {
    if let Some(v) = v {
        json_required::<K>(first, name, v, cx, out);
    }
}

pub fn json_repeated<K: Kind>(
    first: &mut bool,
    name: &'static str,
    v: &[K::T],
    cx: Cx,
    out: &mut String,
) {
    if v.is_empty() {
        return;
    }
    json_field_sep(first, field_name(name), out);
    K::json_list(v, cx, out);
}

/// Crust-only: fields the schema does not know, so that crust's own JSON
/// encodes back to the same bytes (crit drops them).
pub fn json_unknown(first: &mut bool, u: &UnknownFields, out: &mut String) {
    if u.is_empty() {
        return;
    }
    json_field_sep(first, "_unknown", out);
    out.push('[');
    for (i, f) in u.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(
            out,
            "{{\"field\": {}, \"wire_type\": {}, \"raw\": ",
            f.number, f.wire_type
        );
        json_base64(&f.raw, out);
        out.push('}');
    }
    out.push(']');
}

/// The JSON object's fields, or why `j` is not an object.
pub fn json_object(j: &Json) -> Result<&[(String, Json)], JsonErr> {
    match j {
        Json::Obj(o) => Ok(o),
        _ => Err(JsonErr::new(format!(
            "an object was expected, found {}",
            j.what()
        ))),
    }
}

fn json_get<'a>(obj: &'a [(String, Json)], name: &str) -> Option<&'a Json> {
    // Python's dict keeps the last of duplicate keys.
    obj.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v)
}

pub fn from_json_required<K: Kind>(
    obj: &[(String, Json)],
    message: &'static str,
    name: &'static str,
) -> Result<K::T, JsonErr> {
    let name = field_name(name);
    match json_get(obj, name) {
        Some(j) => K::from_json(j).map_err(|e| e.within(name)),
        None => Err(JsonErr::new(format!("required field of {message} is missing")).within(name)),
    }
}

pub fn from_json_optional<K: Kind>(
    obj: &[(String, Json)],
    _message: &'static str,
    name: &'static str,
) -> Result<Option<K::T>, JsonErr> {
    let name = field_name(name);
    match json_get(obj, name) {
        Some(j) => K::from_json(j).map(Some).map_err(|e| e.within(name)),
        None => Ok(None),
    }
}

pub fn from_json_repeated<K: Kind>(
    obj: &[(String, Json)],
    _message: &'static str,
    name: &'static str,
) -> Result<Vec<K::T>, JsonErr> {
    let name = field_name(name);
    match json_get(obj, name) {
        Some(j) => K::from_json_list(j).map_err(|e| e.within(name)),
        None => Ok(Vec::new()),
    }
}

/// Crust's `_unknown` list back into unknown fields.
pub fn unknown_from_json(obj: &[(String, Json)]) -> Result<UnknownFields, JsonErr> {
    let Some(Json::Arr(items)) = json_get(obj, "_unknown") else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for it in items {
        let o = json_object(it)?;
        let num = |k: &str| match json_get(o, k) {
            Some(j) => int_from_json::<u32>(j),
            None => Err(JsonErr::new(format!("_unknown.{k} is missing"))),
        };
        let raw = match json_get(o, "raw") {
            Some(Json::Str(s)) => base64_decode(s),
            _ => return Err(JsonErr::new("_unknown.raw is missing".into())),
        };
        out.push(UnknownField {
            number: num("field")?,
            wire_type: num("wire_type")? as u8,
            raw,
        });
    }
    Ok(out)
}
