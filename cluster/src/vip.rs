//! The control-plane virtual IP: whether a cluster needs one, and the keepalived configuration
//! that keeps it on exactly one master whose API server is ready (ARCHITECTURE.md,
//! "Control-plane VIP", says why each VRRP setting is what it is).

use std::net::{IpAddr, Ipv4Addr};

use sha2::{Digest, Sha256};

use crate::api::VipInstructions;
use crate::spec::ClusterSpec;

/// Where firstboot writes keepalived's configuration (Debian's unit reads it).
pub const CONFIG_PATH: &str = "/etc/keepalived/keepalived.conf";
/// Debian's unit, which starts only once [`CONFIG_PATH`] is not empty.
pub const UNIT: &str = "keepalived.service";
/// The health check keepalived runs on a master: the local API server's `/readyz`.
pub const CHECK_COMMAND: &str = "/usr/bin/launcher-firstboot check-apiserver";
/// The second check: this master is still a member of the cluster's etcd. A removed master's
/// API server stays ready (its etcd endpoints are every member's), so readiness alone would
/// let it keep the VIP.
pub const MEMBER_CHECK_COMMAND: &str = "/usr/bin/launcher-firstboot check-member";
/// 0.25 s: a holder that vanishes is replaced after 3 intervals and the skew, under a second.
pub const ADVERT_INTERVAL_CS: u16 = 25;

/// Why keepalived's configuration cannot be written from these values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VipError {
    #[error(
        "interface {0:?} is not a name keepalived takes: 1 to 15 characters, none of them blank, `/`, `\"`, `#`, `!` or `{{`/`}}`"
    )]
    Interface(String),
    #[error("prefix length /{0} is longer than an IPv4 address")]
    Prefix(u8),
    #[error("the VIP {0} is this master's own address; a VIP must be an address no host has")]
    OwnAddress(Ipv4Addr),
    #[error(
        "the VIP {vip} is outside {address}/{prefix}, the subnet of {interface}: VRRP moves it by ARP, within one L2 network"
    )]
    OutsideSubnet {
        vip: Ipv4Addr,
        address: Ipv4Addr,
        prefix: u8,
        interface: String,
    },
    #[error("the VIP {vip} is the network or broadcast address of {vip}/{prefix}")]
    NotAHost { vip: Ipv4Addr, prefix: u8 },
    #[error("virtual router id 0 is not one: VRRP's ids are 1 to 255")]
    RouterId,
    #[error(
        "priority {0} is outside 1..=254 (255 is the address owner's, which keepalived never lets go of the VIP)"
    )]
    Priority(u8),
    #[error("advert interval {0} cs is outside 1..=4095 (VRRPv3's 12-bit field, in centiseconds)")]
    AdvertInterval(u16),
    #[error(
        "health check {0:?} must be an absolute path and its arguments, on one line, without `\"`"
    )]
    Check(String),
}

/// The VRRP instance of a master, when the cluster needs a VIP: the control-plane endpoint is
/// an IPv4 address that is no inventory host's and not this master's own. A name (DNS, or a load
/// balancer the operator runs behind it) and a master's own address need none. The number of
/// masters does not matter: a single master holding the VIP lets more be added later.
pub fn instructions(spec: &ClusterSpec, own: Option<IpAddr>) -> Option<VipInstructions> {
    let IpAddr::V4(address) = spec.control_plane_endpoint.host().ip()? else {
        return None;
    };
    let a_host_has_it = spec.hosts.iter().any(|h| h.ip == Some(address));
    if a_host_has_it || own == Some(IpAddr::V4(address)) {
        return None;
    }
    let IpAddr::V4(own) = own? else {
        return None;
    };
    Some(VipInstructions {
        address,
        router_id: router_id(spec.name.as_ref()),
        priority: priority(own),
        advert_interval_cs: ADVERT_INTERVAL_CS,
    })
}

/// VRRP's virtual router id for a cluster: 1..=255 from a hash of its name, the same on every
/// master, and likely different for two clusters sharing an L2 network.
pub fn router_id(cluster: &str) -> u8 {
    let hash = Sha256::digest(cluster.as_bytes());
    let n = u16::from_be_bytes([hash[0], hash[1]]) % 255;
    1 + n as u8
}

/// A master's priority, from its own address: distinct for addresses that differ modulo 254,
/// and 157 apart (modulo 254) for neighbouring ones. `nopreempt` keeps a healthy holder whatever
/// the priorities; they matter when the holder vanishes, because every backup then times out
/// after 3 adverts plus a skew of `(256 - priority) / 256` of an advert: equal priorities would
/// all claim the VIP at the same instant, distinct ones let the first claimant's advert reach the
/// others before their own timers end.
pub fn priority(own: Ipv4Addr) -> u8 {
    let spread = (u32::from(own) % 254) * 157 % 254;
    1 + spread as u8
}

/// The values keepalived's configuration is rendered from.
#[derive(Debug, Clone)]
pub struct Keepalived<'a> {
    pub vip: &'a VipInstructions,
    /// The interface that carries this master's own address.
    pub interface: &'a str,
    /// This master's own address, the source of its adverts.
    pub address: Ipv4Addr,
    /// The prefix length of `address` on `interface`; the VIP gets the same.
    pub prefix: u8,
    /// The health check (on a host, [`CHECK_COMMAND`]), run as `nobody`.
    pub check: &'a str,
    /// The membership check (on a host, [`MEMBER_CHECK_COMMAND`]), run as root: it reads the
    /// etcd client key.
    pub member_check: &'a str,
}

/// keepalived's configuration (Debian bookworm ships keepalived 2.2.7), or why the values
/// cannot make one.
pub fn render(k: &Keepalived<'_>) -> Result<String, VipError> {
    check(k)?;
    let v = k.vip;
    Ok(format!(
        "# Written by launcher-firstboot: the control-plane VIP (ARCHITECTURE.md, \"Control-plane VIP\").
global_defs {{
    vrrp_version 3
    enable_script_security
    script_user nobody nogroup
    max_auto_priority 50
    vrrp_rlimit_rttime 1000000
}}

vrrp_script apiserver_ready {{
    script \"{check}\"
    interval 4
    timeout 4
    fall 2
    rise 2
    weight 0
    init_fail
}}

vrrp_script etcd_member {{
    script \"{member_check}\"
    user root
    interval 20
    timeout 15
    fall 2
    rise 1
    weight 0
}}

vrrp_instance control_plane {{
    state BACKUP
    nopreempt
    interface {interface}
    mcast_src_ip {address}
    virtual_router_id {router_id}
    priority {priority}
    advert_int {advert}
    garp_master_delay 1
    garp_master_repeat 3
    garp_master_refresh 60
    virtual_ipaddress {{
        {vip}/{prefix} dev {interface}
    }}
    track_script {{
        apiserver_ready
        etcd_member
    }}
}}
",
        check = k.check,
        member_check = k.member_check,
        interface = k.interface,
        address = k.address,
        router_id = v.router_id,
        priority = v.priority,
        advert = seconds(v.advert_interval_cs),
        vip = v.address,
        prefix = k.prefix,
    ))
}

/// Centiseconds as keepalived's decimal seconds (`0.25`, `1`).
fn seconds(cs: u16) -> String {
    match cs % 100 {
        0 => format!("{}", cs / 100),
        frac => format!("{}.{frac:02}", cs / 100),
    }
}

fn check(k: &Keepalived<'_>) -> Result<(), VipError> {
    let v = k.vip;
    let bad_char = |c: char| c.is_whitespace() || "/\"#!{}".contains(c);
    if k.interface.is_empty() || k.interface.len() > 15 || k.interface.chars().any(bad_char) {
        return Err(VipError::Interface(k.interface.to_string()));
    }
    if k.prefix > 32 {
        return Err(VipError::Prefix(k.prefix));
    }
    if v.address == k.address {
        return Err(VipError::OwnAddress(v.address));
    }
    let mask = u32::MAX.checked_shl(32 - u32::from(k.prefix)).unwrap_or(0);
    let (vip, own) = (u32::from(v.address), u32::from(k.address));
    if vip & mask != own & mask {
        return Err(VipError::OutsideSubnet {
            vip: v.address,
            address: k.address,
            prefix: k.prefix,
            interface: k.interface.to_string(),
        });
    }
    // /31 and /32 have no network or broadcast address (RFC 3021).
    if k.prefix < 31 && (vip & !mask == 0 || vip & !mask == !mask) {
        return Err(VipError::NotAHost {
            vip: v.address,
            prefix: k.prefix,
        });
    }
    if v.router_id == 0 {
        return Err(VipError::RouterId);
    }
    if !(1..=254).contains(&v.priority) {
        return Err(VipError::Priority(v.priority));
    }
    if !(1..=4095).contains(&v.advert_interval_cs) {
        return Err(VipError::AdvertInterval(v.advert_interval_cs));
    }
    for script in [k.check, k.member_check] {
        let one_line = !script.contains(['"', '\n', '\r']);
        if !script.starts_with('/') || !one_line {
            return Err(VipError::Check(script.to_string()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
