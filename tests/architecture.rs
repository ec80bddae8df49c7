//! The crate's layers import each other in one direction only: no module of
//! `src/` (a top-level one, or one of `src/domain/`) reaches, through `crate::`
//! paths, a module that reaches it back. Read from the source, so a new cycle
//! fails here, naming its modules. Files inside one module's folder (the
//! store's aggregates, say) are that module's parts and may use each other.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module → the top-level modules its non-test code names.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(&src).unwrap();
            let parts: Vec<String> = rel
                .components()
                .map(|c| {
                    c.as_os_str()
                        .to_string_lossy()
                        .trim_end_matches(".rs")
                        .to_owned()
                })
                .collect();
            let top = match parts.as_slice() {
                [domain, module, ..] if domain == "domain" => format!("domain::{module}"),
                [first, ..] => first.clone(),
                [] => continue,
            };
            if top == "main" || top == "lib" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            // Tests may reach anywhere; the layers are what ships.
            let code: String = text
                .split("#[cfg(test)]")
                .next()
                .unwrap_or("")
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            let deps = graph.entry(top.clone()).or_default();
            for (i, _) in code.match_indices("crate::") {
                let path: String = code[i + "crate::".len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_' || *c == ':')
                    .collect();
                let mut names = path.split("::");
                let name = match names.next() {
                    Some("domain") => match names.next() {
                        Some(m) if !m.is_empty() => format!("domain::{m}"),
                        _ => continue,
                    },
                    Some(m) if !m.is_empty() => m.to_owned(),
                    _ => continue,
                };
                if name != top {
                    deps.insert(name);
                }
            }
        }
    }
    graph
}

/// Every module reachable from `start`.
fn reach(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![start.to_owned()];
    while let Some(m) = todo.pop() {
        for d in graph.get(&m).into_iter().flatten() {
            if seen.insert(d.clone()) {
                todo.push(d.clone());
            }
        }
    }
    seen
}

#[test]
fn no_two_modules_import_each_other_directly_or_in_a_circle() {
    let graph = imports();
    assert!(graph.len() > 10, "read too few modules: {graph:?}");
    assert!(
        graph["engine"].contains("store"),
        "the reader missed `crate::store` in engine: {:?}",
        graph["engine"]
    );
    let cycles: Vec<String> = graph
        .keys()
        .filter(|m| reach(&graph, m).contains(*m))
        .map(|m| {
            let back: Vec<&String> = graph[m]
                .iter()
                .filter(|d| reach(&graph, d).contains(m))
                .collect();
            format!("{m} -> {back:?} -> … -> {m}")
        })
        .collect();
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

/// The pure domain depends on nothing outside it: the edges (store, API,
/// providers, engine) depend on it.
#[test]
fn the_domain_names_no_module_outside_it() {
    let graph = imports();
    let domain: Vec<&String> = graph.keys().filter(|m| m.starts_with("domain::")).collect();
    assert!(domain.len() >= 6, "read too few domain modules: {domain:?}");
    for m in domain {
        let outside: Vec<&String> = graph[m]
            .iter()
            .filter(|d| !d.starts_with("domain::"))
            .collect();
        assert!(outside.is_empty(), "{m} imports {outside:?}");
    }
}
