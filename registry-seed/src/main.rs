//! `launcher-seed`: entry point.

fn main() {}
