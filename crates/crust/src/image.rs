//! `crust image ...`: image tools (in the spirit of CRIU's `crit`).

use anyhow::{bail, Result};

const USAGE: &str = "\
Usage:
  crust image decode -i FILE [--pretty] [-o OUT]   image file -> JSON
  crust image encode -i FILE [-o OUT]              JSON -> image file
  crust image show -i FILE                         decode --pretty to stdout
";

struct ImageArgs {
    sub: String,
    input: Option<String>,
    output: Option<String>,
    pretty: bool,
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
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown option {other} for `crust image {}`", a.sub),
        }
    }
    Ok(a)
}

/// Run `crust image ...`; returns the exit code.
pub fn run(args: &[String]) -> Result<i32> {
    let a = parse(args)?;
    match a.sub.as_str() {
        "decode" | "show" | "encode" => {
            let Some(input) = a.input.as_deref() else {
                bail!("`crust image {}` needs -i FILE", a.sub);
            };
            let _ = (a.output, a.pretty);
            bail!(
                "`crust image {}` is not available yet: crust-images cannot convert whole \
                 image files to or from JSON yet (input {input})",
                a.sub
            )
        }
        other => bail!("unknown image subcommand {other:?}\n{USAGE}"),
    }
}
