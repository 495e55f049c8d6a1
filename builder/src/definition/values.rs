//! Newtypes for definition values that end up in files and command lines of the image.

use std::fmt;
use std::path::{Component, Path};

/// Why one value was refused; the parser adds the file, line and field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValueError(pub String);

fn refuse<T>(msg: impl Into<String>) -> Result<T, ValueError> {
    Err(ValueError(msg.into()))
}

/// A SHA-256 digest as 64 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sha256Hex(String);

impl Sha256Hex {
    /// Accepts 64 hex digits, optionally prefixed with `sha256:`.
    pub fn parse(text: &str) -> Result<Self, ValueError> {
        let hex = text.strip_prefix("sha256:").unwrap_or(text);
        if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return refuse(format!(
                "{text:?} is not a sha256 digest (64 hex digits, optionally after \"sha256:\")"
            ));
        }
        Ok(Self(hex.to_ascii_lowercase()))
    }

    pub fn from_digest(bytes: &[u8]) -> Self {
        Self(hex::encode(bytes))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Sha256Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Permission bits of a file in the image, written in the definition as an octal string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode(pub u32);

impl Mode {
    pub fn parse(text: &str) -> Result<Self, ValueError> {
        match u32::from_str_radix(text, 8) {
            Ok(bits) if bits <= 0o7777 && !text.is_empty() => Ok(Self(bits)),
            _ => refuse(format!(
                "{text:?} is not a file mode (octal digits, at most 7777, e.g. \"0644\")"
            )),
        }
    }
}

/// An absolute path inside the image, normalized: `/`-separated, no `.`, `..` or empty parts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ImagePath(String);

impl ImagePath {
    pub fn parse(text: &str) -> Result<Self, ValueError> {
        if !text.starts_with('/') {
            return refuse(format!("{text:?} is not an absolute path in the image"));
        }
        if text.contains('\0') || text.contains('\n') {
            return refuse(format!("{text:?} contains a NUL or newline"));
        }
        let mut parts = Vec::new();
        for comp in Path::new(text).components() {
            match comp {
                Component::RootDir | Component::CurDir => {}
                Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
                _ => return refuse(format!("{text:?} has a '..' component")),
            }
        }
        if parts.is_empty() {
            return refuse("the image root \"/\" is not a file path".to_string());
        }
        Ok(Self(format!("/{}", parts.join("/"))))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path relative to the image root (no leading `/`).
    pub fn relative(&self) -> &str {
        &self.0[1..]
    }
}

impl fmt::Display for ImagePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One kernel command-line argument: printable ASCII, no spaces or quotes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelArg(String);

impl KernelArg {
    pub fn parse(text: &str) -> Result<Self, ValueError> {
        if text.is_empty() || !text.chars().all(|c| c.is_ascii_graphic() && c != '"') {
            return refuse(format!(
                "{text:?} is not one kernel argument (printable ASCII, no spaces or quotes)"
            ));
        }
        Ok(Self(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A single-line value safe to write into a TOML or config file line (URL, host name, pin).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWord(String);

impl ConfigWord {
    pub fn parse(text: &str, what: &str) -> Result<Self, ValueError> {
        if text.is_empty()
            || !text
                .chars()
                .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\')
        {
            return refuse(format!(
                "{text:?} is not a {what} (printable ASCII without spaces, quotes or backslashes)"
            ));
        }
        Ok(Self(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A Debian package, suite or variant name: `[a-z0-9][a-z0-9+.-]*`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DebianName(String);

impl DebianName {
    pub fn parse(text: &str) -> Result<Self, ValueError> {
        let ok = text
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            && text
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+.-".contains(c));
        if !ok {
            return refuse(format!("{text:?} is not a Debian package or suite name"));
        }
        Ok(Self(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_paths_are_normalized_and_refuse_parent_parts() {
        assert_eq!(
            ImagePath::parse("/etc//x/./y").unwrap().as_str(),
            "/etc/x/y"
        );
        assert!(ImagePath::parse("etc/x").is_err());
        assert!(ImagePath::parse("/etc/../x").is_err());
        assert!(ImagePath::parse("/").is_err());
    }

    #[test]
    fn modes_digests_and_args() {
        assert_eq!(Mode::parse("0755").unwrap(), Mode(0o755));
        assert!(Mode::parse("0999").is_err());
        assert!(Mode::parse("17777").is_err());
        assert!(Sha256Hex::parse(&"A".repeat(64)).is_ok());
        assert!(Sha256Hex::parse("abc").is_err());
        assert!(KernelArg::parse("console=ttyS0").is_ok());
        assert!(KernelArg::parse("a b").is_err());
        assert!(DebianName::parse("linux-image-cloud-amd64").is_ok());
        assert!(DebianName::parse("Bad_name").is_err());
    }
}
