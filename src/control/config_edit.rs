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

use toml_edit::{ArrayOfTables, DocumentMut, Item, Table};

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

/// Replaces or creates the entry `name` with `entry` (a JSON object; its name field is
/// set to `name`), or deletes it when `entry` is `None`. Returns whether it existed.
pub fn edit(
    config: &Path,
    section: Section,
    name: &str,
    entry: Option<&[u8]>,
) -> Result<bool, String> {
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
    let candidate = sibling(&file, "candidate");
    write_synced(&candidate, doc.to_string().as_bytes())?;
    let checked = match section {
        Section::Apps => crate::auth::registry::load_file(&candidate).map(|_| ()),
        _ => crate::config::load(&candidate).map(|_| ()),
    };
    if let Err(errors) = checked {
        let _ = std::fs::remove_file(&candidate);
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        return Err(text.join("\n").replace(
            &candidate.display().to_string(),
            &file.display().to_string(),
        ));
    }
    std::fs::rename(&candidate, &file)
        .map_err(|e| format!("cannot replace {}: {e}", file.display()))?;
    Ok(existed)
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
    Ok(doc.as_table().clone())
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

fn sibling(file: &Path, what: &str) -> PathBuf {
    let name = file
        .file_name()
        .map_or_else(Default::default, |n| n.to_string_lossy().into_owned());
    file.with_file_name(format!(".{name}.{what}-{}", std::process::id()))
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let mut f =
        std::fs::File::create(path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}
