//! Splitting a command line into options and words the way CRIU's
//! `getopt_long()` (glibc) does, corners included:
//!
//! - words are permuted: options may come before, after or between the
//!   command and its words; `--` ends the options;
//! - a long option may be any unique prefix of its name (`--tcp-est`), or
//!   a prefix several names share when they all mean the same;
//! - a required argument is `--opt=value`, `--opt value`, `-ovalue` or
//!   `-o value` (the next word is taken whatever it looks like);
//! - an optional argument is only ever glued: `--opt=value` or `-ovalue`
//!   (`--verbosity 4` is `--verbosity` and a word `4`);
//! - short options cluster (`-Rs`); one that takes an argument takes the
//!   rest of the cluster: `-verbosity=0` is `-v` with the argument
//!   `erbosity=0` (which CRIU reads as level 0);
//! - CRIU's boolean options exist as `--NAME` and `--no-NAME`, both long
//!   options of their own (so `--no-tcp-e` is a prefix of
//!   `--no-tcp-established`).

use anyhow::{anyhow, bail, Result};

/// Whether an option takes an argument (getopt's `has_arg`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arg {
    No,
    Required,
    Optional,
}

/// What the scanner needs to know of an option of the table.
pub trait OptSpec: 'static {
    fn long(&self) -> &'static str;
    fn short(&self) -> Option<char>;
    fn arg(&self) -> Arg;
    /// CRIU's BOOL_OPT: `--no-NAME` exists too.
    fn negatable(&self) -> bool;
    /// An option CRIU does not have: it never makes a prefix of one of
    /// CRIU's options ambiguous (`--allow-u` stays `--allow-uprobes`).
    fn extension(&self) -> bool {
        false
    }
}

/// One option found on the command line.
pub struct Found<S: 'static> {
    pub spec: &'static S,
    /// Given as `--no-NAME`.
    pub negated: bool,
    pub value: Option<String>,
}

/// The result of scanning: the options (in order), the other words, and
/// the first error, if any (the options before it are kept: getopt acts
/// on each option as it reads it, so `-V` before a bad option still
/// prints the version).
pub struct Scanned<S: 'static> {
    pub found: Vec<Found<S>>,
    pub words: Vec<String>,
    pub error: Option<anyhow::Error>,
}

/// Scan `argv` (without the program name). With `stop_at_image`, the
/// words after a first word `image` are that command's own (crust's
/// `image` tool parses them itself).
pub fn scan<S: OptSpec>(table: &'static [S], argv: &[String], stop_at_image: bool) -> Scanned<S> {
    let mut out = Scanned {
        found: Vec::new(),
        words: Vec::new(),
        error: None,
    };
    let mut i = 0;
    while i < argv.len() {
        let a = &argv[i];
        i += 1;
        if stop_at_image && out.words.first().map(String::as_str) == Some("image") {
            out.words.push(a.clone());
            continue;
        }
        let r = if a == "--" {
            out.words.extend(argv[i..].iter().cloned());
            break;
        } else if let Some(body) = a.strip_prefix("--") {
            scan_long(table, body, argv, &mut i).map(|f| out.found.push(f))
        } else if a.len() > 1 && a.starts_with('-') {
            scan_short(table, &a[1..], argv, &mut i, &mut out.found)
        } else {
            out.words.push(a.clone());
            Ok(())
        };
        if let Err(e) = r {
            out.error = Some(e);
            break;
        }
    }
    out
}

/// The long option `name` (exact, or a prefix as getopt_long accepts it):
/// its spec and whether it is the `--no-` form.
fn find_long<S: OptSpec>(table: &'static [S], name: &str) -> Result<(&'static S, bool)> {
    // Every long name: NAME, and no-NAME for CRIU's boolean options.
    let names = table.iter().flat_map(|s| {
        let neg = s.negatable().then(|| (format!("no-{}", s.long()), s, true));
        std::iter::once((s.long().to_string(), s, false)).chain(neg)
    });
    let mut matches: Vec<(String, &'static S, bool)> = Vec::new();
    for (n, s, neg) in names {
        if n == name {
            return Ok((s, neg));
        }
        if n.starts_with(name) {
            matches.push((n, s, neg));
        }
    }
    // CRIU's own options first: a prefix means what it means to CRIU.
    if matches.iter().any(|(_, s, _)| !s.extension()) {
        matches.retain(|(_, s, _)| !s.extension());
    }
    match matches.as_slice() {
        [] => bail!("unrecognized option '--{name}'"),
        [(_, s, neg), rest @ ..]
            if rest
                .iter()
                .all(|(_, s2, neg2)| std::ptr::eq(*s, *s2) && neg == neg2) =>
        {
            Ok((s, *neg))
        }
        many => {
            let names: Vec<String> = many.iter().map(|(n, ..)| format!("'--{n}'")).collect();
            bail!(
                "option '--{name}' is ambiguous; possibilities: {}",
                names.join(" ")
            )
        }
    }
}

/// One long option, `body` being the word without its `--`; a required
/// argument may be the next word, `argv[*next]` (then `*next` moves past
/// it).
fn scan_long<S: OptSpec>(
    table: &'static [S],
    body: &str,
    argv: &[String],
    next: &mut usize,
) -> Result<Found<S>> {
    let (name, inline) = match body.split_once('=') {
        Some((n, v)) => (n, Some(v.to_string())),
        None => (body, None),
    };
    let (spec, negated) = find_long(table, name)?;
    let shown = if negated {
        format!("no-{}", spec.long())
    } else {
        spec.long().to_string()
    };
    let arg = if negated { Arg::No } else { spec.arg() };
    let value = match (arg, inline) {
        (Arg::No, Some(_)) => bail!("option '--{shown}' doesn't allow an argument"),
        (Arg::No, None) | (Arg::Optional, None) => None,
        (_, Some(v)) => Some(v),
        (Arg::Required, None) => {
            let v = argv
                .get(*next)
                .ok_or_else(|| anyhow!("option '--{shown}' requires an argument"))?;
            *next += 1;
            Some(v.clone())
        }
    };
    Ok(Found {
        spec,
        negated,
        value,
    })
}

/// A cluster of short options, `cluster` being the word without its `-`
/// (`dj`, `t42`, `vvv`); an argument is the rest of the cluster or, when
/// required and the cluster ends, the next word, `argv[*next]`.
fn scan_short<S: OptSpec>(
    table: &'static [S],
    cluster: &str,
    argv: &[String],
    next: &mut usize,
    found: &mut Vec<Found<S>>,
) -> Result<()> {
    for (j, c) in cluster.char_indices() {
        let spec = table
            .iter()
            .find(|s| s.short() == Some(c))
            .ok_or_else(|| anyhow!("invalid option -- '{c}'"))?;
        let rest = &cluster[j + c.len_utf8()..];
        let value = match spec.arg() {
            Arg::No => {
                found.push(Found {
                    spec,
                    negated: false,
                    value: None,
                });
                continue;
            }
            Arg::Optional if rest.is_empty() => None,
            Arg::Required if rest.is_empty() => {
                let v = argv
                    .get(*next)
                    .ok_or_else(|| anyhow!("option requires an argument -- '{c}'"))?;
                *next += 1;
                Some(v.clone())
            }
            Arg::Optional | Arg::Required => Some(rest.to_string()),
        };
        // An option with an argument ends the cluster.
        found.push(Found {
            spec,
            negated: false,
            value,
        });
        break;
    }
    Ok(())
}

/// C's `atol()`, which CRIU uses for most numbers: leading blanks, a sign,
/// the digits that follow; anything else ends the number (`"12abc"` is
/// 12, `"abc"` is 0). Saturates instead of overflowing.
pub fn atol(s: &str) -> i64 {
    let t = s.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let mut n: i64 = 0;
    for b in digits.bytes().take_while(u8::is_ascii_digit) {
        n = n.saturating_mul(10).saturating_add(i64::from(b - b'0'));
    }
    if neg {
        -n
    } else {
        n
    }
}

/// C's `atoi()`: [`atol`] cut to an `int` (saturating).
pub fn atoi(s: &str) -> i32 {
    atol(s).clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    struct T(&'static str, Option<char>, Arg, bool, bool);
    impl OptSpec for T {
        fn long(&self) -> &'static str {
            self.0
        }
        fn short(&self) -> Option<char> {
            self.1
        }
        fn arg(&self) -> Arg {
            self.2
        }
        fn negatable(&self) -> bool {
            self.3
        }
        fn extension(&self) -> bool {
            self.4
        }
    }
    static TABLE: &[T] = &[
        T("tree", Some('t'), Arg::Required, false, false),
        T("verbosity", Some('v'), Arg::Optional, false, false),
        T("tcp-established", None, Arg::No, true, false),
        T("tcp-close", None, Arg::No, true, false),
        T("leave-running", Some('R'), Arg::No, false, false),
        T("leave-stopped", Some('s'), Arg::No, false, false),
        T("manage-cgroups", None, Arg::Optional, false, false),
        T("allow-uprobes", None, Arg::No, true, false),
        T("allow-unsafe-images-dir", None, Arg::No, true, true),
    ];

    fn sc(args: &[&str]) -> Scanned<T> {
        let v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        scan(TABLE, &v, true)
    }

    /// (long name, negated, value) of what was found.
    fn got(s: &Scanned<T>) -> Vec<(&'static str, bool, Option<String>)> {
        s.found
            .iter()
            .map(|f| (f.spec.long(), f.negated, f.value.clone()))
            .collect()
    }

    #[test]
    fn the_v_of_verbosity_takes_the_rest_of_the_word() {
        let s = sc(&["check", "-verbosity=0"]);
        assert_eq!(
            got(&s),
            vec![("verbosity", false, Some("erbosity=0".into()))]
        );
        assert_eq!(s.words, vec!["check"]);
        let s = sc(&["-v4", "-vvv", "-v", "--verbosity=2", "--verbosity", "3"]);
        assert_eq!(
            got(&s),
            vec![
                ("verbosity", false, Some("4".into())),
                ("verbosity", false, Some("vv".into())),
                ("verbosity", false, None),
                ("verbosity", false, Some("2".into())),
                ("verbosity", false, None),
            ]
        );
        // An optional argument is never the next word.
        assert_eq!(s.words, vec!["3"]);
        let s = sc(&["--manage-cgroups", "full"]);
        assert_eq!(got(&s), vec![("manage-cgroups", false, None)]);
        assert_eq!(s.words, vec!["full"]);
    }

    #[test]
    fn required_arguments_in_all_four_forms() {
        for args in [
            &["-t42"][..],
            &["-t", "42"],
            &["--tree=42"],
            &["--tree", "42"],
            &["--tr", "42"],
            &["-Rt42"],
        ] {
            let s = sc(args);
            assert!(s.error.is_none(), "{args:?}");
            assert_eq!(s.found.last().unwrap().value.as_deref(), Some("42"));
            assert!(s.words.is_empty(), "{args:?}");
        }
        // The next word is taken whatever it looks like.
        let s = sc(&["-t", "-R"]);
        assert_eq!(got(&s), vec![("tree", false, Some("-R".into()))]);
        let s = sc(&["--tree"]);
        assert!(s
            .error
            .unwrap()
            .to_string()
            .contains("requires an argument"));
        let s = sc(&["-Rt"]);
        assert_eq!(got(&s), vec![("leave-running", false, None)]);
        assert!(s.error.unwrap().to_string().contains("'t'"));
    }

    #[test]
    fn prefixes_negations_and_ambiguity() {
        let s = sc(&["--tcp-e", "--no-tcp-c", "--no-tcp-established"]);
        assert_eq!(
            got(&s),
            vec![
                ("tcp-established", false, None),
                ("tcp-close", true, None),
                ("tcp-established", true, None),
            ]
        );
        let e = sc(&["--tcp"]).error.unwrap().to_string();
        assert!(
            e.contains("ambiguous") && e.contains("'--tcp-close'"),
            "{e}"
        );
        let e = sc(&["--no-tree"]).error.unwrap().to_string();
        assert!(e.contains("unrecognized option '--no-tree'"), "{e}");
        // crust's own options do not make CRIU's prefixes ambiguous.
        let s = sc(&["--allow-u", "--allow-unsafe", "--no-allow-un"]);
        assert_eq!(
            got(&s),
            vec![
                ("allow-uprobes", false, None),
                ("allow-unsafe-images-dir", false, None),
                ("allow-unsafe-images-dir", true, None),
            ]
        );
        let e = sc(&["--tcp-close=1"]).error.unwrap().to_string();
        assert!(e.contains("doesn't allow an argument"), "{e}");
        let e = sc(&["-Q"]).error.unwrap().to_string();
        assert!(e.contains("invalid option -- 'Q'"), "{e}");
    }

    #[test]
    fn words_are_permuted_and_double_dash_ends_options() {
        let s = sc(&["-R", "dump", "-s", "x", "--", "-t", "1"]);
        assert_eq!(s.words, vec!["dump", "x", "-t", "1"]);
        assert_eq!(got(&s).len(), 2);
        // The options before an error are kept, those after it are not read.
        let s = sc(&["-R", "--bogus", "-s"]);
        assert_eq!(got(&s), vec![("leave-running", false, None)]);
        assert!(s.error.is_some());
        // `image` keeps its own words.
        let s = sc(&["-R", "image", "decode", "-i", "x", "--pretty"]);
        assert_eq!(s.words, vec!["image", "decode", "-i", "x", "--pretty"]);
    }

    #[test]
    fn c_numbers() {
        assert_eq!(atoi("42"), 42);
        assert_eq!(atoi("  -7x"), -7);
        assert_eq!(atoi("+3"), 3);
        assert_eq!(atoi("erbosity=0"), 0);
        assert_eq!(atoi(""), 0);
        assert_eq!(atoi("99999999999"), i32::MAX);
        assert_eq!(atol("1T"), 1);
    }
}
