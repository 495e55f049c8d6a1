//! IP networks in CIDR notation (`10.96.0.0/12`), IPv4 or IPv6.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use super::types::ValueError;

/// A network: its first address and prefix length; the host bits of the address are zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

fn bits(ip: IpAddr) -> (u128, u8) {
    match ip {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
        IpAddr::V6(v6) => (u128::from(v6), 128),
    }
}

fn mask(prefix: u8, width: u8) -> u128 {
    let host_bits = u32::from(width - prefix);
    let all = if width == 32 {
        u128::from(u32::MAX)
    } else {
        u128::MAX
    };
    if host_bits >= 128 {
        0
    } else {
        all & !((1u128 << host_bits) - 1)
    }
}

fn ip_from(value: u128, v4: bool) -> IpAddr {
    if v4 {
        // The caller keeps the value within 32 bits.
        IpAddr::V4(Ipv4Addr::from(value as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(value))
    }
}

impl Cidr {
    pub fn network(&self) -> IpAddr {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn is_ipv4(&self) -> bool {
        self.network.is_ipv4()
    }

    fn width(&self) -> u8 {
        bits(self.network).1
    }

    /// True when `ip` is inside this network (never across address families).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (value, width) = bits(ip);
        let (net, net_width) = bits(self.network);
        width == net_width && value & mask(self.prefix, width) == net
    }

    /// True when the two networks share any address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.contains(other.network) || other.contains(self.network)
    }

    /// The network's address plus `n`: `nth_host(1)` is the first service IP, `nth_host(10)`
    /// the cluster DNS address. `None` when `n` falls outside the network.
    pub fn nth_host(&self, n: u128) -> Option<IpAddr> {
        let host_bits = u32::from(self.width() - self.prefix);
        if host_bits < 128 && n >> host_bits != 0 {
            return None;
        }
        let (net, width) = bits(self.network);
        Some(ip_from(net + n, width == 32))
    }

    /// How many addresses the network holds, saturating at `u128::MAX`.
    pub fn size(&self) -> u128 {
        let host_bits = u32::from(self.width() - self.prefix);
        1u128.checked_shl(host_bits).unwrap_or(u128::MAX)
    }
}

impl FromStr for Cidr {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let expected = "expected a network like 10.244.0.0/16";
        let Some((addr, prefix)) = s.split_once('/') else {
            return Err(ValueError(format!(
                "{s:?} has no prefix length; {expected}"
            )));
        };
        let ip: IpAddr = addr
            .parse()
            .map_err(|_| ValueError(format!("{addr:?} is not an IP address; {expected}")))?;
        let width = bits(ip).1;
        let prefix: u8 = match prefix.parse() {
            Ok(p) if p <= width && prefix.chars().all(|c| c.is_ascii_digit()) => p,
            _ => {
                return Err(ValueError(format!(
                    "{s:?} has prefix length {prefix:?}; expected 0 to {width}"
                )));
            }
        };
        let (value, _) = bits(ip);
        let network = value & mask(prefix, width);
        if network != value {
            let net = ip_from(network, width == 32);
            return Err(ValueError(format!(
                "{s:?} has host bits set; the network is {net}/{prefix}"
            )));
        }
        Ok(Cidr {
            network: ip,
            prefix,
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

serde_via_str!(Cidr);

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn contains_and_overlaps() {
        assert!(c("10.96.0.0/12").contains("10.111.255.255".parse().unwrap()));
        assert!(!c("10.96.0.0/12").contains("10.112.0.0".parse().unwrap()));
        assert!(c("10.0.0.0/8").overlaps(&c("10.96.0.0/12")));
        assert!(!c("10.244.0.0/16").overlaps(&c("10.96.0.0/12")));
        assert!(c("0.0.0.0/0").contains("1.2.3.4".parse().unwrap()));
        assert!(!c("fd00::/8").contains("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn nth_host() {
        assert_eq!(
            c("10.96.0.0/12").nth_host(1).unwrap().to_string(),
            "10.96.0.1"
        );
        assert_eq!(
            c("10.96.0.0/12").nth_host(10).unwrap().to_string(),
            "10.96.0.10"
        );
        assert_eq!(c("10.0.0.0/30").nth_host(4), None);
        assert_eq!(
            c("fd00:10:96::/108").nth_host(10).unwrap().to_string(),
            "fd00:10:96::a"
        );
        assert_eq!(c("10.0.0.0/30").size(), 4);
    }

    #[test]
    fn refuses_host_bits_and_bad_prefix() {
        let e = "10.244.0.1/16".parse::<Cidr>().unwrap_err().to_string();
        assert_eq!(
            e,
            "\"10.244.0.1/16\" has host bits set; the network is 10.244.0.0/16"
        );
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("10.0.0.0".parse::<Cidr>().is_err());
    }
}
