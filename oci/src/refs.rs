//! Validated names of images and their content: digests, repository names, tags and image references.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A `sha256:<64 lowercase hex>` content digest, the only algorithm the store accepts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

/// Why a string is not a valid name, tag, digest or reference.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RefError {
    #[error("invalid digest {0:?}: expected sha256:<64 lowercase hex digits>")]
    Digest(String),
    #[error("invalid repository name {0:?}")]
    Name(String),
    #[error("invalid tag {0:?}")]
    Tag(String),
    #[error("invalid image reference {0:?}")]
    Reference(String),
}

impl Digest {
    pub fn parse(s: &str) -> Result<Digest, RefError> {
        let hex = s
            .strip_prefix("sha256:")
            .ok_or_else(|| RefError::Digest(s.to_string()))?;
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(RefError::Digest(s.to_string()));
        }
        Ok(Digest(s.to_string()))
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        use sha2::Digest as _;
        Digest::from_hasher(sha2::Sha256::new_with_prefix(bytes))
    }

    pub fn from_hasher(hasher: sha2::Sha256) -> Digest {
        use sha2::Digest as _;
        Digest(format!("sha256:{}", hex::encode(hasher.finalize())))
    }

    /// The 64 hex digits, which name the blob's file.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Digest {
    type Error = RefError;
    fn try_from(s: String) -> Result<Digest, RefError> {
        Digest::parse(&s)
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A repository name as the distribution spec allows it: lowercase components separated by `/`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RepoName(String);

impl RepoName {
    pub fn parse(s: &str) -> Result<RepoName, RefError> {
        if s.is_empty() || s.len() > 255 || !s.split('/').all(name_component_ok) {
            return Err(RefError::Name(s.to_string()));
        }
        Ok(RepoName(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn name_component_ok(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

impl TryFrom<String> for RepoName {
    type Error = RefError;
    fn try_from(s: String) -> Result<RepoName, RefError> {
        RepoName::parse(&s)
    }
}

impl From<RepoName> for String {
    fn from(n: RepoName) -> String {
        n.0
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Tag(String);

impl Tag {
    pub fn parse(s: &str) -> Result<Tag, RefError> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 128
            && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
            && b.iter()
                .all(|&x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'));
        if !ok {
            return Err(RefError::Tag(s.to_string()));
        }
        Ok(Tag(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Tag {
    type Error = RefError;
    fn try_from(s: String) -> Result<Tag, RefError> {
        Tag::parse(&s)
    }
}

impl From<Tag> for String {
    fn from(t: Tag) -> String {
        t.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What follows `/manifests/` in a request: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl Reference {
    pub fn parse(s: &str) -> Result<Reference, RefError> {
        if s.contains(':') {
            Digest::parse(s).map(Reference::Digest)
        } else {
            Tag::parse(s).map(Reference::Tag)
        }
    }
}

/// An image name as users write it (`registry.k8s.io/coredns/coredns:v1.11.1`,
/// `busybox:1.36`), reduced to what the seed serves: the repository path without the registry
/// host, and the tag. Docker Hub's short names gain `library/`, as containerd asks for them so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageName {
    pub repo: RepoName,
    pub tag: Option<Tag>,
}

impl ImageName {
    pub fn parse(s: &str) -> Result<ImageName, RefError> {
        let bad = || RefError::Reference(s.to_string());
        // a digest suffix names content, which the import already identifies by itself
        let without_digest = s.split_once('@').map_or(s, |(n, _)| n);
        let (path, tag) = match without_digest.rsplit_once(':') {
            Some((p, t)) if !t.contains('/') => (p, Some(Tag::parse(t).map_err(|_| bad())?)),
            _ => (without_digest, None),
        };
        let (host, rest) = match path.split_once('/') {
            Some((h, r)) if h.contains('.') || h.contains(':') || h == "localhost" => (Some(h), r),
            _ => (None, path),
        };
        let docker_hub = matches!(host, None | Some("docker.io" | "index.docker.io"));
        let repo = if docker_hub && !rest.contains('/') {
            format!("library/{rest}")
        } else {
            rest.to_string()
        };
        let repo = RepoName::parse(&repo).map_err(|_| bad())?;
        Ok(ImageName { repo, tag })
    }
}

impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.tag {
            Some(t) => write!(f, "{}:{t}", self.repo),
            None => write!(f, "{}", self.repo),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_spec_grammar() {
        for ok in ["a", "coredns/coredns", "a.b_c__d---e/f0", "library/busybox"] {
            assert!(RepoName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "A", "a/", "/a", "a//b", "a..b", "a___b", "-a", "a-", "a/../b", "a b",
        ] {
            assert!(RepoName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn digests_and_tags() {
        let hex = "a".repeat(64);
        assert!(Digest::parse(&format!("sha256:{hex}")).is_ok());
        assert!(Digest::parse(&format!("sha256:{}", "A".repeat(64))).is_err());
        assert!(Digest::parse(&format!("sha512:{hex}")).is_err());
        assert!(Digest::parse("sha256:abc").is_err());
        assert!(Tag::parse("v1.11.1").is_ok());
        assert!(Tag::parse(".x").is_err());
        assert!(Tag::parse(&"x".repeat(129)).is_err());
        assert!(matches!(Reference::parse("latest"), Ok(Reference::Tag(_))));
        assert!(matches!(
            Reference::parse("sha256:zz"),
            Err(RefError::Digest(_))
        ));
    }

    #[test]
    fn image_names_reduce_to_repository_and_tag() {
        let cases = [
            ("busybox:1.36", "library/busybox", Some("1.36")),
            (
                "docker.io/library/busybox:1.36",
                "library/busybox",
                Some("1.36"),
            ),
            (
                "registry.k8s.io/coredns/coredns:v1.11.1",
                "coredns/coredns",
                Some("v1.11.1"),
            ),
            ("localhost:5000/app", "app", None),
            ("registry.k8s.io/pause:3.9", "pause", Some("3.9")),
            ("quay.io/a/b:t@sha256:00", "a/b", Some("t")),
        ];
        for (input, repo, tag) in cases {
            let n = ImageName::parse(input).unwrap();
            assert_eq!(n.repo.as_str(), repo, "{input}");
            assert_eq!(n.tag.as_ref().map(Tag::as_str), tag, "{input}");
        }
        assert!(ImageName::parse("Busybox").is_err());
        assert!(ImageName::parse("a:b c").is_err());
    }
}
