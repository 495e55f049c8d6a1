//! The seed's state is owner-only: the directory 0700, everything in it without group or other
//! bits, whatever a former run or an operator's umask left there.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use support::seed::{Server, cluster_file, one_master};

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

fn everything_below(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(everything_below(&path));
        }
        found.push(path);
    }
    found
}

#[test]
fn the_state_directory_and_every_file_in_it_are_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    // A state directory as a careless operator or an older seed left it.
    std::fs::create_dir_all(state.join("old")).unwrap();
    for (path, m) in [(&state, 0o755), (&state.join("old"), 0o777)] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(m)).unwrap();
    }
    std::fs::write(state.join("old/notes"), "left here").unwrap();
    std::fs::set_permissions(
        state.join("old/notes"),
        std::fs::Permissions::from_mode(0o666),
    )
    .unwrap();

    let cluster = cluster_file(dir.path(), &one_master());
    let server = Server::start(&cluster, &state, "127.0.0.1:0");
    let answer = server
        .host_client("52:54:00:00:00:04")
        .post(format!("{}/v1/enroll", server.url()))
        .json(&serde_json::json!({"identity": {"macs": ["52:54:00:00:00:04"]}}))
        .send()
        .unwrap();
    assert!(answer.status().is_success(), "{}", answer.text().unwrap());

    assert_eq!(mode(&state), 0o700);
    let entries = everything_below(&state);
    for name in [
        "state.redb",
        "admin.token",
        "seed-ca.key",
        "seed-ca.crt",
        "seal.key",
        "serve.addr",
    ] {
        assert!(entries.contains(&state.join(name)), "{name} missing");
    }
    for path in &entries {
        assert_eq!(
            mode(path) & 0o077,
            0,
            "{} is {:o}: readable beyond its owner",
            path.display(),
            mode(path)
        );
    }
    assert_eq!(
        std::fs::read_to_string(state.join("old/notes")).unwrap(),
        "left here"
    );
}
