//! `dataplane bench`: the modes side by side in one run, for several batch
//! sizes and both directions, on the lab or on given interfaces.

pub mod cpu;
pub mod report;
pub mod run;
