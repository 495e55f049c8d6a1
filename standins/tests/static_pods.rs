//! The kubelet stand-in runs kube-apiserver as a static Pod through a real containerd and runc,
//! from the stand-in image `standin-images` makes, against a real etcd; then registers its Node
//! through that API server, as `kubectl get nodes` shows. A manifest whose process refuses its
//! flags and one whose image nobody has are each reported with their reason, and stopped once
//! their manifest is gone. Then `kubeadm reset` removes what the node ran and kubeadm wrote.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::kube::*;
use testkit::containerd::Containerd;
use testkit::{ChildGuard, wait_for};

const IMAGE: &str = "registry.test:5000/kube-apiserver:v1.33.4";

/// A static Pod manifest running the stand-in image with `flags`, its certificates mounted
/// from the node's `/etc/kubernetes/pki` where the flags name them.
fn manifest(name: &str, image: &str, flags: &[String], pki: &Path) -> String {
    let mut command = vec!["kube-apiserver".to_owned()];
    command.extend(flags.iter().cloned());
    let pod = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "kube-system"},
        "spec": {
            "hostNetwork": true,
            "containers": [{
                "name": name,
                "image": image,
                "command": command,
                "volumeMounts": [{"name": "k8s-certs", "mountPath": pki, "readOnly": true}],
            }],
            "volumes": [{"name": "k8s-certs",
                "hostPath": {"path": "/etc/kubernetes/pki", "type": "DirectoryOrCreate"}}],
        },
    });
    serde_yaml::to_string(&pod).unwrap()
}

fn log_line(log: &Path, needle: &str) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines().find(|l| l.contains(needle)).map(str::to_owned)
}

#[test]
fn the_kubelet_runs_the_api_server_as_a_static_pod_and_registers_through_it() {
    if !testkit::require(&[
        "etcd",
        "kubectl",
        "containerd",
        "ctr",
        "runc",
        "ldd",
        "strip",
    ]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let pki = root.join("etc/kubernetes/pki");
    std::fs::create_dir_all(&pki).unwrap();
    let (ca, setup, peer_port, port) = prepare(&pki);
    let _etcd = start_etcd(&setup, peer_port);

    // The stand-in image, made from the built binaries and imported into containerd.
    let images = tmp.path().join("images");
    let out = Command::new(env!("CARGO_BIN_EXE_standin-images"))
        .args(["--registry", "registry.test:5000", "--kubernetes-version"])
        .args(["v1.33.4", "--out"])
        .arg(&images)
        .arg("--bin-dir")
        .arg(
            Path::new(env!("CARGO_BIN_EXE_kube-apiserver-standin"))
                .parent()
                .unwrap(),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let containerd = Containerd::start(
        &tmp.path().join("containerd"),
        &root.join("run/containerd/containerd.sock"),
        "k8s.io",
    );
    let made = String::from_utf8_lossy(&out.stdout);
    assert!(
        made.lines()
            .any(|l| l.starts_with("registry.test:5000/pause:3.10 ") && l.ends_with("/pause.tar")),
        "{made}"
    );
    for name in ["kube-apiserver", "pause"] {
        let archive = images.join(format!("{name}.tar"));
        let imported = containerd.ctr(&["images", "import", archive.to_str().unwrap()]);
        assert!(imported.status.success(), "{imported:?}");
    }

    let manifests = root.join("etc/kubernetes/manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    let flags = kubeadm_flags(&setup, port);
    std::fs::write(
        manifests.join("kube-apiserver.yaml"),
        manifest("kube-apiserver", IMAGE, &flags, &pki),
    )
    .unwrap();
    let config = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
        staticPodPath: /etc/kubernetes/manifests\n\
        authentication:\n  x509:\n    clientCAFile: /etc/kubernetes/pki/ca.crt\n";
    std::fs::write(root.join("kubelet.yaml"), config).unwrap();
    setup.kubeconfig(&ca, "system:node:m1", Some("system:nodes"), "kubelet.conf");
    std::fs::rename(pki.join("kubelet.conf"), root.join("kubelet.conf")).unwrap();
    let admin = setup.kubeconfig(
        &ca,
        "kubernetes-admin",
        Some("kubeadm:cluster-admins"),
        "admin",
    );

    let log = tmp.path().join("kubelet.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kubelet-standin"));
    cmd.env("LAUNCHER_STANDIN_ROOT", &root)
        .env("KUBELET_STANDIN_VERSION", "v1.33.4")
        .args(["--config", "/kubelet.yaml", "--kubeconfig", "/kubelet.conf"])
        .args(["--hostname-override", "m1", "--node-ip", "127.0.0.1"])
        .args([
            "--container-runtime-endpoint",
            "unix:///run/containerd/containerd.sock",
        ])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null());
    let _kubelet = ChildGuard::spawn("kubelet-standin", &mut cmd);

    let id = "k8s_kube-apiserver_kube-apiserver-m1";
    let row = wait_for(
        "m1 Ready in kubectl get nodes",
        Duration::from_secs(90),
        || {
            let (ok, out) = kubectl(&admin, &["get", "nodes", "--no-headers"]);
            let row = out.lines().find(|l| l.starts_with("m1 "))?.to_owned();
            (ok && row.split_whitespace().nth(1) == Some("Ready")).then_some(row)
        },
    );
    assert_eq!(row.split_whitespace().last(), Some("v1.33.4"), "{row}");
    assert_eq!(containerd.task_state(id).as_deref(), Some("RUNNING"));
    let started = log_line(&log, &format!("started {id} ({IMAGE})"));
    assert!(
        started.is_some(),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );

    // A process that refuses a flag, and an image that is nowhere: each said, with why.
    let mut bad_flags = flags.clone();
    bad_flags.push("--no-such-flag=1".to_owned());
    bad_flags.retain(|f| !f.starts_with("--secure-port="));
    bad_flags.push(format!("--secure-port={}", testkit::free_tcp_port()));
    std::fs::write(
        manifests.join("refused.yaml"),
        manifest("refused", IMAGE, &bad_flags, &pki),
    )
    .unwrap();
    let nowhere = format!(
        "127.0.0.1:{}/kube-scheduler:v1.33.4",
        testkit::free_tcp_port()
    );
    std::fs::write(
        manifests.join("missing.yaml"),
        manifest("missing", &nowhere, &flags, &pki),
    )
    .unwrap();
    let exited = wait_for("the refused flag reported", Duration::from_secs(40), || {
        log_line(&log, "k8s_refused_refused-m1 exited: Error")
    });
    assert!(
        exited.ends_with("exited: Error: unknown flag: --no-such-flag"),
        "{exited}"
    );
    // Its output is where the kubelet keeps a container's, for whoever looks into the node.
    let pods = std::fs::read_dir(root.join("var/log/pods")).unwrap();
    let pod_dir = pods
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("kube-system_refused-m1_"))
        .expect("the refused Pod's log directory");
    let output = std::fs::read_to_string(
        root.join("var/log/pods")
            .join(pod_dir)
            .join("refused/0.log"),
    )
    .unwrap();
    assert!(output.contains("unknown flag: --no-such-flag"), "{output}");
    let pull = wait_for(
        "the missing image reported",
        Duration::from_secs(40),
        || log_line(&log, "k8s_missing_missing-m1: pulling"),
    );
    assert!(
        pull.contains(&format!("pulling {nowhere}: ctr images pull")),
        "{pull}"
    );
    assert!(pull.contains("connection refused"), "{pull}");

    // Their manifests gone, their containers go; the API server keeps running.
    std::fs::remove_file(manifests.join("refused.yaml")).unwrap();
    std::fs::remove_file(manifests.join("missing.yaml")).unwrap();
    wait_for(
        "the refused container stopped",
        Duration::from_secs(30),
        || {
            log_line(
                &log,
                "stopped k8s_refused_refused-m1 (its manifest is gone)",
            )
        },
    );
    assert_eq!(containerd.task_state(id).as_deref(), Some("RUNNING"));
    assert_eq!(containerd.task_state("k8s_refused_refused-m1"), None);

    // `kubeadm reset`, the kubelet stopped as its service would be: the static Pods'
    // containers go, and so do the manifests, the kubelet's files, the certificates and
    // kubeadm's kubeconfigs; a file kubeadm does not own stays.
    drop(_kubelet);
    std::fs::write(root.join("etc/kubernetes/admin.conf"), "admin").unwrap();
    std::fs::write(root.join("etc/kubernetes/kubeadm.yaml"), "kept").unwrap();
    std::fs::create_dir_all(root.join("var/lib/kubelet/pki")).unwrap();
    std::fs::write(root.join("var/lib/kubelet/config.yaml"), "kubelet").unwrap();
    let reset = Command::new(env!("CARGO_BIN_EXE_kubeadm-standin"))
        .env("LAUNCHER_STANDIN_ROOT", &root)
        .args(["reset", "--force", "--cri-socket"])
        .arg("unix:///run/containerd/containerd.sock")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&reset.stdout);
    assert!(
        reset.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&reset.stderr)
    );
    assert!(
        said.contains(&format!(
            "[reset] Removed Kubernetes-managed containers: [\"{id}\"]"
        )),
        "{said}"
    );
    assert_eq!(containerd.task_state(id), None);
    let listed = containerd.ctr(&["containers", "ls", "-q"]);
    assert!(
        !String::from_utf8_lossy(&listed.stdout).contains("k8s_"),
        "{listed:?}"
    );
    for dir in [
        "etc/kubernetes/manifests",
        "etc/kubernetes/pki",
        "var/lib/kubelet",
    ] {
        let left: Vec<_> = std::fs::read_dir(root.join(dir)).unwrap().collect();
        assert!(left.is_empty(), "{dir}: {left:?}");
    }
    assert!(!root.join("etc/kubernetes/admin.conf").exists());
    assert_eq!(
        std::fs::read_to_string(root.join("etc/kubernetes/kubeadm.yaml")).unwrap(),
        "kept"
    );
}
