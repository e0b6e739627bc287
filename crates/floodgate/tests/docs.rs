//! The documents hold to the code: `docs/configuration.md` lists exactly the keys the config
//! parser reads, with the parser's defaults; `floodgate.example.toml` passes `check-config`; and
//! no link in a document leads outside the repository or nowhere.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use floodgate_config::Config;
use floodgate_testkit::tls::TestPki;

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(repository().join(relative))
        .unwrap_or_else(|error| panic!("{relative}: {error}"))
}

/// One `### `[section]`` of the configuration reference: its keys and their documented defaults
/// (a default written as one TOML literal in backticks; prose such as "required" has none).
struct Section {
    name: String,
    keys: Vec<(String, Option<String>)>,
}

fn documented_sections() -> Vec<Section> {
    let mut sections: Vec<Section> = Vec::new();
    for line in read("docs/configuration.md").lines() {
        if let Some(heading) = line.strip_prefix("### `") {
            sections.push(Section {
                name: heading.trim_matches(['`', '[', ']']).to_owned(),
                keys: Vec::new(),
            });
            continue;
        }
        let Some(section) = sections.last_mut() else {
            continue;
        };
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // | `key` | type | default | meaning |
        if cells.len() == 6 && cells[1].starts_with('`') {
            let key = cells[1].trim_matches('`').to_owned();
            let default = cells[3];
            let literal = (default.len() > 2
                && default.starts_with('`')
                && default.ends_with('`')
                && default.matches('`').count() == 2)
                .then(|| default.trim_matches('`').to_owned());
            section.keys.push((key, literal));
        }
    }
    sections
}

/// A valid file with `section` present, holding `line` besides what the section needs.
fn file_with(section: &Section, line: &str) -> String {
    let (header, needs) = match section.name.as_str() {
        "origin" => ("[origin]".to_owned(), "url = \"http://127.0.0.1:1\""),
        "pools" => (
            "[[pools]]".to_owned(),
            "name = \"p\"\nupstreams = [\"http://127.0.0.1:2\"]",
        ),
        "routes" => ("[[routes]]".to_owned(), "path = \"/x\""),
        "routes.cache" => ("[[routes]]\npath = \"/x\"\n[routes.cache]".to_owned(), ""),
        "routes.rate_limit" => (
            "[[routes]]\npath = \"/x\"\n[routes.rate_limit]".to_owned(),
            "global_per_s = 100",
        ),
        "server.tls" | "server.admin_tls" => (format!("[{}]", section.name), tls_files()),
        "waiting_room.previous_keys" => (
            "[[waiting_room.previous_keys]]".to_owned(),
            "id = 7\nsecret = \"an earlier secret of enough length\"",
        ),
        name => (format!("[{name}]"), ""),
    };
    let origin = if section.name.starts_with("routes") {
        "[origin]\nurl = \"http://127.0.0.1:1\"\n"
    } else {
        ""
    };
    // A key the section itself needs is left out when it is the one being set.
    let key = line.split(" = ").next().unwrap_or_default();
    let needs: Vec<&str> = needs
        .lines()
        .filter(|need| need.split(" = ").next() != Some(key))
        .collect();
    format!("{origin}{header}\n{}\n{line}\n", needs.join("\n"))
}

/// `cert` and `key` lines naming a certificate and key made once for the whole test binary.
fn tls_files() -> &'static str {
    static FILES: OnceLock<(TestPki, String)> = OnceLock::new();
    let (_, lines) = FILES.get_or_init(|| {
        let pki = TestPki::generate();
        let lines = format!(
            "cert = {:?}\nkey = {:?}",
            pki.server_cert.display().to_string(),
            pki.server_key.display().to_string()
        );
        (pki, lines)
    });
    lines
}

/// The sections written `[[…]]`: their tables are numbered in a problem's key path.
const ARRAYS: [&str; 3] = ["pools", "routes", "waiting_room.previous_keys"];

/// The key path a problem names for `key` in the first table of `section`.
fn key_path(section: &str, key: &str) -> String {
    let mut path = String::new();
    for part in section.split('.') {
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(part);
        if ARRAYS.contains(&path.replace("[0]", "").as_str()) {
            path.push_str("[0]");
        }
    }
    format!("{path}.{key}")
}

fn keys_the_parser_reads(section: &Section) -> BTreeSet<String> {
    let problems = Config::from_toml(&file_with(section, "not_a_key = 1"))
        .expect_err("an unknown key is a problem");
    let path = key_path(&section.name, "not_a_key");
    let problem = problems
        .iter()
        .find(|problem| problem.path == path)
        .unwrap_or_else(|| panic!("no problem at {path}: {problems:?}"));
    let known = problem
        .problem
        .strip_prefix("unknown key (known here: ")
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{path}: {}", problem.problem));
    known.split(", ").map(str::to_owned).collect()
}

#[test]
fn the_configuration_reference_lists_every_key_with_the_parsers_default() {
    let sections = documented_sections();
    assert!(sections.len() >= 10, "sections found: {}", sections.len());

    let top_level: BTreeSet<String> = sections
        .iter()
        .filter(|section| !section.name.contains('.'))
        .map(|section| section.name.clone())
        .collect();
    let problems = Config::from_toml("not_a_key = 1").expect_err("an unknown key is a problem");
    let known_top: BTreeSet<String> = problems[0]
        .problem
        .trim_start_matches("unknown key (known here: ")
        .trim_end_matches(')')
        .split(", ")
        .map(str::to_owned)
        .collect();
    assert_eq!(top_level, known_top, "the file's sections");

    for section in &sections {
        let documented: BTreeSet<String> =
            section.keys.iter().map(|(key, _)| key.clone()).collect();
        assert_eq!(
            documented,
            keys_the_parser_reads(section),
            "the keys of [{}]",
            section.name
        );
        let without = Config::from_toml(&file_with(section, ""))
            .unwrap_or_else(|problems| panic!("[{}]: {problems:?}", section.name));
        for (key, default) in &section.keys {
            let Some(default) = default else { continue };
            let with = Config::from_toml(&file_with(section, &format!("{key} = {default}")))
                .unwrap_or_else(|problems| {
                    panic!("{}.{key} = {default}: {problems:?}", section.name)
                });
            assert_eq!(
                with, without,
                "{}.{key}: the documented default {default} is not the parser's",
                section.name
            );
        }
    }
}

#[test]
fn the_example_configuration_passes_check_config() {
    let example = repository().join("floodgate.example.toml");
    let checked = Command::new(env!("CARGO_BIN_EXE_floodgate"))
        .arg("check-config")
        .arg(&example)
        .output()
        .expect("floodgate runs");
    assert!(
        checked.status.success(),
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    let config = Config::from_toml(&read("floodgate.example.toml")).expect("valid");
    assert!(
        !config.front_door.routes.is_empty(),
        "the example shows the front door"
    );
}

/// Every Markdown file the repository tracks (the build's output and dependencies left out).
fn documents(directory: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(directory).expect("readable") {
        let path = entry.expect("an entry").path();
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or("");
        if path.is_dir() {
            if !matches!(name, "target" | ".git" | "node_modules") {
                documents(&path, found);
            }
        } else if name.ends_with(".md") {
            found.push(path);
        }
    }
}

/// `base/relative` with `.` and `..` resolved as text.
fn resolve(base: &Path, relative: &str) -> PathBuf {
    let mut path = PathBuf::new();
    for component in base.join(relative).components() {
        match component {
            Component::ParentDir => {
                path.pop();
            }
            Component::CurDir => {}
            other => path.push(other),
        }
    }
    path
}

#[test]
fn no_document_links_outside_the_repository_or_nowhere() {
    let root = resolve(&repository(), ".");
    let mut files = Vec::new();
    documents(&root, &mut files);
    assert!(files.len() >= 8, "documents found: {}", files.len());
    let mut broken = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("readable");
        for (index, _) in text.match_indices("](") {
            let rest = &text[index + 2..];
            let target = &rest[..rest.find(')').unwrap_or(rest.len())];
            let target = target.split('#').next().unwrap_or_default();
            if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let resolved = resolve(file.parent().expect("in a directory"), target);
            if !resolved.starts_with(&root) || !resolved.exists() {
                broken.push(format!("{}: {target}", file.display()));
            }
        }
        if text.contains("../shared") {
            broken.push(format!("{}: names ../shared", file.display()));
        }
    }
    assert!(
        broken.is_empty(),
        "links outside or to nothing: {broken:#?}"
    );
}
