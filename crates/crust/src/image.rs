//! `crust image ...`: image tools (in the spirit of CRIU's `crit`).

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};

// `crit x`; the `crit` front end shares it.
#[path = "crit/x.rs"]
pub(crate) mod x;

const USAGE: &str = "\
Usage:
  crust image decode -i FILE [--pretty] [-o OUT]   image file -> JSON
  crust image encode -i FILE [-o OUT]              JSON -> image file (not yet)
  crust image show -i FILE                         decode --pretty to stdout
  crust image verify DIR [--tcp-close] [--shell-job]
                                                   every check a restore makes before it
                                                   creates a task, without restoring
  crust image diff DIR1 DIR2 [--json]              what changed between two sets of a tree
  crust image x DIR ps|fds|mems|rss                a set's processes, fds, memory, resident pages (as crit x)
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

/// Re-lay out JSON text: compact (`indent` None) or indented by `indent`
/// spaces per level, like crit's plain and `--pretty` output. Strings are
/// copied untouched.
fn relayout(json: &str, indent: Option<usize>) -> String {
    let mut out = String::with_capacity(json.len());
    let mut depth = 0usize;
    let mut in_str = false;
    let mut escaped = false;
    let mut chars = json.chars().peekable();
    let newline = |out: &mut String, depth: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * depth));
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
                // Keep empty containers on one line.
                while chars.peek().is_some_and(|n| n.is_whitespace()) {
                    chars.next();
                }
                if matches!(chars.peek(), Some('}') | Some(']')) {
                    out.push(chars.next().unwrap_or(' '));
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
                if indent.is_some() {
                    newline(&mut out, depth);
                } else {
                    out.push(' ');
                }
            }
            ':' => out.push_str(": "),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    out.push('\n');
    out
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
        Some(("x", rest)) => return x::run_x(rest),
        Some(("verify", rest)) => return verify(rest),
        Some(("diff", rest)) => return crate::imgdiff::run(rest),
        _ => {}
    }
    let a = parse(args)?;
    match a.sub.as_str() {
        "decode" | "show" => {
            let Some(input) = a.input.as_deref() else {
                bail!("`crust image {}` needs -i FILE", a.sub);
            };
            let json = crust_images::json::image_to_json(Path::new(input))
                .with_context(|| format!("decoding {input}"))?;
            let pretty = a.pretty || a.sub == "show";
            let text = relayout(&json, pretty.then_some(4));
            match a.output.as_deref() {
                Some(out) if out != "-" => {
                    std::fs::write(out, text).with_context(|| format!("writing {out}"))?
                }
                _ => {
                    let mut so = std::io::stdout().lock();
                    // A closed pipe (`| head`) is not an error worth a message.
                    let _ = so.write_all(text.as_bytes()).and_then(|_| so.flush());
                }
            }
            Ok(0)
        }
        "encode" => bail!(
            "`crust image encode` is not available yet: crust-images cannot build image \
             files from JSON yet"
        ),
        other => bail!("unknown image subcommand {other:?}\n{USAGE}"),
    }
}

#[cfg(test)]
mod tests {
    use super::relayout;

    #[test]
    fn compact_and_pretty() {
        let j = "{\n  \"magic\": \"CORE\", \"entries\": [{\"a\": 1,\"s\": \"x, {y}\\\" z\"}, {}]}";
        assert_eq!(
            relayout(j, None),
            "{\"magic\": \"CORE\", \"entries\": [{\"a\": 1, \"s\": \"x, {y}\\\" z\"}, {}]}\n"
        );
        assert_eq!(
            relayout(j, Some(4)),
            "{\n    \"magic\": \"CORE\",\n    \"entries\": [\n        {\n            \"a\": 1,\n            \"s\": \"x, {y}\\\" z\"\n        },\n        {}\n    ]\n}\n"
        );
    }
}
