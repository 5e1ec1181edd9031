//! The record codec inside an uncompressed v2 batch: zigzag varints and the
//! per-record layout
//!
//! ```text
//! length varint | attributes i8 | timestampDelta varlong | offsetDelta varint
//! keyLength varint | key | valueLength varint | value
//! headerCount varint | (headerKeyLength varint | headerKey | headerValueLength varint | value)*
//! ```
//!
//! A length of -1 means null. Decoding borrows from the batch bytes, so a
//! decoded record costs one `Vec` for its headers and nothing else.

/// One record of an uncompressed batch, borrowing its bytes from the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    pub attributes: i8,
    pub timestamp_delta: i64,
    pub offset_delta: i32,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: Vec<Header<'a>>,
}

/// A record header: a UTF-8 key (never null) and an optional value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header<'a> {
    pub key: &'a str,
    pub value: Option<&'a [u8]>,
}

/// Maximum encoded size of a zigzag varint (i32).
pub const MAX_VARINT_LEN: usize = 5;
/// Maximum encoded size of a zigzag varlong (i64).
pub const MAX_VARLONG_LEN: usize = 10;

fn zigzag32(v: i32) -> u32 {
    ((v << 1) ^ (v >> 31)) as u32
}

fn zigzag64(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag64(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

fn put_unsigned(out: &mut Vec<u8>, mut u: u64) {
    while u >= 0x80 {
        out.push((u as u8) | 0x80);
        u >>= 7;
    }
    out.push(u as u8);
}

fn unsigned_len(mut u: u64) -> usize {
    let mut n = 1;
    while u >= 0x80 {
        u >>= 7;
        n += 1;
    }
    n
}

/// Appends `v` as a zigzag varint (Kafka's `ByteUtils.writeVarint`).
pub fn put_varint(out: &mut Vec<u8>, v: i32) {
    put_unsigned(out, u64::from(zigzag32(v)));
}

/// Appends `v` as a zigzag varlong (Kafka's `ByteUtils.writeVarlong`).
pub fn put_varlong(out: &mut Vec<u8>, v: i64) {
    put_unsigned(out, zigzag64(v));
}

/// Encoded size of `v` as a zigzag varint.
pub fn varint_len(v: i32) -> usize {
    unsigned_len(u64::from(zigzag32(v)))
}

/// Encoded size of `v` as a zigzag varlong.
pub fn varlong_len(v: i64) -> usize {
    unsigned_len(zigzag64(v))
}

/// Reads an unsigned base-128 number of at most `max_len` bytes whose value
/// must fit in `bits` bits. Returns `None` on truncation, an over-long
/// encoding or an out-of-range value.
fn get_unsigned(buf: &[u8], pos: &mut usize, max_len: usize, bits: u32) -> Option<u64> {
    let mut value: u64 = 0;
    for i in 0..max_len {
        let b = *buf.get(*pos + i)?;
        let shift = 7 * i as u32;
        let chunk = u64::from(b & 0x7f);
        // Bits that would land above `bits` make the number out of range.
        if shift + 7 > bits && (chunk >> (bits - shift)) != 0 {
            return None;
        }
        value |= chunk << shift;
        if b & 0x80 == 0 {
            *pos += i + 1;
            return Some(value);
        }
    }
    None
}

/// Reads a zigzag varint at `*pos`, advancing `pos`. `None` if truncated or
/// malformed (more than 5 bytes, or a value that does not fit in 32 bits).
pub fn get_varint(buf: &[u8], pos: &mut usize) -> Option<i32> {
    let u = get_unsigned(buf, pos, MAX_VARINT_LEN, 32)? as u32;
    Some(((u >> 1) as i32) ^ -((u & 1) as i32))
}

/// Reads a zigzag varlong at `*pos`, advancing `pos`. `None` if truncated or
/// malformed.
pub fn get_varlong(buf: &[u8], pos: &mut usize) -> Option<i64> {
    get_unsigned(buf, pos, MAX_VARLONG_LEN, 64).map(unzigzag64)
}

fn nullable_len(b: Option<&[u8]>) -> usize {
    match b {
        None => varint_len(-1),
        Some(b) => varint_len(b.len() as i32) + b.len(),
    }
}

fn put_nullable(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => put_varint(out, -1),
        Some(b) => {
            put_varint(out, b.len() as i32);
            out.extend_from_slice(b);
        }
    }
}

/// Reads a varint length followed by that many bytes; -1 is null.
fn get_nullable<'a>(buf: &'a [u8], pos: &mut usize) -> Result<Option<&'a [u8]>, &'static str> {
    let len = get_varint(buf, pos).ok_or("malformed length varint")?;
    if len == -1 {
        return Ok(None);
    }
    if len < 0 {
        return Err("negative length other than -1");
    }
    let end = pos
        .checked_add(len as usize)
        .filter(|&e| e <= buf.len())
        .ok_or("length runs past the record")?;
    let bytes = &buf[*pos..end];
    *pos = end;
    Ok(Some(bytes))
}

/// Size of a record's body (everything after its length varint).
pub fn body_len(
    timestamp_delta: i64,
    offset_delta: i32,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[(&str, Option<&[u8]>)],
) -> usize {
    1 + varlong_len(timestamp_delta)
        + varint_len(offset_delta)
        + nullable_len(key)
        + nullable_len(value)
        + varint_len(headers.len() as i32)
        + headers
            .iter()
            .map(|(k, v)| nullable_len(Some(k.as_bytes())) + nullable_len(*v))
            .sum::<usize>()
}

/// Appends one encoded record (length prefix included). Lengths are written
/// as i32, so each of key, value and header parts must be under 2 GiB.
pub fn encode_record(
    out: &mut Vec<u8>,
    timestamp_delta: i64,
    offset_delta: i32,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[(&str, Option<&[u8]>)],
) {
    let body = body_len(timestamp_delta, offset_delta, key, value, headers);
    out.reserve(body + MAX_VARINT_LEN);
    put_varint(out, body as i32);
    out.push(0); // record attributes: unused by Kafka, always 0
    put_varlong(out, timestamp_delta);
    put_varint(out, offset_delta);
    put_nullable(out, key);
    put_nullable(out, value);
    put_varint(out, headers.len() as i32);
    for (k, v) in headers {
        put_nullable(out, Some(k.as_bytes()));
        put_nullable(out, *v);
    }
}

impl<'a> Record<'a> {
    /// Decodes the record at `*pos` in `buf` (a batch's records region) and
    /// advances `pos` past it. The error names what was malformed; the caller
    /// adds the position.
    pub fn decode(buf: &'a [u8], pos: &mut usize) -> Result<Record<'a>, &'static str> {
        let len = get_varint(buf, pos).ok_or("malformed record length")?;
        if len < 0 {
            return Err("negative record length");
        }
        let end = pos
            .checked_add(len as usize)
            .filter(|&e| e <= buf.len())
            .ok_or("record length runs past the batch")?;
        let body = &buf[..end];
        let attributes = *body.get(*pos).ok_or("record too short for attributes")? as i8;
        *pos += 1;
        let timestamp_delta = get_varlong(body, pos).ok_or("malformed timestamp delta")?;
        let offset_delta = get_varint(body, pos).ok_or("malformed offset delta")?;
        let key = get_nullable(body, pos)?;
        let value = get_nullable(body, pos)?;
        let count = get_varint(body, pos).ok_or("malformed header count")?;
        if count < 0 {
            return Err("negative header count");
        }
        // Each header takes at least two bytes, which bounds the allocation
        // by the record's own size whatever the count claims.
        if count as usize > (end - *pos) / 2 {
            return Err("header count larger than the record");
        }
        let mut headers = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let k = get_nullable(body, pos)?.ok_or("null header key")?;
            let key = std::str::from_utf8(k).map_err(|_| "header key is not UTF-8")?;
            let value = get_nullable(body, pos)?;
            headers.push(Header { key, value });
        }
        if *pos != end {
            return Err("record length does not match its fields");
        }
        Ok(Record {
            attributes,
            timestamp_delta,
            offset_delta,
            key,
            value,
            headers,
        })
    }

    /// Appends this record in wire form (length prefix included).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let headers: Vec<(&str, Option<&[u8]>)> =
            self.headers.iter().map(|h| (h.key, h.value)).collect();
        let start = out.len();
        encode_record(
            out,
            self.timestamp_delta,
            self.offset_delta,
            self.key,
            self.value,
            &headers,
        );
        // encode_record always writes attributes 0; keep what was decoded.
        let attr_at = start
            + varint_len(body_len(
                self.timestamp_delta,
                self.offset_delta,
                self.key,
                self.value,
                &headers,
            ) as i32);
        if let Some(a) = out.get_mut(attr_at) {
            *a = self.attributes as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_varint_encodings() {
        // Values from Kafka's ByteUtilsTest.
        let cases: &[(i32, &[u8])] = &[
            (0, &[0x00]),
            (-1, &[0x01]),
            (1, &[0x02]),
            (63, &[0x7e]),
            (-64, &[0x7f]),
            (64, &[0x80, 0x01]),
            (i32::MAX, &[0xfe, 0xff, 0xff, 0xff, 0x0f]),
            (i32::MIN, &[0xff, 0xff, 0xff, 0xff, 0x0f]),
        ];
        for (v, bytes) in cases {
            let mut out = Vec::new();
            put_varint(&mut out, *v);
            assert_eq!(&out, bytes, "encoding {v}");
            assert_eq!(varint_len(*v), bytes.len());
            let mut pos = 0;
            assert_eq!(get_varint(bytes, &mut pos), Some(*v));
            assert_eq!(pos, bytes.len());
        }
    }

    #[test]
    fn malformed_varints_are_rejected() {
        let mut pos = 0;
        assert_eq!(get_varint(&[0x80, 0x80], &mut pos), None, "truncated");
        assert_eq!(
            get_varint(&[0xff, 0xff, 0xff, 0xff, 0x1f], &mut pos),
            None,
            "> 32 bits"
        );
        assert_eq!(get_varint(&[0x80; 6], &mut pos), None, "too long");
        assert_eq!(get_varlong(&[0xff; 10], &mut pos), None, "> 64 bits");
        assert_eq!(pos, 0, "position untouched on error");
    }

    proptest! {
        #[test]
        fn varint_round_trip(v in any::<i32>()) {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            prop_assert_eq!(out.len(), varint_len(v));
            let mut pos = 0;
            prop_assert_eq!(get_varint(&out, &mut pos), Some(v));
            prop_assert_eq!(pos, out.len());
        }

        #[test]
        fn varlong_round_trip(v in any::<i64>()) {
            let mut out = Vec::new();
            put_varlong(&mut out, v);
            prop_assert_eq!(out.len(), varlong_len(v));
            let mut pos = 0;
            prop_assert_eq!(get_varlong(&out, &mut pos), Some(v));
            prop_assert_eq!(pos, out.len());
        }

        #[test]
        fn record_round_trip(
            ts in any::<i64>(),
            od in any::<i32>(),
            key in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
            value in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
            headers in proptest::collection::vec(
                (".{0,12}", proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20))),
                0..5,
            ),
        ) {
            let hdrs: Vec<(&str, Option<&[u8]>)> =
                headers.iter().map(|(k, v)| (k.as_str(), v.as_deref())).collect();
            let mut out = vec![0xAA]; // decoding must not depend on starting at 0
            encode_record(&mut out, ts, od, key.as_deref(), value.as_deref(), &hdrs);
            let mut pos = 1;
            let r = Record::decode(&out, &mut pos).unwrap();
            prop_assert_eq!(pos, out.len());
            prop_assert_eq!(r.timestamp_delta, ts);
            prop_assert_eq!(r.offset_delta, od);
            prop_assert_eq!(r.key, key.as_deref());
            prop_assert_eq!(r.value, value.as_deref());
            prop_assert_eq!(r.headers.len(), hdrs.len());
            for (h, (k, v)) in r.headers.iter().zip(&hdrs) {
                prop_assert_eq!(h.key, *k);
                prop_assert_eq!(h.value, *v);
            }
            let mut again = vec![0xAA];
            r.encode(&mut again);
            prop_assert_eq!(again, out);
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut pos = 0;
            let _ = Record::decode(&bytes, &mut pos);
            prop_assert!(pos <= bytes.len());
        }
    }
}
