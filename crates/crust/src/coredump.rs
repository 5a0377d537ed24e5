//! `crust coredump`: CRIU's `coredump` tool (an ELF core file per process
//! of an image set, `core.PID`), with its options: `-i/--in DIR` (images,
//! default `.`), `-o/--out DIR` (where the cores go, default `.`),
//! `-p/--pid PID` (only that process). Options are read as Python's
//! argparse reads them (CRIU's tool is a Python script): `-iDIR`,
//! `--in=DIR`, unique prefixes of the long names. The ELF writer is
//! `crust_engine::coredump`.

use anyhow::{bail, Context, Result};
use std::path::PathBuf;

pub const USAGE: &str = "\
usage: crust coredump [-h] [-i IN] [-p PID] [-o OUT]

CRIU core dump: write an ELF core file core.PID per process of an image set,
for gdb (`gdb PROGRAM core.PID`).

options:
  -h, --help         show this help message and exit
  -i, --in IN        directory where to get images from (default .)
  -p, --pid PID      generate coredump for specific pid (all pids by default)
  -o, --out OUT      directory to write coredumps to (default .)
";

#[derive(Debug, PartialEq)]
pub struct Args {
    pub input: PathBuf,
    pub output: PathBuf,
    pub pid: Option<u32>,
    pub help: bool,
}

const LONG: [(&str, char); 4] = [("in", 'i'), ("out", 'o'), ("pid", 'p'), ("help", 'h')];

/// The short letter of `--name` or of a unique prefix of it.
fn long_name(name: &str) -> Result<char> {
    if let Some(&(_, c)) = LONG.iter().find(|(l, _)| *l == name) {
        return Ok(c);
    }
    let matches: Vec<_> = LONG.iter().filter(|(l, _)| l.starts_with(name)).collect();
    match matches.as_slice() {
        [(_, c)] if !name.is_empty() => Ok(*c),
        [] | [_] => bail!("unrecognized arguments: --{name}"),
        many => bail!(
            "ambiguous option: --{name} could match {}",
            many.iter()
                .map(|(l, _)| format!("--{l}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

pub fn parse(argv: &[String]) -> Result<Args> {
    let mut a = Args {
        input: ".".into(),
        output: ".".into(),
        pid: None,
        help: false,
    };
    let mut it = argv.iter();
    while let Some(w) = it.next() {
        let (opt, inline) = if let Some(body) = w.strip_prefix("--") {
            let (n, v) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (body, None),
            };
            (long_name(n)?, v)
        } else if let Some(body) = w.strip_prefix('-').filter(|b| !b.is_empty()) {
            let mut cs = body.chars();
            let c = cs.next().unwrap_or('-');
            let rest: String = cs.collect();
            (c, (!rest.is_empty()).then_some(rest))
        } else {
            bail!("unrecognized arguments: {w}");
        };
        if opt == 'h' {
            a.help = true;
            continue;
        }
        let v = match inline.or_else(|| it.next().cloned()) {
            Some(v) => v,
            None => bail!("argument -{opt}: expected one argument"),
        };
        match opt {
            'i' => a.input = v.into(),
            'o' => a.output = v.into(),
            'p' => {
                let p = v
                    .trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|&p| p > 0)
                    .with_context(|| format!("argument -p/--pid: invalid int value: '{v}'"))?;
                a.pid = Some(p);
            }
            other => bail!("unrecognized arguments: -{other}"),
        }
    }
    Ok(a)
}

/// Run `crust coredump ARGS`: the exit code.
pub fn run(argv: &[String]) -> i32 {
    let a = match parse(argv) {
        Ok(a) => a,
        Err(e) => {
            eprint!("{USAGE}");
            eprintln!("crust coredump: error: {e:#}");
            return 2;
        }
    };
    if a.help {
        print!("{USAGE}");
        return 0;
    }
    match write(&a) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("Error: {e:#}");
            1
        }
    }
}

fn write(a: &Args) -> Result<()> {
    if !a.output.is_dir() {
        bail!(
            "{} is not a directory: create it, or name another with -o",
            a.output.display()
        );
    }
    let done = crust_engine::coredump::coredump(&a.input, &a.output, a.pid).with_context(|| {
        format!(
            "cannot make core files of the image set {}",
            a.input.display()
        )
    })?;
    if done.is_empty() {
        bail!(
            "no core file written: no process of {} has memory (zombies only)",
            a.input.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(w: &[&str]) -> Result<Args> {
        parse(&w.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn argparse_forms() {
        let a = p(&["-i", "imgs", "--out=cores", "-p42"]).unwrap();
        assert_eq!(a.input, PathBuf::from("imgs"));
        assert_eq!(a.output, PathBuf::from("cores"));
        assert_eq!(a.pid, Some(42));
        let a = p(&["--pi", "7", "--i", "x"]).unwrap();
        assert_eq!(a.pid, Some(7));
        assert_eq!(a.input, PathBuf::from("x"));
        let d = p(&[]).unwrap();
        assert_eq!((d.input, d.output, d.pid), (".".into(), ".".into(), None));
        assert!(p(&["-p", "x"]).is_err());
        assert!(p(&["-i"]).is_err());
        assert!(p(&["--bogus"]).is_err());
        assert!(p(&["words"]).is_err());
        assert!(p(&["-h"]).unwrap().help);
    }
}
