//! `launcher-build`'s library: image definitions, the image layout, and the steps that bake them.

pub mod archive;
pub mod base;
pub mod boot;
pub mod build;
pub mod definition;
pub mod inputs;
pub mod layer;
pub mod layout;
pub mod manifest;
pub mod progress;
pub mod release;
pub mod stage;
pub mod tools;
