//! `launcher-build`'s library: image definitions, the image layout, and the steps that bake them.

pub mod archive;
pub mod base;
pub mod boot;
pub mod build;
pub mod definition;
pub mod layout;
pub mod manifest;
pub mod oci;
pub mod progress;
pub mod stage;
pub mod tools;
