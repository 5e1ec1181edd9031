//! Stateless handshake cookies: SipHash-2-4 keyed by a server secret over the
//! client's MAC, IPv4 address, UDP port, its nonce and a time bucket. The
//! server remembers nothing about a client until it echoes a valid cookie.

use super::frame::Endpoint;

/// SipHash-2-4 of `msg` under `key` (Aumasson & Bernstein).
pub fn siphash24(key: &[u8; 16], msg: &[u8]) -> u64 {
    let k0 = u64::from_le_bytes(key[0..8].try_into().expect("8 bytes"));
    let k1 = u64::from_le_bytes(key[8..16].try_into().expect("8 bytes"));
    let mut v = [
        k0 ^ 0x736f6d6570736575,
        k1 ^ 0x646f72616e646f6d,
        k0 ^ 0x6c7967656e657261,
        k1 ^ 0x7465646279746573,
    ];
    fn round(v: &mut [u64; 4]) {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }
    let mut chunks = msg.chunks_exact(8);
    for c in &mut chunks {
        let m = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        v[3] ^= m;
        round(&mut v);
        round(&mut v);
        v[0] ^= m;
    }
    let rest = chunks.remainder();
    let mut last = [0u8; 8];
    last[..rest.len()].copy_from_slice(rest);
    last[7] = msg.len() as u8;
    let m = u64::from_le_bytes(last);
    v[3] ^= m;
    round(&mut v);
    round(&mut v);
    v[0] ^= m;
    v[2] ^= 0xff;
    for _ in 0..4 {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// The cookie a client at `peer` must echo for `nonce` in time bucket `bucket`.
pub fn cookie(secret: &[u8; 16], peer: &Endpoint, nonce: u64, bucket: u32) -> u64 {
    let mut msg = [0u8; 6 + 4 + 2 + 8 + 4];
    msg[0..6].copy_from_slice(&peer.mac);
    msg[6..10].copy_from_slice(&peer.ip.octets());
    msg[10..12].copy_from_slice(&peer.port.to_be_bytes());
    msg[12..20].copy_from_slice(&nonce.to_be_bytes());
    msg[20..24].copy_from_slice(&bucket.to_be_bytes());
    siphash24(secret, &msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn siphash_reference_vectors() {
        let mut key = [0u8; 16];
        for (i, k) in key.iter_mut().enumerate() {
            *k = i as u8;
        }
        // From the SipHash paper's reference implementation (vectors.h).
        assert_eq!(siphash24(&key, &[]), 0x726fdb47dd0e0e31);
        let msg: Vec<u8> = (0..15).collect();
        assert_eq!(siphash24(&key, &msg), 0xa129ca6149be45e5);
    }

    #[test]
    fn cookie_depends_on_every_input() {
        let s = [7u8; 16];
        let p = Endpoint {
            mac: [2, 0, 0, 0, 0, 1],
            ip: Ipv4Addr::new(10, 0, 0, 1),
            port: 5,
        };
        let c = cookie(&s, &p, 1, 1);
        assert_ne!(c, cookie(&s, &Endpoint { port: 6, ..p }, 1, 1));
        assert_ne!(
            c,
            cookie(
                &s,
                &Endpoint {
                    ip: Ipv4Addr::new(10, 0, 0, 9),
                    ..p
                },
                1,
                1
            )
        );
        assert_ne!(
            c,
            cookie(
                &s,
                &Endpoint {
                    mac: [2, 0, 0, 0, 0, 9],
                    ..p
                },
                1,
                1
            )
        );
        assert_ne!(c, cookie(&s, &p, 2, 1));
        assert_ne!(c, cookie(&s, &p, 1, 2));
        assert_ne!(c, cookie(&[8u8; 16], &p, 1, 1));
    }
}
