//! `kube-apiserver-standin`: a stand-in for kube-apiserver (see `standins::apiserver`).

use standins::apiserver::{self, flags};

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match flags::parse(&args) {
        Ok(flags::Command::Serve(options)) => options,
        Ok(flags::Command::Help) => {
            print!("{}", apiserver::HELP);
            return;
        }
        Ok(flags::Command::Version) => {
            println!(
                "Kubernetes {} (kube-apiserver-standin)",
                apiserver::version()
            );
            return;
        }
        Err(err) => {
            eprintln!("Error: {err}");
            std::process::exit(1);
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("starting the tokio runtime");
    if let Err(err) = runtime.block_on(apiserver::run(*options)) {
        eprintln!("Error: {err:#}");
        std::process::exit(1);
    }
}
