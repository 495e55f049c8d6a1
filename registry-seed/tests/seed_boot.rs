//! Network boot from the real seed over plain HTTP, as iPXE asks for it (curl plays iPXE).

mod support;

use std::process::Command;

use support::seed::*;

/// The body of a GET that must succeed, HTTP status included.
fn get(url: &str) -> String {
    curl(&["--fail", url]).0
}

#[test]
fn machines_get_their_script_kernel_and_initrd() {
    if !testkit::require(&["curl"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster_file(dir.path(), &one_master());
    let boot = dir.path().join("boot");
    std::fs::create_dir_all(&boot).unwrap();
    let kernel: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(boot.join("vmlinuz"), &kernel).unwrap();
    std::fs::write(boot.join("initrd.img"), b"initrd").unwrap();
    let state = dir.path().join("state");
    let http_port = testkit::free_tcp_port();
    let http_listen = format!("127.0.0.1:{http_port}");
    let server = Server::start_with(
        &cluster,
        &state,
        "127.0.0.1:0",
        &[
            "--http-listen",
            &http_listen,
            "--boot-dir",
            boot.to_str().unwrap(),
            "--kernel-arg",
            "console=ttyS0",
        ],
    );
    let base = format!("http://{http_listen}");
    let pin = cli(&["pin", "--state-dir", state.to_str().unwrap()]);

    assert_eq!(
        get(&format!("{base}/boot.ipxe")),
        format!(
            "#!ipxe\nchain {base}/ipxe?mac=${{mac:hexhyp}}&uuid=${{uuid}}&serial=${{serial}}\n"
        )
    );
    let known = get(&format!("{base}/ipxe?mac=52-54-00-00-00-04&uuid=&serial="));
    let ntp = server.ntp_addr.unwrap();
    assert!(
        known.starts_with(&format!("#!ipxe\nkernel {base}/boot/vmlinuz ")),
        "{known}"
    );
    for word in [
        "launcher.seed=https://127.0.0.1:8443".to_string(),
        format!("launcher.pin={}", pin.trim()),
        format!("launcher.ntp={ntp}"),
        "console=ttyS0".to_string(),
        format!("initrd {base}/boot/initrd.img"),
    ] {
        assert!(known.contains(&word), "{word} missing from {known}");
    }
    let unknown = get(&format!("{base}/ipxe?mac=52-54-00-00-09-09&uuid=&serial="));
    assert!(
        unknown.contains("not in the seed's inventory") && unknown.contains("chain"),
        "{unknown}"
    );

    let whole = Command::new("curl")
        .args(["-sS", "--fail", &format!("{base}/boot/vmlinuz")])
        .output()
        .unwrap();
    assert_eq!(whole.stdout, kernel);
    let part = Command::new("curl")
        .args([
            "-sS",
            "--fail",
            "-r",
            "1000-1999",
            &format!("{base}/boot/vmlinuz"),
        ])
        .output()
        .unwrap();
    assert_eq!(part.stdout, &kernel[1000..2000]);
    // Only the boot files are served, and enrollment never over plain HTTP.
    for path in ["/boot/..%2fstate.redb", "/boot/cluster.toml", "/v1/enroll"] {
        let out = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-X",
                "POST",
                &format!("{base}{path}"),
            ])
            .output()
            .unwrap();
        let code = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(code == "404" || code == "405", "{path}: {code}");
    }
    drop(server);
}
