//! End-to-end scenarios that span the builder's image, the seed, firstboot and the lab: each test
//! (`pxe_cluster.rs`, `three_masters.rs`, `trusted_ipxe.rs`) boots VMs by PXE under qemu and
//! checks the cluster they form. They need root, qemu and a node image (`LAUNCHER_LAB_IMAGE`),
//! and skip without them unless `CI=true`. Unit and integration tests stay next to their crate.
