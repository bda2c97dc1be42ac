//! The library's folders form layers (see `src/lib.rs`): a module may use
//! `crate::` paths only into its own folder or the layers below it, and no
//! two file modules use each other, even through others. Read from the
//! `crate::` paths in the sources (use lines, qualified calls, doc links).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Bottom-up; a folder may depend on any earlier entry.
const LAYERS: &[&[&str]] = &[
    &["parse"],
    &["encode"],
    &["telemetry"],
    &["alert"],
    &["durable"],
    &["archive"],
    &["input", "compact"],
    &["config", "samples"],
    &["run"],
];

fn layer(top: &str) -> usize {
    LAYERS
        .iter()
        .position(|l| l.contains(&top))
        .unwrap_or_else(|| panic!("module {top} is in no layer of LAYERS"))
}

/// Module path (`input::syslog::server`) to source text.
fn modules() -> BTreeMap<String, String> {
    fn walk(dir: &Path, prefix: &[String], out: &mut BTreeMap<String, String>) {
        for item in std::fs::read_dir(dir).expect("read src") {
            let path = item.expect("dir entry").path();
            let name = path.file_stem().and_then(|s| s.to_str()).expect("name");
            let mut parts = prefix.to_vec();
            if path.is_dir() {
                if prefix.is_empty() && name == "bin" {
                    continue;
                }
                parts.push(name.to_owned());
                walk(&path, &parts, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                if prefix.is_empty() && (name == "main" || name == "lib") {
                    continue;
                }
                if name != "mod" {
                    parts.push(name.to_owned());
                }
                let text = std::fs::read_to_string(&path).expect("read source");
                out.insert(parts.join("::"), text);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &[],
        &mut out,
    );
    out
}

/// File module -> file modules it names through `crate::` paths.
fn edges(modules: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let mut edges = BTreeMap::new();
    for (module, text) in modules {
        assert!(
            !text.contains("crate::{"),
            "{module}: write `use crate::a::b` paths one by one so this test can read them"
        );
        let mut targets = BTreeSet::new();
        for (at, _) in text.match_indices("crate::") {
            let preceded = text[..at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_');
            if preceded {
                continue; // e.g. `drainpipe_contract::`
            }
            let rest = &text[at + "crate::".len()..];
            let path: Vec<&str> = rest
                .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .next()
                .unwrap_or("")
                .split("::")
                .collect();
            // The longest prefix of the path that is a file module.
            let target = (1..=path.len())
                .rev()
                .map(|n| path[..n].join("::"))
                .find(|m| modules.contains_key(m))
                .unwrap_or_else(|| panic!("{module}: crate::{} is no module", path.join("::")));
            if &target != module {
                targets.insert(target);
            }
        }
        edges.insert(module.clone(), targets);
    }
    edges
}

fn top(module: &str) -> &str {
    module.split("::").next().unwrap_or(module)
}

#[test]
fn folders_only_use_the_layers_below() {
    let modules = modules();
    let mut wrong = Vec::new();
    for (from, targets) in edges(&modules) {
        for to in targets {
            if top(&from) != top(&to) && layer(top(&to)) >= layer(top(&from)) {
                wrong.push(format!("{from} -> {to}"));
            }
        }
    }
    assert!(wrong.is_empty(), "imports against the layers: {wrong:#?}");
}

#[test]
fn no_module_cycle() {
    let edges = edges(&modules());
    // Depth-first search; a grey node reached again closes a cycle.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Grey,
        Black,
    }
    fn visit<'a>(
        node: &'a str,
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<&'a str, Mark>,
        path: &mut Vec<&'a str>,
    ) {
        match marks.get(node) {
            Some(Mark::Black) => return,
            Some(Mark::Grey) => panic!("module cycle: {} -> {node}", path.join(" -> ")),
            None => {}
        }
        marks.insert(node, Mark::Grey);
        path.push(node);
        for next in edges.get(node).into_iter().flatten() {
            visit(next, edges, marks, path);
        }
        path.pop();
        marks.insert(node, Mark::Black);
    }
    let mut marks = BTreeMap::new();
    for node in edges.keys() {
        visit(node, &edges, &mut marks, &mut Vec::new());
    }
}
