//! Kafka's primitive wire types: big-endian integers, i16-length strings,
//! i32-length arrays and bytes, and the flexible versions' compact forms and
//! tagged fields. Every read is bounds-checked and names what it was reading.

/// A malformed message: what was being read and at which byte of the message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed {what} at byte {position} of the request body: {problem}")]
pub struct WireError {
    pub what: &'static str,
    pub position: usize,
    pub problem: &'static str,
}

/// Reads Kafka primitives from a byte slice.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn err(&self, what: &'static str, problem: &'static str) -> WireError {
        WireError {
            what,
            position: self.pos,
            problem,
        }
    }

    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        if self.remaining() < n {
            return Err(self.err(what, "message ends early"));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], WireError> {
        let bytes = self.take(N, what)?;
        let mut out = [0; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    pub fn i8(&mut self, what: &'static str) -> Result<i8, WireError> {
        Ok(i8::from_be_bytes(self.array(what)?))
    }

    pub fn bool(&mut self, what: &'static str) -> Result<bool, WireError> {
        Ok(self.i8(what)? != 0)
    }

    pub fn i16(&mut self, what: &'static str) -> Result<i16, WireError> {
        Ok(i16::from_be_bytes(self.array(what)?))
    }

    pub fn i32(&mut self, what: &'static str) -> Result<i32, WireError> {
        Ok(i32::from_be_bytes(self.array(what)?))
    }

    pub fn i64(&mut self, what: &'static str) -> Result<i64, WireError> {
        Ok(i64::from_be_bytes(self.array(what)?))
    }

    pub fn unsigned_varint(&mut self, what: &'static str) -> Result<u32, WireError> {
        let mut value: u32 = 0;
        for shift in (0..35).step_by(7) {
            let byte = self.array::<1>(what)?[0];
            value |= u32::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.err(what, "unsigned varint longer than 5 bytes"))
    }

    /// A nullable string with an i16 length (-1 = null).
    pub fn nullable_string(&mut self, what: &'static str) -> Result<Option<&'a str>, WireError> {
        let len = self.i16(what)?;
        if len < 0 {
            return if len == -1 {
                Ok(None)
            } else {
                Err(self.err(what, "negative length"))
            };
        }
        let bytes = self.take(len as usize, what)?;
        std::str::from_utf8(bytes)
            .map(Some)
            .map_err(|_| self.err(what, "not UTF-8"))
    }

    pub fn string(&mut self, what: &'static str) -> Result<&'a str, WireError> {
        self.nullable_string(what)?
            .ok_or_else(|| self.err(what, "null where a string is required"))
    }

    /// A compact (flexible-version) nullable string: unsigned varint length + 1.
    pub fn compact_nullable_string(
        &mut self,
        what: &'static str,
    ) -> Result<Option<&'a str>, WireError> {
        let len = self.unsigned_varint(what)?;
        if len == 0 {
            return Ok(None);
        }
        let bytes = self.take(len as usize - 1, what)?;
        std::str::from_utf8(bytes)
            .map(Some)
            .map_err(|_| self.err(what, "not UTF-8"))
    }

    /// Nullable bytes with an i32 length (-1 = null).
    pub fn nullable_bytes(&mut self, what: &'static str) -> Result<Option<&'a [u8]>, WireError> {
        let len = self.i32(what)?;
        if len < 0 {
            return if len == -1 {
                Ok(None)
            } else {
                Err(self.err(what, "negative length"))
            };
        }
        self.take(len as usize, what).map(Some)
    }

    /// The element count of an i32-length array; -1 (null) reads as `None`.
    /// A count that could not fit in the rest of the message (each element
    /// being at least `min_element` bytes) is rejected before anything is
    /// allocated for it.
    pub fn array_len(
        &mut self,
        what: &'static str,
        min_element: usize,
    ) -> Result<Option<usize>, WireError> {
        let len = self.i32(what)?;
        if len < 0 {
            return if len == -1 {
                Ok(None)
            } else {
                Err(self.err(what, "negative array length"))
            };
        }
        let len = len as usize;
        if len.saturating_mul(min_element.max(1)) > self.remaining() {
            return Err(self.err(what, "array length larger than the message"));
        }
        Ok(Some(len))
    }

    /// Skips a flexible version's tagged fields.
    pub fn skip_tagged_fields(&mut self) -> Result<(), WireError> {
        let count = self.unsigned_varint("tagged fields")?;
        for _ in 0..count {
            self.unsigned_varint("tagged field tag")?;
            let size = self.unsigned_varint("tagged field size")?;
            self.take(size as usize, "tagged field")?;
        }
        Ok(())
    }
}

/// Writes Kafka primitives to a growable buffer.
pub trait WriteKafka {
    fn put_i8(&mut self, v: i8);
    fn put_i16(&mut self, v: i16);
    fn put_i32(&mut self, v: i32);
    fn put_i64(&mut self, v: i64);
    fn put_bool(&mut self, v: bool);
    fn put_unsigned_varint(&mut self, v: u32);
    fn put_string(&mut self, s: &str);
    fn put_nullable_string(&mut self, s: Option<&str>);
    fn put_nullable_bytes(&mut self, b: Option<&[u8]>);
    fn put_array_len(&mut self, n: usize);
    fn put_compact_array_len(&mut self, n: usize);
    fn put_compact_nullable_string(&mut self, s: Option<&str>);
    fn put_empty_tagged_fields(&mut self);
}

impl WriteKafka for Vec<u8> {
    fn put_i8(&mut self, v: i8) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_i16(&mut self, v: i16) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_i32(&mut self, v: i32) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_i64(&mut self, v: i64) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_bool(&mut self, v: bool) {
        self.push(u8::from(v));
    }
    fn put_unsigned_varint(&mut self, mut v: u32) {
        while v >= 0x80 {
            self.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.push(v as u8);
    }
    fn put_string(&mut self, s: &str) {
        self.put_nullable_string(Some(s));
    }
    fn put_nullable_string(&mut self, s: Option<&str>) {
        match s {
            // Names longer than i16::MAX never reach here: topics are limited to 249 bytes.
            Some(s) => {
                self.put_i16(s.len() as i16);
                self.extend_from_slice(s.as_bytes());
            }
            None => self.put_i16(-1),
        }
    }
    fn put_nullable_bytes(&mut self, b: Option<&[u8]>) {
        match b {
            Some(b) => {
                self.put_i32(b.len() as i32);
                self.extend_from_slice(b);
            }
            None => self.put_i32(-1),
        }
    }
    fn put_array_len(&mut self, n: usize) {
        self.put_i32(n as i32);
    }
    fn put_compact_array_len(&mut self, n: usize) {
        self.put_unsigned_varint(n as u32 + 1);
    }
    fn put_compact_nullable_string(&mut self, s: Option<&str>) {
        match s {
            Some(s) => {
                self.put_unsigned_varint(s.len() as u32 + 1);
                self.extend_from_slice(s.as_bytes());
            }
            None => self.put_unsigned_varint(0),
        }
    }
    fn put_empty_tagged_fields(&mut self) {
        self.put_unsigned_varint(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsigned_varint_round_trip_and_overlong() {
        for v in [0u32, 1, 127, 128, 300, 16_383, 16_384, u32::MAX] {
            let mut buf = Vec::new();
            buf.put_unsigned_varint(v);
            assert_eq!(Reader::new(&buf).unsigned_varint("v").unwrap(), v);
        }
        let overlong = [0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert!(Reader::new(&overlong).unsigned_varint("v").is_err());
    }

    #[test]
    fn truncated_reads_name_the_field_and_position() {
        let mut r = Reader::new(&[0, 5, b'a', b'b']);
        let err = r.string("topic name").unwrap_err();
        assert_eq!(err.what, "topic name");
        assert_eq!(err.position, 2);
    }

    #[test]
    fn huge_array_length_is_rejected_without_allocating() {
        let mut r = Reader::new(&[0x7f, 0xff, 0xff, 0xff, 0, 0]);
        let err = r.array_len("topics", 4).unwrap_err();
        assert_eq!(err.problem, "array length larger than the message");
    }

    #[test]
    fn null_string_and_bytes() {
        let mut buf = Vec::new();
        buf.put_nullable_string(None);
        buf.put_nullable_bytes(None);
        let mut r = Reader::new(&buf);
        assert_eq!(r.nullable_string("s").unwrap(), None);
        assert_eq!(r.nullable_bytes("b").unwrap(), None);
        assert_eq!(r.remaining(), 0);
    }
}
