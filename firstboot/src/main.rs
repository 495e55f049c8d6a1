//! `launcher-firstboot`: entry point.

fn main() {}
