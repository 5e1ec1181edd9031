//! Types that both the XDP program and user space read. Every type is
//! `#[repr(C)]` with no implicit padding, proven by a size assertion.
#![no_std]

/// First two bytes of every data-plane frame's UDP payload.
pub const WIRE_MAGIC: u16 = 0xDA7A;
