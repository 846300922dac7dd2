//! Tidy: the documented architecture, checked as ordinary tests (rust-analyzer's
//! `xtask/src/tidy.rs` idea). Each test reads the source tree as text and fails with
//! a list of `file:line: what is wrong — what to do`:
//!
//! - `storage_callers_use_only_its_root`: arbor-storage's modules are private and no
//!   caller names a path into one (`arbor_storage::index::…`); its API is what
//!   `storage/src/lib.rs` re-exports.
//! - `crates_know_only_what_they_may`: storage knows nothing of HTTP or of sinks and
//!   sync nothing of axum, in code (comments and strings do not count) and in the
//!   dependencies of their `Cargo.toml`.
//! - `code_map_names_only_what_exists`: every file or folder ARCHITECTURE.md's code
//!   map names in backticks exists.
//! - `every_module_says_what_it_does`: every `.rs` file under a workspace crate's
//!   `src/` opens with a `//!` module doc.
//!
//! Code is read through a small lexer that drops comments, string and char literals,
//! so a path in a doc comment or an error message is not taken for a use.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// Crates whose API is their root alone: (name in code, crate folder).
const ROOT_ONLY: &[(&str, &str)] = &[("arbor_storage", "storage")];

/// Code on its way out of a crate (issue 9 item 1 moves storage's fixtures to
/// tests/support): exempt from these checks while it is still there. Once it is gone,
/// `storage_callers_use_only_its_root` asks for its entry to be removed.
const LEAVING: &[(&str, &str)] = &[];

/// What a crate's code must not name: (folder, identifiers, why).
const FORBIDDEN_CODE: &[(&str, &[&str], &str)] = &[
    (
        "storage/src",
        &[
            "axum",
            "hyper",
            "http",
            "tower",
            "tower_http",
            "sse",
            "Sse",
            "reqwest",
            "arbor_sync",
            "redis",
            "sqlx",
            "neo4rs",
        ],
        "the storage crate knows nothing of HTTP or of sinks",
    ),
    (
        "sync/src",
        &["axum", "hyper", "tower_http"],
        "only the server crate (src/) knows axum and HTTP",
    ),
];

/// What a crate must not depend on: (folder, package names, why).
const FORBIDDEN_DEPS: &[(&str, &[&str], &str)] = &[
    (
        "storage",
        &[
            "axum",
            "hyper",
            "http",
            "tower",
            "tower-http",
            "reqwest",
            "arbor-sync",
            "redis",
            "sqlx",
            "neo4rs",
        ],
        "the storage crate knows nothing of HTTP or of sinks",
    ),
    (
        "sync",
        &["axum", "hyper", "tower-http"],
        "only the server crate knows axum and HTTP",
    ),
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rel(p: &Path) -> String {
    p.strip_prefix(root())
        .unwrap_or(p)
        .to_string_lossy()
        .replace('\\', "/")
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// Every `.rs` file below `dir`, sorted; `target/`, `vendor/` (third-party crates) and
/// hidden folders are skipped.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if p.is_dir() {
                if name != "target" && name != "vendor" && !name.starts_with('.') {
                    todo.push(p);
                }
            } else if name.ends_with(".rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn leaving(crate_dir: &str) -> impl Iterator<Item = &'static str> + '_ {
    LEAVING
        .iter()
        .filter(move |(c, _)| *c == crate_dir)
        .map(|(_, m)| *m)
}

/// Whether `p` is in code that is leaving its crate (see [`LEAVING`]).
fn is_leaving(p: &Path) -> bool {
    let r = rel(p);
    LEAVING.iter().any(|(c, m)| {
        let dir = format!("{c}/src/{m}/");
        let file = format!("{c}/src/{m}.rs");
        r.starts_with(&dir) || r == file
    })
}

fn report(what: &str, problems: &[String]) {
    assert!(
        problems.is_empty(),
        "{what}:\n{}\n",
        problems
            .iter()
            .map(|p| format!("  - {p}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

// ---------------------------------------------------------------------------------
// A lexer that keeps what these checks need: identifiers, `::` and punctuation.

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Path,
    Punct(char),
}

/// The tokens of Rust source `src` with their line numbers; comments, string, byte
/// string, raw string and char literals are dropped.
fn lex(src: &str) -> Vec<(usize, Tok)> {
    let s: Vec<char> = src.chars().collect();
    let at = |i: usize| s.get(i).copied().unwrap_or('\0');
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    // Skips a quoted literal whose opening quote is at `i`; escapes are honoured.
    let quoted = |mut i: usize, line: &mut usize, q: char| -> usize {
        i += 1;
        while i < s.len() && s[i] != q {
            if s[i] == '\\' {
                i += 1;
            }
            if at(i) == '\n' {
                *line += 1;
            }
            i += 1;
        }
        i + 1
    };
    // Skips a raw string whose `#`s or opening quote start at `i`.
    let raw = |mut i: usize, line: &mut usize| -> usize {
        let mut hashes = 0;
        while at(i) == '#' {
            hashes += 1;
            i += 1;
        }
        i += 1; // the opening quote
        while i < s.len() {
            if s[i] == '"' && (1..=hashes).all(|k| at(i + k) == '#') {
                return i + 1 + hashes;
            }
            if s[i] == '\n' {
                *line += 1;
            }
            i += 1;
        }
        i
    };
    let raw_start = |i: usize| {
        let mut j = i;
        while at(j) == '#' {
            j += 1;
        }
        at(j) == '"'
    };
    while i < s.len() {
        let c = s[i];
        match c {
            '\n' => {
                line += 1;
                i += 1;
            }
            '/' if at(i + 1) == '/' => {
                while i < s.len() && s[i] != '\n' {
                    i += 1;
                }
            }
            '/' if at(i + 1) == '*' => {
                let mut depth = 0;
                while i < s.len() {
                    if s[i] == '/' && at(i + 1) == '*' {
                        depth += 1;
                        i += 2;
                    } else if s[i] == '*' && at(i + 1) == '/' {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        if s[i] == '\n' {
                            line += 1;
                        }
                        i += 1;
                    }
                }
            }
            '"' => i = quoted(i, &mut line, '"'),
            '\'' => {
                // A char literal ('x', '\n', '\u{1F600}') or a lifetime / label ('a).
                if at(i + 1) == '\\' {
                    i = quoted(i, &mut line, '\'');
                } else if at(i + 2) == '\'' {
                    i += 3;
                } else {
                    i += 1;
                }
            }
            c if c.is_ascii_digit() => {
                while at(i).is_ascii_alphanumeric() || at(i) == '_' {
                    i += 1;
                }
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while at(i).is_alphanumeric() || at(i) == '_' {
                    i += 1;
                }
                let word: String = s[start..i].iter().collect();
                match (word.as_str(), at(i)) {
                    ("r" | "br" | "cr", '"' | '#') if raw_start(i) => i = raw(i, &mut line),
                    ("b" | "c", '"') => i = quoted(i, &mut line, '"'),
                    ("b", '\'') => i = quoted(i, &mut line, '\''),
                    _ => out.push((line, Tok::Ident(word))),
                }
            }
            ':' if at(i + 1) == ':' => {
                out.push((line, Tok::Path));
                i += 2;
            }
            c if c.is_whitespace() => i += 1,
            c => {
                out.push((line, Tok::Punct(c)));
                i += 1;
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------
// Paths into a crate's private modules.

/// The modules `lib` declares: (name, declared `pub`).
fn modules(lib: &str) -> Vec<(String, bool)> {
    let toks: Vec<Tok> = lex(lib).into_iter().map(|(_, t)| t).collect();
    let mut out = Vec::new();
    for (i, t) in toks.iter().enumerate() {
        let (Tok::Ident(kw), Some(Tok::Ident(name)), Some(Tok::Punct(';'))) =
            (t, toks.get(i + 1), toks.get(i + 2))
        else {
            continue;
        };
        if kw != "mod" {
            continue;
        }
        // `pub mod`, but not `pub(crate) mod`.
        let public = i >= 1 && toks[i - 1] == Tok::Ident("pub".into());
        out.push((name.clone(), public));
    }
    out
}

/// Where `src` names a path into one of `modules` of crate `krate`: (line, module).
/// Catches `krate::m::…` and `krate::{…, m::…}`.
fn reaches(src: &str, krate: &str, modules: &BTreeSet<String>) -> Vec<(usize, String)> {
    let toks = lex(src);
    let is = |i: usize, t: &Tok| toks.get(i).is_some_and(|(_, x)| x == t);
    let module_at = |i: usize| match toks.get(i) {
        Some((line, Tok::Ident(m))) if modules.contains(m) && is(i + 1, &Tok::Path) => {
            Some((*line, m.clone()))
        }
        _ => None,
    };
    let mut out = Vec::new();
    for i in 0..toks.len() {
        if toks[i].1 != Tok::Ident(krate.into()) || !is(i + 1, &Tok::Path) {
            continue;
        }
        if let Some(hit) = module_at(i + 2) {
            out.push(hit);
        } else if is(i + 2, &Tok::Punct('{')) {
            // The group's items at its own depth: the first one, and each after a comma.
            out.extend(module_at(i + 3));
            let mut depth = 0;
            for (j, (_, t)) in toks.iter().enumerate().skip(i + 2) {
                match t {
                    Tok::Punct('{') => depth += 1,
                    Tok::Punct('}') => depth -= 1,
                    Tok::Punct(',') if depth == 1 => out.extend(module_at(j + 1)),
                    _ => {}
                }
                if depth == 0 {
                    break;
                }
            }
        }
    }
    out
}

#[test]
fn storage_callers_use_only_its_root() {
    let mut problems = Vec::new();
    for (krate, dir) in ROOT_ONLY {
        let lib_path = root().join(dir).join("src/lib.rs");
        let mods = modules(&read(&lib_path));
        assert!(
            mods.len() > 3,
            "found only {mods:?} in {}",
            lib_path.display()
        );
        for m in leaving(dir) {
            let gone = !root().join(dir).join("src").join(m).exists()
                && !root()
                    .join(dir)
                    .join("src")
                    .join(format!("{m}.rs"))
                    .exists();
            if gone {
                problems.push(format!(
                    "{dir}/src/{m} is gone: remove (\"{dir}\", \"{m}\") from LEAVING in tests/tidy.rs"
                ));
            }
        }
        for (m, public) in &mods {
            if *public && !leaving(dir).any(|l| l == m) {
                problems.push(format!(
                    "{}: `pub mod {m}` makes a module of {krate} part of its API; declare it \
                     `mod {m};` and `pub use` from the crate root what callers need",
                    rel(&lib_path)
                ));
            }
        }
        let private: BTreeSet<String> = mods
            .into_iter()
            .map(|(m, _)| m)
            .filter(|m| !leaving(dir).any(|l| l == m))
            .collect();
        let own = root().join(dir).join("src");
        let files: Vec<PathBuf> = rust_files(&root())
            .into_iter()
            .filter(|p| !p.starts_with(&own))
            .collect();
        assert!(
            files.len() > 10,
            "found only {} callers' files",
            files.len()
        );
        for f in files {
            for (line, m) in reaches(&read(&f), krate, &private) {
                problems.push(format!(
                    "{}:{line}: `{krate}::{m}::…` reaches into {krate}'s private module `{m}`; \
                     import it from the crate root (`{krate}::Name`), adding a `pub use` to \
                     {dir}/src/lib.rs if a caller truly needs it",
                    rel(&f)
                ));
            }
        }
    }
    report("callers reach past a crate's API", &problems);
}

// ---------------------------------------------------------------------------------
// What a crate must not know.

/// The package names under `[dependencies]` (and target-specific dependencies) of a
/// `Cargo.toml`, with their line numbers; dev- and build-dependencies are left out.
fn dependencies(toml: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut in_deps = false;
    for (n, line) in toml.lines().enumerate() {
        let t = line.trim();
        if let Some(h) = t.strip_prefix('[') {
            let h = h.trim_end_matches(']').trim();
            let last = h.rsplit('.').next().unwrap_or(h);
            in_deps = h == "dependencies" || h.ends_with(".dependencies");
            if h.starts_with("dependencies.") || h.contains(".dependencies.") {
                out.push((n + 1, last.trim_matches('"').to_owned()));
            }
            continue;
        }
        if in_deps {
            if let Some((name, _)) = t.split_once('=') {
                out.push((n + 1, name.trim().trim_matches('"').to_owned()));
            }
        }
    }
    out
}

#[test]
fn crates_know_only_what_they_may() {
    let mut problems = Vec::new();
    for (dir, idents, why) in FORBIDDEN_CODE {
        let files: Vec<PathBuf> = rust_files(&root().join(dir))
            .into_iter()
            .filter(|p| !is_leaving(p))
            .collect();
        assert!(!files.is_empty(), "no Rust files under {dir}");
        for f in files {
            let hits: BTreeSet<(usize, String)> = lex(&read(&f))
                .into_iter()
                .filter_map(|(line, tok)| match tok {
                    Tok::Ident(w) if idents.contains(&w.as_str()) => Some((line, w)),
                    _ => None,
                })
                .collect();
            for (line, w) in hits {
                problems.push(format!(
                    "{}:{line}: `{w}` in code: {why}; move this code to the crate that owns it",
                    rel(&f)
                ));
            }
        }
    }
    for (dir, names, why) in FORBIDDEN_DEPS {
        let path = root().join(dir).join("Cargo.toml");
        let deps = dependencies(&read(&path));
        assert!(
            !deps.is_empty(),
            "no dependencies found in {}",
            path.display()
        );
        for (line, name) in deps {
            if names.contains(&name.as_str()) {
                problems.push(format!(
                    "{}:{line}: depends on `{name}`: {why}; drop the dependency",
                    rel(&path)
                ));
            }
        }
    }
    report("a crate knows what it must not", &problems);
}

// ---------------------------------------------------------------------------------
// ARCHITECTURE.md's code map.

/// The backticked spans of `line`.
fn backticked(line: &str) -> Vec<&str> {
    line.split('`').skip(1).step_by(2).collect()
}

/// Whether a backticked span names a file or folder: a relative path with a `/` or a
/// known file extension, nothing else (no spaces, `::`, flags or URLs).
fn names_a_path(span: &str) -> bool {
    const EXTENSIONS: &[&str] = &[
        ".rs", ".toml", ".md", ".sh", ".json", ".jsonl", ".sql", ".yml", ".yaml",
    ];
    !span.is_empty()
        && span
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./".contains(c))
        && !span.starts_with(['/', '-', '.'])
        && (span.contains('/') || EXTENSIONS.iter().any(|e| span.ends_with(e)))
}

/// Problems with the paths the code map of `doc` names, resolved against `base`:
/// a path is taken as written, then under the current crate heading's folder, then
/// under that folder's `src/`.
fn code_map_problems(doc: &str, base: &Path) -> (usize, Vec<String>) {
    let mut problems = Vec::new();
    let mut checked = 0;
    let mut in_map = false;
    let mut krate = String::new();
    for (n, line) in doc.lines().enumerate() {
        if let Some(h) = line.strip_prefix("## ") {
            in_map = h.trim().eq_ignore_ascii_case("code map");
            krate.clear();
            continue;
        }
        if !in_map {
            continue;
        }
        if line.starts_with("### ") {
            krate = backticked(line)
                .into_iter()
                .find(|s| s.ends_with('/') && names_a_path(s))
                .unwrap_or_default()
                .to_owned();
        }
        for span in backticked(line).into_iter().filter(|s| names_a_path(s)) {
            checked += 1;
            let dir = span.ends_with('/');
            let candidates: Vec<String> = [
                span.to_owned(),
                format!("{krate}{span}"),
                format!("{krate}src/{span}"),
            ]
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
            let found = candidates.iter().any(|c| {
                let p = base.join(c.trim_end_matches('/'));
                if dir {
                    p.is_dir()
                } else {
                    p.is_file()
                }
            });
            if !found {
                problems.push(format!(
                    "ARCHITECTURE.md:{}: the code map names `{span}`, but none of {} exists; \
                     fix the path or drop it from the map",
                    n + 1,
                    candidates.join(", ")
                ));
            }
        }
    }
    (checked, problems)
}

#[test]
fn code_map_names_only_what_exists() {
    let doc = read(&root().join("ARCHITECTURE.md"));
    let (checked, problems) = code_map_problems(&doc, &root());
    assert!(
        checked >= 5,
        "ARCHITECTURE.md has no `## Code map` naming files in backticks (found {checked})"
    );
    report("ARCHITECTURE.md's code map is out of date", &problems);
}

// ---------------------------------------------------------------------------------
// Module docs.

/// The `src/` folders of the workspace's crates (every folder with a Cargo.toml, outside
/// `vendor/`).
fn crate_sources() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![root()];
    while let Some(d) = todo.pop() {
        if d.join("Cargo.toml").is_file() && d.join("src").is_dir() {
            out.push(d.join("src"));
        }
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            // `vendor`: third-party crates arbor carries (storage/vendor/sled).
            if e.path().is_dir()
                && !["target", "src", "vendor"].contains(&name.as_str())
                && !name.starts_with('.')
            {
                todo.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// Whether a file opens with a `//!` doc (after blank lines and inner attributes).
fn has_module_doc(src: &str) -> bool {
    src.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("#!["))
        .is_some_and(|l| l.starts_with("//!"))
}

#[test]
fn every_module_says_what_it_does() {
    let dirs = crate_sources();
    assert!(dirs.len() >= 3, "found only {dirs:?}");
    let mut problems = Vec::new();
    for dir in dirs {
        for f in rust_files(&dir).into_iter().filter(|p| !is_leaving(p)) {
            if !has_module_doc(&read(&f)) {
                problems.push(format!(
                    "{}: no `//!` module doc; open the file with `//! <what this module does>`",
                    rel(&f)
                ));
            }
        }
    }
    report("modules without a doc", &problems);
}

// ---------------------------------------------------------------------------------
// The checkers on small inputs: they catch what they must and nothing else.

#[test]
fn the_checkers_catch_what_they_must_and_nothing_else() {
    let mods: BTreeSet<String> = ["index", "store"].map(String::from).into();
    let cases: &[(&str, &[(usize, &str)])] = &[
        ("use arbor_storage::index::Index;", &[(1, "index")]),
        ("use arbor_storage::{Store, index::Index};", &[(1, "index")]),
        (
            "use arbor_storage::{\n  store::X,\n  Store,\n};",
            &[(2, "store")],
        ),
        (
            "fn f(x: arbor_storage::store::GroupStats) {}",
            &[(1, "store")],
        ),
        ("use arbor_storage::{Store, StoreOptions};", &[]),
        ("use arbor_storage::Store; let s = Store::index::x;", &[]),
        (
            "// see arbor_storage::index::Index\n/* arbor_storage::store::X */",
            &[],
        ),
        ("let m = \"arbor_storage::index::Index\";", &[]),
        ("let m = r#\"arbor_storage::index::\"#; let c = '\"';", &[]),
        (
            "let c = '\\''; fn f<'a>(x: &'a str) {} arbor_storage::index::I",
            &[(1, "index")],
        ),
        ("use other::index::Index;", &[]),
    ];
    for (src, want) in cases {
        let got = reaches(src, "arbor_storage", &mods);
        let want: Vec<(usize, String)> = want.iter().map(|(l, m)| (*l, m.to_string())).collect();
        assert_eq!(got, want, "in {src:?}");
    }

    assert_eq!(
        modules("mod a;\npub mod b;\npub(crate) mod c;\nmod d {\n}\n// mod e;"),
        [("a".into(), false), ("b".into(), true), ("c".into(), false)]
    );

    let toml = "[package]\nname = \"x\"\n[dependencies]\naxum = \"1\"\n\
                [dev-dependencies]\nhyper = \"1\"\n[dependencies.sqlx]\nversion = \"1\"\n";
    assert_eq!(
        dependencies(toml),
        [(4, "axum".to_owned()), (7, "sqlx".to_owned())]
    );

    let dir = std::env::temp_dir().join(format!("arbor-tidy-{}", std::process::id()));
    fs::create_dir_all(dir.join("storage/src/generate")).expect("temp dir");
    fs::create_dir_all(dir.join("sync/src")).expect("temp dir");
    fs::write(dir.join("storage/src/log.rs"), "//! x").expect("temp file");
    let doc = "# A\n`missing.rs` is outside the map\n## Code map\n\
               ### `storage/` — arbor-storage\n\
               - `log.rs`: ok. `index.rs`: gone. `generate/`: ok. `log`: a tree, not a file.\n\
               - `storage/src/log.rs`, `Engine::open`, `--cache-mb`, `/v1/health`, `a b.rs`\n\
               ### `sync/` — arbor-sync\n- `driver.rs`: gone\n## Data flow\n`gone.rs`\n";
    let (checked, problems) = code_map_problems(doc, &dir);
    fs::remove_dir_all(&dir).expect("cleanup");
    assert_eq!(checked, 7, "{problems:?}");
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].starts_with("ARCHITECTURE.md:5: the code map names `index.rs`"));
    assert!(problems[1].contains("`driver.rs`") && problems[1].contains("sync/src/driver.rs"));

    assert!(has_module_doc("\n#![allow(x)]\n//! Does things.\nuse a;"));
    assert!(!has_module_doc("use a;\n//! Too late."));
    assert!(!has_module_doc(
        "/// An item doc is not a module doc.\nfn f() {}"
    ));
}
