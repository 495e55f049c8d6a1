//! Enrollment: the pure planner ([`decide`]), deciding, recording and planning in one store
//! transaction ([`apply`]), the host's plan from a decision ([`plan`]) and the hosts' progress
//! reports afterwards ([`progress`]).

pub mod apply;
pub mod decide;
pub mod plan;
pub mod progress;
