//! Entries with what follows them, as crit shows it under `extra`:
//! pipe and FIFO data, socket queues and BPF map data (base64), TCP queues
//! (`{"inq", "outq"}`), ghost file contents or chunks, SysV IPC contents;
//! with `--nopl` a size (`"... <4KB>"`) instead, and nothing for ghost
//! files. Pagemap images start with a `pagemap_head`.

use super::conv::{base64_decode, json_base64, Cx, JsonErr};
use super::value::Json;
use super::{msg_json, CritError, Cur, EntryJson, JsonErrText};
use crate::image::{ImageType, Payload};
use crate::proto::{
    BpfmapDataEntry, GhostChunkEntry, GhostFileEntry, IpcMsg, IpcMsgEntry, IpcSemEntry,
    IpcShmEntry, PagemapHead, PipeDataEntry, SkPacketEntry, TcpStreamEntry,
};
use crate::wire::Message;

/// crit's `human_readable` size.
fn human(n: u64) -> String {
    let mut v = n as f64;
    for unit in ["", "K", "M", "G", "T", "P", "E", "Z"] {
        if v < 1024.0 {
            return if v.fract() == 0.0 {
                format!("{v:.0}{unit}B")
            } else {
                format!("{v:.1}{unit}B")
            };
        }
        v /= 1024.0;
    }
    format!("{v:.1}YB")
}

fn extra_key(out: &mut String) {
    // Replace the entry object's closing brace.
    out.pop();
    if !out.ends_with('{') {
        out.push_str(", ");
    }
    out.push_str("\"extra\": ");
}

fn round_up(x: usize, y: usize) -> usize {
    x.div_ceil(y).saturating_mul(y)
}

/// Padding after `size` bytes up to a multiple of `y`.
fn pad(size: usize, y: usize) -> usize {
    round_up(size, y).saturating_sub(size)
}

/// Append entry number `index` (with its payload) to `out`. Returns false
/// when the entry took the rest of the file (a whole ghost file).
pub(super) fn entry_json(
    ty: ImageType,
    index: usize,
    c: &mut Cur<'_>,
    cx: Cx,
    nopl: bool,
    out: &mut String,
) -> Result<bool, CritError> {
    let (off, buf) = c.entry()?;
    match ty.payload() {
        Payload::Pagemap if index == 0 => {
            msg_json::<PagemapHead>(off, buf, cx, out)?;
        }
        Payload::GhostFile if index == 0 => {
            let g = msg_json::<GhostFileEntry>(off, buf, cx, out)?;
            if g.chunks != Some(true) {
                let rest = c.take_upto(c.rest());
                if !nopl {
                    extra_key(out);
                    json_base64(rest, out);
                    out.push('}');
                }
                return Ok(false);
            }
        }
        Payload::GhostFile => {
            let g = msg_json::<GhostChunkEntry>(off, buf, cx, out)?;
            let data = c.take_upto(g.len as usize);
            if !nopl {
                extra_key(out);
                json_base64(data, out);
                out.push('}');
            }
        }
        Payload::PipeData | Payload::SkQueue | Payload::BpfmapData => {
            let n = match ty.payload() {
                Payload::PipeData => msg_json::<PipeDataEntry>(off, buf, cx, out)?.bytes as usize,
                Payload::SkQueue => msg_json::<SkPacketEntry>(off, buf, cx, out)?.length as usize,
                _ => {
                    let b = msg_json::<BpfmapDataEntry>(off, buf, cx, out)?;
                    b.keys_bytes as usize + b.values_bytes as usize
                }
            };
            let data = c.take_upto(n);
            extra_key(out);
            if nopl {
                super::conv::json_str(&format!("... <{}>", human(n as u64)), out);
            } else {
                json_base64(data, out);
            }
            out.push('}');
        }
        Payload::TcpStream => {
            let t = msg_json::<TcpStreamEntry>(off, buf, cx, out)?;
            let inq = c.take_upto(t.inq_len as usize);
            let outq = c.take_upto(t.outq_len as usize);
            extra_key(out);
            if nopl {
                c.take_upto(c.rest());
                let n = t.inq_len as u64 + t.outq_len as u64;
                super::conv::json_str(&format!("... <{}>", human(n)), out);
            } else {
                out.push_str("{\"inq\": ");
                json_base64(inq, out);
                out.push_str(", \"outq\": ");
                json_base64(outq, out);
                out.push('}');
            }
            out.push('}');
        }
        Payload::IpcShm | Payload::IpcSem | Payload::IpcMsg => {
            ipc_json(ty, off, buf, c, cx, nopl, out)?;
        }
        Payload::None | Payload::Pagemap | Payload::Raw => {
            ty.visit_message(EntryJson { off, buf, cx, out })?;
        }
    }
    Ok(true)
}

fn entry_err(entry: usize, message: &'static str) -> impl Fn(JsonErr) -> CritError {
    move |err| CritError::Entry {
        entry,
        message,
        err: JsonErrText(err),
    }
}

fn put<M: Message>(m: &M, out: &mut Vec<u8>) {
    out.extend_from_slice(&(m.encoded_len() as u32).to_le_bytes());
    m.encode(out);
}

fn from<M: Message>(entry: usize, j: &Json) -> Result<M, CritError> {
    M::from_json(j).map_err(entry_err(entry, M::NAME))
}

/// Base64 text of `extra` (or of `extra[key]`).
fn extra_bytes(entry: usize, j: Option<&Json>, what: &'static str) -> Result<Vec<u8>, CritError> {
    match j {
        None => Ok(Vec::new()),
        Some(Json::Str(s)) if s.starts_with("... <") => Err(CritError::Layout {
            what: format!("entry {entry}: the {what} payload was left out (decoded with --nopl): cannot encode"),
        }),
        Some(Json::Str(s)) => Ok(base64_decode(s)),
        Some(other) => Err(CritError::Layout {
            what: format!("entry {entry}: {what} payload: base64 text was expected, found {}", other.what()),
        }),
    }
}

struct EncodeEntry<'a> {
    index: usize,
    j: &'a Json,
    out: &'a mut Vec<u8>,
}
impl crate::image::MessageVisitor for EncodeEntry<'_> {
    type Out = Result<(), CritError>;
    fn visit<M: Message + Clone + std::fmt::Debug + PartialEq>(self) -> Self::Out {
        let m: M = from(self.index, self.j)?;
        put(&m, self.out);
        Ok(())
    }
}

/// Append the framed entries of `entries` (crit's JSON) to `out`.
pub(super) fn encode_entries(
    ty: ImageType,
    entries: &[Json],
    out: &mut Vec<u8>,
) -> Result<(), CritError> {
    for (i, j) in entries.iter().enumerate() {
        let extra = j.get("extra");
        match ty.payload() {
            Payload::Pagemap if i == 0 => put(&from::<PagemapHead>(i, j)?, out),
            Payload::GhostFile if i == 0 => {
                let g: GhostFileEntry = from(i, j)?;
                put(&g, out);
                if g.chunks != Some(true) {
                    out.extend(extra_bytes(i, extra, "ghost file")?);
                    // crit writes the first entry only.
                    return Ok(());
                }
            }
            Payload::GhostFile => {
                put(&from::<GhostChunkEntry>(i, j)?, out);
                out.extend(extra_bytes(i, extra, "ghost chunk")?);
            }
            Payload::PipeData | Payload::SkQueue | Payload::BpfmapData => {
                ty.visit_message(EncodeEntry {
                    index: i,
                    j,
                    out: &mut *out,
                })?;
                out.extend(extra_bytes(i, extra, "data")?);
            }
            Payload::TcpStream => {
                put(&from::<TcpStreamEntry>(i, j)?, out);
                if let Some(x) = extra {
                    out.extend(extra_bytes(i, x.get("inq"), "inq")?);
                    out.extend(extra_bytes(i, x.get("outq"), "outq")?);
                }
            }
            Payload::IpcShm => {
                let e: IpcShmEntry = from(i, j)?;
                put(&e, out);
                if e.in_pagemaps != Some(true)
                    && extra.is_some_and(|x| x != &Json::Str(String::new()))
                {
                    let mut data = extra_bytes(i, extra, "shared memory")?;
                    let size = e.size as usize;
                    data.truncate(size);
                    out.extend(&data);
                    out.resize(out.len() + pad(size, 4), 0);
                }
            }
            Payload::IpcSem => encode_sem(i, j, extra, out)?,
            Payload::IpcMsg => encode_msgs(i, j, extra, out)?,
            Payload::None | Payload::Pagemap | Payload::Raw => ty.visit_message(EncodeEntry {
                index: i,
                j,
                out: &mut *out,
            })?,
        }
    }
    Ok(())
}

fn encode_sem(
    i: usize,
    j: &Json,
    extra: Option<&Json>,
    out: &mut Vec<u8>,
) -> Result<(), CritError> {
    let e: IpcSemEntry = from(i, j)?;
    put(&e, out);
    let Some(Json::Arr(vals)) = extra else {
        return Ok(());
    };
    if vals.is_empty() {
        return Ok(());
    }
    if vals.len() != e.nsems as usize {
        return Err(CritError::Layout {
            what: format!(
                "entry {i}: {} semaphore values for nsems {}",
                vals.len(),
                e.nsems
            ),
        });
    }
    for v in vals {
        let v: u16 = super::conv::int_from_json(v).map_err(entry_err(i, "semaphore value"))?;
        out.extend_from_slice(&v.to_le_bytes());
    }
    let size = 2 * vals.len();
    out.resize(out.len() + pad(size, 8), 0);
    Ok(())
}

fn encode_msgs(
    i: usize,
    j: &Json,
    extra: Option<&Json>,
    out: &mut Vec<u8>,
) -> Result<(), CritError> {
    put(&from::<IpcMsgEntry>(i, j)?, out);
    let Some(Json::Arr(items)) = extra else {
        return Ok(());
    };
    for pair in items.chunks(2) {
        let m: IpcMsg = from(i, &pair[0])?;
        put(&m, out);
        let mut data = extra_bytes(i, pair.get(1), "message")?;
        let size = m.msize as usize;
        data.truncate(size);
        out.extend(data);
        out.resize(out.len() + pad(size, 8), 0);
    }
    Ok(())
}

/// The SysV IPC entries: shared memory contents (none when CRIU put them
/// in pagemaps: crit 4.2 reads the next entries as data there, crust does
/// not), semaphore values, queued messages.
fn ipc_json(
    ty: ImageType,
    off: usize,
    buf: &[u8],
    c: &mut Cur<'_>,
    cx: Cx,
    nopl: bool,
    out: &mut String,
) -> Result<(), CritError> {
    let plain = Cx::default();
    match ty.payload() {
        Payload::IpcShm => {
            let e = msg_json::<IpcShmEntry>(off, buf, cx, out)?;
            if e.in_pagemaps == Some(true) {
                return Ok(());
            }
            let size = e.size as usize;
            let data = c.take_upto(size);
            c.take_upto(pad(size, 4));
            extra_key(out);
            if nopl {
                super::conv::json_str(&format!("... <{}>", human(size as u64)), out);
            } else {
                json_base64(data, out);
            }
            out.push('}');
        }
        Payload::IpcSem => {
            let e = msg_json::<IpcSemEntry>(off, buf, cx, out)?;
            let size = 2 * e.nsems as usize;
            let data = c.take_upto(size);
            c.take_upto(pad(size, 8));
            extra_key(out);
            if nopl {
                super::conv::json_str(&format!("... <{}>", human(size as u64)), out);
            } else {
                let vals: Vec<String> = data
                    .chunks_exact(2)
                    .map(|p| u16::from_le_bytes([p[0], p[1]]).to_string())
                    .collect();
                out.push('[');
                out.push_str(&vals.join(", "));
                out.push(']');
            }
            out.push('}');
        }
        Payload::IpcMsg => {
            let e = msg_json::<IpcMsgEntry>(off, buf, cx, out)?;
            extra_key(out);
            let mut items = Vec::new();
            let mut total = 0u64;
            for _ in 0..e.qnum {
                if c.rest() == 0 {
                    break;
                }
                let (moff, mbuf) = c.entry()?;
                let mut mj = String::new();
                // crit shows the messages in the plain form, always.
                let m = msg_json::<IpcMsg>(moff, mbuf, plain, &mut mj)?;
                let size = m.msize as usize;
                total += mbuf.len() as u64 + size as u64;
                let data = c.take_upto(size);
                c.take_upto(pad(size, 8));
                items.push(mj);
                let mut b = String::new();
                json_base64(data, &mut b);
                items.push(b);
            }
            if nopl {
                super::conv::json_str(&format!("... <{}>", human(total)), out);
            } else {
                out.push('[');
                out.push_str(&items.join(", "));
                out.push(']');
            }
            out.push('}');
        }
        _ => {}
    }
    Ok(())
}
