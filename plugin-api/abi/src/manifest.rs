//! The manifest a plugin declares: identity, version, schedule, the tables it
//! writes (columns and key columns) and a JSON schema for runtime arguments.
//!
//! The host reads the manifest at registration (in a child process), validates
//! it with [`Manifest::validate`], stores it, and creates the declared tables.
//!
//! The manifest crosses the boundary as JSON, so it grows without a layout
//! change: every struct and enum here is `#[non_exhaustive]` (build them with the
//! constructors and builder methods), and a field added in a minor version is
//! optional on the wire, so a manifest written by an older plugin still parses.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What kind of app a plugin is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PluginKind {
    /// Collects records from web pages or APIs.
    Scraper,
}

/// When the scheduler should start the app on its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum Schedule {
    /// A cron expression (seconds field first, as the `cron` crate reads it).
    Cron(String),
    /// Every N seconds.
    IntervalSecs(u64),
}

impl Schedule {
    /// A cron expression.
    pub fn cron(expr: impl Into<String>) -> Schedule {
        Schedule::Cron(expr.into())
    }

    /// Every `secs` seconds.
    pub fn every_secs(secs: u64) -> Schedule {
        Schedule::IntervalSecs(secs)
    }
}

/// The SQL type of a declared column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ColumnType {
    /// UTF-8 text.
    Text,
    /// 64-bit signed integer.
    Integer,
    /// 64-bit float.
    Real,
    /// true / false.
    Boolean,
    /// Any JSON value.
    Json,
    /// An RFC 3339 timestamp.
    Timestamp,
}

impl ColumnType {
    /// Stable lowercase name, as written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            ColumnType::Text => "text",
            ColumnType::Integer => "integer",
            ColumnType::Real => "real",
            ColumnType::Boolean => "boolean",
            ColumnType::Json => "json",
            ColumnType::Timestamp => "timestamp",
        }
    }
}

/// One column of a declared table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ColumnDecl {
    /// Column name: lowercase letters, digits and `_`, starting with a letter.
    pub name: String,
    /// SQL type.
    #[serde(rename = "type")]
    pub ty: ColumnType,
    /// Whether NULL is allowed (default `true`). Ignored for key columns: they
    /// are always created NOT NULL and a row missing a key field is rejected,
    /// whatever this says.
    #[serde(default = "yes")]
    pub nullable: bool,
    /// Maximum length in characters (0 = the host's default limit). Only text
    /// columns may set it; [`Manifest::validate`] rejects it on other types.
    #[serde(default)]
    pub max_len: usize,
}

fn yes() -> bool {
    true
}

impl ColumnDecl {
    /// A nullable column of type `ty` with the host's default length limit.
    pub fn new(name: impl Into<String>, ty: ColumnType) -> ColumnDecl {
        ColumnDecl { name: name.into(), ty, nullable: true, max_len: 0 }
    }

    /// A text column.
    pub fn text(name: impl Into<String>) -> ColumnDecl {
        ColumnDecl::new(name, ColumnType::Text)
    }

    /// An integer column.
    pub fn integer(name: impl Into<String>) -> ColumnDecl {
        ColumnDecl::new(name, ColumnType::Integer)
    }

    /// A float column.
    pub fn real(name: impl Into<String>) -> ColumnDecl {
        ColumnDecl::new(name, ColumnType::Real)
    }

    /// A boolean column.
    pub fn boolean(name: impl Into<String>) -> ColumnDecl {
        ColumnDecl::new(name, ColumnType::Boolean)
    }

    /// A JSON column.
    pub fn json(name: impl Into<String>) -> ColumnDecl {
        ColumnDecl::new(name, ColumnType::Json)
    }

    /// A timestamp column.
    pub fn timestamp(name: impl Into<String>) -> ColumnDecl {
        ColumnDecl::new(name, ColumnType::Timestamp)
    }

    /// Refuses NULL in this column.
    pub fn not_null(mut self) -> ColumnDecl {
        self.nullable = false;
        self
    }

    /// Sets the maximum length in characters (text columns only).
    pub fn max_len(mut self, chars: usize) -> ColumnDecl {
        self.max_len = chars;
        self
    }
}

/// How a merge treats rows that exist in the table but not in the new data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SnapshotMode {
    /// Every run delivers the whole table: absent rows are removed (see [`MissingRows`]).
    #[default]
    Full,
    /// Runs deliver changes only: absent rows are left alone.
    Incremental,
}

/// What "removed" means for a full snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum MissingRows {
    /// Delete them.
    #[default]
    Delete,
    /// Keep them, stamping `_archived_at`.
    Archive,
}

/// A table a plugin writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TableDecl {
    /// Table name: lowercase letters, digits and `_`, starting with a letter.
    pub name: String,
    /// The columns (the host adds `_row_hash`, `_runtime_id`, `_first_seen`,
    /// `_last_seen` and `_archived_at`).
    pub columns: Vec<ColumnDecl>,
    /// Key columns that identify a row. They are always NOT NULL, whatever
    /// their `nullable` says.
    pub key: Vec<String>,
    /// Full snapshot or incremental.
    #[serde(default)]
    pub snapshot: SnapshotMode,
    /// Delete or archive rows missing from a full snapshot.
    #[serde(default)]
    pub missing: MissingRows,
    /// Shared mode (1.5): other apps that declare the same table shared, with
    /// the same columns and key, write into it too. Each row remembers the app
    /// that inserted it (host column `_app_id`), and an app's full snapshots
    /// delete or archive only the rows it inserted. Without it a second app
    /// declaring the table is refused, naming the owner.
    #[serde(default, skip_serializing_if = "is_false")]
    pub shared: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl TableDecl {
    /// A table with no columns yet, keyed by nothing yet, full snapshots that
    /// delete missing rows (add columns and a key before using it).
    pub fn new(name: impl Into<String>) -> TableDecl {
        TableDecl {
            name: name.into(),
            columns: Vec::new(),
            key: Vec::new(),
            snapshot: SnapshotMode::Full,
            missing: MissingRows::Delete,
            shared: false,
        }
    }

    /// Adds a column.
    pub fn column(mut self, column: ColumnDecl) -> TableDecl {
        self.columns.push(column);
        self
    }

    /// Sets the key columns.
    pub fn key<I, S>(mut self, columns: I) -> TableDecl
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.key = columns.into_iter().map(Into::into).collect();
        self
    }

    /// Sets full or incremental snapshots.
    pub fn snapshot(mut self, mode: SnapshotMode) -> TableDecl {
        self.snapshot = mode;
        self
    }

    /// Sets what happens to rows missing from a full snapshot.
    pub fn missing(mut self, missing: MissingRows) -> TableDecl {
        self.missing = missing;
        self
    }

    /// Declares the table shared (1.5): apps that all declare it shared, with
    /// the same columns and key, may write into it; each app's full snapshots
    /// remove only the rows that app inserted (see the `shared` field).
    pub fn shared(mut self) -> TableDecl {
        self.shared = true;
        self
    }
}

/// The longest text a column without `max_len` takes, in characters.
pub const DEFAULT_MAX_TEXT_CHARS: usize = 1_000_000;

/// A JSON value as errors show it: its kind and (at most 40 characters of)
/// its text, e.g. `a string "12,50"`. The host's merge errors use it too.
pub fn describe_value(v: &Value) -> String {
    let s = v.to_string();
    let short: String = s.chars().take(40).collect();
    let kind = match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    if short.len() < s.len() { format!("{kind} {short}…") } else { format!("{kind} {short}") }
}

/// Whether `s` is an RFC 3339 date-time (`2026-01-31T12:00:00Z`,
/// `2026-01-31T12:00:00.5+01:00`) with a real calendar date and time.
pub fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<u32> {
        let part = b.get(from..from + len)?;
        part.iter().all(u8::is_ascii_digit).then(|| part.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
    };
    let (Some(y), Some(mo), Some(d), Some(h), Some(mi), Some(sec)) =
        (num(0, 4), num(5, 2), num(8, 2), num(11, 2), num(14, 2), num(17, 2))
    else {
        return false;
    };
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') || b.get(13) != Some(&b':') || b.get(16) != Some(&b':') {
        return false;
    }
    if !matches!(b.get(10), Some(b'T' | b't' | b' ')) {
        return false;
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1..=12).contains(&mo) || d == 0 || d > days[(mo - 1) as usize] || h > 23 || mi > 59 || sec > 60 {
        return false;
    }
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    match b.get(i) {
        Some(b'Z' | b'z') => i + 1 == b.len(),
        Some(b'+' | b'-') => {
            matches!((num(i + 1, 2), b.get(i + 3), num(i + 4, 2)), (Some(oh), Some(b':'), Some(om)) if oh < 24 && om < 60)
                && i + 6 == b.len()
        }
        _ => false,
    }
}

impl TableDecl {
    /// Checks one row the way the host checks it before a merge: every field
    /// is a declared column, key columns are present and not null, non-nullable
    /// columns are present, and each value fits its column's type and length.
    /// The error names the field and what was expected. (Keys that repeat
    /// within a batch are the host's to find: it compares normalized keys.)
    pub fn check_row(&self, row: &serde_json::Map<String, Value>) -> Result<(), String> {
        if let Some(extra) = row.keys().find(|k| !self.columns.iter().any(|c| &c.name == *k)) {
            let names: Vec<&str> = self.columns.iter().map(|c| c.name.as_str()).collect();
            return Err(format!(
                "field {extra:?} is not a column of the table (declared: {}); declare it in the manifest or drop it",
                names.join(", ")
            ));
        }
        for col in &self.columns {
            let name = &col.name;
            let v = match row.get(name) {
                None | Some(Value::Null) if self.key.contains(name) => {
                    return Err(format!("key field {name:?} is missing"));
                }
                None | Some(Value::Null) if !col.nullable => {
                    return Err(format!("field {name:?} is missing and the column is not nullable"));
                }
                None | Some(Value::Null) => continue,
                Some(v) => v,
            };
            let wrong = |expected: &str| Err(format!("field {name:?}: expected {expected}, got {}", describe_value(v)));
            let nul =
                || Err(format!("field {name:?}: contains a NUL character, which databases cannot store; strip it"));
            match col.ty {
                ColumnType::Text => {
                    let Some(s) = v.as_str() else { return wrong("a string") };
                    if s.contains('\0') {
                        return nul();
                    }
                    let limit = if col.max_len > 0 { col.max_len } else { DEFAULT_MAX_TEXT_CHARS };
                    let n = s.chars().count();
                    if n > limit {
                        return Err(format!("field {name:?}: text of {n} characters exceeds the limit of {limit}"));
                    }
                }
                ColumnType::Integer => {
                    let whole =
                        v.as_i64().is_some() || v.as_f64().is_some_and(|f| f.fract() == 0.0 && f.abs() < 9.0e15);
                    if !whole {
                        return wrong("an integer");
                    }
                }
                ColumnType::Real if v.as_f64().is_none() => return wrong("a number"),
                ColumnType::Boolean if !v.is_boolean() => return wrong("true or false"),
                ColumnType::Json if v.to_string().contains("\\u0000") => return nul(),
                ColumnType::Timestamp => {
                    let ok = v.as_str().is_some_and(is_rfc3339);
                    if !ok {
                        return wrong(if v.is_string() {
                            "an RFC 3339 timestamp like 2026-01-31T12:00:00Z"
                        } else {
                            "an RFC 3339 timestamp string"
                        });
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Everything the host needs to know about a plugin before running it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Manifest {
    /// App name (unique within group/parent).
    pub name: String,
    /// App group (e.g. a country or a business area).
    pub group: String,
    /// App parent (e.g. the data source).
    pub parent: String,
    /// Plugin version (semver `MAJOR.MINOR.PATCH`).
    pub version: String,
    /// The interface version the plugin was built against.
    pub interface_version: u32,
    /// Kind of app.
    pub kind: PluginKind,
    /// One line for operators.
    #[serde(default)]
    pub description: String,
    /// Default schedule, if the app should run on its own.
    #[serde(default)]
    pub default_schedule: Option<Schedule>,
    /// Tables the plugin writes.
    #[serde(default)]
    pub tables: Vec<TableDecl>,
    /// JSON schema the runtime arguments must satisfy.
    #[serde(default = "empty_object_schema")]
    pub args_schema: Value,
    /// Since 1.1: host capabilities the plugin needs ([`crate::capability`]);
    /// registration refuses the plugin on a host that lacks one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requires: Vec<String>,
    /// Since 1.1: the version of `dc-plugin-sdk` the plugin was built with
    /// (filled in by the SDK; informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdk_version: Option<String>,
    /// Since 1.2: limits of the run's crawl frontier (items added with
    /// `enqueue` while collecting).
    #[serde(default, skip_serializing_if = "CrawlLimits::is_unset")]
    pub crawl: CrawlLimits,
    /// Filled in by the SDK: the plugin keeps the default
    /// `store`, so the host merges the records `collect` returns as they
    /// come, in batches (each table as it declares: full snapshot or
    /// incremental), holding a bounded number in memory, and does not call
    /// `store`. False (older plugins, or one that overrides `store`): every
    /// record of the run is held until the end and handed to `store`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stream_records: bool,
}

/// Since 1.2: how far a run may crawl. Items added beyond a limit are dropped
/// and counted (never an error), so a crawl that finds more than it may follow
/// still stores what it collected. The host applies its own cap
/// (`runs.max_items`) on top.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct CrawlLimits {
    /// The deepest item followed: items from `prepare_list` are depth 0, an
    /// item added while collecting an item of depth d is d + 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_depth: Option<u32>,
    /// The most items one run collects, counting those from `prepare_list`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_items: Option<u64>,
}

impl CrawlLimits {
    /// True when no limit is set.
    pub fn is_unset(&self) -> bool {
        self == &CrawlLimits::default()
    }
}

/// The longest description a manifest may carry.
pub const MAX_DESCRIPTION_CHARS: usize = 1000;

fn empty_object_schema() -> Value {
    serde_json::json!({"type": "object"})
}

impl Manifest {
    /// A scraper manifest for app `group/parent/name` at plugin `version`
    /// (`MAJOR.MINOR.PATCH`, e.g. `env!("CARGO_PKG_VERSION")`), built against
    /// this interface, with no tables, schedule or requirements yet.
    pub fn new(
        group: impl Into<String>,
        parent: impl Into<String>,
        name: impl Into<String>,
        version: impl Into<String>,
    ) -> Manifest {
        Manifest {
            name: name.into(),
            group: group.into(),
            parent: parent.into(),
            version: version.into(),
            interface_version: crate::INTERFACE_VERSION,
            kind: PluginKind::Scraper,
            description: String::new(),
            default_schedule: None,
            tables: Vec::new(),
            args_schema: empty_object_schema(),
            requires: Vec::new(),
            sdk_version: None,
            crawl: CrawlLimits::default(),
            stream_records: false,
        }
    }

    /// Sets the kind of app.
    pub fn kind(mut self, kind: PluginKind) -> Manifest {
        self.kind = kind;
        self
    }

    /// Sets the one-line description.
    pub fn description(mut self, text: impl Into<String>) -> Manifest {
        self.description = text.into();
        self
    }

    /// Sets the default schedule.
    pub fn schedule(mut self, schedule: Schedule) -> Manifest {
        self.default_schedule = Some(schedule);
        self
    }

    /// Adds a table.
    pub fn table(mut self, table: TableDecl) -> Manifest {
        self.tables.push(table);
        self
    }

    /// Sets the JSON schema of the runtime arguments.
    pub fn args_schema(mut self, schema: Value) -> Manifest {
        self.args_schema = schema;
        self
    }

    /// Limits the crawl frontier: the deepest item followed (`prepare_list`
    /// items are depth 0) and the most items one run collects. A plugin that
    /// enqueues also declares `requires(capability::FRONTIER)`.
    pub fn crawl_limits(mut self, max_depth: Option<u32>, max_items: Option<u64>) -> Manifest {
        self.crawl = CrawlLimits { max_depth, max_items };
        self
    }

    /// Declares that the plugin needs a host capability ([`crate::capability`]).
    pub fn requires(mut self, capability: impl Into<String>) -> Manifest {
        let c = capability.into();
        if !self.requires.contains(&c) {
            self.requires.push(c);
        }
        self
    }
}

/// A semantic version as the manifest writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u64, pub u64, pub u64);

impl Version {
    /// Parses `MAJOR.MINOR.PATCH` (pre-release tags are not allowed).
    pub fn parse(s: &str) -> Option<Version> {
        let mut parts = s.split('.').map(|p| p.parse::<u64>().ok());
        let v = Version(parts.next()??, parts.next()??, parts.next()??);
        parts.next().is_none().then_some(v)
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && s.len() <= 63
}

fn is_label(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl Manifest {
    /// Checks the manifest and returns every problem found, each naming the
    /// field, the value and what is allowed. Empty means valid.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (field, value) in [("name", &self.name), ("group", &self.group), ("parent", &self.parent)] {
            if !is_label(value) {
                problems.push(format!("{field} {value:?} is not allowed: use 1-64 ASCII letters, digits, '_' or '-'"));
            }
        }
        if self.description.chars().count() > MAX_DESCRIPTION_CHARS || self.description.chars().any(char::is_control) {
            problems.push(format!(
                "description {:?} is not allowed: use one line of at most {MAX_DESCRIPTION_CHARS} characters, without control characters",
                self.description.chars().take(80).collect::<String>()
            ));
        }
        if Version::parse(&self.version).is_none() {
            problems.push(format!("version {:?} is not MAJOR.MINOR.PATCH (for example \"1.0.0\")", self.version));
        }
        if self.interface_version != crate::INTERFACE_VERSION {
            problems.push(format!(
                "interface_version {} is not supported: this host implements interface version {}",
                self.interface_version,
                crate::INTERFACE_VERSION
            ));
        }
        if let Some(Schedule::IntervalSecs(0)) = self.default_schedule {
            problems.push("default_schedule interval_secs must be at least 1".into());
        }
        if !self.args_schema.is_object() && !self.args_schema.is_boolean() {
            problems.push("args_schema must be a JSON schema object".into());
        }
        for c in &self.requires {
            if !crate::capability::is_known(c) {
                problems.push(format!(
                    "requires unknown capability {c:?}: this interface ({}) defines {}",
                    crate::ABI_VERSION,
                    crate::capability::KNOWN.join(", ")
                ));
            }
        }
        let mut seen_tables = std::collections::HashSet::new();
        for t in &self.tables {
            if !is_ident(&t.name) || t.name.starts_with("dc_") {
                problems.push(format!(
                    "table name {:?} is not allowed: use lowercase letters, digits and '_', start with a letter, at most 63 characters, not starting with 'dc_'",
                    t.name
                ));
            }
            if !seen_tables.insert(&t.name) {
                problems.push(format!("table {:?} is declared twice", t.name));
            }
            if t.columns.is_empty() {
                problems.push(format!("table {:?} declares no columns", t.name));
            }
            let mut seen_cols = std::collections::HashSet::new();
            for c in &t.columns {
                if !is_ident(&c.name) {
                    problems.push(format!(
                        "table {:?}: column name {:?} is not allowed: use lowercase letters, digits and '_', starting with a letter",
                        t.name, c.name
                    ));
                }
                if !seen_cols.insert(&c.name) {
                    problems.push(format!("table {:?}: column {:?} is declared twice", t.name, c.name));
                }
                if c.max_len > 0 && c.ty != ColumnType::Text {
                    problems.push(format!(
                        "table {:?}: column {:?} is of type {} but sets max_len {}: max_len applies to text columns only, remove it",
                        t.name,
                        c.name,
                        c.ty.as_str(),
                        c.max_len
                    ));
                }
            }
            if t.key.is_empty() {
                problems.push(format!(
                    "table {:?} has no key columns: name the columns that identify a row in \"key\"",
                    t.name
                ));
            }
            for k in &t.key {
                if !t.columns.iter().any(|c| &c.name == k) {
                    problems.push(format!("table {:?}: key column {:?} is not a declared column", t.name, k));
                }
            }
        }
        problems
    }

    /// The declared table with this name.
    pub fn declared_table(&self, name: &str) -> Option<&TableDecl> {
        self.tables.iter().find(|t| t.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        serde_json::from_value(serde_json::json!({
            "name": "books", "group": "demo", "parent": "catalogue", "version": "1.2.3",
            "interface_version": 1, "kind": "scraper",
            "tables": [{"name": "items", "columns": [{"name": "sku", "type": "text", "nullable": false}], "key": ["sku"]}]
        }))
        .expect("sample manifest parses")
    }

    #[test]
    fn valid_manifest_has_no_problems() {
        assert_eq!(sample().validate(), Vec::<String>::new());
    }

    #[test]
    fn problems_name_the_field_and_value() {
        let mut m = sample();
        m.version = "1.2".into();
        m.tables[0].key = vec!["missing".into()];
        m.interface_version = 7;
        let p = m.validate().join("\n");
        assert!(p.contains("version \"1.2\" is not MAJOR.MINOR.PATCH"), "{p}");
        assert!(p.contains("key column \"missing\" is not a declared column"), "{p}");
        assert!(p.contains("interface_version 7 is not supported"), "{p}");
    }

    #[test]
    fn descriptions_are_one_plain_line() {
        let p = sample().description("evil \u{1b}[31mred\u{1b}[0m").validate().join("\n");
        assert!(p.contains("without control characters") && p.contains("\\u{1b}"), "escaped, never raw: {p}");
        let p = sample().description("x".repeat(MAX_DESCRIPTION_CHARS + 1)).validate().join("\n");
        assert!(p.contains("at most 1000 characters"), "{p}");
        assert_eq!(sample().description("Prices of the acme shop — daily").validate(), Vec::<String>::new());
    }

    #[test]
    fn max_len_is_for_text_columns_only() {
        let mut m = sample();
        m.tables[0].columns[0].max_len = 20;
        assert_eq!(m.validate(), Vec::<String>::new(), "max_len on a text column is fine");
        m.tables[0].columns.push(ColumnDecl {
            name: "qty".into(),
            ty: ColumnType::Integer,
            nullable: true,
            max_len: 5,
        });
        let p = m.validate().join("\n");
        assert!(p.contains("table \"items\": column \"qty\" is of type integer but sets max_len 5"), "{p}");
        assert!(p.contains("remove it"), "{p}");
        m.tables[0].columns[1].max_len = 0;
        assert_eq!(m.validate(), Vec::<String>::new());
    }

    #[test]
    fn key_columns_may_leave_nullable_at_its_default() {
        let m: Manifest = serde_json::from_value(serde_json::json!({
            "name": "books", "group": "demo", "parent": "catalogue", "version": "1.2.3",
            "interface_version": 1, "kind": "scraper",
            "tables": [{"name": "items", "columns": [{"name": "sku", "type": "text"}], "key": ["sku"]}]
        }))
        .expect("manifest parses");
        assert!(m.tables[0].columns[0].nullable, "nullable defaults to true");
        assert_eq!(m.validate(), Vec::<String>::new());
    }

    #[test]
    fn unknown_manifest_fields_are_refused() {
        let err = serde_json::from_value::<Manifest>(serde_json::json!({
            "name": "a", "group": "b", "parent": "c", "version": "1.0.0",
            "interface_version": 1, "kind": "scraper", "colour": "red"
        }))
        .expect_err("unknown field must be refused");
        assert!(err.to_string().contains("colour"), "{err}");
    }

    #[test]
    fn builders_make_the_same_manifest_as_the_wire_form() {
        let built = Manifest::new("demo", "catalogue", "books", "1.2.3")
            .table(TableDecl::new("items").column(ColumnDecl::text("sku").not_null()).key(["sku"]));
        assert_eq!(built, sample());
        assert_eq!(built.validate(), Vec::<String>::new());
        let json = serde_json::to_value(&built).expect("serializes");
        assert!(
            json.get("requires").is_none() && json.get("sdk_version").is_none(),
            "1.0 readers see no new keys: {json}"
        );
    }

    #[test]
    fn requirements_must_be_known_capabilities() {
        let m = sample().requires(crate::capability::PROXY).requires(crate::capability::PROXY);
        assert_eq!(m.requires, vec!["proxy"], "a requirement is listed once");
        assert_eq!(m.validate(), Vec::<String>::new());
        let p = sample().requires("teleport").validate().join("\n");
        assert!(p.contains("requires unknown capability \"teleport\""), "{p}");
    }

    #[test]
    fn a_manifest_written_by_an_interface_1_0_plugin_parses() {
        // exactly what dc-plugin-api 1.0.0 serializes: no `requires`, no `sdk_version`
        let m: Manifest = serde_json::from_str(
            r#"{"name":"tiny","group":"test","parent":"fixtures","version":"1.0.0","interface_version":1,
                "kind":"scraper","description":"","default_schedule":null,"tables":[],"args_schema":{"type":"object"}}"#,
        )
        .expect("1.0 manifest parses");
        assert!(m.requires.is_empty() && m.sdk_version.is_none());
        assert_eq!(m.validate(), Vec::<String>::new());
    }

    #[test]
    fn versions_order_numerically() {
        assert!(Version::parse("1.10.0") > Version::parse("1.9.9"));
        assert_eq!(Version::parse("1.0"), None);
        assert_eq!(Version::parse("1.0.0-rc1"), None);
    }
}
