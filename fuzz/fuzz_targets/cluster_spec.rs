//! The cluster TOML: any text either fails with a located error or gives a spec that, written
//! back as TOML, parses to the same spec.
#![no_main]

use cluster::spec::ClusterSpec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(parsed) = ClusterSpec::parse("cluster.toml", text) else {
        return;
    };
    let again = render(&parsed.spec);
    let reparsed = ClusterSpec::parse("rendered.toml", &again)
        .unwrap_or_else(|e| panic!("a valid spec rendered as\n{again}\nis refused: {e}"));
    assert_eq!(parsed.spec, reparsed.spec, "rendered as\n{again}");
});

/// The spec in the file's own shape: `[cluster]`, `[seed]`, `[[hosts]]`.
fn render(spec: &ClusterSpec) -> String {
    let toml::Value::Table(mut cluster) = toml::Value::try_from(spec).expect("a spec serializes")
    else {
        unreachable!("a spec serializes to a table");
    };
    let mut file = toml::Table::new();
    for key in ["seed", "hosts"] {
        file.insert(key.into(), cluster.remove(key).expect("always serialized"));
    }
    file.insert("cluster".into(), toml::Value::Table(cluster));
    toml::to_string(&file).expect("a table renders")
}
