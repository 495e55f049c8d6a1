//! What kubeadm's certificate and kubeconfig handling needs on disk for a control plane whose
//! etcd is external: which files must exist, which kubeadm would make itself, and what it only
//! warns about. Modelled on kubeadm's own code (`cmd/kubeadm/app/phases/certs/certs.go`:
//! `SharedCertificateExists`, `UsingExternalCA`, `UsingExternalFrontProxyCA`;
//! `certlist.go` `CreateTree`; `cmd/phases/init/certs.go` `runCAPhase`, `runCertsSa`;
//! `phases/kubeconfig/kubeconfig.go` `CreateJoinControlPlaneKubeConfigFiles`,
//! `ValidateKubeconfigsForExternalCA`). Only the existence of files is checked, not their
//! content.

use crate::Root;

/// kubeadm's `KubernetesDir`, where its kubeconfig files live.
const KUBERNETES_DIR: &str = "/etc/kubernetes";

/// A CA kubeadm handles with external etcd, and the certificates it signs on a control plane
/// (`GetCertsWithoutEtcd`).
struct Ca {
    base: &'static str,
    /// kubeadm's name for it in messages.
    ux: &'static str,
    /// The `UsingExternal…` function that decides when its key is missing.
    external: &'static str,
    leaves: &'static [&'static str],
}

const CAS: [Ca; 2] = [
    Ca {
        base: "ca",
        ux: "CA",
        external: "UsingExternalCA",
        leaves: &["apiserver", "apiserver-kubelet-client"],
    },
    Ca {
        base: "front-proxy-ca",
        ux: "front-proxy CA",
        external: "UsingExternalFrontProxyCA",
        leaves: &["front-proxy-client"],
    },
];

/// What the checks came to.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Files kubeadm requires, each found to exist.
    pub present: Vec<String>,
    /// Files kubeadm would write because they are missing.
    pub generated: Vec<String>,
    /// What kubeadm would warn about and go on.
    pub warnings: Vec<String>,
}

struct Disk<'a> {
    root: &'a Root,
    file: &'a str,
    out: Outcome,
}

impl Disk<'_> {
    fn exists(&self, path: &str) -> bool {
        self.root.path(path).exists()
    }

    /// Refuses unless `path` exists: "`file`: `who` names|needs `path`, which does not exist".
    fn require(&mut self, who: &str, path: String) -> Result<(), String> {
        if !self.exists(&path) {
            return Err(format!("{}: {who} {path}, which does not exist", self.file));
        }
        self.out.present.push(path);
        Ok(())
    }

    fn generate_missing(&mut self, paths: impl IntoIterator<Item = String>) {
        for path in paths {
            if !self.exists(&path) {
                self.out.generated.push(path);
            }
        }
    }
}

fn pair(pki: &str, base: &str) -> [String; 2] {
    [format!("{pki}/{base}.crt"), format!("{pki}/{base}.key")]
}

fn kubeconfigs(names: &[&str]) -> Vec<String> {
    names
        .iter()
        .map(|n| format!("{KUBERNETES_DIR}/{n}.conf"))
        .collect()
}

/// A CA whose certificate exists: with its key, kubeadm makes the missing leaves
/// (`CreateTree`); without it, the CA is external and every leaf must be there already.
/// Returns whether the key is there.
fn existing_ca(disk: &mut Disk<'_>, pki: &str, ca: &Ca) -> Result<bool, String> {
    let [_, key] = pair(pki, ca.base);
    let has_key = disk.exists(&key);
    for leaf in ca.leaves {
        let files = pair(pki, leaf);
        if has_key {
            disk.generate_missing(files);
        } else {
            let who = format!(
                "{key} is absent, so kubeadm takes the {} as external ({}) and needs",
                ca.ux, ca.external
            );
            for path in files {
                disk.require(&who, path)?;
            }
        }
    }
    Ok(has_key)
}

/// `kubeadm init` with external etcd: its certs and kubeconfig phases (`newInitData`,
/// `runCAPhase`, `runCertPhase`, `runCertsSa`), for Kubernetes minor `minor`.
pub fn init(root: &Root, file: &str, pki: &str, minor: u32) -> Result<Outcome, String> {
    let mut disk = Disk {
        root,
        file,
        out: Outcome::default(),
    };
    let mut external_ca = false;
    for ca in &CAS {
        let [crt, key] = pair(pki, ca.base);
        if !disk.exists(&crt) {
            disk.generate_missing([crt, key]);
            disk.generate_missing(ca.leaves.iter().flat_map(|l| pair(pki, l)));
            continue;
        }
        disk.out.present.push(crt);
        let has_key = existing_ca(&mut disk, pki, ca)?;
        if ca.base == "ca" {
            external_ca = !has_key;
        }
    }
    let mut names = vec!["admin", "controller-manager", "scheduler", "kubelet"];
    if minor >= 29 {
        names.push("super-admin");
    }
    if external_ca {
        // ValidateKubeconfigsForExternalCA: kubeadm cannot make them without ca.key.
        for path in kubeconfigs(&names) {
            let who = format!(
                "{pki}/ca.key is absent, so kubeadm takes the CA as external (UsingExternalCA) \
                 and needs every kubeconfig (ValidateKubeconfigsForExternalCA), among them"
            );
            disk.require(&who, path)?;
        }
    } else {
        disk.generate_missing(kubeconfigs(&names));
        if !disk.exists(&format!("{pki}/sa.key")) {
            disk.generate_missing([format!("{pki}/sa.key"), format!("{pki}/sa.pub")]);
        }
    }
    Ok(disk.out)
}

/// `kubeadm join --control-plane` without a certificate key, with external etcd: the preflight
/// check `checkIfReadyForAdditionalControlPlane` (`SharedCertificateExists`), then the
/// control-plane-prepare certs (`CreatePKIAssets`) and kubeconfig
/// (`CreateJoinControlPlaneKubeConfigFiles`) phases.
pub fn join_control_plane(root: &Root, file: &str, pki: &str) -> Result<Outcome, String> {
    let mut disk = Disk {
        root,
        file,
        out: Outcome::default(),
    };
    let shared = "controlPlane (shared certificates) names";
    for name in ["ca.crt", "sa.key", "sa.pub", "front-proxy-ca.crt"] {
        disk.require(shared, format!("{pki}/{name}"))?;
    }
    let mut has_ca_key = true;
    for ca in &CAS {
        let has_key = existing_ca(&mut disk, pki, ca)?;
        if !has_key {
            // validateCACertAndKey: a missing CA key is a warning since kubeadm 1.20.
            disk.out.warnings.push(format!(
                "assuming external key for {}: {pki}/{}.key is absent",
                ca.ux, ca.base
            ));
        }
        if ca.base == "ca" {
            has_ca_key = has_key;
        }
    }
    if has_ca_key {
        disk.generate_missing(kubeconfigs(&["admin", "controller-manager", "scheduler"]));
    }
    Ok(disk.out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PKI: &str = "/etc/kubernetes/pki";

    fn root_with(files: &[&str]) -> (tempfile::TempDir, Root) {
        let dir = tempfile::tempdir().unwrap();
        for f in files {
            let p = dir.path().join(f.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "x").unwrap();
        }
        let root = Root(dir.path().to_path_buf());
        (dir, root)
    }

    /// What the seed gives the first master (ARCHITECTURE.md, "What each role receives").
    const FIRST_MASTER: [&str; 16] = [
        "/etc/kubernetes/pki/ca.crt",
        "/etc/kubernetes/pki/ca.key",
        "/etc/kubernetes/pki/front-proxy-ca.crt",
        "/etc/kubernetes/pki/sa.key",
        "/etc/kubernetes/pki/sa.pub",
        "/etc/kubernetes/pki/apiserver-kubelet-client.crt",
        "/etc/kubernetes/pki/apiserver-kubelet-client.key",
        "/etc/kubernetes/pki/front-proxy-client.crt",
        "/etc/kubernetes/pki/front-proxy-client.key",
        "/etc/kubernetes/pki/apiserver-etcd-client.crt",
        "/etc/kubernetes/pki/apiserver-etcd-client.key",
        "/etc/kubernetes/admin.conf",
        "/etc/kubernetes/super-admin.conf",
        "/etc/kubernetes/controller-manager.conf",
        "/etc/kubernetes/scheduler.conf",
        "/etc/kubernetes/kubelet.conf",
    ];

    #[test]
    fn the_first_masters_files_leave_kubeadm_init_only_the_api_server_certificate_to_make() {
        let (_dir, root) = root_with(&FIRST_MASTER);
        let out = init(&root, "k.yaml", PKI, 33).unwrap();
        assert_eq!(
            out.generated,
            [
                "/etc/kubernetes/pki/apiserver.crt",
                "/etc/kubernetes/pki/apiserver.key"
            ]
        );
        assert!(out.warnings.is_empty());
        assert!(
            out.present
                .contains(&"/etc/kubernetes/pki/front-proxy-client.key".to_string())
        );
    }

    #[test]
    fn without_a_ca_key_every_certificate_it_would_sign_must_be_given() {
        let (_dir, root) = root_with(&FIRST_MASTER);
        std::fs::remove_file(root.path("/etc/kubernetes/pki/front-proxy-client.key")).unwrap();
        assert_eq!(
            init(&root, "k.yaml", PKI, 33).unwrap_err(),
            "k.yaml: /etc/kubernetes/pki/front-proxy-ca.key is absent, so kubeadm takes the \
             front-proxy CA as external (UsingExternalFrontProxyCA) and needs \
             /etc/kubernetes/pki/front-proxy-client.key, which does not exist"
        );
        let (_dir, root) = root_with(&FIRST_MASTER);
        std::fs::remove_file(root.path("/etc/kubernetes/pki/ca.key")).unwrap();
        assert_eq!(
            init(&root, "k.yaml", PKI, 33).unwrap_err(),
            "k.yaml: /etc/kubernetes/pki/ca.key is absent, so kubeadm takes the CA as external \
             (UsingExternalCA) and needs /etc/kubernetes/pki/apiserver.crt, which does not exist"
        );
    }

    #[test]
    fn init_makes_a_ca_it_does_not_find() {
        let (_dir, root) = root_with(&[]);
        let out = init(&root, "k.yaml", PKI, 28).unwrap();
        for made in [
            "/etc/kubernetes/pki/ca.key",
            "/etc/kubernetes/pki/front-proxy-ca.key",
            "/etc/kubernetes/pki/sa.key",
            "/etc/kubernetes/admin.conf",
        ] {
            assert!(out.generated.contains(&made.to_string()), "{made}");
        }
        assert!(
            !out.generated
                .contains(&"/etc/kubernetes/super-admin.conf".to_string())
        );
    }

    #[test]
    fn a_joining_master_needs_the_shared_certificates_and_only_warns_about_ca_keys() {
        let joining: Vec<&str> = FIRST_MASTER
            .iter()
            .copied()
            .filter(|f| !f.ends_with("super-admin.conf") && !f.ends_with("kubelet.conf"))
            .collect();
        let (_dir, root) = root_with(&joining);
        let out = join_control_plane(&root, "j.yaml", PKI).unwrap();
        assert_eq!(
            out.warnings,
            [
                "assuming external key for front-proxy CA: /etc/kubernetes/pki/front-proxy-ca.key is absent"
            ]
        );
        assert_eq!(
            out.generated,
            [
                "/etc/kubernetes/pki/apiserver.crt",
                "/etc/kubernetes/pki/apiserver.key"
            ]
        );
        for shared in ["sa.pub", "front-proxy-ca.crt"] {
            let (_dir, root) = root_with(&joining);
            std::fs::remove_file(root.path(&format!("{PKI}/{shared}"))).unwrap();
            assert_eq!(
                join_control_plane(&root, "j.yaml", PKI).unwrap_err(),
                format!(
                    "j.yaml: controlPlane (shared certificates) names {PKI}/{shared}, which \
                     does not exist"
                )
            );
        }
    }
}
