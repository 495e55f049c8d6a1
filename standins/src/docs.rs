//! Multi-document YAML config files as JSON values, with where each came from.

use serde::Deserialize;
use serde_json::Value;

/// One YAML document of a config file.
#[derive(Debug, Clone)]
pub struct Doc {
    /// 1-based position in the file.
    pub index: usize,
    pub api_version: String,
    pub kind: String,
    pub value: Value,
}

/// Parses every non-empty document of `text`; each must be a mapping with `apiVersion` and
/// `kind`. Duplicate keys are refused (kubeadm's decoder is strict too).
pub fn parse(file: &str, text: &str) -> Result<Vec<Doc>, String> {
    let mut out = Vec::new();
    for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let index = i + 1;
        // serde_yaml's own mapping refuses duplicate keys; JSON's would keep the last one.
        let yaml = serde_yaml::Value::deserialize(de)
            .map_err(|e| format!("{file}: document {index}: not valid YAML: {e}"))?;
        let value = serde_json::to_value(&yaml)
            .map_err(|e| format!("{file}: document {index}: not representable as JSON: {e}"))?;
        if value.is_null() {
            continue;
        }
        let Some(map) = value.as_object() else {
            return Err(format!("{file}: document {index}: not a mapping"));
        };
        let field = |name: &str| map.get(name).and_then(Value::as_str).map(str::to_string);
        let (Some(api_version), Some(kind)) = (field("apiVersion"), field("kind")) else {
            return Err(format!(
                "{file}: document {index}: missing apiVersion or kind"
            ));
        };
        out.push(Doc {
            index,
            api_version,
            kind,
            value,
        });
    }
    if out.is_empty() {
        return Err(format!("{file}: no YAML document"));
    }
    Ok(out)
}

/// The string at a `/`-separated path of a JSON value.
pub fn str_at<'a>(value: &'a Value, path: &str) -> Option<&'a str> {
    path.split('/')
        .try_fold(value, |v, key| v.get(key))
        .and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_split_and_checked() {
        let docs = parse(
            "f",
            "---\napiVersion: a/v1\nkind: A\n---\n---\napiVersion: b/v1\nkind: B\nx: {y: z}\n",
        )
        .unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].index, 3);
        assert_eq!(str_at(&docs[1].value, "x/y"), Some("z"));
        assert_eq!(
            parse("f", "kind: A\n").unwrap_err(),
            "f: document 1: missing apiVersion or kind"
        );
        assert_eq!(
            parse("f", "- a\n").unwrap_err(),
            "f: document 1: not a mapping"
        );
        assert_eq!(parse("f", "").unwrap_err(), "f: no YAML document");
        assert!(
            parse("f", "apiVersion: a\nkind: A\nkind: B\n")
                .unwrap_err()
                .contains("duplicate")
        );
    }
}
