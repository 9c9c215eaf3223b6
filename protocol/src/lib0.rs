//! A bounds-checked reader for the lib0 encoding used by y-protocols. Writing is yrs's
//! (`yrs::encoding::write::Write`); reading untrusted bytes is not.
//!
//! Why not yrs's own `Cursor`: yrs's decoder is not safe on hostile input. Its decoders trust
//! length prefixes enough to *reserve* memory for the declared number of elements before reading
//! them (a five-byte state vector can ask for a multi-gigabyte hash map), and some integer paths
//! panic in debug builds (`ClientID::new` asserts 53 bits, `read_var_i64` shifts by up to 69
//! bits). Everything that arrives from a socket goes through this reader first; it never
//! allocates from a declared length and never panics.

use crate::ysync::FrameError;

/// Largest client id Yjs can produce (53 bits, `Number.MAX_SAFE_INTEGER`). yrs asserts this bound.
pub(crate) const MAX_CLIENT_ID: u64 = (1 << 53) - 1;

/// A lib0 unsigned varint never needs more than 10 bytes for 64 bits.
const MAX_VAR_UINT_BYTES: usize = 10;

/// Signed varints (`Any` integers) are written by lib0 only for 32-bit values; allowing up to 8
/// bytes (55 bits of payload) keeps yrs's shift arithmetic far away from overflow.
const MAX_VAR_INT_BYTES: usize = 8;

/// Cursor over an untrusted byte slice.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes consumed so far.
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// Fails with [`FrameError::TrailingBytes`] unless the whole input was consumed.
    pub(crate) fn finish(&self) -> Result<(), FrameError> {
        match self.remaining() {
            0 => Ok(()),
            len => Err(FrameError::TrailingBytes { len }),
        }
    }

    pub(crate) fn u8(&mut self) -> Result<u8, FrameError> {
        let byte = *self.buf.get(self.pos).ok_or(FrameError::Truncated)?;
        self.pos += 1;
        Ok(byte)
    }

    /// Exactly `len` bytes, or an error if fewer remain (checked before any slicing).
    pub(crate) fn bytes(&mut self, len: usize) -> Result<&'a [u8], FrameError> {
        if len > self.remaining() {
            return Err(FrameError::LengthOverflow {
                declared: len as u64,
                remaining: self.remaining(),
            });
        }
        let start = self.pos;
        self.pos += len;
        self.buf.get(start..self.pos).ok_or(FrameError::Truncated)
    }

    /// lib0 `readVarUint` for 64-bit values.
    pub(crate) fn var_u64(&mut self) -> Result<u64, FrameError> {
        let mut value: u64 = 0;
        for i in 0..MAX_VAR_UINT_BYTES {
            let byte = self.u8()?;
            let bits = u64::from(byte & 0x7f);
            let shift = 7 * i as u32;
            // The tenth byte may only contribute the single top bit of a u64.
            if shift == 63 && bits > 1 {
                return Err(FrameError::BadVarInt);
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(FrameError::BadVarInt)
    }

    /// A varint that must fit 32 bits (clocks, lengths, counts in the Yjs formats).
    pub(crate) fn var_u32(&mut self) -> Result<u32, FrameError> {
        u32::try_from(self.var_u64()?).map_err(|_| FrameError::BadVarInt)
    }

    /// A Yjs client id: a varint below 2^53.
    pub(crate) fn client_id(&mut self) -> Result<u64, FrameError> {
        let id = self.var_u64()?;
        if id > MAX_CLIENT_ID {
            return Err(FrameError::Malformed("client id exceeds 53 bits"));
        }
        Ok(id)
    }

    /// lib0 `readVarInt` (sign in bit 6 of the first byte); only its extent is needed.
    pub(crate) fn skip_var_i64(&mut self) -> Result<(), FrameError> {
        for _ in 0..MAX_VAR_INT_BYTES {
            if self.u8()? & 0x80 == 0 {
                return Ok(());
            }
        }
        Err(FrameError::BadVarInt)
    }

    /// lib0 `readVarUint8Array`: a varint length followed by that many bytes.
    pub(crate) fn var_bytes(&mut self) -> Result<&'a [u8], FrameError> {
        let declared = self.var_u64()?;
        let len = usize::try_from(declared)
            .ok()
            .filter(|len| *len <= self.remaining())
            .ok_or(FrameError::LengthOverflow {
                declared,
                remaining: self.remaining(),
            })?;
        self.bytes(len)
    }

    /// lib0 `readVarString`: length-prefixed UTF-8.
    pub(crate) fn var_str(&mut self) -> Result<&'a str, FrameError> {
        std::str::from_utf8(self.var_bytes()?).map_err(|_| FrameError::InvalidUtf8)
    }
}

#[cfg(test)]
mod tests {
    use yrs::encoding::write::Write;

    use super::*;

    #[test]
    fn varint_round_trip() {
        for value in [
            0,
            1,
            127,
            128,
            300,
            u32::MAX as u64,
            MAX_CLIENT_ID,
            u64::MAX,
        ] {
            let mut buf = Vec::new();
            buf.write_var::<u64>(value);
            let mut reader = Reader::new(&buf);
            assert_eq!(reader.var_u64().unwrap(), value);
            reader.finish().unwrap();
        }
    }

    #[test]
    fn varint_rejects_overlong_and_truncated() {
        assert_eq!(
            Reader::new(&[0x80; 11]).var_u64(),
            Err(FrameError::BadVarInt)
        );
        assert_eq!(
            Reader::new(&[0x80, 0x80]).var_u64(),
            Err(FrameError::Truncated)
        );
        // Ten bytes whose last byte carries more than the one remaining bit.
        let mut too_big = vec![0xff; 9];
        too_big.push(0x02);
        assert_eq!(Reader::new(&too_big).var_u64(), Err(FrameError::BadVarInt));
        // 2^32 does not fit a u32 field.
        let mut buf = Vec::new();
        buf.write_var::<u64>(1 << 32);
        assert_eq!(Reader::new(&buf).var_u32(), Err(FrameError::BadVarInt));
    }

    #[test]
    fn absurd_length_prefix_is_an_error_not_an_allocation() {
        let mut buf = Vec::new();
        buf.write_var::<u64>(u64::MAX);
        buf.extend_from_slice(b"abc");
        assert!(matches!(
            Reader::new(&buf).var_bytes(),
            Err(FrameError::LengthOverflow { .. })
        ));
    }

    #[test]
    fn client_ids_above_53_bits_are_rejected() {
        let mut buf = Vec::new();
        buf.write_var::<u64>(MAX_CLIENT_ID + 1);
        assert!(Reader::new(&buf).client_id().is_err());
    }
}
