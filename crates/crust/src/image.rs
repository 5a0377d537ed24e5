//! `crust image ...`: image tools. `decode`, `show` and `encode` are crit's
//! (the same code as `crust crit`, see crit/mod.rs), with `-i FILE`.

use anyhow::{bail, Result};
use crust_images::crit::DecodeOpts;

use crate::crit;

const USAGE: &str = "\
Usage:
  crust image decode -i FILE [--pretty] [--nopl] [-o OUT]   image file -> crit's JSON
  crust image encode -i FILE [-o OUT]                       crit's JSON -> image file
  crust image show -i FILE [--nopl]                         decode --pretty to stdout
  crust image verify DIR [--tcp-close] [--shell-job]
                                            every check a restore makes before it
                                            creates a task, without restoring
  crust image diff DIR1 DIR2 [--json]       what changed between two sets of a tree
  crust image x DIR ps|fds|mems|rss         a set's processes, fds, memory, resident pages
(decode, encode, show and x are `crust crit decode|encode|show|x`; see `crust crit --help`)
";

struct ImageArgs {
    sub: String,
    input: Option<String>,
    output: Option<String>,
    pretty: bool,
    nopl: bool,
}

fn parse(args: &[String]) -> Result<ImageArgs> {
    let mut it = args.iter();
    let Some(sub) = it.next() else {
        bail!("`crust image` needs a subcommand\n{USAGE}");
    };
    let mut a = ImageArgs {
        sub: sub.clone(),
        input: None,
        output: None,
        pretty: false,
        nopl: false,
    };
    while let Some(w) = it.next() {
        let (name, inline) = match w.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (w.as_str(), None),
        };
        let mut value = |what: &str| -> Result<String> {
            match inline.clone().or_else(|| it.next().cloned()) {
                Some(v) => Ok(v),
                None => bail!("option {what} requires an argument"),
            }
        };
        match name {
            "-i" | "--in" | "--input" => a.input = Some(value(name)?),
            "-o" | "--out" | "--output" => a.output = Some(value(name)?),
            "--pretty" | "-p" => a.pretty = true,
            "--nopl" => a.nopl = true,
            "-h" | "--help" => a.sub = "help".into(),
            other => bail!("unknown option {other} for `crust image {}`", a.sub),
        }
    }
    Ok(a)
}

/// `crust image verify DIR`: the restore's checks without the restore.
/// Exit 0 when the set would restore here, 1 with the reason when not.
fn verify(args: &[String]) -> Result<i32> {
    let mut opts = crust_engine::Options::default();
    let mut dir = None;
    for a in args {
        match a.as_str() {
            "--tcp-close" => opts.tcp_close = true,
            "--shell-job" | "-j" => opts.shell_job = true,
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(0);
            }
            d if !d.starts_with('-') && dir.is_none() => dir = Some(d.to_string()),
            other => bail!("unknown word {other:?} for `crust image verify`\n{USAGE}"),
        }
    }
    let Some(dir) = dir else {
        bail!("`crust image verify` needs the images directory\n{USAGE}");
    };
    opts.images_dir = dir.clone().into();
    match crust_engine::verify(&opts) {
        Ok(report) => {
            for line in &report.checked {
                println!("checked {line}");
            }
            println!("{dir}: would restore (every check before the first task passed)");
            Ok(0)
        }
        Err(e) => {
            let mut why = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                why += &format!(": {s}");
                src = s.source();
            }
            println!("{dir}: would NOT restore: {why}");
            Ok(1)
        }
    }
}

/// Run `crust image ...`; returns the exit code.
pub fn run(args: &[String]) -> Result<i32> {
    match args.split_first().map(|(s, r)| (s.as_str(), r)) {
        Some(("x", rest)) => return crit::x::run_x(rest),
        Some(("verify", rest)) => return verify(rest),
        Some(("diff", rest)) => return crate::imgdiff::run(rest),
        _ => {}
    }
    let a = parse(args)?;
    match a.sub.as_str() {
        "help" => {
            print!("{USAGE}");
            Ok(0)
        }
        "decode" | "show" => {
            let Some(input) = a.input.as_deref() else {
                bail!("`crust image {}` needs -i FILE", a.sub);
            };
            let opts = DecodeOpts {
                pretty: a.pretty || a.sub == "show",
                nopl: a.nopl,
            };
            crit::decode(Some(input), a.output.as_deref(), opts)?;
            Ok(0)
        }
        "encode" => {
            crit::encode(a.input.as_deref(), a.output.as_deref())?;
            Ok(0)
        }
        other => bail!("unknown image subcommand {other:?}\n{USAGE}"),
    }
}
