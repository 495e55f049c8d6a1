//! Which VM holds the control-plane VIP, as the lab's bridge sees it: the MAC its neighbour
//! table has for the VIP after one ping (keepalived's gratuitous ARPs keep it current).

use std::process::Command;

use crate::plan::{CONTROL_PLANE_IP, LabPlan};

/// The MAC `ip neigh show` gives for the address (`10.77.0.10 dev br0 lladdr 52:54:… REACHABLE`).
pub fn neighbour_mac(output: &str) -> Option<String> {
    let words: Vec<&str> = output.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "lladdr")?;
    words.get(at + 1).map(|mac| mac.to_lowercase())
}

/// The label of the VM holding the VIP, or `None` when no VM answers for it.
pub fn holder(plan: &LabPlan) -> Option<String> {
    let vip = CONTROL_PLANE_IP.to_string();
    let ns = &plan.namespace;
    let _ = Command::new("ip")
        .args(["netns", "exec", ns, "ping", "-c", "1", "-W", "1", &vip])
        .output();
    let out = Command::new("ip")
        .args(["-n", ns, "neigh", "show", &vip])
        .output()
        .ok()?;
    let mac = neighbour_mac(&String::from_utf8_lossy(&out.stdout))?;
    plan.vms
        .iter()
        .find(|vm| vm.mac.eq_ignore_ascii_case(&mac))
        .map(|vm| vm.label.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mac_of_a_reachable_or_stale_neighbour_and_none_of_a_failed_one() {
        assert_eq!(
            neighbour_mac("10.77.0.10 dev br0 lladdr 52:54:00:77:00:0B REACHABLE\n"),
            Some("52:54:00:77:00:0b".into())
        );
        assert_eq!(
            neighbour_mac("10.77.0.10 dev br0 lladdr 52:54:00:77:00:0c STALE\n"),
            Some("52:54:00:77:00:0c".into())
        );
        assert_eq!(neighbour_mac("10.77.0.10 dev br0 FAILED\n"), None);
        assert_eq!(neighbour_mac(""), None);
    }
}
