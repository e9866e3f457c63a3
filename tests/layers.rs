//! The crate's layers hold: no import circle in `src/`, neither between top-level modules
//! (`config` <-> `auth`) nor between files (`proxy::a` -> `proxy::b` -> `proxy::a`).
//!
//! The module tree is found the way rustc finds it: from `src/lib.rs`, following
//! `mod name;` declarations (`#[cfg(test)]` items are left out: tests may import
//! anything). A file depends on the module a `crate::`, `super::` or `self::` path
//! names (in `use` trees and inline, e.g. `crate::http::date::write_date_header`),
//! resolved to the longest module prefix that is a file; a parent also depends on the
//! children it declares (it re-exports and uses their items). A path to the file itself
//! or to one of its ancestors is no edge: a child using what its parent declares is the
//! module tree, not an import. So `filters::cors -> snapshot -> filters -> filters::cors`
//! is a circle. Inline (non-test) modules count as their file. Std only.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// A module path below the crate root: `["proxy", "conn"]`; `[]` is the root.
type Module = Vec<String>;

/// Module -> module it depends on -> one path that shows it, as written.
type Graph = BTreeMap<Module, BTreeMap<Module, String>>;

fn name(m: &[String]) -> String {
    if m.is_empty() {
        "crate".to_string()
    } else {
        m.join("::")
    }
}

// ---------------------------------------------------------------- reading source

/// The source with comments removed and every string and char literal emptied, so that
/// nothing inside them looks like code. Lifetimes and labels are kept.
fn strip(src: &str) -> String {
    let b: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if let Some(len) = raw_string_start(&b, i) {
            // r"..", r#".."#, br#".."#: ends at a quote followed by as many hashes.
            let hashes = len - 1 - usize::from(b[i] == 'b') - 1;
            i += len;
            loop {
                if i >= b.len() {
                    break;
                }
                if b[i] == '"' && (1..=hashes).all(|k| b.get(i + k) == Some(&'#')) {
                    i += 1 + hashes;
                    break;
                }
                i += 1;
            }
            out.push_str("\"\"");
        } else if c == '"' || (c == 'b' && next == Some('"') && !ident_before(&b, i)) {
            i += if c == 'b' { 2 } else { 1 };
            while i < b.len() && b[i] != '"' {
                i += if b[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' {
            // A char literal ('x', '\n', '\'', '\u{1F600}') or a lifetime ('a).
            if next == Some('\\') {
                // The quote, the backslash and the escaped character, then to the end.
                i += 3;
                while i < b.len() && b[i] != '\'' {
                    i += 1;
                }
                i += 1;
                out.push_str("' '");
            } else if b.get(i + 2) == Some(&'\'') {
                i += 3;
                out.push_str("' '");
            } else {
                out.push(c);
                i += 1;
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn ident_before(b: &[char], i: usize) -> bool {
    i > 0 && (b[i - 1].is_alphanumeric() || b[i - 1] == '_')
}

/// The length of a raw string's opening (`r"`, `r#"`, `br##"`) at `i`, if one starts there.
fn raw_string_start(b: &[char], i: usize) -> Option<usize> {
    if ident_before(b, i) {
        return None;
    }
    let mut j = i;
    if b.get(j) == Some(&'b') {
        j += 1;
    }
    if b.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    while b.get(j) == Some(&'#') {
        j += 1;
    }
    (b.get(j) == Some(&'"')).then_some(j + 1 - i)
}

/// Identifiers, `::`, and single punctuation characters.
fn tokens(code: &str) -> Vec<String> {
    let b: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_') {
                i += 1;
            }
            out.push(b[start..i].iter().collect());
        } else if c == ':' && b.get(i + 1) == Some(&':') {
            out.push("::".to_string());
            i += 2;
        } else if c.is_whitespace() {
            i += 1;
        } else {
            out.push(c.to_string());
            i += 1;
        }
    }
    out
}

fn is_ident(t: &str) -> bool {
    t.chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
}

/// The tokens without the items marked `#[cfg(test)]` (a `mod tests { .. }`, a
/// `mod tests;` with its `#[path]`, a test-only fn or impl).
fn without_test_items(t: &[String]) -> Vec<String> {
    let is = |i: usize, s: &[&str]| {
        s.iter()
            .enumerate()
            .all(|(k, s)| t.get(i + k).map(String::as_str) == Some(*s))
    };
    let mut out = Vec::with_capacity(t.len());
    let mut i = 0;
    while i < t.len() {
        if !is(i, &["#", "[", "cfg", "(", "test", ")", "]"]) {
            out.push(t[i].clone());
            i += 1;
            continue;
        }
        i += 7;
        // Further attributes of the same item.
        while is(i, &["#", "["]) {
            i = skip_group(t, i + 1);
        }
        // The item: to a `;` outside any bracket, or to the end of its first `{ .. }`.
        while i < t.len() {
            match t[i].as_str() {
                ";" => {
                    i += 1;
                    break;
                }
                "{" => {
                    i = skip_group(t, i);
                    break;
                }
                "(" | "[" => i = skip_group(t, i),
                _ => i += 1,
            }
        }
    }
    out
}

/// The index after the bracket group opening at `i`.
fn skip_group(t: &[String], mut i: usize) -> usize {
    let mut depth = 0i32;
    while i < t.len() {
        match t[i].as_str() {
            "{" | "(" | "[" => depth += 1,
            "}" | ")" | "]" => depth -= 1,
            _ => {}
        }
        i += 1;
        if depth == 0 {
            break;
        }
    }
    i
}

/// The children a file declares with `mod name;`.
fn declared_modules(t: &[String]) -> Vec<String> {
    t.windows(3)
        .filter(|w| w[0] == "mod" && is_ident(&w[1]) && w[2] == ";")
        .map(|w| w[1].clone())
        .collect()
}

/// Every path starting with `crate`, `super` or `self` (segments as written): from `use`
/// trees, expanded (`use crate::a::{b, c::d}` gives `crate::a::b` and `crate::a::c::d`),
/// and inline (`crate::a::f()`).
fn crate_paths(t: &[String]) -> Vec<Vec<String>> {
    let rooted = |s: &str| matches!(s, "crate" | "super" | "self");
    let mut out = Vec::new();
    let mut i = 0;
    while i < t.len() {
        if t[i] == "use" && t.get(i + 1).is_some_and(|s| rooted(s)) {
            i += 1;
            use_tree(t, &mut i, &[], &mut out);
            continue;
        }
        let starts = rooted(&t[i])
            && t.get(i + 1).is_some_and(|s| s == "::")
            && (i == 0 || t[i - 1] != "::");
        if starts {
            let mut path = vec![t[i].clone()];
            let mut j = i + 1;
            while t.get(j).is_some_and(|s| s == "::") && t.get(j + 1).is_some_and(|s| is_ident(s)) {
                path.push(t[j + 1].clone());
                j += 2;
            }
            out.push(path);
            i = j;
        } else {
            i += 1;
        }
    }
    out
}

/// Expands one use tree at `t[*i]` under `prefix` into `out`.
fn use_tree(t: &[String], i: &mut usize, prefix: &[String], out: &mut Vec<Vec<String>>) {
    let mut path = prefix.to_vec();
    loop {
        match t.get(*i).map(String::as_str) {
            Some("{") => {
                *i += 1;
                while *i < t.len() && t[*i] != "}" {
                    let before = *i;
                    use_tree(t, i, &path, out);
                    if t.get(*i).is_some_and(|s| s == ",") || *i == before {
                        *i += 1;
                    }
                }
                *i += 1;
                return;
            }
            Some("*") => {
                *i += 1;
                out.push(path);
                return;
            }
            Some(id) if is_ident(id) => {
                *i += 1;
                // `{self, ..}` names the prefix itself.
                if id != "self" || path.is_empty() {
                    path.push(id.to_string());
                }
                if t.get(*i).is_some_and(|s| s == "::") {
                    *i += 1;
                    continue;
                }
                if t.get(*i).is_some_and(|s| s == "as") {
                    *i += 2;
                }
                out.push(path);
                return;
            }
            _ => {
                out.push(path);
                return;
            }
        }
    }
}

/// The module a path names from `from`: `crate::` from the root, `super::` from the
/// parent, `self::` from `from`.
fn absolute(from: &[String], path: &[String]) -> Option<Module> {
    let mut rest = path;
    let mut base: Module = match path.first().map(String::as_str) {
        Some("crate") => {
            rest = &path[1..];
            Vec::new()
        }
        Some("self") => {
            rest = &path[1..];
            from.to_vec()
        }
        Some("super") => from.to_vec(),
        _ => return None,
    };
    while rest.first().is_some_and(|s| s == "super") {
        base.pop()?;
        rest = &rest[1..];
    }
    base.extend(rest.iter().cloned());
    Some(base)
}

// ---------------------------------------------------------------- the graph

struct Crate {
    /// Every module of the library that is a file, with its file.
    files: BTreeMap<Module, PathBuf>,
    /// File-level dependencies.
    graph: Graph,
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Reads the library from `src/lib.rs` down its `mod` declarations.
fn read_crate(src: &Path) -> Crate {
    let mut files = BTreeMap::new();
    let mut code = BTreeMap::new();
    let mut graph = Graph::new();
    let mut todo = vec![(Module::new(), src.join("lib.rs"))];
    while let Some((module, file)) = todo.pop() {
        let text =
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let t = without_test_items(&tokens(&strip(&text)));
        // `lib.rs` and `x/mod.rs` keep their children beside them; `x.rs` in `x/`.
        let owns_dir = matches!(
            file.file_name().and_then(|n| n.to_str()),
            Some("lib.rs" | "mod.rs")
        );
        let dir = if owns_dir {
            file.parent().unwrap().to_path_buf()
        } else {
            file.with_extension("")
        };
        for child in declared_modules(&t) {
            let flat = dir.join(format!("{child}.rs"));
            let nested = dir.join(&child).join("mod.rs");
            let child_file = if flat.exists() { flat } else { nested };
            assert!(
                child_file.exists(),
                "{}: mod {child}; has no file",
                file.display()
            );
            let mut m = module.clone();
            m.push(child.clone());
            // A parent depends on its children: it declares them and uses their items.
            graph
                .entry(module.clone())
                .or_default()
                .insert(m.clone(), format!("mod {child};"));
            todo.push((m, child_file));
        }
        files.insert(module.clone(), file);
        code.insert(module, t);
    }
    for (module, t) in &code {
        let deps = graph.entry(module.clone()).or_default();
        for path in crate_paths(t) {
            let Some(target) = absolute(module, &path).and_then(|p| longest_file(&files, &p))
            else {
                continue;
            };
            let ancestor_or_self = target.len() <= module.len() && module.starts_with(&target);
            if !ancestor_or_self {
                deps.entry(target).or_insert_with(|| path.join("::"));
            }
        }
    }
    Crate { files, graph }
}

/// The longest prefix of `path` that is a module with a file.
fn longest_file(files: &BTreeMap<Module, PathBuf>, path: &[String]) -> Option<Module> {
    (0..=path.len())
        .rev()
        .map(|k| path[..k].to_vec())
        .find(|m| files.contains_key(m))
}

/// Top-level module -> top-level module it depends on -> the file edge that shows it.
fn top_level(graph: &Graph) -> Graph {
    let mut top = Graph::new();
    for (from, deps) in graph {
        let Some(a) = from.first() else { continue };
        top.entry(vec![a.clone()]).or_default();
        for (to, how) in deps {
            match to.first() {
                Some(b) if b != a => {
                    top.entry(vec![a.clone()])
                        .or_default()
                        .entry(vec![b.clone()])
                        .or_insert_with(|| format!("{} uses {how}", name(from)));
                }
                _ => {}
            }
        }
    }
    top
}

/// The graph restricted to the modules under `root`.
fn under(graph: &Graph, root: &str) -> Graph {
    let inside = |m: &Module| m.first().is_some_and(|s| s == root);
    graph
        .iter()
        .filter(|(m, _)| inside(m))
        .map(|(m, deps)| {
            let deps = deps
                .iter()
                .filter(|(d, _)| inside(d))
                .map(|(d, how)| (d.clone(), how.clone()))
                .collect();
            (m.clone(), deps)
        })
        .collect()
}

/// One circle of `graph`, as the modules along it with the first repeated at the end.
fn find_circle(graph: &Graph) -> Option<Vec<Module>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        graph: &Graph,
        m: &Module,
        marks: &mut BTreeMap<Module, Mark>,
        stack: &mut Vec<Module>,
    ) -> Option<Vec<Module>> {
        marks.insert(m.clone(), Mark::Open);
        stack.push(m.clone());
        for next in graph.get(m).into_iter().flat_map(|d| d.keys()) {
            match marks.get(next) {
                Some(Mark::Open) => {
                    let at = stack.iter().position(|s| s == next).unwrap();
                    let mut circle = stack[at..].to_vec();
                    circle.push(next.clone());
                    return Some(circle);
                }
                Some(Mark::Done) => {}
                None => {
                    if let Some(c) = visit(graph, next, marks, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        marks.insert(m.clone(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for m in graph.keys() {
        if !marks.contains_key(m) {
            if let Some(c) = visit(graph, m, &mut marks, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

/// `a -> b  (how)` for each step of the circle.
fn describe(graph: &Graph, circle: &[Module]) -> String {
    let mut s = String::new();
    for w in circle.windows(2) {
        let how = &graph[&w[0]][&w[1]];
        let _ = writeln!(s, "    {} -> {}   ({how})", name(&w[0]), name(&w[1]));
    }
    s
}

fn assert_no_circle(graph: &Graph, what: &str) {
    if let Some(circle) = find_circle(graph) {
        panic!(
            "{what} in an import circle: {}\n{}",
            circle
                .iter()
                .map(|m| name(m))
                .collect::<Vec<_>>()
                .join(" -> "),
            describe(graph, &circle)
        );
    }
}

// ---------------------------------------------------------------- the checks

#[test]
fn top_level_modules_form_no_circle() {
    let c = read_crate(&src_dir());
    assert_no_circle(&top_level(&c.graph), "top-level modules");
}

#[test]
fn files_form_no_circle() {
    let c = read_crate(&src_dir());
    assert_no_circle(&c.graph, "files");
}

#[test]
fn proxy_files_form_no_circle() {
    let c = read_crate(&src_dir());
    let proxy = under(&c.graph, "proxy");
    assert!(proxy.len() > 5, "proxy has its files: {:?}", proxy.keys());
    assert_no_circle(&proxy, "proxy's files");
}

/// The reading sees what is there: every source file (but the binary's root and the
/// unit-test files, `tests.rs` and `*_tests.rs`) is in the module tree, and dependencies known to exist are found.
#[test]
fn the_reader_sees_the_crate() {
    let src = src_dir();
    let c = read_crate(&src);
    let mut on_disk = BTreeSet::new();
    let mut dirs = vec![src.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|e| e == "rs") {
                on_disk.insert(p);
            }
        }
    }
    let reached: BTreeSet<PathBuf> = c.files.values().cloned().collect();
    let unreached: Vec<_> = on_disk
        .difference(&reached)
        .filter(|p| {
            let n = p.file_name().unwrap().to_str().unwrap();
            p.as_path() != src.join("main.rs") && n != "tests.rs" && !n.ends_with("_tests.rs")
        })
        .collect();
    assert!(
        unreached.is_empty(),
        "not in the module tree: {unreached:?}"
    );
    let dep = |from: &str, to: &str| {
        let m = |s: &str| s.split("::").map(String::from).collect::<Module>();
        c.graph
            .get(&m(from))
            .is_some_and(|d| d.contains_key(&m(to)))
    };
    // `use crate::snapshot::Snapshot;`, `use super::forwarded::is_forwarding_header;`,
    // inline `crate::http::is_token_byte`, and `use super::{..}` to the parent (no edge).
    assert!(dep("proxy::pipeline", "snapshot"));
    assert!(dep("filters::headers", "filters::forwarded"));
    assert!(dep("filters::headers", "http"));
    assert!(!dep("filters::cors", "filters"));
    assert!(dep("filters", "filters::cors"));
}

#[test]
fn the_reader_handles_literals_trees_and_test_items() {
    let src = r##"
        use crate::a::{b, c::{self, d as e}, f::*};
        use super::{g, super::h};
        // use crate::commented::Out;
        /* use crate::block::Out; /* nested */ */
        const Q: char = '"'; const P: char = '\''; const U: char = '\u{22}'; const R: &str = "crate::quoted::Out"; const S: &str = r#"use crate::raw::Out;"#;
        fn f<'a>(x: &'a str) -> &'a str { crate::inline::call(); x }
        #[cfg(test)]
        mod tests { use crate::only_tests::X; }
        #[cfg(test)]
        #[path = "x_tests.rs"]
        mod more;
        mod child;
    "##;
    let t = without_test_items(&tokens(&strip(src)));
    let paths: Vec<String> = crate_paths(&t).iter().map(|p| p.join("::")).collect();
    assert_eq!(
        paths,
        [
            "crate::a::b",
            "crate::a::c",
            "crate::a::c::d",
            "crate::a::f",
            "super::g",
            "super::super::h",
            "crate::inline::call",
        ]
    );
    assert_eq!(declared_modules(&t), ["child"]);
    let from: Module = vec!["proxy".into(), "conn".into()];
    let abs = |p: &str| absolute(&from, &p.split("::").map(String::from).collect::<Vec<_>>());
    assert_eq!(
        abs("super::io::x"),
        Some(vec!["proxy".into(), "io".into(), "x".into()])
    );
    assert_eq!(abs("super::super::http"), Some(vec!["http".into()]));
    assert_eq!(
        abs("self::inner"),
        Some(vec!["proxy".into(), "conn".into(), "inner".into()])
    );
    assert_eq!(
        abs("crate::router::Match"),
        Some(vec!["router".into(), "Match".into()])
    );
}

#[test]
fn a_circle_is_found_and_described() {
    let m = |s: &str| vec![s.to_string()];
    let mut g = Graph::new();
    g.entry(m("a"))
        .or_default()
        .insert(m("b"), "crate::b::X".into());
    g.entry(m("b"))
        .or_default()
        .insert(m("c"), "crate::c::Y".into());
    g.entry(m("c"))
        .or_default()
        .insert(m("a"), "crate::a::Z".into());
    g.entry(m("d"))
        .or_default()
        .insert(m("a"), "crate::a::W".into());
    let circle = find_circle(&g).expect("a circle");
    assert_eq!(circle.first(), circle.last());
    assert_eq!(circle.len(), 4, "{circle:?}");
    assert!(describe(&g, &circle).contains("b -> c   (crate::c::Y)"));
    g.get_mut(&m("c")).unwrap().clear();
    assert_eq!(find_circle(&g), None);
}
