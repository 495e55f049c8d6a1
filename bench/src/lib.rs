//! Load generators and the report of `ci/bench`: every figure is compared with a peer measured in
//! the same run.

pub mod enroll;
pub mod ntp;
pub mod report;
pub mod stats;
pub mod storm;
