//! `crust crit ...`, and crust run as `crit` (a symlink named `crit`):
//! CRIU 4.2's crit command line and output. The conversions themselves are
//! crust_images::crit's; this is the command line and the files.

use std::io::{Read, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use crust_images::crit::{self as imgcrit, DecodeOpts};

// `crit x DIR ps|fds|mems|rss` (and `crust image x`).
pub(crate) mod x;

pub const USAGE: &str = "\
usage: crit [-h] [--version] {decode,encode,info,x,show} ...

CRiu Image Tool (crust's built-in crit; also `crust crit ...`)

  decode [--pretty] [-i IN] [-o OUT]
                     convert a criu image from binary to JSON (stdin and
                     stdout by default); --pretty: multi-line with indents
                     and some numerical fields in field-specific format
                     (hex addresses, flag and enum names, dev numbers, IP
                     addresses); --nopl: payload sizes instead of payloads
  encode [-i IN] [-o OUT]
                     convert a criu image from JSON to binary (stdin and
                     stdout by default); gives back the image byte for byte
  info IN            show the image's magic and number of entries
  x DIR {ps,fds,mems,rss}
                     explore an image directory
  show IN [--nopl]   decode --pretty to stdout; --nopl: do not show entry
                     payloads (if any), only their sizes

To run crust as `crit`: ln -s \"$(command -v crust)\" /usr/local/bin/crit
";

/// crit's options, as argparse gives them.
#[derive(Debug, Default)]
struct Opts {
    sub: String,
    input: Option<String>,
    output: Option<String>,
    pretty: bool,
    nopl: bool,
    positional: Vec<String>,
}

fn parse(args: &[String]) -> Result<Opts> {
    let mut it = args.iter();
    let Some(sub) = it.next() else {
        bail!("too few arguments\n{USAGE}");
    };
    let mut o = Opts {
        sub: sub.clone(),
        ..Default::default()
    };
    while let Some(w) = it.next() {
        let (name, inline) = match w.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => match w.strip_prefix("-i").or_else(|| w.strip_prefix("-o")) {
                Some(v) if !v.is_empty() && !w.starts_with("--") => (&w[..2], Some(v.to_string())),
                _ => (w.as_str(), None),
            },
        };
        let mut value = |what: &str| -> Result<String> {
            match inline.clone().or_else(|| it.next().cloned()) {
                Some(v) => Ok(v),
                None => bail!("argument {what}: expected one argument"),
            }
        };
        match name {
            "-i" | "--in" => o.input = Some(value("-i/--in")?),
            "-o" | "--out" => o.output = Some(value("-o/--out")?),
            "--pretty" => o.pretty = true,
            "--nopl" => o.nopl = true,
            "-h" | "--help" => o.sub = "help".into(),
            n if n.starts_with('-') && n.len() > 1 => {
                bail!("unrecognized arguments: {w}\n{USAGE}")
            }
            _ => o.positional.push(w.clone()),
        }
    }
    Ok(o)
}

/// Read the input: the file, or stdin.
fn read_input(input: Option<&str>) -> Result<Vec<u8>> {
    match input {
        Some(p) if p != "-" => std::fs::read(p).with_context(|| format!("cannot read {p}")),
        _ => {
            let mut v = Vec::new();
            std::io::stdin()
                .lock()
                .read_to_end(&mut v)
                .context("cannot read stdin")?;
            Ok(v)
        }
    }
}

/// Write the output: a new file (mode 0600, replacing the caller's own
/// file of that name), an existing device or FIFO (`/dev/null`), or stdout.
fn write_output(output: Option<&str>, data: &[u8]) -> Result<()> {
    let special = |p: &str| std::fs::metadata(p).is_ok_and(|m| !m.is_file() && !m.is_dir());
    match output {
        Some(p) if p != "-" && special(p) => std::fs::OpenOptions::new()
            .write(true)
            .open(p)
            .and_then(|mut f| f.write_all(data))
            .with_context(|| format!("cannot write {p}")),
        Some(p) if p != "-" => {
            let (mut f, name) = crust_sys::private::create_private(Path::new(p), 0)
                .with_context(|| format!("cannot create {p}"))?;
            f.write_all(data)
                .and_then(|_| f.flush())
                .with_context(|| format!("cannot write {p}"))?;
            name.commit().with_context(|| format!("cannot create {p}"))
        }
        _ => {
            let mut so = std::io::stdout().lock();
            // A closed pipe (`| head`) is not an error worth a message.
            let _ = so.write_all(data).and_then(|_| so.flush());
            Ok(())
        }
    }
}

/// `crit decode` / `crit show`: crit's JSON of an image file.
pub fn decode(input: Option<&str>, output: Option<&str>, opts: DecodeOpts) -> Result<()> {
    let data = read_input(input)?;
    let what = input.unwrap_or("stdin");
    let mut json = imgcrit::decode(&data, opts).with_context(|| format!("decoding {what}"))?;
    // crit ends the JSON with a newline on stdout only.
    if output.is_none_or(|o| o == "-") {
        json.push('\n');
    }
    write_output(output, json.as_bytes())
}

/// `crit encode`: the image file of crit's JSON.
pub fn encode(input: Option<&str>, output: Option<&str>) -> Result<()> {
    let data = read_input(input)?;
    let what = input.unwrap_or("stdin");
    let text = std::str::from_utf8(&data).with_context(|| {
        format!("{what} is not JSON text: maybe it is an image with protobuf data? encode expects JSON input")
    })?;
    let img = imgcrit::encode(text).with_context(|| format!("encoding {what}"))?;
    write_output(output, &img)
}

fn one_positional<'a>(o: &'a Opts, what: &str) -> Result<&'a str> {
    match o.positional.as_slice() {
        [one] => Ok(one),
        [] => bail!("the following arguments are required: {what}\n{USAGE}"),
        [_, rest @ ..] => bail!("unrecognized arguments: {}\n{USAGE}", rest.join(" ")),
    }
}

/// Run `crit ARGS...` (ARGS after `crit`); returns the exit code.
pub fn run(args: &[String]) -> Result<i32> {
    if args.first().map(String::as_str) == Some("--version") {
        println!("{}", env!("CARGO_PKG_VERSION"));
        return Ok(0);
    }
    let o = parse(args)?;
    match o.sub.as_str() {
        "help" | "-h" | "--help" => {
            print!("{USAGE}");
            Ok(0)
        }
        "decode" => {
            if let Some(p) = o.positional.first() {
                bail!("unrecognized arguments: {p}\n{USAGE}");
            }
            let opts = DecodeOpts {
                pretty: o.pretty,
                nopl: o.nopl,
            };
            decode(o.input.as_deref(), o.output.as_deref(), opts).map(|_| 0)
        }
        "show" => {
            let input = one_positional(&o, "in")?;
            let opts = DecodeOpts {
                pretty: true,
                nopl: o.nopl,
            };
            decode(Some(input), None, opts).map(|_| 0)
        }
        "encode" => encode(o.input.as_deref(), o.output.as_deref()).map(|_| 0),
        "info" => {
            let input = one_positional(&o, "in")?;
            let data = read_input(Some(input))?;
            let (magic, count) =
                imgcrit::info(&data).with_context(|| format!("reading {input}"))?;
            println!("{{\n    \"magic\": \"{magic}\",\n    \"count\": {count}\n}}");
            Ok(0)
        }
        "x" => x::run_x(args.get(1..).unwrap_or_default()),
        other => bail!(
            "argument command: invalid choice: '{other}' (choose from 'decode', 'encode', 'info', 'x', 'show')\n{USAGE}"
        ),
    }
}

/// True when crust was started under the name `crit` (a symlink).
pub fn invoked_as_crit() -> bool {
    std::env::args_os()
        .next()
        .as_deref()
        .map(Path::new)
        .and_then(Path::file_name)
        .is_some_and(|n| n == "crit")
}

/// `crit ...` as a program: runs, prints an error as crit does, exits.
pub fn main_as_crit(args: &[String]) -> ! {
    let code = match run(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = std::io::stdout().flush();
            eprintln!("crit: error: {e:#}");
            1
        }
    };
    std::process::exit(code)
}
