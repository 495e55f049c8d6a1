//! The install phase ends by reading the host's own Node with the kubelet's kubeconfig. Against
//! a real TLS server that asks for a client certificate (`openssl s_server`), a kubeconfig
//! whose CA did not sign the server's certificate fails with the TLS verdict in the error the
//! host reports, as does a client certificate from another CA, and with both right the call
//! gets through to the server's answer (not a Node: the host is not done). `launcher-firstboot
//! check-node` gives the same verdicts.

mod common;

use base64::Engine;
use common::pki::{Ca, ca, leaf};
use firstboot::os::RealOs;
use firstboot::registered::wait_registered;
use rcgen::ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A kubeconfig at `<root>/etc/kubernetes/kubelet.conf` for `server`, trusting `ca_file`
/// (named as a file) and presenting `<dir>/<client>.crt` and `.key` (inline).
fn kubeconfig(root: &Path, server: &str, ca_file: &Path, dir: &Path, client: &str) {
    let b64 = |file: String| {
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(dir.join(file)).unwrap())
    };
    let text = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: node\n\
         clusters:\n- name: c\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\n\
         contexts:\n- name: node\n  context: {{cluster: c, user: kubelet}}\n\
         users:\n- name: kubelet\n  user:\n    client-certificate-data: {cert}\n    client-key-data: {key}\n",
        ca = ca_file.display(),
        cert = b64(format!("{client}.crt")),
        key = b64(format!("{client}.key")),
    );
    let path = root.join("etc/kubernetes/kubelet.conf");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn write_ca(dir: &Path, name: &str, ca: &Ca) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.crt"));
    std::fs::write(&path, ca.cert.pem()).unwrap();
    path
}

#[test]
fn the_kubelets_kubeconfig_is_checked_against_a_real_tls_server() {
    if !testkit::require(&["openssl"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Every kubeadm cluster's CA is named `kubernetes`: another cluster's CA matches the
    // server certificate's issuer by name and fails on its signature.
    let cluster_ca = ca("kubernetes");
    let other_ca = ca("kubernetes");
    let cluster_ca_file = write_ca(d, "cluster-ca", &cluster_ca);
    let other_ca_file = write_ca(d, "other-ca", &other_ca);
    leaf(d, "apiserver", &cluster_ca, vec![ServerAuth]);
    leaf(d, "system:node:demo-w1", &cluster_ca, vec![ClientAuth]);
    leaf(d, "stranger", &other_ca, vec![ClientAuth]);

    let port = testkit::free_tcp_port();
    let mut server = Command::new("openssl");
    server
        .args([
            "s_server",
            "-quiet",
            "-www",
            "-Verify",
            "1",
            "-verify_return_error",
        ])
        .args(["-accept", &format!("127.0.0.1:{port}")])
        .arg("-cert")
        .arg(d.join("apiserver.crt"))
        .arg("-key")
        .arg(d.join("apiserver.key"))
        .arg("-CAfile")
        .arg(&cluster_ca_file)
        .stdout(Stdio::null());
    let _server = testkit::ChildGuard::spawn("openssl s_server", &mut server);
    testkit::wait_for(
        "openssl s_server to listen",
        Duration::from_secs(10),
        || std::net::TcpStream::connect(("127.0.0.1", port)).ok(),
    );

    let plan = common::plan::worker_plan("h", "v1.33.4", vec![]);
    let server = format!("https://127.0.0.1:{port}");
    let cases = [
        (
            &other_ca_file,
            "system:node:demo-w1",
            "invalid peer certificate: BadSignature",
        ),
        (
            &cluster_ca_file,
            "stranger",
            "connection error: received fatal alert: DecryptError",
        ),
        (
            &cluster_ca_file,
            "system:node:demo-w1",
            "the answer is not Node demo-w1: <HTML>",
        ),
    ];
    for (ca_file, client, why) in cases {
        let root = tempfile::tempdir().unwrap();
        kubeconfig(root.path(), &server, ca_file, d, client);
        let err = wait_registered(root.path(), &RealOs, &plan, Duration::ZERO)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("the kubelet did not register Node demo-w1 in 0 s (last: "),
            "{err}"
        );
        assert!(err.contains(why), "{client} trusting {ca_file:?}: {err}");
        assert!(
            err.ends_with(
                "check `journalctl -u kubelet` and the server and CA in /etc/kubernetes/kubelet.conf"
            ),
            "{err}"
        );

        // `launcher-firstboot check-node` asks the same once, for an operator on the host.
        let checked = Command::new(env!("CARGO_BIN_EXE_launcher-firstboot"))
            .arg("--root")
            .arg(root.path())
            .args(["check-node", "--node", "demo-w1", "--kubeconfig"])
            .arg(root.path().join("etc/kubernetes/kubelet.conf"))
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&checked.stderr);
        assert_eq!(checked.status.code(), Some(1), "{said}");
        assert!(
            said.starts_with("launcher-firstboot check-node: Node demo-w1 is not registered: ")
                && said.contains(why),
            "{said}"
        );
    }
}
