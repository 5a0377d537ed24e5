//! Generic image decoder producing crit-like JSON:
//! `{"magic": "CORE", "entries": [{...}, ...]}`.
//!
//! Field names are CRIU's; integers are plain numbers (no hex), enums are
//! their numeric values, bytes and raw payloads are base64 (`extra`).

use std::path::Path;

use crate::image::{ImageError, ImageReader, ImageType, MessageVisitor, Payload, Record};
use crate::proto::{GhostChunkEntry, IpcMsg, PagemapHead, TcpStreamEntry};
use crate::wire::{base64_into, DecodeError, Message};

struct ToJson<'a>(&'a [u8]);
impl MessageVisitor for ToJson<'_> {
    type Out = Result<String, (DecodeError, &'static str)>;
    fn visit<M: Message + Clone + std::fmt::Debug + PartialEq>(self) -> Self::Out {
        json_of::<M>(self.0)
    }
}

fn json_of<M: Message>(buf: &[u8]) -> Result<String, (DecodeError, &'static str)> {
    M::decode(buf)
        .map(|m| m.to_json_string())
        .map_err(|e| (e, M::NAME))
}

fn b64(data: &[u8]) -> String {
    let mut s = String::from("\"");
    base64_into(data, &mut s);
    s.push('"');
    s
}

/// Decode the image file at `path` into JSON text. The type comes from the
/// file name when it is a CRIU image name, else from the magic.
pub fn image_to_json(path: &Path) -> Result<String, ImageError> {
    let ty = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(ImageType::from_file_name);
    let mut r = ImageReader::open_path(path, ty)?;
    let ty = r.image_type();
    let mut out = String::new();
    out.push_str("{\n    \"magic\": \"");
    out.push_str(ty.name());
    out.push_str("\",\n    \"entries\": [");
    let mut index = 0usize;
    while let Some(rec) = r.next_record()? {
        if index > 0 {
            out.push(',');
        }
        out.push_str("\n        ");
        out.push_str(&record_json(ty, index, &rec, r.path())?);
        index += 1;
    }
    out.push_str(if index > 0 { "\n    ]\n}\n" } else { "]\n}\n" });
    Ok(out)
}

fn record_json(
    ty: ImageType,
    index: usize,
    rec: &Record,
    path: &Path,
) -> Result<String, ImageError> {
    let derr = |(source, message): (DecodeError, &'static str)| ImageError::Decode {
        path: path.to_path_buf(),
        offset: rec.offset,
        message,
        source,
    };
    if ty.payload() == Payload::Raw {
        return Ok(format!("{{\"raw_size\": {}}}", rec.payload.len()));
    }
    let mut body = match (ty.payload(), index) {
        (Payload::Pagemap, 0) => json_of::<PagemapHead>(&rec.entry).map_err(derr)?,
        (Payload::GhostFile, i) if i > 0 => json_of::<GhostChunkEntry>(&rec.entry).map_err(derr)?,
        _ => ty.visit_message(ToJson(&rec.entry)).map_err(derr)?,
    };
    let extra = match ty.payload() {
        Payload::None | Payload::Pagemap | Payload::Raw => None,
        Payload::PipeData | Payload::SkQueue | Payload::BpfmapData => Some(b64(&rec.payload)),
        Payload::GhostFile => {
            if index == 0 && rec.payload.is_empty() {
                None
            } else {
                Some(b64(&rec.payload))
            }
        }
        Payload::TcpStream => {
            let t =
                TcpStreamEntry::decode(&rec.entry).map_err(|e| derr((e, "tcp_stream_entry")))?;
            let inq = (t.inq_len as usize).min(rec.payload.len());
            Some(format!(
                "{{\"inq\": {}, \"outq\": {}}}",
                b64(&rec.payload[..inq]),
                b64(&rec.payload[inq..])
            ))
        }
        Payload::IpcShm => Some(b64(&rec.payload)),
        Payload::IpcSem => {
            let n = crate::image::varint_field(&rec.entry, 2)
                .map_err(|e| derr((e, "ipc_sem_entry")))?;
            let vals: Vec<String> = rec
                .payload
                .chunks_exact(2)
                .take(n as usize)
                .map(|c| u16::from_le_bytes([c[0], c[1]]).to_string())
                .collect();
            Some(format!("[{}]", vals.join(", ")))
        }
        Payload::IpcMsg => {
            let mut items = Vec::new();
            let mut p = &rec.payload[..];
            while p.len() >= 4 {
                let len = u32::from_le_bytes([p[0], p[1], p[2], p[3]]) as usize;
                let m = IpcMsg::decode(&p[4..4 + len]).map_err(|e| derr((e, "ipc_msg")))?;
                let padded = (m.msize as usize).div_ceil(8) * 8;
                let data = &p[4 + len..4 + len + m.msize as usize];
                items.push(m.to_json_string());
                items.push(b64(data));
                p = &p[4 + len + padded..];
            }
            Some(format!("[{}]", items.join(", ")))
        }
    };
    if let Some(extra) = extra {
        // Insert `"extra": ...` before the closing brace.
        body.pop();
        if body.len() > 1 {
            body.push_str(", ");
        }
        body.push_str("\"extra\": ");
        body.push_str(&extra);
        body.push('}');
    }
    Ok(body)
}
