//! Static Pods, as the kubelet runs the manifests in its `staticPodPath`: each container's image
//! pulled through the real containerd (by the node's `certs.d` mirrors) unless present, and run
//! with the host's network and the manifest's hostPath volumes. A container whose task stopped,
//! or whose manifest changed, is started again; one whose manifest is gone is stopped.
//!
//! The stand-in drives containerd with `ctr` in the `k8s.io` namespace, where the CRI plugin and
//! firstboot's preload keep Kubernetes' images. It runs only host-network Pods (kubeadm's static
//! Pods all are) and hostPath volumes (all kubeadm's are).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::docs::str_at;

/// The label recording which manifest a container was started from.
const MANIFEST_LABEL: &str = "io.launcher.standin.manifest";
/// Container ids of static Pods start with this.
const PREFIX: &str = "k8s_";
const NAMESPACE: &str = "k8s.io";

/// A bind mount of a hostPath volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub host: String,
    pub container: String,
    pub read_only: bool,
    /// `DirectoryOrCreate`: made on the host when missing.
    pub create_dir: bool,
}

/// One container of a static Pod, ready for `ctr run`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// `k8s_<container>_<pod>`.
    pub id: String,
    pub image: String,
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub mounts: Vec<Mount>,
    /// The SHA-256 of the manifest it comes from.
    pub manifest: String,
    /// Its output, under the log directory, where the kubelet keeps it:
    /// `<namespace>_<pod>_<uid>/<container>/0.log`.
    pub log: String,
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The hostPath volumes of a Pod by name: `(path, type)`.
fn volumes(file: &str, spec: &Value) -> Result<BTreeMap<String, (String, String)>, String> {
    let mut out = BTreeMap::new();
    for volume in spec["volumes"].as_array().into_iter().flatten() {
        let name = str_at(volume, "name").unwrap_or_default();
        let Some(path) = str_at(volume, "hostPath/path") else {
            return Err(format!(
                "{file}: volume {name:?}: only hostPath volumes are supported"
            ));
        };
        let kind = str_at(volume, "hostPath/type").unwrap_or_default();
        out.insert(name.to_owned(), (path.to_owned(), kind.to_owned()));
    }
    Ok(out)
}

/// Refuses a name that is not a lowercase DNS name (`a-z`, `0-9`, `-`, `.`, no `..`), as the
/// API server does for the names the kubelet puts into paths.
fn dns_name(file: &str, what: &str, value: &str) -> Result<(), String> {
    let fits = (1..=253).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !value.contains("..")
        && !value.starts_with(['.', '-']);
    if fits {
        Ok(())
    } else {
        Err(format!("{file}: {what} {value:?} is not a DNS name"))
    }
}

/// Reads one static Pod manifest into the containers to run on `node`.
pub fn parse(file: &str, text: &str, node: &str) -> Result<Vec<Container>, String> {
    let yaml: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| format!("{file}: not valid YAML: {e}"))?;
    let pod = serde_json::to_value(yaml).map_err(|e| format!("{file}: {e}"))?;
    let (api, kind) = (
        str_at(&pod, "apiVersion").unwrap_or(""),
        str_at(&pod, "kind").unwrap_or(""),
    );
    if (api, kind) != ("v1", "Pod") {
        return Err(format!("{file}: {api} {kind} is not a v1 Pod"));
    }
    let name = str_at(&pod, "metadata/name")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| format!("{file}: metadata.name is missing"))?;
    let spec = &pod["spec"];
    if spec["hostNetwork"] != Value::Bool(true) {
        return Err(format!(
            "{file}: spec.hostNetwork is not true; the stand-in runs host-network Pods only"
        ));
    }
    let volumes = volumes(file, spec)?;
    let manifest = hex::encode(Sha256::digest(text.as_bytes()));
    let pod_name = format!("{name}-{node}");
    let namespace = str_at(&pod, "metadata/namespace")
        .filter(|n| !n.is_empty())
        .unwrap_or("default");
    // The names become the log's path, as they do the kubelet's: DNS names only.
    for (what, value) in [("metadata.name", name), ("metadata.namespace", namespace)] {
        dns_name(file, what, value)?;
    }
    // A static Pod's UID, as the kubelet's, is a hash of its manifest.
    let pod_dir = format!("{namespace}_{pod_name}_{}", &manifest[..32]);
    let mut out = Vec::new();
    for c in spec["containers"].as_array().into_iter().flatten() {
        let cname = str_at(c, "name").unwrap_or_default();
        dns_name(file, "container name", cname)?;
        let image = str_at(c, "image")
            .filter(|i| !i.is_empty())
            .ok_or_else(|| format!("{file}: container {cname:?}: image is missing"))?;
        let mut argv = strings(c.get("command"));
        if argv.is_empty() {
            return Err(format!(
                "{file}: container {cname:?}: command is missing (the stand-in images have no entrypoint)"
            ));
        }
        argv.extend(strings(c.get("args")));
        let env = c["env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| Some(format!("{}={}", str_at(e, "name")?, str_at(e, "value")?)))
            .collect();
        let mut mounts = Vec::new();
        for m in c["volumeMounts"].as_array().into_iter().flatten() {
            let vname = str_at(m, "name").unwrap_or_default();
            let (host, kind) = volumes.get(vname).ok_or_else(|| {
                format!("{file}: container {cname:?}: volumeMount {vname:?} names no volume")
            })?;
            mounts.push(Mount {
                host: host.clone(),
                container: str_at(m, "mountPath").unwrap_or(host).to_owned(),
                read_only: m["readOnly"] == Value::Bool(true),
                create_dir: kind == "DirectoryOrCreate",
            });
        }
        out.push(Container {
            id: format!("{PREFIX}{cname}_{pod_name}"),
            image: image.to_owned(),
            argv,
            env,
            mounts,
            manifest: manifest.clone(),
            log: format!("{pod_dir}/{cname}/0.log"),
        });
    }
    if out.is_empty() {
        return Err(format!("{file}: spec.containers is empty"));
    }
    Ok(out)
}

/// containerd through `ctr`.
#[derive(Debug, Clone)]
pub struct Ctr {
    /// The socket, from `--container-runtime-endpoint` (`unix://` removed).
    pub address: String,
    /// The `certs.d` directory of the node's registry mirrors.
    pub hosts_dir: String,
    /// Where each container's output goes, in the kubelet's layout (`/var/log/pods`): see
    /// [`Container::log`].
    pub log_dir: String,
    /// hostPath volumes are paths under this root (`/` on a host).
    pub root: crate::Root,
    /// Start containers without `pivot_root`, as containerd's CRI does when runc's options say
    /// `NoPivotRoot` (which firstboot sets on a host running from its initramfs, where the
    /// kernel refuses `pivot_root`): see [`no_pivot_root`].
    pub no_pivot: bool,
    /// The static-Pod containers and their manifests, once listed: this kubelet alone makes
    /// and removes them, so after the first round only their tasks are asked for. Each `ctr`
    /// is a process, seconds of CPU on a slow host.
    pub known: RefCell<Option<BTreeMap<String, String>>>,
}

/// Whether containerd's configuration sets runc's `NoPivotRoot = true`.
pub fn no_pivot_root(containerd_config: &str) -> bool {
    containerd_config.lines().any(|line| {
        let compact: String = line
            .split('#')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        compact == "NoPivotRoot=true"
    })
}

impl Ctr {
    fn run(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("ctr")
            .args(["--address", &self.address, "--namespace", NAMESPACE])
            .args(args)
            .output()
            .map_err(|e| format!("running ctr: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            // ctr logs its retries with timestamps first; its last line says why it failed.
            let err = String::from_utf8_lossy(&out.stderr);
            let why = err
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            Err(format!(
                "ctr {}: {}",
                args[0..2.min(args.len())].join(" "),
                why.trim()
            ))
        }
    }

    /// Task states by container id (`ctr task ls`: `TASK PID STATUS`).
    fn tasks(&self) -> Result<BTreeMap<String, String>, String> {
        Ok(self
            .run(&["task", "ls"])?
            .lines()
            .skip(1)
            .filter_map(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                Some((cols.first()?.to_string(), cols.get(2)?.to_string()))
            })
            .collect())
    }

    /// Static-Pod containers and the manifest each was started from.
    fn containers(&self) -> Result<BTreeMap<String, String>, String> {
        if let Some(known) = self.known.borrow().as_ref() {
            return Ok(known.clone());
        }
        let listed = self.list_containers()?;
        *self.known.borrow_mut() = Some(listed.clone());
        Ok(listed)
    }

    fn list_containers(&self) -> Result<BTreeMap<String, String>, String> {
        let mut out = BTreeMap::new();
        for id in self.run(&["containers", "ls", "-q"])?.lines() {
            if !id.starts_with(PREFIX) {
                continue;
            }
            let info: Value =
                serde_json::from_str(&self.run(&["containers", "info", id])?).unwrap_or_default();
            let manifest = str_at(&info, &format!("Labels/{MANIFEST_LABEL}")).unwrap_or("");
            out.insert(id.to_owned(), manifest.to_owned());
        }
        Ok(out)
    }

    fn remove(&self, id: &str) {
        let _ = self.run(&["task", "kill", "--signal", "SIGKILL", id]);
        for _ in 0..50 {
            match self.run(&["task", "delete", id]) {
                Err(e) if e.contains("running") => {
                    std::thread::sleep(std::time::Duration::from_millis(100))
                }
                _ => break,
            }
        }
        let _ = self.run(&["containers", "delete", id]);
        if let Some(known) = self.known.borrow_mut().as_mut() {
            known.remove(id);
        }
    }

    /// Stops and removes every static-Pod container, as `kubeadm reset` removes the
    /// Kubernetes-managed containers: their ids.
    pub fn remove_static_pods(&self) -> Result<Vec<String>, String> {
        let ids: Vec<String> = self.list_containers()?.into_keys().collect();
        for id in &ids {
            self.remove(id);
        }
        Ok(ids)
    }

    /// The last line a container wrote, which is where a process says why it stopped.
    fn last_output(&self, c: &Container) -> String {
        let log = Path::new(&self.log_dir).join(&c.log);
        // The shim copies the output into the file on its own; it may land just after the exit.
        let mut text = String::new();
        for _ in 0..20 {
            text = std::fs::read_to_string(&log).unwrap_or_default();
            if !text.trim().is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let line = text.lines().rev().find(|l| !l.trim().is_empty());
        // A container's output is anyone's text: no terminal controls, and bounded.
        line.unwrap_or("(no output)")
            .chars()
            .filter(|c| !c.is_control())
            .take(300)
            .collect()
    }

    fn ensure_image(&self, image: &str) -> Result<(), String> {
        let filter = format!("name=={image}");
        if !self
            .run(&["images", "ls", "-q", &filter])?
            .trim()
            .is_empty()
        {
            return Ok(());
        }
        self.run(&["images", "pull", "--hosts-dir", &self.hosts_dir, image])
            .map(|_| ())
            .map_err(|e| format!("pulling {image}: {e}"))
    }

    fn start(&self, c: &Container) -> Result<(), String> {
        self.ensure_image(&c.image)?;
        let log = Path::new(&self.log_dir).join(&c.log);
        let dir = log.parent().unwrap_or(Path::new(&self.log_dir));
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let label = format!("{MANIFEST_LABEL}={}", c.manifest);
        let log = format!("file://{}", log.display());
        let mut args: Vec<String> = ["run", "-d", "--net-host", "--label", &label]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if self.no_pivot {
            args.push("--no-pivot".into());
        }
        args.extend(["--log-uri".into(), log]);
        for e in &c.env {
            args.extend(["--env".into(), e.clone()]);
        }
        for m in &c.mounts {
            let host = self.root.path(&m.host);
            if m.create_dir {
                std::fs::create_dir_all(&host)
                    .map_err(|e| format!("creating the hostPath {}: {e}", m.host))?;
            }
            let mode = if m.read_only { "ro" } else { "rw" };
            args.extend([
                "--mount".into(),
                format!(
                    "type=bind,src={},dst={},options=rbind:{mode}",
                    host.display(),
                    m.container
                ),
            ]);
        }
        args.extend([c.image.clone(), c.id.clone()]);
        args.extend(c.argv.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let started = self.run(&args).map(|_| ());
        // A failed `ctr run` may leave its container behind: list again next round.
        let mut known = self.known.borrow_mut();
        match (&started, known.as_mut()) {
            (Ok(()), Some(known)) => {
                known.insert(c.id.clone(), c.manifest.clone());
            }
            _ => *known = None,
        }
        started
    }
}

/// What one round did, for the log: `(container, what)` pairs, and the errors.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Round {
    pub changes: Vec<String>,
    pub errors: Vec<String>,
}

/// Reads every manifest in `dir` (files not starting with `.`, sorted).
fn manifests(dir: &Path, node: &str, round: &mut Round) -> Vec<Container> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let file = path.display().to_string();
        match std::fs::read_to_string(&path)
            .map_err(|e| format!("reading {file}: {e}"))
            .and_then(|text| parse(&file, &text, node))
        {
            Ok(containers) => out.extend(containers),
            Err(e) => round.errors.push(e),
        }
    }
    out
}

/// Makes containerd run what the manifests in `dir` say, and nothing else of the static Pods.
pub fn reconcile(ctr: &Ctr, dir: &Path, node: &str) -> Round {
    let mut round = Round::default();
    let wanted = manifests(dir, node, &mut round);
    let (tasks, existing) = match ctr.tasks().and_then(|t| Ok((t, ctr.containers()?))) {
        Ok(both) => both,
        Err(e) => {
            round.errors.push(format!("containerd: {e}"));
            return round;
        }
    };
    for c in &wanted {
        let state = tasks.get(&c.id).map(String::as_str);
        let current = existing.get(&c.id);
        if state == Some("RUNNING") && current == Some(&c.manifest) {
            continue;
        }
        if state == Some("STOPPED") {
            round
                .errors
                .push(format!("{} exited: {}", c.id, ctr.last_output(c)));
        }
        if current.is_some() {
            ctr.remove(&c.id);
        }
        match ctr.start(c) {
            Ok(()) => round
                .changes
                .push(format!("started {} ({})", c.id, c.image)),
            Err(e) => round.errors.push(format!("{}: {e}", c.id)),
        }
    }
    for id in existing.keys() {
        if !wanted.iter().any(|c| &c.id == id) {
            ctr.remove(id);
            round
                .changes
                .push(format!("stopped {id} (its manifest is gone)"));
        }
    }
    round
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = "apiVersion: v1
kind: Pod
metadata: {name: kube-apiserver, namespace: kube-system}
spec:
  hostNetwork: true
  containers:
  - name: kube-apiserver
    image: 10.77.0.1:8443/kube-apiserver:v1.33.4
    command: [kube-apiserver, --secure-port=6443]
    volumeMounts:
    - {name: k8s-certs, mountPath: /etc/kubernetes/pki, readOnly: true}
    - {name: ca-certs, mountPath: /etc/ssl/certs}
  volumes:
  - name: k8s-certs
    hostPath: {path: /etc/kubernetes/pki, type: DirectoryOrCreate}
  - name: ca-certs
    hostPath: {path: /etc/ssl/certs, type: Directory}
";

    #[test]
    fn no_pivot_root_is_read_from_containerds_runc_options() {
        let on = "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n\
                  SystemdCgroup = true\n  NoPivotRoot = true\n";
        assert!(no_pivot_root(on));
        assert!(!no_pivot_root(&on.replace("true\n", "false\n")));
        assert!(!no_pivot_root("# NoPivotRoot = true\n"));
        assert!(!no_pivot_root(""));
    }

    #[test]
    fn a_kubeadm_style_manifest_becomes_one_container() {
        let [c] = parse("m.yaml", POD, "m1").unwrap().try_into().unwrap();
        assert_eq!(c.id, "k8s_kube-apiserver_kube-apiserver-m1");
        let uid = &hex::encode(Sha256::digest(POD.as_bytes()))[..32];
        assert_eq!(
            c.log,
            format!("kube-system_kube-apiserver-m1_{uid}/kube-apiserver/0.log")
        );
        assert_eq!(c.image, "10.77.0.1:8443/kube-apiserver:v1.33.4");
        assert_eq!(c.argv, ["kube-apiserver", "--secure-port=6443"]);
        assert_eq!(
            c.mounts,
            [
                Mount {
                    host: "/etc/kubernetes/pki".into(),
                    container: "/etc/kubernetes/pki".into(),
                    read_only: true,
                    create_dir: true,
                },
                Mount {
                    host: "/etc/ssl/certs".into(),
                    container: "/etc/ssl/certs".into(),
                    read_only: false,
                    create_dir: false,
                },
            ]
        );
        assert_eq!(c.manifest.len(), 64);
    }

    #[test]
    fn manifests_the_stand_in_cannot_run_are_refused_exactly() {
        let cases = [
            (
                POD.replace("kind: Pod", "kind: Deployment"),
                "m.yaml: v1 Deployment is not a v1 Pod",
            ),
            (
                POD.replace("hostNetwork: true", "hostNetwork: false"),
                "m.yaml: spec.hostNetwork is not true; the stand-in runs host-network Pods only",
            ),
            (
                POD.replace("    image: 10.77.0.1:8443/kube-apiserver:v1.33.4\n", ""),
                "m.yaml: container \"kube-apiserver\": image is missing",
            ),
            (
                POD.replace("    command: [kube-apiserver, --secure-port=6443]\n", ""),
                "m.yaml: container \"kube-apiserver\": command is missing (the stand-in images have no entrypoint)",
            ),
            (
                POD.replace("{name: ca-certs, mountPath", "{name: nope, mountPath"),
                "m.yaml: container \"kube-apiserver\": volumeMount \"nope\" names no volume",
            ),
            (
                POD.replace(
                    "hostPath: {path: /etc/ssl/certs, type: Directory}",
                    "emptyDir: {}",
                ),
                "m.yaml: volume \"ca-certs\": only hostPath volumes are supported",
            ),
            (
                POD.replace("name: kube-apiserver, namespace", "namespace"),
                "m.yaml: metadata.name is missing",
            ),
            (
                POD.replace("namespace: kube-system", "namespace: ../../etc"),
                "m.yaml: metadata.namespace \"../../etc\" is not a DNS name",
            ),
            (
                POD.replace(
                    "name: kube-apiserver, namespace",
                    "name: Api/Server, namespace",
                ),
                "m.yaml: metadata.name \"Api/Server\" is not a DNS name",
            ),
        ];
        for (text, error) in cases {
            assert_eq!(parse("m.yaml", &text, "m1").unwrap_err(), error);
        }
    }
}
