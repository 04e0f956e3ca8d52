//! Walking a span-preserving TOML tree while collecting every problem.
//!
//! serde's derive stops at the first error; a person fixing a config wants them all, each with
//! the position of the offending key or value. So files are parsed with
//! [`toml::de::DeTable::parse_recoverable`] and walked by hand with the helpers here: each
//! getter records a problem and returns `None` when a value is missing or of the wrong type,
//! and the caller carries on.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::de::{DeArray, DeTable, DeValue};
use toml::Spanned;

use super::{parse_duration, Problem};

/// A string from the file with its byte span.
pub(crate) type StrAt<'t> = (&'t str, Range<usize>);

/// A value with its byte span in the file.
pub(crate) type Val<'i> = Spanned<DeValue<'i>>;

/// One file being checked: its text (for line/column) and the problems found in it.
#[derive(Debug)]
pub(crate) struct FileCheck {
    /// The file, as named to the user.
    pub file: PathBuf,
    src: String,
    line_starts: Vec<usize>,
    /// Problems found so far, in the order found (sorted by position at the end).
    pub problems: Vec<Problem>,
}

impl FileCheck {
    /// Starts checking `file` whose text is `src`.
    pub fn new(file: &Path, src: &str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(src.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self {
            file: file.to_path_buf(),
            src: src.to_owned(),
            line_starts,
            problems: Vec::new(),
        }
    }

    /// 1-based line and column (in characters) of byte offset `at`.
    pub fn position(&self, at: usize) -> (usize, usize) {
        let at = at.min(self.src.len());
        let line = self.line_starts.partition_point(|&s| s <= at).max(1);
        let start = self.line_starts[line - 1];
        let col = self
            .src
            .get(start..at)
            .map_or(1, |prefix| prefix.chars().count() + 1);
        (line, col)
    }

    /// Records a problem at the start of `span`.
    pub fn err(&mut self, span: &Range<usize>, message: impl Into<String>) {
        let (line, col) = self.position(span.start);
        self.problems.push(Problem {
            file: self.file.clone(),
            line,
            col,
            message: message.into(),
        });
    }

    /// Problems sorted by position (stable: same position keeps the order found).
    pub fn into_problems(mut self) -> Vec<Problem> {
        self.problems.sort_by_key(|p| (p.line, p.col));
        self.problems
    }

    /// Reports every key of `table` not in `allowed`, suggesting the closest valid one.
    pub fn unknown_keys(&mut self, table: &DeTable<'_>, section: &str, allowed: &[&str]) {
        for key in table.keys() {
            let name: &str = key.get_ref();
            if allowed.contains(&name) {
                continue;
            }
            let mut message = format!("unknown key {name:?} {section}");
            if let Some(best) = closest(name, allowed) {
                message.push_str(&format!("; did you mean {best:?}?"));
            }
            self.err(&key.span(), message);
        }
    }

    /// `value` as a table, or a problem naming `what`.
    pub fn as_table<'t, 'i>(&mut self, value: &'t Val<'i>, what: &str) -> Option<&'t DeTable<'i>> {
        match value.get_ref() {
            DeValue::Table(t) => Some(t),
            other => {
                self.err(&value.span(), type_error(what, "a table", other));
                None
            }
        }
    }

    /// `value` as an array, or a problem naming `what`.
    pub fn as_array<'t, 'i>(&mut self, value: &'t Val<'i>, what: &str) -> Option<&'t DeArray<'i>> {
        match value.get_ref() {
            DeValue::Array(a) => Some(a),
            other => {
                self.err(&value.span(), type_error(what, "an array", other));
                None
            }
        }
    }

    /// `value` as an integer of at least `min`, or a problem naming `what`.
    pub fn as_int_at_least(&mut self, value: &Val<'_>, what: &str, min: i64) -> Option<i64> {
        let DeValue::Integer(i) = value.get_ref() else {
            self.err(
                &value.span(),
                type_error(what, "an integer", value.get_ref()),
            );
            return None;
        };
        match i64::from_str_radix(i.as_str(), i.radix()) {
            Ok(n) if n >= min => Some(n),
            _ => {
                self.err(&value.span(), format!("{what} must be at least {min}"));
                None
            }
        }
    }

    /// `value` as a string, or a problem naming `what`.
    pub fn as_str<'t>(&mut self, value: &'t Val<'_>, what: &str) -> Option<&'t str> {
        match value.get_ref() {
            DeValue::String(s) => Some(s),
            other => {
                self.err(&value.span(), type_error(what, "a string", other));
                None
            }
        }
    }

    /// Optional string `key`.
    pub fn opt_str<'t>(
        &mut self,
        table: &'t DeTable<'_>,
        key: &str,
    ) -> Option<(&'t str, Range<usize>)> {
        let value = table.get(key)?;
        self.as_str(value, &format!("{key:?}"))
            .map(|s| (s, value.span()))
    }

    /// Required string `key`; a missing key is reported at `header`.
    pub fn req_str<'t>(
        &mut self,
        table: &'t DeTable<'_>,
        header: &Range<usize>,
        section: &str,
        key: &str,
    ) -> Option<(&'t str, Range<usize>)> {
        if table.get(key).is_none() {
            self.err(header, format!("missing required key {key:?} {section}"));
            return None;
        }
        self.opt_str(table, key)
    }

    /// Optional boolean `key`.
    pub fn opt_bool(&mut self, table: &DeTable<'_>, key: &str) -> Option<bool> {
        let value = table.get(key)?;
        match value.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            other => {
                self.err(
                    &value.span(),
                    type_error(&format!("{key:?}"), "a boolean", other),
                );
                None
            }
        }
    }

    /// Optional integer `key`, at least `min`.
    pub fn opt_int(&mut self, table: &DeTable<'_>, key: &str, min: i64) -> Option<i64> {
        let value = table.get(key)?;
        self.as_int_at_least(value, &format!("{key:?}"), min)
    }

    /// Optional duration `key`, at least `min`.
    pub fn opt_duration(
        &mut self,
        table: &DeTable<'_>,
        key: &str,
        min: Duration,
    ) -> Option<Duration> {
        let (s, span) = self.opt_str(table, key)?;
        match parse_duration(s) {
            Ok(d) if d >= min => Some(d),
            Ok(_) => {
                self.err(
                    &span,
                    format!(
                        "{key:?} must be at least {}",
                        humantime::format_duration(min)
                    ),
                );
                None
            }
            Err(e) => {
                self.err(&span, format!("{key:?}: {e}"));
                None
            }
        }
    }

    /// Optional array of strings `key`, each with its span.
    pub fn opt_str_list<'t>(
        &mut self,
        table: &'t DeTable<'_>,
        key: &str,
    ) -> Option<(Vec<StrAt<'t>>, Range<usize>)> {
        let value = table.get(key)?;
        let what = format!("{key:?}");
        let array = self.as_array(value, &what)?;
        let mut out = Vec::with_capacity(array.len());
        for item in array.iter() {
            if let Some(s) = self.as_str(item, &format!("each item of {what}")) {
                out.push((s, item.span()));
            }
        }
        Some((out, value.span()))
    }
}

/// Parses `[[name]]` items with `item`, keeping each value with its header span.
pub(crate) fn array_of_tables<T>(
    ck: &mut FileCheck,
    doc: &DeTable<'_>,
    name: &str,
    mut item: impl FnMut(&mut FileCheck, &DeTable<'_>, &Range<usize>) -> Option<T>,
) -> Vec<(T, Range<usize>)> {
    let Some(value) = doc.get(name) else {
        return Vec::new();
    };
    let Some(array) = ck.as_array(value, &format!("[[{name}]]")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in array.iter() {
        let span = entry.span();
        if let Some(table) = ck.as_table(entry, &format!("each [[{name}]]")) {
            if let Some(v) = item(ck, table, &span) {
                out.push((v, span));
            }
        }
    }
    out
}

/// `"listen" must be a string, found integer`.
pub(crate) fn type_error(what: &str, expected: &str, found: &DeValue<'_>) -> String {
    format!("{what} must be {expected}, found {}", found.type_str())
}

/// The allowed name closest to `name`, when it is close enough to be a likely typo.
pub(crate) fn closest<'a>(name: &str, allowed: &[&'a str]) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).clamp(1, 3);
    allowed
        .iter()
        .map(|a| (edit_distance(&name.to_ascii_lowercase(), a), *a))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, a)| a)
}

/// Optimal string alignment distance (Levenshtein plus adjacent transpositions).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}
