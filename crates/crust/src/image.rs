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
(the same as `crust crit decode|encode|show`; see `crust crit --help`)
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

/// Run `crust image ...`; returns the exit code.
pub fn run(args: &[String]) -> Result<i32> {
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
