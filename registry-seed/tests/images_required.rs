//! `images required`: kubeadm's image list for the cluster file, and with a state directory
//! which of those images the seed's registry lacks (exit code 1 while any is missing).

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::images::docker_save;
use testkit::fixtures::ClusterFile;

fn seed(args: &[&str], paths: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_launcher-seed"))
        .args(args)
        .args(paths)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn import(state: &Path, dir: &Path, upstream: &str) {
    let archive = dir.join(format!("{}.tar", upstream.replace(['/', ':'], "_")));
    docker_save(&archive, upstream);
    let out = seed(&["images", "import", "--state-dir"], &[state, &archive]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// (reference, state) rows of the table.
fn rows(out: &Output) -> Vec<(String, String)> {
    text(&out.stdout)
        .lines()
        .skip(1)
        .map(|l| {
            let mut cells = l.split_whitespace();
            (
                cells.next().unwrap_or("").to_owned(),
                cells.next().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

#[test]
fn the_list_and_what_the_registry_lacks_until_everything_is_imported() {
    let tmp = tempfile::tempdir().unwrap();
    let cluster = tmp.path().join("cluster.toml");
    std::fs::write(
        &cluster,
        ClusterFile {
            extra_cluster: vec!["skip_phases = [\"addon/kube-proxy\"]".into()],
            ..ClusterFile::demo()
        }
        .render(),
    )
    .unwrap();
    let state = tmp.path().join("state");
    let args = ["images", "required", "--cluster"];

    // The list alone: kubeadm's for v1.33.4 at the seed, kube-proxy skipped.
    let listed = seed(&args, &[&cluster]);
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    let want = [
        "10.77.0.1:8443/kube-apiserver:v1.33.4",
        "10.77.0.1:8443/kube-controller-manager:v1.33.4",
        "10.77.0.1:8443/kube-scheduler:v1.33.4",
        "10.77.0.1:8443/coredns/coredns:v1.12.0",
        "10.77.0.1:8443/pause:3.10",
    ];
    assert_eq!(
        text(&listed.stdout),
        format!("IMAGE\n{}\n", want.join("\n"))
    );

    // Two of five imported: the other three are missing, exit code 1.
    import(&state, tmp.path(), "registry.k8s.io/kube-apiserver:v1.33.4");
    import(&state, tmp.path(), "registry.k8s.io/pause:3.10");
    // A different tag of a required repository does not count.
    import(&state, tmp.path(), "registry.k8s.io/kube-scheduler:v1.33.3");
    let with_state = |json: bool| {
        let mut a = args.to_vec();
        if json {
            a.insert(2, "--json");
        }
        Command::new(env!("CARGO_BIN_EXE_launcher-seed"))
            .args(&a)
            .arg(&cluster)
            .arg("--state-dir")
            .arg(&state)
            .output()
            .unwrap()
    };
    let partial = with_state(false);
    assert_eq!(partial.status.code(), Some(1));
    let states: Vec<&str> = vec!["present", "MISSING", "MISSING", "MISSING", "present"];
    let expected: Vec<(String, String)> = want
        .iter()
        .zip(&states)
        .map(|(r, s)| (r.to_string(), s.to_string()))
        .collect();
    assert_eq!(rows(&partial), expected);
    assert_eq!(
        text(&partial.stderr),
        "launcher-seed: 3 of the 5 images the cluster pulls are missing from the seed's \
         registry: import them with `launcher-seed images import`\n"
    );
    let json: serde_json::Value = serde_json::from_slice(&with_state(true).stdout).unwrap();
    assert_eq!(json["kubernetes_version"], "v1.33.4");
    assert_eq!(
        json["missing"],
        serde_json::json!([want[1], want[2], want[3]])
    );
    assert_eq!(json["images"][0]["present"], true);
    assert_eq!(json["images"][1]["present"], false);

    // The rest imported: nothing missing, exit code 0.
    import(
        &state,
        tmp.path(),
        "registry.k8s.io/kube-controller-manager:v1.33.4",
    );
    import(&state, tmp.path(), "registry.k8s.io/kube-scheduler:v1.33.4");
    import(
        &state,
        tmp.path(),
        "registry.k8s.io/coredns/coredns:v1.12.0",
    );
    let full = with_state(false);
    assert!(full.status.success(), "{}", text(&full.stderr));
    assert!(
        rows(&full).iter().all(|(_, s)| s == "present"),
        "{}",
        text(&full.stdout)
    );
}

#[test]
fn bad_inputs_are_refused_with_their_reason_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("cluster.toml");
    std::fs::write(&good, ClusterFile::demo().render()).unwrap();
    let bad_version = tmp.path().join("old.toml");
    std::fs::write(
        &bad_version,
        ClusterFile {
            kubernetes_version: "v1.19.0".into(),
            ..ClusterFile::demo()
        }
        .render(),
    )
    .unwrap();
    let missing = tmp.path().join("missing.toml");
    let empty_state = tmp.path().join("empty");
    std::fs::create_dir(&empty_state).unwrap();
    let nowhere = tmp.path().join("nowhere");
    let cases: Vec<(&str, Vec<&Path>, String)> = vec![
        (
            "no cluster file",
            vec![&missing],
            format!(
                "launcher-seed: reading {}: No such file or directory (os error 2)",
                missing.display()
            ),
        ),
        (
            "a version kubeadm's configs cannot be rendered for",
            vec![&bad_version],
            format!(
                "launcher-seed: {}:3:22: field `cluster.kubernetes_version`: v1.19.0 cannot be \
                 rendered: kubeadm config v1beta3 needs v1.22.0 or later",
                bad_version.display()
            ),
        ),
        (
            "a state directory without a registry",
            vec![&good, Path::new("--state-dir"), &empty_state],
            format!(
                "launcher-seed: {} holds no seed registry (no registry/ in it): check --state-dir",
                empty_state.display()
            ),
        ),
        (
            "a state directory that does not exist",
            vec![&good, Path::new("--state-dir"), &nowhere],
            format!(
                "launcher-seed: {} holds no seed registry (no registry/ in it): check --state-dir",
                nowhere.display()
            ),
        ),
    ];
    for (what, paths, error) in cases {
        let out = seed(&["images", "required", "--cluster"], &paths);
        assert_eq!(out.status.code(), Some(1), "{what}");
        let stderr = text(&out.stderr);
        assert_eq!(stderr.trim_end(), error, "{what}");
        assert!(out.stdout.is_empty(), "{what}: {}", text(&out.stdout));
    }
    assert!(!nowhere.exists(), "nothing was created");
    assert_eq!(std::fs::read_dir(&empty_state).unwrap().count(), 0);
}
