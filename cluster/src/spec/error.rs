//! Spec errors that point at a file, line, column and field.

use std::fmt;
use std::ops::Range;

/// A refused input file (a cluster spec, an image's `firstboot.toml`): where, which field, what
/// is wrong and what is expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SpecError {
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// The field's path (`cluster.pod_subnet`, `hosts[2].mac`); `None` for a TOML syntax error.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if let Some(field) = &self.field {
            write!(f, "field `{field}`: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Turns byte offsets of one file's text into located errors.
pub(crate) struct Locator<'a> {
    pub file: &'a str,
    pub text: &'a str,
}

impl Locator<'_> {
    pub fn error(&self, span: Range<usize>, field: Option<String>, message: String) -> SpecError {
        let (line, column) = crate::text::line_col(self.text, span.start);
        SpecError {
            file: self.file.to_owned(),
            line,
            column,
            field,
            message,
        }
    }

    /// A located error from the TOML decoder, with the field path worked out from the text.
    pub fn toml_error(&self, e: &toml::de::Error) -> SpecError {
        let span = e.span().unwrap_or(0..0);
        // One line, and in the words of the file rather than of Rust's types.
        let message = e
            .message()
            .trim_end()
            .lines()
            .collect::<Vec<_>>()
            .join("; ");
        let message = message.replace("expected i64", "expected an integer");
        let field = self.field_of_toml_error(&span, &message);
        let message =
            if field.as_deref() == Some("hosts") && message.contains("expected a sequence") {
                format!("{message}; write each host as its own [[hosts]] table")
            } else {
                message
            };
        self.error(span, field, message)
    }

    /// The field a decoder error is about: the table the span is in plus the key named in the
    /// message (unknown/missing field) or the key on the span's line (a bad value).
    fn field_of_toml_error(&self, span: &Range<usize>, message: &str) -> Option<String> {
        let named = ["unknown field `", "missing field `"]
            .iter()
            .find_map(|p| message.strip_prefix(p))
            .and_then(|rest| rest.split('`').next());
        let at_header = self.line_text(span.start).trim_start().starts_with('[');
        let table = self.table_at(span.start, at_header);
        let key = match named {
            Some(k) => Some(k.to_owned()),
            None if at_header => None,
            None => self.key_on_line(span.start),
        };
        if named.is_none() && key.is_none() && table.is_empty() {
            return None; // a syntax error outside any field
        }
        Some(match (table.is_empty(), key) {
            (true, Some(k)) => k,
            (false, Some(k)) => format!("{table}.{k}"),
            (_, None) => table,
        })
    }

    fn line_text(&self, offset: usize) -> &str {
        let offset = offset.min(self.text.len());
        let start = self.text[..offset].rfind('\n').map_or(0, |i| i + 1);
        let end = self.text[offset..]
            .find('\n')
            .map_or(self.text.len(), |i| offset + i);
        &self.text[start..end]
    }

    fn key_on_line(&self, offset: usize) -> Option<String> {
        let line = self.line_text(offset);
        let (key, _) = line.split_once('=')?;
        let key = key.trim().trim_matches('"');
        (!key.is_empty()).then(|| key.to_owned())
    }

    /// The path of the table whose header comes last at or before `offset` (`hosts[1]` for the
    /// second `[[hosts]]`); "" for the root table.
    fn table_at(&self, offset: usize, include_current_line: bool) -> String {
        let limit = if include_current_line {
            self.text[offset.min(self.text.len())..]
                .find('\n')
                .map_or(self.text.len(), |i| offset + i)
        } else {
            self.text[..offset.min(self.text.len())]
                .rfind('\n')
                .unwrap_or(0)
        };
        let mut current = String::new();
        let mut counts: std::collections::HashMap<String, usize> = Default::default();
        for line in self.text[..limit].lines() {
            let line = line.trim();
            if let Some(name) = line.strip_prefix("[[").and_then(|l| l.split("]]").next()) {
                let name = name.trim().to_owned();
                let n = counts.entry(name.clone()).or_insert(0);
                current = format!("{name}[{n}]");
                *n += 1;
            } else if let Some(name) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
                current = name.trim().to_owned();
            }
        }
        current
    }
}
