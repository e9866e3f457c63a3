//! Admin CRUD on the config files: create, replace or delete one `[[routes]]` or
//! `[[upstreams]]` entry of the config file, or one `[[apps]]` entry of its apps file, by
//! name (apps by key).
//!
//! The edit is made on the file's TOML document (comments and layout elsewhere are
//! kept), written to a temporary file next to it and validated exactly as a reload
//! would validate it; only then is it renamed over the original (atomic, fsynced), and
//! the caller reloads. A change that does not validate leaves every file as it was.

use std::io::Write;
use std::path::{Path, PathBuf};

use std::sync::atomic::{AtomicU64, Ordering};

use toml_edit::{Array, ArrayOfTables, DocumentMut, Item, Table, Value};

/// Which list an edit is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Routes,
    Upstreams,
    Apps,
}

impl Section {
    pub fn parse(s: &str) -> Option<Section> {
        match s {
            "routes" => Some(Section::Routes),
            "upstreams" => Some(Section::Upstreams),
            "apps" => Some(Section::Apps),
            _ => None,
        }
    }

    fn array(self) -> &'static str {
        match self {
            Section::Routes => "routes",
            Section::Upstreams => "upstreams",
            Section::Apps => "apps",
        }
    }

    /// The field an entry is known by.
    fn id_field(self) -> &'static str {
        match self {
            Section::Apps => "key",
            _ => "name",
        }
    }
}

/// A file edited and validated: what it held before, to put back if the reload that
/// follows is refused.
pub struct Edited {
    pub existed: bool,
    pub file: PathBuf,
    pub before: String,
}

/// Puts a file back as it was (after a refused reload), atomically.
pub fn restore(edited: &Edited) -> Result<(), String> {
    replace_atomically(&edited.file, edited.before.as_bytes())
}

/// Replaces or creates the entry `name` with `entry` (a JSON object; its name field is
/// set to `name`), or deletes it when `entry` is `None`. The caller serializes edits.
pub fn edit(
    config: &Path,
    section: Section,
    name: &str,
    entry: Option<&[u8]>,
) -> Result<Edited, String> {
    let file = match section {
        Section::Apps => apps_file(config)?,
        _ => config.to_path_buf(),
    };
    let text = std::fs::read_to_string(&file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e| format!("{} is not valid TOML: {e}", file.display()))?;
    let existed = {
        let list = entries(&mut doc, section)?;
        let at = list
            .iter()
            .position(|t| t.get(section.id_field()).and_then(Item::as_str) == Some(name));
        match (entry, at) {
            (None, None) => return Err(format!("no {} entry {name:?}", section.array())),
            (None, Some(i)) => {
                list.remove(i);
                true
            }
            (Some(json), at) => {
                let table = table_from_json(json, section.id_field(), name)?;
                match at {
                    Some(i) => {
                        if let Some(slot) = list.get_mut(i) {
                            *slot = table;
                        }
                        true
                    }
                    None => {
                        list.push(table);
                        false
                    }
                }
            }
        }
    };
    let candidate = sibling(&file);
    let written = write_like(&candidate, &file, doc.to_string().as_bytes());
    let checked = written.and_then(|()| {
        match section {
            Section::Apps => crate::config::apps::load_file(&candidate).map(|_| ()),
            // The snapshot too: filters check their own sections when they compile.
            _ => crate::config::load(&candidate)
                .and_then(|config| crate::snapshot::Snapshot::build(config, 0))
                .map(|_| ()),
        }
        .map_err(|errors| {
            let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
            text.join("\n").replace(
                &candidate.display().to_string(),
                &file.display().to_string(),
            )
        })
    });
    let renamed = checked.and_then(|()| {
        std::fs::rename(&candidate, &file)
            .map_err(|e| format!("cannot replace {}: {e}", file.display()))
    });
    if let Err(e) = renamed {
        let _ = std::fs::remove_file(&candidate);
        return Err(e);
    }
    Ok(Edited {
        existed,
        file,
        before: text,
    })
}

/// Writes `bytes` over `file` (same permissions, fsynced, renamed over it).
fn replace_atomically(file: &Path, bytes: &[u8]) -> Result<(), String> {
    let candidate = sibling(file);
    let result = write_like(&candidate, file, bytes).and_then(|()| {
        std::fs::rename(&candidate, file)
            .map_err(|e| format!("cannot replace {}: {e}", file.display()))
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&candidate);
    }
    result
}

/// The `[[section]]` array of tables, created when missing.
fn entries(doc: &mut DocumentMut, section: Section) -> Result<&mut ArrayOfTables, String> {
    let item = doc
        .entry(section.array())
        .or_insert(Item::ArrayOfTables(ArrayOfTables::new()));
    item.as_array_of_tables_mut().ok_or_else(|| {
        format!(
            "`{}` is not a list of tables ([[{}]])",
            section.array(),
            section.array()
        )
    })
}

/// A table from a JSON object, through TOML text (so nested values come out as inline
/// tables and arrays).
fn table_from_json(json: &[u8], id_field: &str, name: &str) -> Result<Table, String> {
    let value: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| format!("the body is not JSON: {e}"))?;
    let serde_json::Value::Object(mut object) = value else {
        return Err("the body must be a JSON object".into());
    };
    match object.get(id_field) {
        Some(v) if v.as_str() != Some(name) => {
            return Err(format!(
                "`{id_field}` in the body must be {name:?} (the URL's) or absent"
            ))
        }
        _ => {}
    }
    object.insert(id_field.into(), serde_json::Value::String(name.into()));
    let toml_value: toml::Value = serde_json::from_value(serde_json::Value::Object(object))
        .map_err(|e| format!("the body cannot be written as TOML: {e}"))?;
    let text = toml::to_string(&toml_value)
        .map_err(|e| format!("the body cannot be written as TOML: {e}"))?;
    let doc: DocumentMut = text
        .parse()
        .map_err(|e| format!("the body cannot be written as TOML: {e}"))?;
    // Nested objects and lists of objects come out as `[x]` / `[[x]]` sections, which
    // would land elsewhere in the file: inside an entry they must be inline.
    let mut table = doc.as_table().clone();
    for (_, item) in table.iter_mut() {
        inline(item);
    }
    Ok(table)
}

fn inline(item: &mut Item) {
    let taken = std::mem::take(item);
    *item = match taken {
        Item::Table(t) => Item::Value(Value::InlineTable(t.into_inline_table())),
        Item::ArrayOfTables(tables) => {
            let mut array = Array::new();
            for t in tables {
                array.push(Value::InlineTable(t.into_inline_table()));
            }
            Item::Value(Value::Array(array))
        }
        other => other,
    };
}

/// The apps file the config names (`[apps] file`, relative to the config's folder).
fn apps_file(config: &Path) -> Result<PathBuf, String> {
    let text = std::fs::read_to_string(config)
        .map_err(|e| format!("cannot read {}: {e}", config.display()))?;
    let doc: DocumentMut = text
        .parse()
        .map_err(|e| format!("{} is not valid TOML: {e}", config.display()))?;
    let file = doc
        .get("apps")
        .and_then(|a| a.get("file"))
        .and_then(Item::as_str)
        .ok_or("the config has no `[apps] file` to edit (apps in Redis are edited there)")?;
    Ok(match config.parent() {
        Some(dir) if Path::new(file).is_relative() => dir.join(file),
        _ => PathBuf::from(file),
    })
}

/// A fresh temporary name next to `file` (unique per process and call).
fn sibling(file: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = file
        .file_name()
        .map_or_else(Default::default, |n| n.to_string_lossy().into_owned());
    file.with_file_name(format!(
        ".{name}.candidate-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Writes and fsyncs `bytes` to `path`, with `like`'s permissions (an apps file holding
/// secrets stays as private as it was).
fn write_like(path: &Path, like: &Path, bytes: &[u8]) -> Result<(), String> {
    let err = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    let mut f = std::fs::File::create(path).map_err(err)?;
    if let Ok(meta) = std::fs::metadata(like) {
        f.set_permissions(meta.permissions()).map_err(err)?;
    }
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(err)
}
