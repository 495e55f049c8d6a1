//! What the stand-in tests against a real etcd share: certificates, etcd, the API server
//! stand-in's flags as kubeadm writes them, kubectl and the Kubernetes error shape.
use cluster::pki::{
    Ca, CaKind, CertProfile, ClientCredential, Convention, KeyAlgorithm, Kubeconfig, SubjectKey,
    Usage,
};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use testkit::ChildGuard;

pub const ALGORITHM: KeyAlgorithm = KeyAlgorithm::EcdsaP256;

pub fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

/// Issues `profile` from `ca` and writes `<name>.crt`/`<name>.key` into `dir`.
pub fn issue(ca: &Ca, profile: &CertProfile, dir: &Path, name: &str) -> (String, String) {
    let issued = ca
        .issue(profile, SubjectKey::Fresh(ALGORITHM), now())
        .unwrap();
    let key = issued.key.unwrap().pem().to_owned();
    std::fs::write(dir.join(format!("{name}.crt")), &issued.cert_pem).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), &key).unwrap();
    (issued.cert_pem, key)
}

pub fn client(cn: &str, org: Option<&str>) -> CertProfile {
    CertProfile {
        name: cn.to_owned(),
        issuer: CaKind::Kubernetes,
        common_name: cn.to_owned(),
        organization: org.map(str::to_owned),
        usage: Usage::Client,
        dns_names: Vec::new(),
        ips: Vec::new(),
    }
}

/// Everything the processes of the test read.
pub struct Setup {
    pub dir: PathBuf,
    pub ca_pem: String,
    pub server: String,
    pub etcd_url: String,
}

impl Setup {
    pub fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    /// A kubeconfig for `cn`/`org` signed by `ca`, written as `<file>`.
    pub fn kubeconfig(&self, ca: &Ca, cn: &str, org: Option<&str>, file: &str) -> String {
        let (cert_pem, key_pem) = issue(ca, &client(cn, org), &self.dir, file);
        let config = Kubeconfig {
            cluster_name: "kubernetes".to_owned(),
            server: self.server.clone(),
            ca_pem: self.ca_pem.clone(),
            user: cn.to_owned(),
            credential: ClientCredential::Embedded { cert_pem, key_pem },
        };
        std::fs::write(self.dir.join(file), config.render()).unwrap();
        self.path(file)
    }

    /// A blocking HTTPS client presenting `<name>.crt`/`<name>.key`.
    pub fn http(&self, name: &str) -> reqwest::blocking::Client {
        let read = |f: String| std::fs::read(self.dir.join(f)).unwrap();
        let mut pem = read(format!("{name}.crt"));
        pem.extend(read(format!("{name}.key")));
        reqwest::blocking::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap())
            .identity(reqwest::Identity::from_pem(&pem).unwrap())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }
}

pub fn start_etcd(setup: &Setup, peer: u16) -> ChildGuard {
    let tls = EtcdTls {
        ca: setup.dir.join("etcd-ca.crt"),
        cert: setup.dir.join("etcd-server.crt"),
        key: setup.dir.join("etcd-server.key"),
    };
    etcd("e1", &setup.dir, &setup.etcd_url, peer, &tls)
}

/// The files of etcd's mutual TLS.
pub struct EtcdTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A one-member etcd named `name` with its data and log in `dir`, serving `url` (https) with
/// client certificates required, and the v3 JSON gateway the API server stand-in speaks.
pub fn etcd(name: &str, dir: &Path, url: &str, peer: u16, tls: &EtcdTls) -> ChildGuard {
    let log = std::fs::File::create(dir.join("etcd.log")).unwrap();
    let peer_url = format!("http://127.0.0.1:{peer}");
    let mut cmd = Command::new(testkit::which("etcd").unwrap());
    cmd.arg(format!("--name={name}"))
        .arg(format!("--data-dir={}", dir.join("etcd.data").display()))
        .arg(format!("--listen-client-urls={url}"))
        .arg(format!("--advertise-client-urls={url}"))
        .arg(format!("--listen-peer-urls={peer_url}"))
        .arg(format!("--initial-advertise-peer-urls={peer_url}"))
        .arg(format!("--initial-cluster={name}={peer_url}"))
        .arg("--client-cert-auth")
        .arg(format!("--trusted-ca-file={}", tls.ca.display()))
        .arg(format!("--cert-file={}", tls.cert.display()))
        .arg(format!("--key-file={}", tls.key.display()))
        .arg("--enable-grpc-gateway=true")
        .stdout(Stdio::null())
        .stderr(log);
    ChildGuard::spawn("etcd", &mut cmd)
}

/// The flags kubeadm's manifest gives kube-apiserver, on this test's files and ports.
pub fn kubeadm_flags(setup: &Setup, port: u16) -> Vec<String> {
    let p = |f: &str| setup.path(f);
    [
        "--advertise-address=127.0.0.1".to_owned(),
        "--allow-privileged=true".to_owned(),
        "--authorization-mode=Node,RBAC".to_owned(),
        "--bind-address=127.0.0.1".to_owned(),
        format!("--client-ca-file={}", p("ca.crt")),
        "--enable-admission-plugins=NodeRestriction".to_owned(),
        "--enable-bootstrap-token-auth=true".to_owned(),
        format!("--etcd-cafile={}", p("etcd-ca.crt")),
        format!("--etcd-certfile={}", p("apiserver-etcd-client.crt")),
        format!("--etcd-keyfile={}", p("apiserver-etcd-client.key")),
        format!("--etcd-servers={}", setup.etcd_url),
        format!("--kubelet-client-certificate={}", p("none.crt")),
        format!("--kubelet-client-key={}", p("none.key")),
        "--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname".to_owned(),
        format!("--proxy-client-cert-file={}", p("none.crt")),
        format!("--proxy-client-key-file={}", p("none.key")),
        "--requestheader-allowed-names=front-proxy-client".to_owned(),
        format!("--requestheader-client-ca-file={}", p("none.crt")),
        "--requestheader-extra-headers-prefix=X-Remote-Extra-".to_owned(),
        "--requestheader-group-headers=X-Remote-Group".to_owned(),
        "--requestheader-username-headers=X-Remote-User".to_owned(),
        format!("--secure-port={port}"),
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local".to_owned(),
        format!("--service-account-key-file={}", p("none.pub")),
        format!("--service-account-signing-key-file={}", p("none.key")),
        "--service-cluster-ip-range=10.96.0.0/12".to_owned(),
        format!("--tls-cert-file={}", p("apiserver.crt")),
        format!("--tls-private-key-file={}", p("apiserver.key")),
    ]
    .into()
}

/// kube-apiserver's stand-in with kubeadm's flags for `setup` on `port`, its log in `log`.
pub fn start_standin(setup: &Setup, port: u16, log: &Path) -> ChildGuard {
    let log = std::fs::File::create(log).unwrap();
    let mut cmd = standin();
    cmd.args(kubeadm_flags(setup, port))
        .stdout(std::process::Stdio::null())
        .stderr(log);
    ChildGuard::spawn("kube-apiserver-standin", &mut cmd)
}

pub fn standin() -> Command {
    Command::new(testkit::workspace_bin("kube-apiserver-standin"))
}

pub fn kubectl(kubeconfig: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(testkit::which("kubectl").unwrap())
        .arg(format!("--kubeconfig={kubeconfig}"))
        .arg("--request-timeout=10s")
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

pub fn json_of(response: reqwest::blocking::Response) -> (u16, Value) {
    let code = response.status().as_u16();
    (code, response.json().unwrap_or(Value::Null))
}

pub fn assert_status(got: (u16, Value), code: u16, reason: &str) {
    let (got_code, body) = got;
    assert_eq!(got_code, code, "{body}");
    assert_eq!(body["kind"], "Status", "{body}");
    assert_eq!(body["status"], "Failure", "{body}");
    assert_eq!(body["reason"], reason, "{body}");
    assert_eq!(body["code"], code, "{body}");
}

/// A cluster CA and an etcd CA, etcd's server certificate, the API server's etcd client and
/// serving certificates (for 127.0.0.1) in `dir`; then the setup, etcd's peer port and the API
/// server's port.
pub fn prepare(dir: &Path) -> (Ca, Setup, u16, u16) {
    let (etcd_port, peer_port, port) = (
        testkit::free_tcp_port(),
        testkit::free_tcp_port(),
        testkit::free_tcp_port(),
    );
    let ca = Ca::generate(CaKind::Kubernetes.common_name(), ALGORITHM, now()).unwrap();
    let etcd_ca = Ca::generate(CaKind::Etcd.common_name(), ALGORITHM, now()).unwrap();
    let setup = Setup {
        dir: dir.to_owned(),
        ca_pem: ca.cert_pem().to_owned(),
        server: format!("https://127.0.0.1:{port}"),
        etcd_url: format!("https://127.0.0.1:{etcd_port}"),
    };
    std::fs::write(dir.join("ca.crt"), ca.cert_pem()).unwrap();
    std::fs::write(dir.join("etcd-ca.crt"), etcd_ca.cert_pem()).unwrap();
    let localhost: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let etcd_server = CertProfile::etcd_server("e1", localhost);
    issue(&etcd_ca, &etcd_server, dir, "etcd-server");
    let etcd_client = CertProfile::apiserver_etcd_client(Convention::for_minor(33));
    issue(&etcd_ca, &etcd_client, dir, "apiserver-etcd-client");
    let mut server = client("kube-apiserver", None);
    server.usage = Usage::Server;
    server.ips = vec![localhost];
    server.dns_names = vec!["localhost".to_owned()];
    issue(&ca, &server, dir, "apiserver");

    (ca, setup, peer_port, port)
}
