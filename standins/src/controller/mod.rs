//! `kube-controller-manager-standin` and `kube-scheduler-standin`: stand-ins for the two
//! control-plane components kubeadm runs beside kube-apiserver (which cannot be downloaded
//! here). Each takes exactly its component's flags, elects a leader through a Lease in
//! `kube-system` as the real one does, and serves its health over HTTPS for kubeadm's probes.
//! While it leads, the controller-manager runs the node lifecycle controller's health part
//! (`nodelifecycle`); the scheduler only leads, since the API server stand-in serves no Pods.

pub mod flags;
pub mod health;
pub mod leader;
pub mod nodelifecycle;

use std::net::SocketAddr;

use crate::Root;
use crate::kubeclient::KubeClient;

/// Which component a stand-in plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    ControllerManager,
    Scheduler,
}

impl Component {
    /// Its name, which is also its Lease's default name.
    pub fn name(self) -> &'static str {
        match self {
            Component::ControllerManager => "kube-controller-manager",
            Component::Scheduler => "kube-scheduler",
        }
    }

    /// Its default `--secure-port`.
    pub fn secure_port(self) -> u16 {
        match self {
            Component::ControllerManager => 10257,
            Component::Scheduler => 10259,
        }
    }

    /// `--help`'s text.
    pub fn help(self) -> &'static str {
        match self {
            Component::ControllerManager => CONTROLLER_MANAGER_HELP,
            Component::Scheduler => SCHEDULER_HELP,
        }
    }
}

const CONTROLLER_MANAGER_HELP: &str = "kube-controller-manager-standin: a stand-in for \
kube-controller-manager (not kube-controller-manager).

Takes kube-controller-manager's flags (--flag=value) and refuses any it does not have.
Acts on --kubeconfig (required), --bind-address, --secure-port (10257), --tls-cert-file,
--tls-private-key-file, --leader-elect, --leader-elect-lease-duration,
--leader-elect-renew-deadline, --leader-elect-retry-period, --leader-elect-resource-name,
--leader-elect-resource-namespace, --node-monitor-period (5s), --node-monitor-grace-period
(50s) and --node-startup-grace-period (1m0s); accepts the rest.
Elects its leader through the Lease kube-system/kube-controller-manager. While it leads, it
runs only the node lifecycle controller's health part: a Node whose kubelet is silent for the
grace period gets its conditions Unknown and the node.kubernetes.io/unreachable:NoSchedule
taint, removed once the kubelet reports Ready. Serves /healthz, /livez and /readyz over HTTPS.
";

const SCHEDULER_HELP: &str = "kube-scheduler-standin: a stand-in for kube-scheduler \
(not kube-scheduler).

Takes kube-scheduler's flags (--flag=value) and refuses any it does not have. Acts on
--kubeconfig (required), --bind-address, --secure-port (10259), --tls-cert-file,
--tls-private-key-file, --leader-elect, --leader-elect-lease-duration,
--leader-elect-renew-deadline, --leader-elect-retry-period, --leader-elect-resource-name and
--leader-elect-resource-namespace; accepts the rest.
Elects its leader through the Lease kube-system/kube-scheduler and serves /healthz, /livez and
/readyz over HTTPS. It schedules nothing: the API server stand-in serves no Pods.
";

/// What `--version` prints.
pub fn version_line(component: Component) -> String {
    format!(
        "Kubernetes {} ({}-standin)",
        crate::apiserver::version(),
        component.name()
    )
}

/// Serves health, then leads (or waits to) and does the component's work while leading.
/// Returns only when the Lease is lost, which ends the process as it ends the real one.
pub fn run(component: Component, options: flags::Options) -> anyhow::Result<String> {
    let root = Root::from_env();
    let client = KubeClient::from_kubeconfig(&root, &options.kubeconfig)
        .map_err(|e| anyhow::anyhow!("loading --kubeconfig: {e}"))?;
    let runtime = tokio::runtime::Runtime::new()?;
    if options.secure_port != 0 {
        let addr = SocketAddr::new(options.bind_address, options.secure_port);
        let config = health::tls(options.tls.as_ref(), options.bind_address)?;
        let listener = health::bind(addr)?;
        let _inside = runtime.enter();
        runtime.spawn(health::serve(listener, config));
        tracing::info!(component = component.name(), %addr, "serving health securely");
    }
    let work = {
        let client = client.clone();
        let monitor = options.node_monitor;
        move || {
            if let Some(monitor) = monitor {
                nodelifecycle::run(&client, &monitor);
            }
        }
    };
    if !options.election.enabled {
        work();
        std::thread::park();
        return Ok("stopped".to_owned());
    }
    let elector = leader::Elector {
        client,
        election: options.election,
        me: leader::identity(),
    };
    tracing::info!(lease = %elector.election.name, me = %elector.me, "attempting to acquire the leader lease");
    elector.acquire();
    tracing::info!(lease = %elector.election.name, me = %elector.me, "successfully acquired the lease");
    std::thread::spawn(work);
    Ok(elector.hold())
}

/// The whole command: parse, then help, version or run; the exit code.
pub fn main(component: Component, args: &[String]) -> i32 {
    let options = match flags::parse(component, args) {
        Ok(flags::Command::Run(options)) => options,
        Ok(flags::Command::Help) => {
            print!("{}", component.help());
            return 0;
        }
        Ok(flags::Command::Version) => {
            println!("{}", version_line(component));
            return 0;
        }
        Err(err) => {
            eprintln!("Error: {err}");
            return 1;
        }
    };
    match run(component, *options) {
        Ok(lost) => {
            tracing::error!(reason = %lost, "leaderelection lost");
            1
        }
        Err(err) => {
            eprintln!("Error: {err:#}");
            1
        }
    }
}
