//! `launcher-build`: entry point.

fn main() {}
