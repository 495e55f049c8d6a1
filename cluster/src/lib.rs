//! The shared model of a Launcher cluster. Everything here is pure: no disk, socket or clock.
//!
//! `cluster` decides, the binaries do: the seed, firstboot and the builder gather inputs, call
//! into this crate and apply its result.

/// Serializes a value as its `Display` text and deserializes it through `FromStr`, so every
/// newtype reads and writes in files exactly as it prints in messages.
macro_rules! serde_via_str {
    ($name:ident) => {
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <String as serde::Deserialize>::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

pub mod api;
pub mod certs;
pub mod etcd;
pub mod firstboot;
pub mod kubeadm;
pub mod ntp;
pub mod pki;
pub mod plan;
pub mod skew;
pub mod spec;
pub mod text;
pub mod version;
pub mod vip;
