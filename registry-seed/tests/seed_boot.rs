//! Network boot from the real seed over plain HTTP and over HTTPS (HTTP/1.1 and HTTP/2), as
//! iPXE asks for it (curl plays iPXE).

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
    over_https_every_url_is_https(&server, &state.join("seed-ca.crt"));
    drop(server);
}

/// A trusted iPXE asks over HTTPS: the scripts send it on over HTTPS to the address it used,
/// whether it speaks HTTP/1.1 (the `Host` header) or HTTP/2 (the URI's authority).
fn over_https_every_url_is_https(server: &Server, ca: &std::path::Path) {
    let base = server.url();
    for version in ["--http1.1", "--http2"] {
        let get = |path: &str| {
            let (body, _) = curl(&[
                "--fail",
                version,
                "--cacert",
                ca.to_str().unwrap(),
                "-w",
                "\n%{http_version}",
                &format!("{base}{path}"),
            ]);
            let (body, used) = body.rsplit_once('\n').unwrap();
            let want = if version == "--http2" { "2" } else { "1.1" };
            assert_eq!(used, want, "{version} {path}");
            body.to_string()
        };
        assert_eq!(
            get("/boot.ipxe"),
            format!(
                "#!ipxe\nchain {base}/ipxe?mac=${{mac:hexhyp}}&uuid=${{uuid}}&serial=${{serial}}\n"
            ),
            "{version}"
        );
        let known = get("/ipxe?mac=52-54-00-00-00-04&uuid=&serial=");
        assert!(
            known.starts_with(&format!("#!ipxe\nkernel {base}/boot/vmlinuz ")),
            "{version}: {known}"
        );
        assert!(
            known.contains(&format!("\ninitrd {base}/boot/initrd.img\n")),
            "{version}: {known}"
        );
        assert_eq!(get("/boot/initrd.img"), "initrd");
    }
    // The seed logs each boot file it serves with the scheme it was asked over.
    let log = std::fs::read_to_string(server.state_dir.join("seed.log")).unwrap();
    let log = without_colours(&log);
    for (file, scheme) in [("vmlinuz", "http"), ("initrd.img", "https")] {
        assert!(
            log.lines().any(|l| l.contains("boot file asked for")
                && l.contains(&format!("file={file}"))
                && l.contains(&format!("scheme=\"{scheme}\""))),
            "{file} over {scheme}: {log}"
        );
    }
}

/// `text` without the terminal colour sequences the seed's log carries.
fn without_colours(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|c| c.is_ascii_alphabetic());
        } else {
            out.push(c);
        }
    }
    out
}

/// Clients that ask for the initrd and then read nothing hold the places of the downloads
/// streamed at once (128) only until `--send-timeout`: a machine asking after them still gets
/// the whole file, once the stalled ones are cut off.
#[test]
fn stalled_downloads_give_their_places_up_at_the_send_timeout() {
    use std::io::{Read, Write};
    if !testkit::require(&["curl"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster_file(dir.path(), &one_master());
    let boot = dir.path().join("boot");
    std::fs::create_dir_all(&boot).unwrap();
    // Far more than a socket's buffers hold: every stalled answer stays unfinished.
    let initrd: Vec<u8> = (0..16u32 << 20).map(|i| (i % 253) as u8).collect();
    std::fs::write(boot.join("initrd.img"), &initrd).unwrap();
    std::fs::write(boot.join("vmlinuz"), b"kernel").unwrap();
    let http_listen = format!("127.0.0.1:{}", testkit::free_tcp_port());
    let _server = Server::start_with(
        &cluster,
        &dir.path().join("state"),
        "127.0.0.1:0",
        &[
            "--http-listen",
            &http_listen,
            "--boot-dir",
            boot.to_str().unwrap(),
            "--send-timeout",
            "3",
            // every client here is 127.0.0.1
            "--downloads-per-source",
            "0",
        ],
    );
    let mut stalled = Vec::new();
    for _ in 0..128 {
        let mut conn = std::net::TcpStream::connect(&http_listen).unwrap();
        write!(
            conn,
            "GET /boot/initrd.img HTTP/1.1\r\nhost: {http_listen}\r\n\r\n"
        )
        .unwrap();
        stalled.push(conn);
    }
    // Each stalled client got its answer's head: its place is taken.
    for conn in &mut stalled {
        conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut head = [0u8; 12];
        conn.read_exact(&mut head).unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");
    }
    let started = std::time::Instant::now();
    let out = Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "30", "-o", "-"])
        .arg(format!("http://{http_listen}/boot/initrd.img"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout == initrd,
        "the whole initrd, {} bytes",
        out.stdout.len()
    );
    let waited = started.elapsed();
    assert!(
        waited >= std::time::Duration::from_secs(2),
        "it got a place at once ({waited:?}): the 128 stalled ones did not hold theirs"
    );
    drop(stalled);
}

/// One address may have 16 downloads streaming at once: the seventeenth is answered 429 with
/// `Retry-After`, and the machine's next try, once one has ended, gets the file.
#[test]
fn one_address_gets_at_most_sixteen_downloads_at_once() {
    use std::io::{Read, Write};
    if !testkit::require(&["curl"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster_file(dir.path(), &one_master());
    let boot = dir.path().join("boot");
    std::fs::create_dir_all(&boot).unwrap();
    let initrd: Vec<u8> = (0..16u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(boot.join("initrd.img"), &initrd).unwrap();
    std::fs::write(boot.join("vmlinuz"), b"kernel").unwrap();
    let http_listen = format!("127.0.0.1:{}", testkit::free_tcp_port());
    let _server = Server::start_with(
        &cluster,
        &dir.path().join("state"),
        "127.0.0.1:0",
        &[
            "--http-listen",
            &http_listen,
            "--boot-dir",
            boot.to_str().unwrap(),
        ],
    );
    let mut held = Vec::new();
    for _ in 0..16 {
        let mut conn = std::net::TcpStream::connect(&http_listen).unwrap();
        write!(
            conn,
            "GET /boot/initrd.img HTTP/1.1\r\nhost: {http_listen}\r\n\r\n"
        )
        .unwrap();
        let mut head = [0u8; 12];
        conn.read_exact(&mut head).unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");
        held.push(conn);
    }
    let url = format!("http://{http_listen}/boot/initrd.img");
    let (body, _) = curl(&["-i", &url]);
    let head = body
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 429"), "{head}");
    assert!(head.contains("retry-after: 1"), "{head}");
    assert!(
        body.contains(
            "this address already has 16 downloads streaming, the most one address may have at once"
        ),
        "{body}"
    );
    drop(held.pop());
    let out = Command::new("curl")
        .args([
            "-sS",
            "--fail",
            "--retry",
            "3",
            "--retry-delay",
            "1",
            "-o",
            "-",
            &url,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout == initrd, "{} bytes", out.stdout.len());
}
