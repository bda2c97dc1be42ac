//! The controller's folders are its concerns (docs/architecture.md, "Code
//! map"), and they form layers: a module may use the hub (`context`,
//! `memory`, `owned`, the controller root), its own folder and the layers
//! below it, never a concern beside it or an orchestrator above it; and no
//! two file modules of one folder use each other, even through others. Read
//! from the `super::` and `crate::controller::` paths outside test modules.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Bottom-up. Concerns in one layer never use each other.
const LAYERS: &[&[&str]] = &[
    &["status"],
    &["heroku", "workload", "catalog", "alerts"],
    &["apply", "cleanup"],
];

/// The hub: what every concern talks through.
const HUB: &[&str] = &["", "context", "memory", "owned"];

fn layer(group: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&group))
}

/// Module path below `controller` (`heroku::drains`, `apply`, `` for
/// mod.rs) to its source, test modules cut off.
fn modules() -> BTreeMap<String, String> {
    fn walk(dir: &Path, prefix: &[String], out: &mut BTreeMap<String, String>) {
        for item in std::fs::read_dir(dir).expect("read the controller folder") {
            let path = item.expect("dir entry").path();
            let name = path.file_stem().and_then(|s| s.to_str()).expect("name");
            let mut parts = prefix.to_vec();
            if path.is_dir() {
                parts.push(name.to_owned());
                walk(&path, &parts, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                if name != "mod" {
                    parts.push(name.to_owned());
                }
                let text = std::fs::read_to_string(&path).expect("read source");
                let code = match text.find("#[cfg(test)]") {
                    Some(at) => text[..at].to_owned(),
                    None => text,
                };
                out.insert(parts.join("::"), code);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src/controller"),
        &[],
        &mut out,
    );
    out
}

/// The longest known module a path below `controller` names.
fn resolve(path: &[&str], modules: &BTreeMap<String, String>) -> String {
    (0..=path.len().min(2))
        .rev()
        .map(|n| path[..n].join("::"))
        .find(|m| modules.contains_key(m))
        .unwrap_or_default()
}

/// File module -> the modules it names.
fn edges(modules: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let mut edges = BTreeMap::new();
    for (module, text) in modules {
        // `super::` is the module's parent: the folder of a file module,
        // the controller for a folder's mod.rs.
        let own: Vec<&str> = module.split("::").filter(|s| !s.is_empty()).collect();
        let parent: Vec<&str> = own[..own.len().saturating_sub(1)].to_vec();
        let mut targets = BTreeSet::new();
        for (prefix, base) in [("crate::controller::", Vec::new()), ("super::", parent)] {
            for (at, _) in text.match_indices(prefix) {
                let preceded = text[..at]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':');
                if preceded {
                    continue;
                }
                let rest = &text[at + prefix.len()..];
                let names: Vec<&str> = rest
                    .split("::")
                    .map(|seg| {
                        seg.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                            .next()
                            .unwrap_or("")
                    })
                    .take_while(|seg| !seg.is_empty())
                    .collect();
                let mut path = base.clone();
                path.extend(names);
                let target = resolve(&path, modules);
                if target != *module {
                    targets.insert(target);
                }
            }
        }
        edges.insert(module.clone(), targets);
    }
    edges
}

fn group(module: &str) -> &str {
    module.split("::").next().unwrap_or("")
}

#[test]
fn concerns_use_only_the_hub_and_the_layers_below() {
    let modules = modules();
    assert!(
        modules.contains_key("heroku::drains"),
        "{:?}",
        modules.keys()
    );
    let mut wrong = Vec::new();
    for (from, targets) in edges(&modules) {
        if HUB.contains(&from.as_str()) {
            continue;
        }
        let g = group(&from);
        let Some(own) = layer(g) else {
            wrong.push(format!("{from} is in no layer of LAYERS"));
            continue;
        };
        for to in targets {
            let h = group(&to);
            if HUB.contains(&to.as_str()) || h == g {
                continue;
            }
            match layer(h) {
                Some(l) if l < own => {}
                _ => wrong.push(format!("{from} uses {to}")),
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn no_two_modules_of_a_folder_use_each_other() {
    let modules = modules();
    let edges = edges(&modules);
    // Reachability inside each folder, by depth-first search from each
    // module.
    for start in edges.keys() {
        let g = group(start);
        let mut seen = BTreeSet::new();
        let mut stack: Vec<&String> = edges[start].iter().collect();
        while let Some(m) = stack.pop() {
            if group(m) != g || HUB.contains(&m.as_str()) || !seen.insert(m.clone()) {
                continue;
            }
            assert!(
                m != start,
                "{start} uses itself through other modules of {g}/"
            );
            if let Some(next) = edges.get(m) {
                stack.extend(next);
            }
        }
    }
}
