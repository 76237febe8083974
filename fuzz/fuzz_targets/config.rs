//! The config loader: `toml::from_str::<Config>`, `Loaded::read` and
//! `Loaded::parse` on fuzz text.
//!
//! Input: [layout] [TOML text...]
//!   layout % 5 == 0: a `[[app]]` with `client_secret` and a `[[secret]]` with
//!                    `value` come first (markers), the fuzz text continues the secret
//!   layout % 5 == 1: the same two tables in the other order
//!   layout % 5 == 2: the fuzz text alone (it can set top-level keys)
//!   layout % 5 == 3: the marker secret as an inline table on the first line,
//!                    the fuzz text continues at the top level
//!   layout % 5 == 4: the marker secret's `value = "…"` is the last line and
//!                    the fuzz text continues that line (a typo next to a secret)
//!
//! The fuzz text's first line, after `AIRLOCK__`, also names an environment
//! override (`apply_env_overrides`) whose value is a marker written as TOML
//! in one of eight ways chosen by `layout / 5 % 8`.
//!
//! Properties: nothing panics; no error message ever holds a secret's
//! text: a `value`/`client_secret` of the fixed prefix, the contents of a
//! `value_file`/`client_secret_file`, or a `value_env`/`client_secret_env`
//! variable's value; and a config that parses keeps its promises
//! (ports to CONNECT to, every secret sendable somewhere and swappable
//! somewhere, valid unique names and placeholders, values fit for headers).
//!
//! File paths in the fuzz text never reach the disk as written: after
//! parsing, every `value_file`, `client_secret_file` and `upstream_ca` is
//! pointed into a private folder (`secret.txt`, `empty.txt`, `ca.pem` or a
//! missing file, by the name's ending), so the fuzzer cannot read
//! `/dev/zero` or the machine's files.
#![no_main]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use airlock::config::{apply_env_overrides, Config, Loaded, ENV_OVERRIDE_PREFIX};
use airlock_fuzz::ignoring;
use airlock_vault_client::{is_valid_placeholder, ExposeSecret};
use libfuzzer_sys::fuzz_target;

/// Environment variable the fuzz text may name in `value_env`/`client_secret_env`.
const ENV_VAR: &str = "AIRLOCK_FUZZ_SECRET";

/// One set of secret texts. Two sets of the same shape tell a leak of the
/// prefix's secrets (the error changes with them) from fuzz text that
/// happens to spell a marker (it does not).
struct Markers {
    value: &'static str,
    client_secret: &'static str,
    file: &'static str,
    env: &'static str,
}

const FIRST: Markers = Markers {
    value: "VALUEmarkerAAAAAAAAAAAAAAAA",
    client_secret: "CLIENTmarkerAAAAAAAAAAAAAAA",
    file: "FILEmarkerAAAAAAAAAAAAAAAAA",
    env: "ENVmarkerAAAAAAAAAAAAAAAAAA",
};
const SECOND: Markers = Markers {
    value: "VALUEmarkerBBBBBBBBBBBBBBBB",
    client_secret: "CLIENTmarkerBBBBBBBBBBBBBBB",
    file: "FILEmarkerBBBBBBBBBBBBBBBBB",
    env: "ENVmarkerBBBBBBBBBBBBBBBBBB",
};

impl Markers {
    fn all(&self) -> [&'static str; 4] {
        [self.value, self.client_secret, self.file, self.env]
    }
}

fn dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("airlock-fuzz-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("fuzz temp dir");
        std::fs::write(dir.join("empty.txt"), "\n").unwrap();
        std::fs::write(
            dir.join("ca.pem"),
            "-----BEGIN CERTIFICATE-----\nMIIBAA==\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        dir
    })
}

fn prefix(layout: u8, m: &Markers) -> String {
    let app = format!(
        "[[app]]\nprovider = \"github\"\nclient_id = \"fuzz-client\"\nclient_secret = \"{}\"\n",
        m.client_secret
    );
    let secret = format!(
        "[[secret]]\nname = \"MARKER\"\nvalue = \"{}\"\nhosts = [\"api.example.com\"]\n",
        m.value
    );
    match layout % 5 {
        0 => format!("{app}{secret}"),
        1 => format!("{secret}{app}"),
        3 => format!(
            "secret = [{{ name = \"MARKER\", value = \"{}\", hosts = [\"api.example.com\"] }}]\n",
            m.value
        ),
        4 => format!(
            "{app}[[secret]]\nname = \"MARKER\"\nhosts = [\"api.example.com\"]\nvalue = \"{}\"",
            m.value
        ),
        _ => String::new(),
    }
}

/// Where a path of the fuzz text is read from instead.
fn redirect(p: &Path) -> PathBuf {
    let s = p.to_string_lossy();
    let name = if s.ends_with("secret.txt") {
        "secret.txt"
    } else if s.ends_with("empty.txt") {
        "empty.txt"
    } else if s.ends_with(".pem") {
        "ca.pem"
    } else {
        "missing"
    };
    dir().join(name)
}

fn neutralise(config: &mut Config) {
    for p in &mut config.proxy.upstream_ca {
        *p = redirect(p);
    }
    for s in &mut config.secrets {
        let s = s.get_mut();
        if let Some(p) = &mut s.value_file {
            *p = redirect(p);
        }
    }
    for a in &mut config.apps {
        let a = a.get_mut();
        if let Some(p) = &mut a.client_secret_file {
            *p = redirect(p);
        }
    }
}

/// Loads and parses; the error text if any.
fn run(layout: u8, text: &str, m: &Markers) -> Option<String> {
    let dir = dir();
    std::fs::write(dir.join("secret.txt"), format!("{}\n", m.file)).unwrap();
    std::env::set_var(ENV_VAR, m.env);
    let source = format!("{}{text}", prefix(layout, m));

    // The bare parser: its error is what `Loaded::read` wraps.
    let parsed = toml::from_str::<Config>(&source);

    let path = dir.join("airlock.toml");
    std::fs::write(&path, &source).unwrap();
    let mut loaded = match Loaded::read(Some(&path)) {
        Ok(l) => l,
        Err(e) => {
            assert!(parsed.is_err(), "Loaded::read refused what toml accepts");
            return Some(e.to_string());
        }
    };
    assert!(parsed.is_ok(), "Loaded::read accepted what toml refuses");
    neutralise(&mut loaded.config);
    let parsed = match loaded.parse() {
        Ok(p) => p,
        Err(e) => return Some(e.to_string()),
    };

    // What a config that parses promises.
    assert!(!parsed.proxy.settings.allowed_ports.is_empty());
    let prefix = loaded.prefix();
    assert!(prefix.len() >= 4);
    let mut names = BTreeSet::new();
    let mut placeholders = BTreeSet::new();
    for s in &parsed.secrets {
        assert!(names.insert(s.name.clone()), "duplicate name {}", s.name);
        assert!(
            !s.name.is_empty()
                && !s.name.as_bytes()[0].is_ascii_digit()
                && s.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "bad name {:?}",
            s.name
        );
        assert!(!s.hosts.is_empty(), "{}: no host", s.name);
        assert!(!s.swap_in.is_empty(), "{}: nowhere to swap", s.name);
        assert!(
            !s.value
                .expose_secret()
                .bytes()
                .any(|b| b.is_ascii_control()),
            "{}: value unfit for a header",
            s.name
        );
        if let Some(p) = &s.placeholder {
            assert!(
                is_valid_placeholder(prefix, p),
                "{}: placeholder {p:?}",
                s.name
            );
            assert!(
                placeholders.insert(p.clone()),
                "duplicate placeholder {p:?}"
            );
        }
    }
    None
}

/// `AIRLOCK__SECTION__KEY` overrides: the variable's name is `AIRLOCK__` +
/// the fuzz text's first line, its value a marker written as TOML in one of
/// eight ways (bare, quoted, literal, multi-line, in an array or a table…).
/// Errors name the variable, never its value, in whatever form.
fn check_env_overrides(layout: u8, text: &str) {
    let first = text.lines().next().unwrap_or("").trim();
    let name = format!("{ENV_OVERRIDE_PREFIX}{first}");
    let wrap = |m: &str| match (layout / 5) % 8 {
        0 => m.to_owned(),
        1 => format!("\"{m}\""),
        2 => format!("'{m}'"),
        3 => format!("\"\"\"{m}\"\"\""),
        4 => format!("[\"{m}\"]"),
        5 => format!("{{ k = \"{m}\" }}"),
        6 => format!("\"{m}\\n\""),
        _ => format!("'''{m}'''"),
    };
    let run = |m: &str| {
        let mut config = Config::default();
        apply_env_overrides(&mut config, [(name.clone(), wrap(m))].into_iter())
            .err()
            .map(|errors| errors.join("\n"))
    };
    let (a, b) = ("OVERRIDEmarkerAAAAAAAAAAAA", "OVERRIDEmarkerBBBBBBBBBBBB");
    let Some(err) = run(a) else {
        return;
    };
    if std::env::var_os("AIRLOCK_FUZZ_PRINT").is_some() {
        eprintln!("--- override error:\n{err}");
    }
    if err.contains(a) && !ignoring("env-override") {
        let err2 = run(b).expect("same input, same outcome");
        assert!(
            !err2.contains(b),
            "an override error shows the variable's value ({}):\n{err}",
            wrap(a)
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&layout, text)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    check_env_overrides(layout, text);
    let Some(err) = run(layout, text, &FIRST) else {
        return;
    };
    if std::env::var_os("AIRLOCK_FUZZ_PRINT").is_some() {
        eprintln!("--- error:\n{err}");
    }
    if ignoring("toml-snippet") && err.contains("TOML parse error") {
        return;
    }
    if FIRST.all().iter().any(|m| err.contains(m)) {
        // Same input, other secrets: a leak shows the other secrets too.
        let err2 = run(layout, text, &SECOND).expect("same input, same outcome");
        for (first, second) in FIRST.all().iter().zip(SECOND.all()) {
            assert!(
                !(err.contains(first) && err2.contains(second)),
                "an error message shows a secret ({first}):\n{err}"
            );
        }
    }
});
