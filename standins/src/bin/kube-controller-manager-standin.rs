//! `kube-controller-manager-standin`: a stand-in for kube-controller-manager (see `standins::controller`).

use standins::controller::{self, Component};

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(controller::main(Component::ControllerManager, &args));
}
