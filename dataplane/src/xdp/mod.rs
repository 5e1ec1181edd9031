//! The kernel-facing side of the AF_XDP path: the XDP program's loader
//! (attach, maps, teardown), AF_XDP sockets with their UMEM, and the doctor
//! that says what this machine supports.

pub mod doctor;
pub mod iface;
pub mod loader;
pub mod xsk;
