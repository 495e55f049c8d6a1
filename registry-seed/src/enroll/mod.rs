//! Enrollment: the pure planner ([`decide`]), applying its decision to the store ([`apply`]) and
//! turning a decision into the host's plan ([`plan`]).

pub mod apply;
pub mod decide;
pub mod plan;
