//! The shared test cluster files (`testkit::fixtures::ClusterFile`) are specs the parser accepts.

use cluster::spec::ClusterSpec;
use testkit::fixtures::ClusterFile;

#[test]
fn the_demo_and_one_master_files_parse_as_specs() {
    let demo = ClusterSpec::parse("demo.toml", &ClusterFile::demo().render()).unwrap();
    assert_eq!(demo.spec.name.as_str(), "demo");
    assert_eq!(demo.spec.masters, 3);
    assert!(demo.spec.hosts.is_empty());

    let one = ClusterFile::one_master("127.0.0.1:8443").render();
    let one = ClusterSpec::parse("one.toml", &one).unwrap().spec;
    assert_eq!(one.masters, 1);
    assert_eq!(one.seed.url.to_string(), "https://127.0.0.1:8443");
    let roles: Vec<String> = one.hosts.iter().map(|h| h.role.to_string()).collect();
    assert_eq!(roles, ["master", "worker"]);
}
