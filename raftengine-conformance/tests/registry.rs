//! The case registry and the docs agree: `docs/conformance.md`'s "Cases"
//! table lists exactly the cases the macro stamps, and the README's count
//! is theirs.

#![allow(clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::Path;

fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The first column of each row of the table under `## Cases`, without a
/// parameter suffix (`× {…}`).
fn documented_cases(doc: &str) -> Vec<String> {
    let section = doc
        .split("\n## Cases\n")
        .nth(1)
        .expect("docs/conformance.md has a `## Cases` section");
    let section = section.split("\n## ").next().unwrap_or(section);
    section
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| case ") && !l.starts_with("|---"))
        .filter_map(|l| l.trim_start_matches("| ").split(" |").next())
        .map(|cell| cell.split(" × ").next().unwrap_or(cell).trim().to_owned())
        .collect()
}

#[test]
fn the_docs_list_exactly_the_registered_cases() {
    let doc = documented_cases(&read("docs/conformance.md"));
    let registered: BTreeSet<String> = raftengine_conformance::CASES
        .iter()
        .map(|c| (*c).to_owned())
        .collect();
    assert_eq!(
        registered.len(),
        raftengine_conformance::CASES.len(),
        "a case is registered twice"
    );
    let documented: BTreeSet<String> = doc.iter().cloned().collect();
    assert_eq!(documented.len(), doc.len(), "a case is documented twice");
    let missing: Vec<_> = registered.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&registered).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "docs/conformance.md lacks {missing:?} and lists unregistered {extra:?}"
    );
}

#[test]
fn the_readme_counts_the_registered_cases() {
    let readme = read("README.md");
    let claim = format!("{} cases", raftengine_conformance::CASES.len());
    assert!(
        readme.contains(&claim),
        "README.md does not say \"{claim}\" (the registry's count)"
    );
}
