//! End to end: one master and three workers power on with blank disks and wrong clocks (the
//! master's in 2001): the master and the first worker PXE-boot from the seed in a lab namespace,
//! the second worker boots by UEFI from `image.iso` and the third from `disk.raw`, both baked
//! for this seed before it first ran (`launcher-seed pin --init`, `launcher-build --seed-url
//! --pin`). All wait to enroll while the seed's registry lacks kube-scheduler, go on once it
//! is imported, and reach `done` with a healthy etcd; the master's and a worker's resident
//! agents answer the seed's `health` command, and a `reset` brings the worker back with a new key; `down` then stops every process and removes the namespace. Their data disks,
//! read from outside afterwards, show what each host was given: the worker holds no CA key, and
//! the kubeadm stand-in on the master checked a v1beta4 config naming the external etcd and the
//! seed's registry, and the kubelet stand-in on the worker its seed-signed kubeconfig.

mod common;

use serde::Deserialize;

use std::process::Command;
use std::time::Duration;

use common::{DataDisk, exec_in, journal_plan, kube, namespaces, plan_file, print_logs, text};
use lab::plan::namespace_for;
use lab::procs::Procfs;
use lab::state::LabState;

/// CA keys a master holds and a worker never does.
const CA_KEYS: [&str; 2] = ["/etc/kubernetes/pki/ca.key", "/etc/kubernetes/pki/sa.key"];
/// CA keys no host holds: the seed signs every etcd and front-proxy certificate.
const SEED_ONLY_KEYS: [&str; 2] = [
    "/etc/kubernetes/pki/etcd/ca.key",
    "/etc/kubernetes/pki/front-proxy-ca.key",
];

/// `launcher-seed ARGS` against the lab's seed, from inside its namespace.
fn seed_cli(run: &std::path::Path, namespace: &str, args: &[&str]) -> String {
    let output = Command::new("ip")
        .args(["netns", "exec", namespace])
        .arg(testkit::workspace_bin("launcher-seed"))
        .args(args)
        .arg("--state-dir")
        .arg(run.join("seed"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "launcher-seed {args:?}: {}",
        text(&output.stderr)
    );
    text(&output.stdout)
}

/// `launcher-lab wait`: every host done again, within 15 minutes.
fn lab_wait(run: &std::path::Path) {
    let wait = common::lab(run, &["wait", "--timeout", "900"]);
    assert!(
        wait.status.success(),
        "{}{}",
        text(&wait.stdout),
        text(&wait.stderr)
    );
}

/// The worker's row of the seed's host list: (id, bound key).
fn worker_row(run: &std::path::Path, namespace: &str) -> (String, String) {
    let hosts: serde_json::Value =
        serde_json::from_str(&seed_cli(run, namespace, &["hosts", "ls", "--json"])).unwrap();
    let worker = hosts["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["hostname"] == "lab-w1")
        .expect("the worker's row")
        .clone();
    (
        worker["id"].as_str().unwrap().to_string(),
        worker["key"].as_str().unwrap_or_default().to_string(),
    )
}

/// The worker's disk is replaced: the machine comes back with a new identity key and is
/// refused (its record untouched) until the operator resets it; then it is done again under
/// the same id, bound to its new key.
fn a_new_disk_is_refused_until_the_host_is_reset(run: &std::path::Path, namespace: &str) {
    let (id, first_key) = worker_row(run, namespace);
    assert!(first_key.starts_with("sha256:"), "{first_key}");
    let off = common::lab(run, &["power", "off", "w1"]);
    assert!(off.status.success(), "{}", text(&off.stderr));
    let on = common::lab(run, &["power", "on", "w1", "--new-disk"]);
    assert!(on.status.success(), "{}", text(&on.stderr));
    let refusal = format!("host {id} is bound to another identity key");
    testkit::wait_for(
        "the seed to refuse the new disk's key",
        std::time::Duration::from_secs(600),
        || {
            let log = std::fs::read_to_string(run.join("seed.log")).unwrap_or_default();
            log.lines()
                .any(|l| l.contains("audit") && l.contains(&refusal))
                .then_some(())
        },
    );
    assert_eq!(worker_row(run, namespace), (id.clone(), first_key.clone()));
    let reset = seed_cli(run, namespace, &["hosts", "reset", &id]);
    assert!(reset.contains(&first_key), "{reset}");
    lab_wait(run);
    let (again, second_key) = worker_row(run, namespace);
    assert_eq!(again, id);
    assert!(
        second_key.starts_with("sha256:") && second_key != first_key,
        "{second_key}"
    );
    // Its kubelet, started afresh on the new disk, has its Node Ready again.
    kube::wait_all_ready(run, 4, std::time::Duration::from_secs(300));
}

/// Each host's resident agent answers the seed: `hosts command ID health` comes back with the
/// host's uptime and every unit of its role active (the master's etcd and keepalived too).
fn the_agents_answer_the_seed(run: &std::path::Path, namespace: &str) {
    let hosts: serde_json::Value =
        serde_json::from_str(&seed_cli(run, namespace, &["hosts", "ls", "--json"])).unwrap();
    for (hostname, units) in [
        (
            "lab-m1",
            "containerd active, kubelet active, launcher-etcd active, keepalived active",
        ),
        ("lab-w1", "containerd active, kubelet active"),
    ] {
        let id = hosts["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["hostname"] == hostname)
            .and_then(|h| h["id"].as_str())
            .unwrap_or_else(|| panic!("no row for {hostname}: {hosts}"))
            .to_string();
        let said = seed_cli(
            run,
            namespace,
            &["hosts", "command", &id, "health", "--wait", "120s"],
        );
        let prefix = format!("command c-0001 (health) of host {id}: up ");
        assert!(said.starts_with(&prefix), "{said}");
        assert!(said.trim_end().ends_with(units), "{said}");
    }
}

/// The seed asks the worker to reset: the seed unbinds its key when the agent says it will,
/// the worker clears its data disk at the next boot and is done again under the same id with
/// a new key, its Node Ready again.
fn a_reset_brings_the_worker_back_with_a_new_key(run: &std::path::Path, namespace: &str) {
    let (id, key) = worker_row(run, namespace);
    let said = seed_cli(
        run,
        namespace,
        &["hosts", "command", &id, "reset", "--wait", "120s"],
    );
    assert!(
        said.contains(") of host ")
            && said.contains(": resetting: the LAUNCHER-DATA disk is cleared"),
        "{said}"
    );
    // `wait` sees the worker done again only once it enrolled with its new key.
    testkit::wait_for(
        "the worker to come back with a new key",
        Duration::from_secs(600),
        || {
            let (again, new_key) = worker_row(run, namespace);
            (again == id && new_key.starts_with("sha256:") && new_key != key).then_some(())
        },
    );
    lab_wait(run);
    let console = std::fs::read_to_string(run.join("vm-2.console")).unwrap_or_default();
    assert!(
        console.contains("the seed asked for a reset: clearing /var/lib/launcher-data"),
        "w1's console does not show the reset"
    );
    kube::wait_all_ready(run, 4, Duration::from_secs(300));
}

/// Through the VIP, which the master holds: `kubectl get nodes` lists every host Ready (the
/// master with the control-plane role and, masters being schedulable, no taint); the API
/// server's certificate there chains to the cluster CA and carries kubeadm's names; a worker's
/// credential may change its own Node but not the master's; a certificate from another CA is
/// refused.
fn the_cluster_answers_at_the_vip(run: &std::path::Path, namespace: &str) {
    // A host is done only once the API server has its Node: all are there as soon as the
    // API answers, before any of them is Ready.
    let listed = testkit::wait_for("kubectl get nodes", Duration::from_secs(120), || {
        kube::nodes(run)
    });
    let mut names: Vec<&str> = listed.iter().map(|r| r.name.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        ["lab-m1", "lab-w1", "lab-w2", "lab-w3"],
        "{listed:?}"
    );
    let rows = kube::wait_all_ready(run, 4, std::time::Duration::from_secs(600));
    let master = rows
        .iter()
        .find(|r| r.control_plane)
        .expect("a control-plane Node");
    let worker = rows.iter().find(|r| r.name == "lab-w1").expect("w1's Node");
    assert!(master.taints.is_empty(), "{rows:?}");
    // Each kubelet names its address: kubeadm's --node-ip when it started with one, else, as
    // the kubelet does, that of the interface its default route leaves by.
    assert_eq!(
        master.internal_ip.as_deref(),
        Some("10.77.0.101"),
        "{rows:?}"
    );
    assert_eq!(
        worker.internal_ip.as_deref(),
        Some("10.77.0.102"),
        "{rows:?}"
    );
    assert_eq!(kube::vip_holder(run).as_deref(), Some("m1"));

    let dir = tempfile::tempdir().unwrap();
    let ca = kube::kubeconfig_ca(&run.join("admin.kubeconfig"));
    std::fs::write(dir.path().join("ca.crt"), &ca).unwrap();
    std::fs::write(
        dir.path().join("served.crt"),
        kube::served_certificate(namespace),
    )
    .unwrap();
    let (ok, out) = kube::openssl(dir.path(), &["verify", "-CAfile", "ca.crt", "served.crt"]);
    assert!(ok, "{out}");
    let (ok, sans) = kube::openssl(
        dir.path(),
        &[
            "x509",
            "-noout",
            "-ext",
            "subjectAltName",
            "-in",
            "served.crt",
        ],
    );
    assert!(ok, "{sans}");
    // `X509v3 Subject Alternative Name:` on its own line, then the names.
    let sans: String = sans.lines().skip(1).collect();
    let node_name = format!("DNS:{}", master.name);
    for name in [
        node_name.as_str(),
        "DNS:kubernetes",
        "DNS:kubernetes.default",
        "DNS:kubernetes.default.svc",
        "DNS:kubernetes.default.svc.cluster.local",
        "IP Address:10.96.0.1",
        "IP Address:10.77.0.101",
        "IP Address:10.77.0.10",
    ] {
        assert!(
            sans.split(',').any(|s| s.trim() == name),
            "{name} missing: {sans}"
        );
    }

    let node_config = dir.path().join("node.kubeconfig");
    let user = format!("system:node:{}", worker.name);
    let out_path = node_config.to_str().unwrap();
    seed_cli(
        run,
        namespace,
        &[
            "kubeconfig",
            "--user",
            &user,
            "--group",
            "system:nodes",
            "--out",
            out_path,
        ],
    );
    let as_node = |target: &str| {
        let out = Command::new("ip")
            .args(["netns", "exec", namespace, "kubectl", "--kubeconfig"])
            .arg(&node_config)
            .args([
                "label",
                "node",
                target,
                "launcher.test/touched=yes",
                "--overwrite",
            ])
            .output()
            .unwrap();
        (out.status.success(), text(&out.stdout) + &text(&out.stderr))
    };
    let (ok, out) = as_node(&worker.name);
    assert!(ok, "{out}");
    let (ok, out) = as_node(&master.name);
    assert!(!ok && out.contains("forbidden"), "{out}");

    // A v3 client certificate as a real one is (OpenSSL's `x509 -req` makes v1 without
    // extensions, which TLS libraries refuse before any authentication).
    std::fs::write(
        dir.path().join("client.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    for args in [
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "other-ca.key",
            "-out",
            "other-ca.crt",
            "-subj",
            "/CN=kubernetes",
            "-days",
            "1",
        ][..],
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "other.key",
            "-out",
            "other.csr",
            "-subj",
            "/O=kubeadm:cluster-admins/CN=kubernetes-admin",
        ],
        &[
            "x509",
            "-req",
            "-in",
            "other.csr",
            "-CA",
            "other-ca.crt",
            "-CAkey",
            "other-ca.key",
            "-CAcreateserial",
            "-out",
            "other.crt",
            "-days",
            "1",
            "-extfile",
            "client.ext",
        ],
    ] {
        let (ok, out) = kube::openssl(dir.path(), args);
        assert!(ok, "openssl {args:?}: {out}");
    }
    let path = |f: &str| dir.path().join(f);
    let status = kube::curl_status(
        namespace,
        &path("ca.crt"),
        &path("other.crt"),
        &path("other.key"),
        "/api/v1/nodes",
    );
    assert_eq!(status, "401");
}

/// What kubeadm's preflight and the kubelet need on every host, seen from inside the VMs
/// (through their guest agent): forwarding on, `br_netfilter` loaded with its sysctl set, no
/// swap, no name server of the build machine; and containerd, through the hosts file firstboot wrote for the seed's registry,
/// reports an image the seed lacks as not found.
fn the_hosts_are_ready_for_kubeadm(run: &std::path::Path) {
    let read = |vm: &str, command: &[&str]| -> (bool, String, String) {
        let out = exec_in(run, vm, command);
        (out.status.success(), text(&out.stdout), text(&out.stderr))
    };
    for vm in ["m1", "w1"] {
        for (file, want) in [
            ("/proc/sys/net/ipv4/ip_forward", "1"),
            ("/proc/sys/net/bridge/bridge-nf-call-iptables", "1"),
        ] {
            let (ok, out, err) = read(vm, &["cat", file]);
            assert!(ok && out.trim() == want, "{vm}: {file}: {out}{err}");
        }
        let (ok, swaps, err) = read(vm, &["cat", "/proc/swaps"]);
        assert!(ok && swaps.lines().count() == 1, "{vm} swaps: {swaps}{err}");
        // No name server of the machine that built the image.
        let (ok, resolv, err) = read(vm, &["cat", "/etc/resolv.conf"]);
        assert!(
            ok && !resolv.contains("nameserver"),
            "{vm} resolv.conf: {resolv}{err}"
        );
    }
    // The operator's kube-apiserver flag (`--api-server-arg`, the cluster file's
    // `[cluster.api_server_extra_args]`) is on the command line kubeadm wrote, and the API
    // server runs with it (it answers through the VIP above).
    let (ok, manifest, err) = read(
        "m1",
        &["cat", "/etc/kubernetes/manifests/kube-apiserver.yaml"],
    );
    assert!(
        ok && manifest.contains("- --audit-log-maxage=30\n"),
        "m1's kube-apiserver.yaml: {manifest}{err}"
    );
    // The worker's own check of its Node, with its kubelet's kubeconfig, then with one that
    // trusts another CA (the seed's) in place of the cluster's: the TLS verdict.
    let (ok, out, err) = read("w1", &["launcher-firstboot", "check-node"]);
    assert!(
        ok && out.starts_with("Node lab-w1 is registered; Ready: True"),
        "{out}{err}"
    );
    let (ok, out, err) = read(
        "w1",
        &[
            "/bin/sh",
            "-c",
            "sed 's|certificate-authority[-a-z]*: .*|certificate-authority: /etc/launcher/seed-ca.crt|' \
             /etc/kubernetes/kubelet.conf > /run/wrong-ca.conf && \
             launcher-firstboot check-node --kubeconfig /run/wrong-ca.conf",
        ],
    );
    assert!(
        !ok && err.contains("Node lab-w1 is not registered: ")
            && err.contains("invalid peer certificate"),
        "{out}{err}"
    );
    let (ok, images, err) = read("m1", &["ctr", "-n", "k8s.io", "images", "ls", "-q"]);
    assert!(
        ok && images
            .lines()
            .any(|l| l == "10.77.0.1:8443/kube-apiserver:v1.33.4"),
        "m1's images: {images}{err}"
    );
    let missing = "10.77.0.1:8443/kube-scheduler:v1.33.99";
    let (ok, _, err) = read(
        "w1",
        &[
            "ctr",
            "-n",
            "k8s.io",
            "images",
            "pull",
            "--hosts-dir",
            "/etc/containerd/certs.d",
            missing,
        ],
    );
    assert!(!ok, "pulled {missing}");
    assert!(err.contains(&format!("{missing}: not found")), "{err}");
}

/// The image baked for this lab's seed as an ISO and a raw disk, before the seed first runs:
/// its CA made ahead (`launcher-seed pin --init`), its URL and pin given to the builder, and on
/// the kernel command line what the lab gives its network-booted VMs: format the blank data
/// disk, every service's log on the console.
fn media_for_the_seed(run: &std::path::Path) -> std::path::PathBuf {
    let pinned = Command::new(testkit::workspace_bin("launcher-seed"))
        .args(["pin", "--init", "--state-dir"])
        .arg(run.join("seed"))
        .output()
        .unwrap();
    assert!(pinned.status.success(), "{}", text(&pinned.stderr));
    let pin = text(&pinned.stdout).trim().to_string();
    common::bake(
        &run.join("media"),
        |def| {
            let cmdline = def["kernel"]["cmdline"].as_array_mut().unwrap();
            for arg in ["launcher.wipe=1", "systemd.journald.forward_to_console=1"] {
                cmdline.push(toml::Value::String(arg.into()));
            }
        },
        &[
            "--format",
            "iso,disk",
            "--seed-url",
            "https://10.77.0.1:8443",
            "--pin",
            &pin,
        ],
    )
}

/// The ISO and disk hosts came up from their media, not the network: the seed was never asked
/// for their boot scripts (it was for the PXE hosts'), the seed's URL is not on their kernel
/// command line (it is baked into the image), the disk host's root file system is the disk's
/// ext4 partition, and each formatted its blank data disk and keeps its state there.
fn the_media_hosts_booted_from_their_media(run: &std::path::Path) {
    let log = std::fs::read_to_string(run.join("seed.log")).unwrap();
    let asked = |mac: &str| {
        log.lines().any(|l| {
            l.contains("boot script asked for")
                && (l.contains(mac) || l.contains(&mac.replace(':', "-")))
        })
    };
    for (mac, pxe) in [
        ("52:54:00:77:00:01", true),
        ("52:54:00:77:00:02", true),
        ("52:54:00:77:00:03", false),
        ("52:54:00:77:00:04", false),
    ] {
        assert_eq!(asked(mac), pxe, "boot script asked for by {mac}");
    }
    for (vm, root) in [("w2", "rootfs"), ("w3", "ext4")] {
        let out = exec_in(
            run,
            vm,
            &[
                "/bin/sh",
                "-c",
                "cat /proc/cmdline; findmnt -n -o FSTYPE /; \
                 findmnt -n -o SOURCE,FSTYPE /var/lib/launcher-data",
            ],
        );
        let lines: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
        assert!(
            out.status.success() && lines.len() == 3,
            "{vm}: {lines:?}{}",
            text(&out.stderr)
        );
        assert!(
            lines[0].contains("launcher.wipe=1") && !lines[0].contains("launcher.seed="),
            "{vm}'s command line: {}",
            lines[0]
        );
        assert_eq!(lines[1].trim(), root, "{vm}'s root file system");
        assert!(lines[2].ends_with("ext4"), "{vm}'s data disk: {}", lines[2]);
    }
}

/// Every VM asks to enroll while the seed's registry lacks kube-scheduler: each is told so on
/// its console, and the seed records neither. The import into the running seed's state
/// directory then lets them in.
fn hosts_wait_for_the_held_image(run: &std::path::Path) {
    let state = testkit::wait_for("the lab's state", Duration::from_secs(120), || {
        LabState::load(run).ok().flatten().and_then(|s| s.options)
    });
    let plan = lab::plan::LabPlan::new(state).unwrap();
    let missing = format!("{}/kube-scheduler:v1.33.4", plan.registry());
    let told = format!(
        "waiting: the seed's registry lacks 1 image this cluster pulls: {missing}; no host installs until they are imported"
    );
    for vm in &plan.vms {
        testkit::wait_for(
            &format!("{} to be told it waits for {missing}", vm.label),
            Duration::from_secs(900),
            || {
                let console = std::fs::read_to_string(&vm.console).unwrap_or_default();
                lab::watch::strip_ansi(&console)
                    .contains(&told)
                    .then_some(())
            },
        );
    }
    let status = lab::seed_api::read_status(&plan).expect("the seed answers");
    assert_eq!(status.missing_images, std::slice::from_ref(&missing));
    assert!(status.hosts.is_empty(), "{:?}", status.hosts);
    let imported = Command::new(testkit::workspace_bin("launcher-seed"))
        .args(["images", "import", "--state-dir"])
        .arg(plan.seed_dir())
        .arg(run.join("images/kube-scheduler.tar"))
        .output()
        .unwrap();
    assert!(imported.status.success(), "{}", text(&imported.stderr));
}

#[test]
fn a_master_and_workers_boot_by_pxe_iso_and_disk_and_reach_done() {
    let Some(image) = common::image_or_skip() else {
        return;
    };
    let run_holder = tempfile::tempdir().unwrap();
    let run = run_holder.path().to_path_buf();
    let media = media_for_the_seed(&run);
    let iso = format!("w2={}", media.join("image.iso").display());
    let disk = format!("w3={}", media.join("disk.raw").display());
    // The seed starts without kube-scheduler: the hosts wait to enroll until it is imported.
    let (up_out, up_err) = (run.join("up.out"), run.join("up.err"));
    let mut up = common::spawn_up(
        &run,
        &image,
        &[
            "--masters",
            "1",
            "--workers",
            "3",
            "--media",
            &iso,
            "--media",
            &disk,
            "--timeout",
            "1500",
            "--hold-image",
            "kube-scheduler",
            "--api-server-arg",
            "audit-log-maxage=30",
        ],
    );
    let held = std::panic::catch_unwind(|| hosts_wait_for_the_held_image(&run));
    if held.is_err() {
        up.kill();
    }
    let up_status = testkit::wait_for("launcher-lab up to end", Duration::from_secs(1600), || {
        up.child.try_wait().unwrap()
    });
    let stdout = std::fs::read_to_string(&up_out).unwrap_or_default();
    let stderr = std::fs::read_to_string(&up_err).unwrap_or_default();
    let state = LabState::load(&run).unwrap();
    let checked = held.and_then(|()| std::panic::catch_unwind(|| {
        assert!(
            up_status.success(),
            "launcher-lab up failed\n{stdout}\n{stderr}"
        );
        assert!(
            stdout.contains(
                "hosts wait to enroll: the seed's registry lacks 10.77.0.1:8443/kube-scheduler:v1.33.4"
            ),
            "{stdout}"
        );
        assert!(stdout.contains("every host is done"), "{stdout}");
        assert!(stdout.contains("m1 (master"), "{stdout}");
        assert!(stdout.contains("w1 (worker"), "{stdout}");
        assert!(stdout.contains("done succeeded"), "{stdout}");
        assert!(stdout.contains(" voting   healthy "), "{stdout}");
        assert!(stdout.contains("the cluster is up"), "{stdout}");
        let state = state.as_ref().expect("a running lab has a state file");
        assert_eq!(state.namespace, namespace_for(&run));
        // The seed, dnsmasq and four VMs.
        assert_eq!(state.processes.len(), 6, "{state:?}");
        assert!(namespaces().contains(&state.namespace));
        // m1 powered on in 2001 (systemd advances a clock that old to its own epoch, still
        // months behind) and stepped its clock from the seed before enrolling.
        let m1 = stdout
            .lines()
            .find(|l| l.trim_start().starts_with("m1 "))
            .unwrap_or_default();
        assert!(
            m1.contains("rtc 2001-01-01T00:00:00")
                && m1.contains("behind the seed, then")
                && m1.contains(" ms off"),
            "{stdout}"
        );
        the_cluster_answers_at_the_vip(&run, &state.namespace);
        the_agents_answer_the_seed(&run, &state.namespace);
        the_hosts_are_ready_for_kubeadm(&run);
        the_media_hosts_booted_from_their_media(&run);
        a_new_disk_is_refused_until_the_host_is_reset(&run, &state.namespace);
        a_reset_brings_the_worker_back_with_a_new_key(&run, &state.namespace);
    }));
    if let Err(panic) = checked {
        print_logs(&run);
        let _ = common::lab(&run, &["down"]);
        std::panic::resume_unwind(panic);
    }
    let state = state.unwrap();

    let down = common::lab(&run, &["down"]);
    assert!(down.status.success(), "{}", text(&down.stderr));
    for p in &state.processes {
        assert!(
            !p.runs(&Procfs::system()),
            "{} ({}) still runs after down",
            p.name,
            p.pid
        );
    }
    assert!(!namespaces().contains(&state.namespace));
    assert_eq!(LabState::load(&run).unwrap(), None);
    common::assert_nothing_left(&run, &state);

    let master = DataDisk::open(&run.join("vm-1.data.raw"));
    let worker = DataDisk::open(&run.join("vm-2.data.raw"));
    let (master_plan, worker_plan) = (journal_plan(&master), journal_plan(&worker));
    assert_eq!(master_plan["role"], "master", "{master_plan}");
    assert_eq!(worker_plan["role"], "worker", "{worker_plan}");

    // The worker's tree has no CA key: not in its plan, and not a byte of the cluster CA's key
    // anywhere on its disk, where the master's disk has it.
    for key in CA_KEYS {
        assert!(
            plan_file(&master_plan, key).is_some(),
            "the master lacks {key}"
        );
        assert_eq!(plan_file(&worker_plan, key), None, "the worker got {key}");
    }
    for key in SEED_ONLY_KEYS {
        assert_eq!(plan_file(&master_plan, key), None, "the master got {key}");
        assert_eq!(plan_file(&worker_plan, key), None, "the worker got {key}");
    }
    let ca_key = plan_file(&master_plan, CA_KEYS[0]).unwrap();
    let key_line = ca_key
        .lines()
        .find(|l| !l.starts_with("-----") && l.len() >= 40)
        .expect("a PEM body line");
    assert!(master.holds_bytes(key_line));
    assert!(
        !worker.holds_bytes(key_line),
        "the CA key is on the worker's disk"
    );

    // The kubeadm stand-in on the master checked and recorded a v1beta4 config naming the
    // external etcd and the seed's registry.
    let record = master
        .read("launcher/standin/kubeadm-init.json")
        .expect("the stand-in recorded kubeadm init");
    let record: serde_json::Value = serde_json::from_str(&record).unwrap();
    assert_eq!(record["standin_for"], "kubeadm");
    assert_eq!(
        record["checked"]["api_version"], "kubeadm.k8s.io/v1beta4",
        "{record}"
    );
    let config = master
        .read("launcher/standin/kubeadm-init.yaml")
        .expect("the stand-in kept the config it was given");
    let cluster_config = serde_yaml::Deserializer::from_str(&config)
        .map(|d| serde_yaml::Value::deserialize(d).unwrap())
        .find(|d| d["kind"] == "ClusterConfiguration")
        .expect("a ClusterConfiguration");
    assert_eq!(cluster_config["apiVersion"], "kubeadm.k8s.io/v1beta4");
    assert_eq!(cluster_config["imageRepository"], "10.77.0.1:8443");
    let endpoints: Vec<&str> = cluster_config["etcd"]["external"]["endpoints"]
        .as_sequence()
        .expect("external etcd endpoints")
        .iter()
        .filter_map(|e| e.as_str())
        .collect();
    assert_eq!(endpoints, ["https://10.77.0.101:2379"]);
    // The worker runs no kubeadm: the kubelet stand-in checked its seed-signed kubeconfig,
    // which points at the control-plane endpoint.
    assert_eq!(worker.read("launcher/standin/kubeadm-join.json"), None);
    let kubelet = worker
        .read("launcher/standin/kubelet.json")
        .expect("the kubelet stand-in recorded its start on the worker");
    let kubelet: serde_json::Value = serde_json::from_str(&kubelet).unwrap();
    assert_eq!(kubelet["standin_for"], "kubelet");
    assert_eq!(kubelet["server"], "https://10.77.0.10:6443", "{kubelet}");
}
