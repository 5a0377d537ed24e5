//! CRIU 4.2's crit, built in: image files to JSON and back, with crit's
//! exact output (plain and `--pretty`, `--nopl`) and its encoder's bytes.
//!
//! - [`decode`]: image bytes to crit's JSON text;
//! - [`encode`]: crit's (or crust's) JSON text to image bytes, as crit's
//!   encode writes them (fields in number order, repeated scalars unpacked,
//!   what the JSON holds and nothing else);
//! - [`info`]: crit's `info` (magic and entry count).
//!
//! The type of an image comes from its magic, as crit does (so
//! `pagemap-shmem-N.img` is a `PAGEMAP`). Payloads follow their entries as
//! crit shows them under `extra` ([`payload`]). Fields crust writes that
//! CRIU's schema lacks appear in addition (`_unknown` for fields crust's
//! schema lacks too): the only difference from crit's output.

pub mod conv;
mod payload;
pub mod value;

use crate::image::{Header, ImageType, Payload, IMG_COMMON_MAGIC, IMG_SERVICE_MAGIC};
use crate::wire::{DecodeError, Message};
use conv::{json_str, Cx, JsonErr};
use value::{Json, ParseError};

/// What went wrong turning an image into JSON or back.
#[derive(Debug, thiserror::Error)]
pub enum CritError {
    #[error("unknown magic {magic:#x}: maybe this is an image with raw data (pages-N.img)?")]
    UnknownMagic { magic: u32 },
    #[error("truncated {what} at offset {offset}")]
    Truncated { offset: usize, what: &'static str },
    #[error("cannot decode {message} at offset {offset}")]
    Decode {
        offset: usize,
        message: &'static str,
        #[source]
        source: DecodeError,
    },
    #[error("cannot read the JSON")]
    Json(#[source] ParseError),
    #[error("{what}")]
    Layout { what: String },
    #[error("entry {entry} ({message}): {err}")]
    Entry {
        entry: usize,
        message: &'static str,
        err: JsonErrText,
    },
}

/// A [`JsonErr`] as an error value.
#[derive(Debug)]
pub struct JsonErrText(pub JsonErr);
impl std::fmt::Display for JsonErrText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// crit's decode options.
#[derive(Debug, Clone, Copy, Default)]
pub struct DecodeOpts {
    /// `--pretty`: indented, with crit's field conversions.
    pub pretty: bool,
    /// `--nopl` (show): payload sizes instead of payloads.
    pub nopl: bool,
}

/// A cursor over image bytes.
pub(crate) struct Cur<'a> {
    pub d: &'a [u8],
    pub pos: usize,
}

impl<'a> Cur<'a> {
    pub fn rest(&self) -> usize {
        self.d.len() - self.pos
    }
    pub fn u32(&mut self, what: &'static str) -> Result<u32, CritError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], CritError> {
        if self.rest() < n {
            return Err(CritError::Truncated {
                offset: self.pos,
                what,
            });
        }
        let s = &self.d[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    /// Up to `n` bytes (fewer at the end, as Python's read).
    pub fn take_upto(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.rest());
        let s = &self.d[self.pos..self.pos + n];
        self.pos += n;
        s
    }
    /// One length-framed entry: its offset and message bytes.
    pub fn entry(&mut self) -> Result<(usize, &'a [u8]), CritError> {
        let off = self.pos;
        let len = self.u32("entry size")? as usize;
        Ok((off, self.take(len, "entry")?))
    }
}

/// The image type from the header, as crit reads it.
fn read_header(c: &mut Cur<'_>) -> Result<ImageType, CritError> {
    let mut m = c.u32("image magic")?;
    if m == IMG_COMMON_MAGIC || m == IMG_SERVICE_MAGIC {
        m = c.u32("image magic")?;
    }
    ImageType::from_magic(m)
        .filter(|t| t.header() != Header::Raw)
        .ok_or(CritError::UnknownMagic { magic: m })
}

/// Decode one message into JSON.
pub(crate) fn msg_json<M: Message>(
    off: usize,
    buf: &[u8],
    cx: Cx,
    out: &mut String,
) -> Result<M, CritError> {
    let m = M::decode(buf).map_err(|source| CritError::Decode {
        offset: off,
        message: M::NAME,
        source,
    })?;
    m.to_json(cx, out);
    Ok(m)
}

struct EntryJson<'a, 'b> {
    off: usize,
    buf: &'a [u8],
    cx: Cx,
    out: &'b mut String,
}
impl crate::image::MessageVisitor for EntryJson<'_, '_> {
    type Out = Result<(), CritError>;
    fn visit<M: Message + Clone + std::fmt::Debug + PartialEq>(self) -> Self::Out {
        msg_json::<M>(self.off, self.buf, self.cx, self.out).map(|_| ())
    }
}

/// crit's JSON of an image file's bytes (`crit decode`), without the final
/// newline crit adds on stdout.
pub fn decode(data: &[u8], opts: DecodeOpts) -> Result<String, CritError> {
    let mut c = Cur { d: data, pos: 0 };
    let ty = read_header(&mut c)?;
    let cx = Cx {
        pretty: opts.pretty,
        hex: false,
    };
    let mut out = String::with_capacity(data.len() * 3);
    out.push_str("{\"magic\": ");
    json_str(ty.name(), &mut out);
    out.push_str(", \"entries\": [");
    let mut n = 0usize;
    while c.rest() > 0 {
        if n > 0 {
            out.push_str(", ");
        }
        let more = payload::entry_json(ty, n, &mut c, cx, opts.nopl, &mut out)?;
        n += 1;
        if !more {
            break;
        }
    }
    out.push_str("]}");
    Ok(if opts.pretty { relayout(&out, 4) } else { out })
}

/// crit's `info`: the image's magic name and number of entries.
pub fn info(data: &[u8]) -> Result<(&'static str, usize), CritError> {
    let mut c = Cur { d: data, pos: 0 };
    let ty = read_header(&mut c)?;
    let mut n = 0usize;
    while c.rest() > 0 {
        c.entry()?;
        n += 1;
    }
    // crit counts a pagemap's head apart.
    if ty.payload() == Payload::Pagemap {
        n = n.saturating_sub(1);
    }
    Ok((ty.name(), n))
}

/// Image bytes from crit's JSON (`crit encode`).
pub fn encode(json: &str) -> Result<Vec<u8>, CritError> {
    let doc = Json::parse(json).map_err(CritError::Json)?;
    let layout = |what: &str| CritError::Layout {
        what: what.to_string(),
    };
    let Some(Json::Str(magic)) = doc.get("magic") else {
        return Err(layout("the JSON has no \"magic\" string"));
    };
    let ty = ImageType::ALL
        .iter()
        .copied()
        .find(|t| t.name() == magic && t.header() != Header::Raw)
        .ok_or_else(|| layout(&format!("unknown image magic {magic:?}")))?;
    let Some(Json::Arr(entries)) = doc.get("entries") else {
        return Err(layout("the JSON has no \"entries\" list"));
    };
    let mut out = Vec::new();
    match ty.header() {
        Header::Common => out.extend_from_slice(&IMG_COMMON_MAGIC.to_le_bytes()),
        Header::Service => out.extend_from_slice(&IMG_SERVICE_MAGIC.to_le_bytes()),
        Header::Own | Header::Raw => {}
    }
    out.extend_from_slice(&ty.magic().to_le_bytes());
    payload::encode_entries(ty, entries, &mut out)?;
    Ok(out)
}

/// Re-lay out compact JSON (`", "` and `": "` separators) as Python's
/// `json.dump(..., indent=N)` writes it. Strings are copied untouched.
pub fn relayout(json: &str, indent: usize) -> String {
    let mut out = String::with_capacity(json.len() * 2);
    let mut depth = 0usize;
    let (mut in_str, mut escaped) = (false, false);
    let mut chars = json.chars().peekable();
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        for _ in 0..indent * depth {
            out.push(' ');
        }
    };
    while let Some(c) = chars.next() {
        if in_str {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_str = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_str = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                if let Some(&e) = chars.peek().filter(|&&e| e == '}' || e == ']') {
                    chars.next();
                    out.push(e);
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(',');
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            ' ' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{InetSkEntry, UnixSkEntry};

    fn image<M: Message>(ty: ImageType, entries: &[M]) -> Vec<u8> {
        let mut d = ty.header_bytes();
        for m in entries {
            d.extend_from_slice(&(m.encoded_len() as u32).to_le_bytes());
            m.encode(&mut d);
        }
        d
    }

    #[test]
    fn pretty_conversions_and_back() {
        let isk = InetSkEntry {
            family: 10,
            r#type: 1,
            proto: 6,
            state: 10,
            src_port: 8080,
            flags: 0x800,
            src_addr: vec![0, 0, 0, 0x0100_0000],
            ..Default::default()
        };
        let d = image(ImageType::Inetsk, &[isk]);
        let pretty = decode(
            &d,
            DecodeOpts {
                pretty: true,
                nopl: false,
            },
        )
        .unwrap();
        for want in [
            "\"family\": \"INET6\"",
            "\"state\": \"LISTEN\"",
            "\"flags\": \"0x800\"",
            "\"src_addr\": [\n                \"::1\"\n            ]",
        ] {
            assert!(pretty.contains(want), "{want} not in {pretty}");
        }
        assert_eq!(encode(&pretty).unwrap(), d);
        let usk = UnixSkEntry {
            name: b"\0abstract=x".to_vec(),
            ..Default::default()
        };
        let d = image(ImageType::Unixsk, &[usk]);
        let plain = decode(&d, DecodeOpts::default()).unwrap();
        assert!(plain.contains("\"name\": \"=00abstract=3Dx\""), "{plain}");
        assert_eq!(encode(&plain).unwrap(), d);
    }

    #[test]
    fn errors_name_offset_and_field() {
        let mut d = ImageType::Core.header_bytes();
        d.extend_from_slice(&3u32.to_le_bytes());
        d.extend_from_slice(&[0x0a, 0x05, 0x00]);
        let e = decode(&d, DecodeOpts::default()).unwrap_err();
        assert!(matches!(e, CritError::Decode { offset: 8, .. }), "{e}");
        let e = encode(r#"{"magic": "TIMENS", "entries": [{"monotonic": {"tv_sec": "x"}}]}"#)
            .unwrap_err();
        assert!(e.to_string().contains("field monotonic.tv_sec"), "{e}");
        assert!(matches!(
            decode(&[1, 2, 3, 4], DecodeOpts::default()),
            Err(CritError::UnknownMagic { .. })
        ));
    }

    #[test]
    fn pretty_as_python() {
        let j = "{\"magic\": \"CORE\", \"entries\": [{\"a\": 1, \"s\": \"x, {y}\\\" z\"}, {}, []]}";
        assert_eq!(
            relayout(j, 4),
            "{\n    \"magic\": \"CORE\",\n    \"entries\": [\n        {\n            \"a\": 1,\n            \"s\": \"x, {y}\\\" z\"\n        },\n        {},\n        []\n    ]\n}"
        );
    }
}
