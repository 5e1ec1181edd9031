//! A reliable record-batch transport over raw Ethernet/IPv4/UDP frames, built
//! for AF_XDP: frames live in a UMEM, and a frame that must be retransmitted is
//! re-posted from where it already is, never copied again.

pub mod link;
