//! `kubelet-standin`: a stand-in for Kubernetes' kubelet that checks and records its flags.

use anyhow::bail;
use standins::{RECORD_DIR, Root, kubelet};

const HELP: &str = "kubelet-standin: a STAND-IN for Kubernetes' kubelet, not the kubelet itself.

It checks its configuration and records it, then stays running like the daemon would (or exits
with --exit-after-checks). It runs no pods.

usage:
  kubelet-standin --config FILE --kubeconfig FILE [--exit-after-checks]
                  [--bootstrap-kubeconfig FILE] [--container-runtime-endpoint X]
                  [--node-ip X] [--hostname-override X]

Checks: --config is one kubelet.config.k8s.io/v1beta1 KubeletConfiguration whose client CA and
TLS files exist; --kubeconfig is a v1 Config whose current context has an https server, a CA and
a client certificate and key (inline or existing files). --bootstrap-kubeconfig (which kubeadm's
kubelet drop-in always passes) is recorded; like the kubelet, it is not read while --kubeconfig
exists, and the stand-in needs --kubeconfig. Any other flag is refused.
Records: /var/lib/launcher/standin/kubelet.json (argv, checks) and kubelet-config.yaml.
LAUNCHER_STANDIN_ROOT places every path under another directory.";

#[derive(Debug, Default)]
struct Flags {
    config: Option<String>,
    kubeconfig: Option<String>,
    bootstrap_kubeconfig: Option<String>,
    exit: bool,
}

fn parse(args: &[String]) -> anyhow::Result<Option<Flags>> {
    let mut f = Flags::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (arg.as_str(), None),
        };
        let mut value = || inline.clone().or_else(|| it.next().cloned());
        match name {
            "-h" | "--help" => {
                println!("{HELP}");
                return Ok(None);
            }
            "--exit-after-checks" => f.exit = true,
            "--config" => f.config = value(),
            "--kubeconfig" => f.kubeconfig = value(),
            "--bootstrap-kubeconfig" => {
                f.bootstrap_kubeconfig = value();
                if f.bootstrap_kubeconfig.is_none() {
                    bail!("{name} needs a value");
                }
            }
            "--container-runtime-endpoint" | "--node-ip" | "--hostname-override" => {
                if value().is_none() {
                    bail!("{name} needs a value");
                }
            }
            other => bail!("kubelet-standin does not accept {other:?} (see --help)"),
        }
    }
    if f.config.is_none() || f.kubeconfig.is_none() {
        bail!("kubelet-standin needs --config FILE and --kubeconfig FILE");
    }
    Ok(Some(f))
}

fn run(args: &[String]) -> anyhow::Result<bool> {
    let Some(flags) = parse(args)? else {
        return Ok(true);
    };
    let root = Root::from_env();
    let (config, kubeconfig) = (flags.config.unwrap(), flags.kubeconfig.unwrap());
    let mut files = Vec::new();
    let config_text = standins::read(&root, &config)?;
    kubelet::check_config(&root, &config, &config_text, &mut files)
        .map_err(|e| anyhow::anyhow!("refused: {e}"))?;
    let kubeconfig_text = standins::read(&root, &kubeconfig)?;
    let server = kubelet::check_kubeconfig(&root, &kubeconfig, &kubeconfig_text, &mut files)
        .map_err(|e| anyhow::anyhow!("refused: {e}"))?;
    standins::write(
        &root,
        &format!("{RECORD_DIR}/kubelet-config.yaml"),
        config_text.as_bytes(),
    )?;
    let record = serde_json::json!({
        "standin_for": "kubelet",
        "argv": std::env::args().collect::<Vec<_>>(),
        "config": config,
        "kubeconfig": kubeconfig,
        "bootstrap_kubeconfig": flags.bootstrap_kubeconfig,
        "server": server,
        "files": files,
    });
    standins::write(
        &root,
        &format!("{RECORD_DIR}/kubelet.json"),
        serde_json::to_vec_pretty(&record)?.as_slice(),
    )?;
    println!(
        "kubelet-standin: config and kubeconfig accepted (server {server}); stand-in only, no pods run"
    );
    Ok(flags.exit)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(true) => {}
        // Stay running like the daemon; systemd stops it with SIGTERM.
        Ok(false) => loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        },
        Err(e) => {
            eprintln!("kubelet-standin: {e:#}");
            std::process::exit(1);
        }
    }
}
