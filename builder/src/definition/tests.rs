//! Unit tests of definition parsing: a valid definition and a table of refused ones.

use std::path::Path;

use super::*;

const VALID: &str = r#"name = "test"
[base.tarball]
path = "base.tar"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
[bundle]
version = "v1.30.2"
standins = true
kubectl = "/usr/bin/kubectl"
[firstboot]
seed_url = "https://10.77.0.1:8443"
ntp = "10.77.0.1"
ca_pin = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
"#;

fn parse_str(text: &str) -> Result<Definition, String> {
    parse(text, Path::new("/defs/img.toml")).map_err(|e| e.to_string())
}

#[test]
fn valid_definition_resolves_paths_against_its_directory() {
    let def = parse_str(VALID).unwrap();
    match &def.base {
        Base::Tarball { path, .. } => assert_eq!(path, Path::new("/defs/base.tar")),
        other => panic!("unexpected base {other:?}"),
    }
    assert!(matches!(def.bundle.source, BundleSource::Standins { .. }));
    assert_eq!(def.disk_free_mib, 512);
}

#[test]
fn refused_definitions_point_at_line_and_field() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "name = \"test\"\n",
            "name = \"test\"\ncolour = 1\n",
            "/defs/img.toml:2:1: field colour: unknown field `colour`",
        ),
        (
            "ntp = \"10.77.0.1\"",
            "ntp = \"10.77.0.1\"\nport = 3",
            "/defs/img.toml:12:1: field port: unknown field `port`",
        ),
        (
            "version = \"v1.30.2\"",
            "version = \"1.30\"",
            "/defs/img.toml:6:11: field bundle.version: \"1.30\" is not a Kubernetes version like \"v1.30.2\"",
        ),
        (
            "sha256 = \"0000",
            "sha256 = \"zz00",
            "/defs/img.toml:4:10: field base.tarball.sha256: \"zz00",
        ),
        (
            "ca_pin = \"sha256:",
            "ca_pin = \"md5:",
            "/defs/img.toml:12:10: field firstboot.ca_pin: \"md5:",
        ),
        (
            "seed_url = \"https://",
            "seed_url = \"http://",
            "/defs/img.toml:10:12: field firstboot.seed_url: \"http://10.77.0.1:8443\" is not an https:// URL",
        ),
        (
            "standins = true\n",
            "standins = true\ndir = \"x\"\n",
            "/defs/img.toml:5:1: field bundle: give exactly one of standins = true, dir and tarball",
        ),
    ];
    for (from, to, want) in cases {
        let text = VALID.replacen(from, to, 1);
        assert_ne!(text, VALID, "case {want} did not change the text");
        let err = parse_str(&text).unwrap_err();
        assert!(err.starts_with(want), "got {err:?}\nwant prefix {want:?}");
    }
}

#[test]
fn missing_field_is_named() {
    let text = VALID.replace("ntp = \"10.77.0.1\"\n", "");
    let err = parse_str(&text).unwrap_err();
    assert!(err.contains("field ntp: missing field `ntp`"), "{err}");
}
