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
            "/defs/img.toml:6:11: field bundle.version: \"1.30\" is not a version: expected vMAJOR.MINOR.PATCH like v1.33.4",
        ),
        (
            "version = \"v1.30.2\"",
            "version = \"v2.0.0\"",
            "/defs/img.toml:6:11: field bundle.version: v2.0.0 cannot be rendered: kubeadm config v1beta3 needs v1.22.0 or later",
        ),
        (
            "version = \"v1.30.2\"",
            "version = \"v1.5.0\"",
            "/defs/img.toml:6:11: field bundle.version: v1.5.0 cannot be rendered: kubeadm config v1beta3 needs v1.22.0 or later",
        ),
        (
            "version = \"v1.30.2\"",
            "version = \"v1.36.0\"",
            "/defs/img.toml:6:11: field bundle.version: v1.36.0 is newer than this project knows: its kubeadm image tags are known up to v1.35",
        ),
        (
            "sha256 = \"0000",
            "sha256 = \"zz00",
            "/defs/img.toml:4:10: field base.tarball.sha256: \"zz00",
        ),
        (
            "ca_pin = \"sha256:",
            "ca_pin = \"md5:",
            "/defs/img.toml:12:10: field firstboot.ca_pin: \"md5:1111111111111111111111111111111111111111111111111111111111111111\" is not a CA pin: expected \"sha256:\" and 64 hex digits of the seed CA's SubjectPublicKeyInfo (`launcher-seed pin` prints it)",
        ),
        (
            "ca_pin = \"sha256:1111",
            "ca_pin = \"sha256:11",
            "/defs/img.toml:12:10: field firstboot.ca_pin: \"sha256:11111111111111111111111111111111111111111111111111111111111111\" is not a CA pin",
        ),
        (
            "seed_url = \"https://",
            "seed_url = \"http://",
            "/defs/img.toml:10:12: field firstboot.seed_url: \"http://10.77.0.1:8443\" is not an https URL; expected https://HOST:PORT like https://10.77.0.1:8443",
        ),
        (
            "seed_url = \"https://10.77.0.1:8443\"",
            "seed_url = \"https://10.77.0.1\"",
            "/defs/img.toml:10:12: field firstboot.seed_url: \"https://10.77.0.1\" has no port; expected https://HOST:PORT like https://10.77.0.1:8443",
        ),
        (
            "ntp = \"10.77.0.1\"",
            "ntp = \"10.77.0.1:0\"",
            "/defs/img.toml:11:7: field firstboot.ntp: \"10.77.0.1:0\" has port \"0\"; expected a number from 1 to 65535",
        ),
        (
            "standins = true\n",
            "standins = true\ndir = \"x\"\n",
            "/defs/img.toml:5:1: field bundle: give exactly one of standins = true, dir, server and node",
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

/// Found by fuzzing `parse`: an empty key once made the search for the key's offset spin.
#[test]
fn an_empty_key_is_refused_at_once() {
    let err = parse_str("\"\"=\"\"").unwrap_err();
    assert_eq!(
        err,
        "/defs/img.toml:1:1: field : unknown field ``, expected one of `name`, `platform`, \
         `source_date_epoch`, `base`, `kernel`, `bundle`, `images`, `firstboot`, `overlay`, `disk`"
    );
}
